"""Named constants (``[constants] lam = 0.01``, ``Graph.constant``): symbols in the derivation (Greek names as
Greek letters), values in the generated code and at a point, the model file's one-line errors, and weight decay
as a loss term (examples/weight_decay.toml) trained and verified."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

from conftest import ROOT
from symbackprop.cli import main
from symbackprop.codegen import generate_module
from symbackprop.compile import compile_gradient
from symbackprop.derive import derive
from symbackprop.graph import Graph, ModelError
from symbackprop.modelfile import load_model, parse_model
from symbackprop.printing import NetworkLatexPrinter, NetworkMathMLPrinter
from symbackprop.tensor import sum_

WEIGHT_DECAY = ROOT / "examples" / "weight_decay.toml"


def decayed_regression(lam: float = 0.01) -> Graph:
    """out = w . x + b with L = (out - y)^2 / 2 + lam * sum(w * w) + eps * b."""
    g = Graph("decayed regression")
    x, y = g.input("x", (3,)), g.input("y")
    w, b = g.param("w", (3,)), g.param("b")
    lam_, eps = g.constant("lam", lam), g.constant("eps", 1e-5)
    out = g.node("out", w.T @ x + b)
    g.loss("L", (out - y) ** 2 / 2 + lam_ * sum_(w * w) + eps * b)
    return g


def test_a_constant_is_a_symbol_whose_gradient_term_is_written_with_it():
    g = decayed_regression()
    assert g["lam"].kind == "constant" and g["lam"].value == 0.01 and g["lam"].shape == ()
    d = derive(g)
    assert d.targets == ["w", "b"]  # no gradient for a constant
    lam, w, eps = g.symbol("lam"), g.symbol("w"), g.symbol("eps")
    assert 2 * lam * w in sp.Add.make_args(d.adjoint_value("w"))
    assert eps in sp.Add.make_args(d.adjoint_value("b"))


def test_gradients_with_constants_equal_the_hand_derived_values():
    lam = 0.25
    g = decayed_regression(lam)
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=3), "b": 0.3}
    for n in (1, 3, 5):
        data = {"x": rng.normal(size=(n, 3)), "y": rng.normal(size=n)}
        loss, grads = compile_gradient(g)(params, data)
        r = data["x"] @ params["w"] + params["b"] - data["y"]
        assert loss == pytest.approx(np.mean(r ** 2 / 2) + lam * params["w"] @ params["w"] + 1e-5 * params["b"])
        np.testing.assert_allclose(grads["w"], data["x"].T @ r / n + 2 * lam * params["w"], rtol=1e-12)
        assert grads["b"] == pytest.approx(np.mean(r) + 1e-5, rel=1e-12)


def test_constants_match_pytorch():
    pytest.importorskip("torch")
    from symbackprop.torch_eval import torch_loss_and_grad
    g = decayed_regression(0.1)
    rng = np.random.default_rng(1)
    params = {"w": rng.normal(size=3), "b": -0.2}
    data = {"x": rng.normal(size=(7, 3)), "y": rng.normal(size=7)}
    loss, grads = compile_gradient(g)(params, data)
    torch_loss, torch_grads = torch_loss_and_grad(g, params, data)
    assert loss == pytest.approx(torch_loss, rel=1e-13)
    for name in params:
        np.testing.assert_allclose(grads[name], torch_grads[name], rtol=1e-12)


def test_greek_names_print_as_greek_letters():
    latex = derive(decayed_regression()).to("latex")
    assert r"2 \lambda" in latex and r"\epsilon" in latex and r"\mathrm{lam}" not in latex
    latex_of, mathml_of = NetworkLatexPrinter().doprint, NetworkMathMLPrinter().doprint
    assert [latex_of(sp.Symbol(n)) for n in ("lam", "eps", "alpha", "beta_2", "lam_1", "lamb")] == [
        r"\lambda", r"\epsilon", r"\alpha", r"\beta_{2}", r"\lambda_{1}", r"\mathrm{lamb}"]
    assert mathml_of(sp.Symbol("lam")) == "<mi>&#955;</mi>" and mathml_of(sp.Symbol("eps")) == "<mi>&#949;</mi>"
    assert "lam * sum(w * w)" not in derive(decayed_regression()).to("text")  # text keeps the names: 2 * lam * w
    assert "2 * lam * w" in derive(decayed_regression()).to("text")


def test_generated_module_defines_each_constant_once_at_the_top():
    source = generate_module(derive(decayed_regression(0.01)).program(), check_shapes=True)
    assert "\n# constants of the model\nlam = DTYPE(0.01)\neps = DTYPE(1e-05)\n" in source
    assert source.index("lam = DTYPE(0.01)") < source.index("def loss_and_grad")
    assert "2*lam*w" in source.replace(" ", "") or "lam*w" in source.replace(" ", "")
    namespace: dict = {}
    exec(compile(source, "generated", "exec"), namespace)  # the module runs on its own (NumPy only)
    loss, grads = namespace["loss_and_grad"]({"w": np.ones(3), "b": 0.0}, {"x": np.zeros((2, 3)), "y": np.zeros(2)})
    assert loss == pytest.approx(0.03) and np.allclose(grads["w"], 0.02)


def test_a_point_shows_the_constants_value():
    g = decayed_regression(0.01)
    ev = derive(g).at({"x": [1.0, 2.0, 3.0], "y": 0.5, "w": [0.1, 0.2, 0.3], "b": 0.0})
    text = ev.to("text")
    assert "constant                 lam = 0.01" in text and "constant                 eps = 1e-05" in text
    assert "dL/dw = 2 * lam * w + dL/dout * x" in text.replace("dL/dout * x + 2 * lam * w", "2 * lam * w + dL/dout * x")
    assert ev.value("lam") == 0.01
    np.testing.assert_allclose(ev.gradients["w"], (1.4 - 0.5) * np.array([1, 2, 3]) + 0.02 * np.array([0.1, 0.2, 0.3]))


def test_giving_a_constant_at_a_point_is_refused():
    with pytest.raises(ValueError, match="'lam' is a constant"):
        derive(decayed_regression()).at({"x": [1, 2, 3], "y": 0.5, "lam": 0.2})


# ---- model files -----------------------------------------------------------------------------------------------
MODEL = '''\
[inputs]
x = {{}}
y = {{}}
[params]
w = {{ init = 0.5 }}
[constants]
{constants}
[nodes]
z = "w * x"
[loss]
L = "(z - y)**2 / 2 + lam * w**2"
'''


def test_model_file_constants_are_declared_and_used_in_the_loss():
    g = parse_model(MODEL.format(constants="lam = 0.01\neps = 1e-5\nk = 3"), "m.toml").graph
    assert [(q.name, q.value) for q in g.constants] == [("lam", 0.01), ("eps", 1e-5), ("k", 3.0)]
    assert g["L"].expr.has(g.symbol("lam"))


@pytest.mark.parametrize("constants, message", [
    ("x = 0.1\nlam = 1", "m.toml: [constants] x: 'x' is defined twice (already an input)"),
    ("w = 0.1\nlam = 1", "m.toml: [constants] w: 'w' is defined twice (already a param)"),
    ("sum = 1\nlam = 1", "m.toml: [constants] sum: 'sum' is reserved"),
    ("eta = 1\nlam = 1", "m.toml: [constants] eta: 'eta' is reserved"),
    ('lam = "0.01"', "m.toml: [constants] lam: a constant must be a number, got a string"),
    ("lam = true", "m.toml: [constants] lam: a constant must be a number, got a boolean"),
    ("lam = [1, 2]", "m.toml: [constants] lam: a constant must be a number, got an array"),
    ("lam = nan", "m.toml: [constants] lam: a constant must be a finite number of at most 1e+12, got nan"),
    ("lam = inf", "m.toml: [constants] lam: a constant must be a finite number"),
])
def test_model_file_constant_errors_are_one_line(constants, message):
    with pytest.raises(ModelError) as e:
        parse_model(MODEL.format(constants=constants), "m.toml")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_node_named_like_a_constant_is_refused_at_the_node():
    text = MODEL.format(constants="lam = 0.1").replace('z = "w * x"', 'z = "w * x"\nlam = "z"')
    with pytest.raises(ModelError, match=r"m.toml: \[nodes\] lam: 'lam' is defined twice \(already a constant\)"):
        parse_model(text, "m.toml")


def test_the_api_refuses_a_constant_that_is_not_a_finite_number():
    g = Graph()
    for bad in (float("nan"), "0.1", True, [1.0]):
        with pytest.raises(ModelError, match="a constant must be a finite number"):
            g.constant("c", bad)


# ---- weight decay as a loss term ---------------------------------------------------------------------------------
def test_weight_decay_example_derives_two_lambda_w_and_trains():
    from symbackprop.data import model_data
    from symbackprop.train import train, train_settings
    model = load_model(WEIGHT_DECAY)
    g = model.graph
    latex = derive(g).to("latex")
    assert r"2 \lambda \mathbf{W}_{1}" in latex and r"2 \lambda \mathbf{W}_{2}" in latex
    settings = train_settings(model.train, g, str(WEIGHT_DECAY))
    data = model_data(g, model.data, source=str(WEIGHT_DECAY))
    result = train(g, data, lr=settings["lr"], epochs=settings["epochs"], batch_size=settings["batch_size"],
                   seed=settings["seed"])
    assert result.final_loss < 0.1 * result.initial_loss
    # the decay term is part of the loss that was minimised: without it the same run ends with larger weights
    g0 = load_model(WEIGHT_DECAY).graph
    g0["lam"].value = 0.0
    plain = train(g0, data, lr=settings["lr"], epochs=settings["epochs"], batch_size=settings["batch_size"],
                  seed=settings["seed"])
    norm = lambda params: sum(float(np.sum(np.square(params[n]))) for n in ("W1", "W2"))  # noqa: E731
    assert norm(result.params) < norm(plain.params)


def test_weight_decay_example_verifies_and_its_module_holds_lam(tmp_path):
    result = CliRunner().invoke(main, ["verify", str(WEIGHT_DECAY)])
    assert result.exit_code == 0, result.output
    assert "all gradient checks passed" in result.output
    result = CliRunner().invoke(main, ["codegen", str(WEIGHT_DECAY), "-o", str(tmp_path / "grad.py")])
    assert result.exit_code == 0, result.output
    assert "\nlam = DTYPE(0.001)\n" in (tmp_path / "grad.py").read_text()
