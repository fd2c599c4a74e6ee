"""verify: passes on every example, and names the parameter (and the check) whose gradient is wrong."""
import sys

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

from conftest import EXAMPLES, ROOT
from helpers import generated_module, load_example, scale_gradient_line
from symbackprop.cli import main
from symbackprop.compile import compile_gradient
from symbackprop.functions import relu, sigmoid, softplus
from symbackprop.graph import Graph, UserError
from symbackprop.modelfile import load_model
from symbackprop.tensor import logsumexp, mean, softmax, sum_, transpose
from symbackprop.verify import (ATOL, RTOL, central_differences, check_data, check_point, compare,
                                verify_gradients)

TWO_LAYER = ROOT / "examples" / "two_layer.toml"
MLP = ROOT / "examples" / "mlp_sigmoid.toml"


def run(*args):
    return CliRunner().invoke(main, ["verify", *[str(a) for a in args]])


# ---- every example passes ---------------------------------------------------------------------------
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_verify_passes_on_every_example(example):
    model = load_example(example)
    result = run(example, "--samples", "8", "--steps", "5")
    assert result.exit_code == 0, result.output
    assert "FAILED" not in result.output
    assert "all gradient checks passed" in result.output
    for q in model.graph.params:  # every parameter appears in the table
        assert any(line.split()[:3] == [q.name, "finite", "differences"] for line in result.output.splitlines())


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_pytorch_autograd_of_the_independent_evaluation_agrees_on_every_example(example):
    pytest.importorskip("torch")
    from symbackprop.torch_eval import torch_loss_and_grad
    model = load_example(example)
    graph = model.graph
    params, data = check_point(graph, model.data, samples=8)
    loss, grads = compile_gradient(graph).loss_and_grad(params, data)
    torch_loss, torch_grads = torch_loss_and_grad(graph, params, data)
    assert torch_loss == pytest.approx(loss, rel=1e-12)
    for q in graph.params:
        assert torch_grads[q.name].shape == q.shape
        np.testing.assert_allclose(np.asarray(grads[q.name]), torch_grads[q.name], rtol=1e-9, atol=1e-14,
                                   err_msg=q.name)


# ---- a wrong gradient is caught and named -----------------------------------------------------------
def test_a_corrupted_gradient_fails_every_check_for_that_parameter_only():
    model = load_model(TWO_LAYER)
    good = compile_gradient(model.graph).loss_and_grad

    def corrupted(p, d):
        loss, grads = good(p, d)
        return loss, {**grads, "b1": grads["b1"] * 1.01}

    report = verify_gradients(model.graph, data_table=model.data, loss_and_grad=corrupted, lr=2.0)
    assert not report.ok
    expected = ["finite differences", "training (20 steps)"]
    if _has_torch():
        expected.insert(1, "pytorch autograd")
    assert report.failed() == {"b1": expected}
    assert report.summary() == f"gradient check failed for b1 ({', '.join(expected)})"
    row = next(line for line in report.table().splitlines() if line.startswith("b1 ") and "finite" in line)
    assert row.endswith("FAILED")
    assert float(row.split()[3]) > ATOL  # the max abs error column shows the 1% error


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_cli_verify_of_an_edited_module_exits_1_naming_the_parameter(tmp_path):
    module = generated_module(TWO_LAYER, tmp_path)
    scale_gradient_line(module, "w2", "1.01")
    result = run(TWO_LAYER, "--module", module, "--no-torch")
    assert result.exit_code == 1
    assert "checking the module" in result.stdout
    assert result.stderr == ("Error: gradient check failed for w2 (finite differences, training (20 steps))\n")


