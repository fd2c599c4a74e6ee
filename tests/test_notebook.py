"""examples/seed.ipynb runs from top to bottom and shows what it promises (needs nbclient and ipykernel,
which the test extra installs)."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def outputs_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def test_the_seed_notebook_runs_and_shows_the_derivation_the_numbers_the_code_the_checks_and_the_curve():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(ROOT / "examples" / "seed.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "examples")}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    code = [c for c in notebook.cells if c.cell_type == "code"]
    shown = [outputs_of(c) for c in code]
    assert all("Traceback" not in s and "Error" not in s.split("\n")[0] for s in shown)
    derivation, evaluation = shown[0], shown[2]
    assert '<div class="symbackprop">' in derivation and "<math" in derivation
    assert "<mn>0.679178699</mn>" in evaluation and "<mn>0.709716066</mn>" in evaluation  # a, then w after the update
    assert "True" in shown[4]                                   # the by-hand chain rule agrees
    assert "def loss_and_grad" in shown[5]                       # the generated code
    assert "all gradient checks passed" in shown[7]
    assert "<svg" in shown[8] and "<polyline" in shown[8]        # the loss curve
