"""Test utilities shared by the verification tests: generated modules on disk and edits to them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from symbackprop.cli import main
from symbackprop.modelfile import Model, load_model


def load_example(path: Path | str) -> Model:
    """An example model; skips the test when its data set needs scikit-learn and that is not installed."""
    model = load_model(path)
    if isinstance(model.data, dict) and "sklearn" in model.data:
        pytest.importorskip("sklearn")
    return model


def generated_module(model: Path | str, directory: Path, name: str = "grad.py") -> Path:
    """Write MODEL's gradient module with ``symbackprop codegen`` into ``directory``; return its path."""
    path = Path(directory) / name
    result = CliRunner().invoke(main, ["codegen", str(model), "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


def scale_gradient_line(path: Path, param: str, factor: str = "1.01") -> str:
    """Edit the module at ``path`` so that the line computing dL/d``param`` is multiplied by ``factor``.

    Returns the edited line. The line is found by its assignment, ``    dL_d<param> = ...``, or in blocked
    code (codegen's default), by the line that adds a block's sum, ``        dL_d<param> = _add_block(...)``.
    """
    source = path.read_text()
    name = re.escape(param)
    pattern = re.compile(rf"^(        dL_d{name} = )(_add_block\(dL_d{name}, .*\))$", re.MULTILINE)
    if pattern.search(source) is None:
        pattern = re.compile(rf"^(    dL_d{name} = )(.*)$", re.MULTILINE)
    match = pattern.search(source)
    assert match is not None, f"no gradient line for {param} in {path}"
    edited = f"{match.group(1)}{factor}*({match.group(2)})"
    path.write_text(source[:match.start()] + edited + source[match.end():])
    return edited