def test_cli_verify_of_an_edited_matrix_gradient_names_it(tmp_path):
    module = generated_module(MLP, tmp_path)
    scale_gradient_line(module, "W1", "1.01")
    result = run(MLP, "--module", module, "--samples", "8", "--steps", "3")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: gradient check failed for W1 (finite differences")
    assert "W2" not in result.stderr and "b1" not in result.stderr


def test_an_unedited_generated_module_passes(tmp_path):
    result = run(MLP, "--module", generated_module(MLP, tmp_path), "--samples", "8", "--steps", "3")
    assert result.exit_code == 0, result.output
    assert "loss value" in result.stdout  # a module's own loss is compared with the model's


def test_a_module_with_a_wrong_loss_value_fails_on_the_loss(tmp_path):
    module = generated_module(TWO_LAYER, tmp_path)
    source = module.read_text()
    assert "    loss = float(_loss/N)\n" in source  # blocked code: the sum over the blocks, divided by N
    module.write_text(source.replace("    loss = float(_loss/N)\n", "    loss = float(_loss)\n"))
    result = run(TWO_LAYER, "--module", module, "--no-torch")
    assert result.exit_code == 1
    assert result.stderr == "Error: gradient check failed for L (loss value)\n"


def test_a_missing_or_misshapen_gradient_is_named(tmp_path):
    module = generated_module(MLP, tmp_path)
    source = module.read_text().replace('"b2": dL_db2', '"b2": dL_db2[:1]').replace('"W1": dL_dW1, ', "")
    module.write_text(source)
    result = run(MLP, "--module", module, "--samples", "4", "--steps", "2", "--no-torch")
    assert result.exit_code == 1
    rows = {tuple(line.split()[:3]): line for line in result.stdout.splitlines()}
    assert rows["W1", "gradient", "shape"].endswith("FAILED: no gradient returned")
    assert rows["b2", "gradient", "shape"].endswith("FAILED: gradient has shape (1,), expected (2,)")
    assert rows["W2", "finite", "differences"].endswith("ok")  # the others are still checked
    assert result.stderr == "Error: gradient check failed for W1 (gradient shape); b2 (gradient shape)\n"


@pytest.mark.parametrize("body, message", [
    ("def loss_and_grad(params, data):\n    return 1 / 0\n", "loss_and_grad raised ZeroDivisionError"),
    ("import no_such_module_here\n", "cannot be imported: ModuleNotFoundError"),
    ("def forward(params, data):\n    return {}\n", "defines no loss_and_grad(params, data)"),
])
def test_a_broken_module_is_a_one_line_error(tmp_path, body, message):
    module = tmp_path / "broken.py"
    module.write_text(body)
    result = run(TWO_LAYER, "--module", module, "--no-torch")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {module}: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


# ---- the pieces ------------------------------------------------------------------------------------
def test_central_differences_of_a_cubic_are_exact_up_to_eps_squared():
    params = {"w": np.array([[0.5, -2.0], [3.0, 0.0]])}
    mean_loss = lambda p: float(np.sum(p["w"] ** 3))
    fd = central_differences(mean_loss, params, "w", [(0, 0), (0, 1), (1, 0), (1, 1)], eps=1e-6)
    # (w + e)^3 - (w - e)^3 = 6 w^2 e + 2 e^3: the difference quotient is 3 w^2 + e^2
    np.testing.assert_allclose(fd, [0.75, 12.0, 27.0, 0.0], atol=1e-8)
    assert params["w"][0, 0] == 0.5  # the point itself is not moved


def test_compare_uses_the_gradcheck_tolerance_and_fails_non_finite_values():
    assert (ATOL, RTOL) == (1e-5, 1e-3)
    assert compare("w", "c", [1.0009], [1.0]).ok  # 9e-4 <= 1e-5 + 1e-3
    assert not compare("w", "c", [1.0012], [1.0]).ok  # 1.2e-3 > 1.01e-3
    assert compare("w", "c", [9e-6], [0.0]).ok and not compare("w", "c", [2e-5], [0.0]).ok
    bad = compare("w", "c", [np.nan], [1.0])
    assert not bad.ok and bad.detail == "not a finite number"
    c = compare("w", "c", [3.0, 2.0], [2.0, 2.0])
    assert (c.max_abs, c.max_rel) == (1.0, 0.5)


def test_the_report_is_reproducible_for_a_seed():
    model = load_model(TWO_LAYER)
    a, b, c = (verify_gradients(model.graph, data_table=model.data, seed=s, steps=2, use_torch=False)
               for s in (3, 3, 4))
    assert a.table() == b.table() and a.table() != c.table()


def test_without_pytorch_the_cross_check_is_skipped_with_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    model = load_model(TWO_LAYER)
    report = verify_gradients(model.graph, data_table=model.data, steps=2)
    assert report.ok
    assert not any(c.check.startswith("pytorch") for c in report.checks)
    assert any("PyTorch is not installed" in n for n in report.notes)
    assert "PyTorch is not installed" in report.table()


def _onehot_model() -> Graph:
    g = Graph("softmax regression")
    x, y = g.input("x", (3,)), g.input("y", (4,), onehot=True)
    W, b = g.param("W", (4, 3), init="glorot"), g.param("b", (4,))
    z = g.node("z", W @ x + b)
    g.loss("L", -sum_(y * (z - logsumexp(z))))
    return g


def test_without_data_the_check_uses_random_inputs_with_one_hot_rows():
    g = _onehot_model()
    data, described = check_data(g, None, samples=5, seed=1)
    assert "random N(0, 1) inputs" in described
    assert data["x"].shape == (5, 3) and data["y"].shape == (5, 4)
    assert np.all(data["y"].sum(axis=1) == 1) and set(np.unique(data["y"])) == {0.0, 1.0}
    report = verify_gradients(g, steps=3)
    assert report.ok, report.table()
    assert any("random N(0, 1) inputs" in n for n in report.notes)


def test_a_loss_undefined_at_the_check_point_is_a_clear_error():
    g = Graph("log of an input")
    x = g.input("x")
    w = g.param("w", init=1.0)
    g.loss("L", sp.log(w * x))  # random N(0, 1) inputs include negatives
    with pytest.raises(UserError, match="the loss of 'log of an input' is nan at the check point"):
        verify_gradients(g)


def _every_operation_model(sign=sp.sign) -> Graph:
    g = Graph("every operation")
    x, y, M = g.input("x", (3,)), g.input("y", (2,)), g.input("M", (2, 3))
    W, u, s = g.param("W", (2, 3), init="glorot"), g.param("u", (3,), init=0.3), g.param("s", init=0.7)
    r = g.node("r", x.T @ u)  # row vector times column vector: a per-sample scalar
    h = g.node("h", relu(W @ x) + softplus(M @ u) * s + sp.tanh(r) * y)
    q = g.node("q", sp.sqrt(sp.exp(h) + 1) + sp.Abs(h) * sign(r) + transpose(sigmoid(W.T @ h)) @ x)
    p = g.node("p", softmax(q * y))
    g.loss("L", logsumexp(q) - sum_(p * y) + mean(W * M) + sp.log(1 + s ** 2) / (1 + r ** 2))
    return g


def test_the_pytorch_evaluation_matches_a_hand_written_numpy_loss_on_every_operation():
    torch = pytest.importorskip("torch")
    from symbackprop.torch_eval import TorchEvaluator
    g = _every_operation_model()  # with sign(r)
    rng = np.random.default_rng(0)
    n = 5
    x, y, M = rng.normal(size=(n, 3)), rng.normal(size=(n, 2)), rng.normal(size=(n, 2, 3))
    W, u, s = rng.normal(size=(2, 3)), rng.normal(size=3), 0.7
    r = x @ u
    h = np.maximum(x @ W.T, 0) + np.logaddexp(0, np.einsum("nij,j->ni", M, u)) * s + np.tanh(r)[:, None] * y
    q = np.sqrt(np.exp(h) + 1) + np.abs(h) * np.sign(r)[:, None] + np.sum(1 / (1 + np.exp(-h @ W)) * x, 1)[:, None]
    e = np.exp(q * y)
    p = e / e.sum(1, keepdims=True)
    L = (np.log(np.exp(q).sum(1)) - (p * y).sum(1) + (W * M).mean((1, 2)) + np.log(1 + s ** 2) / (1 + r ** 2))
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    loss = TorchEvaluator(torch, g).loss({"W": t(W), "u": t(u), "s": t(s)}, {"x": t(x), "y": t(y), "M": t(M)})
    assert loss.item() == pytest.approx(L.mean(), rel=1e-13)


def test_verify_passes_on_a_graph_using_every_operation():
    g = _every_operation_model(sign=lambda r: 1 + 0 * r)
    report = verify_gradients(g, steps=3, lr=0.01)
    assert report.ok, report.table()
    assert {c.check for c in report.checks} >= {"finite differences", "training (3 steps)"}


def test_verify_handles_sign_of_a_node():
    assert verify_gradients(_every_operation_model(), steps=3, lr=0.01).ok


def test_cli_verify_checks_on_a_data_file_when_given(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=20), y=rng.uniform(size=20))
    result = run(TWO_LAYER, "--data", tmp_path / "d.npz", "--samples", "5", "--steps", "2", "--no-torch")
    assert result.exit_code == 0, result.output
    assert f"note: data: 5 samples of {tmp_path / 'd.npz'}" in result.stdout
    missing = run(TWO_LAYER, "--data", tmp_path / "none.npz")
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: ") and "none.npz" in missing.stderr
