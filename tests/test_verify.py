"""verify: passes on every example, and names the parameter whose gradient is wrong."""
import pytest
from click.testing import CliRunner

from conftest import EXAMPLES, ROOT
from symbackprop.cli import main
from symbackprop.compile import compile_gradient
from symbackprop.modelfile import load_model
from symbackprop.verify import check_point, verify


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_verify_passes_on_every_example(example):
    result = CliRunner().invoke(main, ["verify", str(example), "--samples", "8", "--steps", "3"])
    assert result.exit_code == 0, result.output
    assert "FAILED" not in result.output


def test_a_corrupted_gradient_fails_naming_the_parameter():
    model = load_model(ROOT / "examples" / "two_layer.toml")
    params, data = check_point(model.graph, model.data)
    good = compile_gradient(model.graph).loss_and_grad

    def corrupted(p, d):
        loss, grads = good(p, d)
        return loss, {**grads, "b1": grads["b1"] * 1.01}

    report = verify(model.graph, params, data, corrupted)
    assert not report.ok
    assert {c.param for c in report.failures if c.check == "finite differences"} == {"b1"}


def test_cli_verify_of_an_edited_module_exits_1_naming_the_parameter(tmp_path):
    model, out = str(ROOT / "examples" / "two_layer.toml"), tmp_path / "grad.py"
    runner = CliRunner()
    assert runner.invoke(main, ["codegen", model, "-o", str(out)]).exit_code == 0
    source = out.read_text()
    line = next(l for l in source.splitlines() if l.startswith("    dL_dw2 = "))
    out.write_text(source.replace(line, line.replace("= ", "= 1.01*", 1)))
    result = runner.invoke(main, ["verify", model, "--module", str(out)])
    assert result.exit_code == 1
    assert "gradient check failed for w2 (finite differences)" in result.output


def test_verify_reports_pytorch_when_installed():
    pytest.importorskip("torch")
    model = load_model(ROOT / "examples" / "neuron.toml")
    report = verify(model.graph, *check_point(model.graph, model.data))
    assert {c.check for c in report.checks} >= {"finite differences", "pytorch autograd"}
    assert all(c.max_rel < 1e-9 for c in report.checks if c.check == "pytorch autograd")
