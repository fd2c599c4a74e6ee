"""Layers in matrix form: the four backpropagation equations, softmax with cross-entropy, gradients
against finite differences and PyTorch, shape errors, and LaTeX for vectors and matrices.

The networks are the example model files (examples/*.toml) and graphs declared with the Python API.
The numbers are checked against reference implementations written here, independently of symbackprop:
NumPy for the losses (differentiated by finite differences) and PyTorch autograd for the gradients.
"""
from __future__ import annotations

import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

from conftest import ROOT
from symbackprop import Graph, ModelError, derive, sigmoid
from symbackprop.functions import relu, softplus
from symbackprop.cli import main
from symbackprop.compile import compile_gradient
from symbackprop.modelfile import load_model, parse_model
from symbackprop.render import LatexRenderer
from symbackprop.steps import Adjoint, Math, Partial, Prime, Product
from symbackprop.tensor import logsumexp, matmul, mean, softmax, sum_, transpose

EXAMPLES = ROOT / "examples"


def example(name: str) -> Graph:
    return load_model(EXAMPLES / f"{name}.toml").graph


def sigmoid_mlp(sizes: list[int]) -> Graph:
    """A sigmoid MLP of any depth with the quadratic loss, declared with the Python API."""
    g = Graph(f"sigmoid MLP {sizes}")
    a = g.input("x", (sizes[0],))
    y = g.input("y", (sizes[-1],))
    for l, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), 1):
        W, b = g.param(f"W{l}", (n_out, n_in), init="glorot"), g.param(f"b{l}", (n_out,))
        z = g.node(f"z{l}", W @ a + b)
        a = g.node(f"a{l}", sigmoid(z))
    g.loss("L", sum_((a - y) ** 2) / 2)
    return g


def latex_lines(derivation) -> dict[tuple[str, str], str]:
    """(kind, subject) -> the step's LaTeX line."""
    renderer = LatexRenderer(derivation)
    return {(s.kind, s.subject): renderer.line(s) for s in derivation.steps}


def step(derivation, kind: str, subject: str):
    matches = [s for s in derivation.steps if s.kind == kind and s.subject == subject]
    assert len(matches) == 1, f"expected one {kind} step for {subject}, got {matches}"
    return matches[0]


def adjoint(name: str) -> Math:
    return Math(Adjoint("L", name))


# ---- the four backpropagation equations ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp():
    return derive(example("mlp_sigmoid"))


def test_bp1_output_error_is_the_loss_gradient_times_sigma_prime(mlp):
    """delta_L = dL/da_L ⊙ sigma'(z_L), with dL/da_L = a_L - y for the quadratic loss."""
    g = mlp.graph
    assert step(mlp, "loss", "a2").forms == (Math(g.symbol("a2") - g.symbol("y")),)
    local = step(mlp, "local", "a2")
    assert local.lhs == Partial("a2", "z2") and local.forms[0] == Prime(sigmoid, g.symbol("z2"))
    chain = step(mlp, "chain", "z2")
    assert chain.forms[0] == Product((adjoint("a2"), Partial("a2", "z2")), hadamard=True)
    lines = latex_lines(mlp)
    assert lines[("local", "a2")].startswith(
        r"\frac{\partial \mathbf{a}_{2}}{\partial \mathbf{z}_{2}} = \sigma'(\mathbf{z}_{2}) = ")
    assert lines[("chain", "z2")] == (
        r"\frac{\partial L}{\partial \mathbf{z}_{2}} = \frac{\partial L}{\partial \mathbf{a}_{2}} \odot "
        r"\frac{\partial \mathbf{a}_{2}}{\partial \mathbf{z}_{2}} = \left(\mathbf{a}_{2} - \mathbf{y}\right) \odot "
        r"\sigma(\mathbf{z}_{2}) \odot \left(1 - \sigma(\mathbf{z}_{2})\right)")


def test_bp2_hidden_error_is_the_transposed_weight_times_the_next_error_then_sigma_prime(mlp):
    """delta_l = (W_{l+1}^T delta_{l+1}) ⊙ sigma'(z_l): a chain step W^T dL/dz, then one with ⊙."""
    g = mlp.graph
    back = step(mlp, "chain", "a1")
    assert back.forms == (Math(matmul(transpose(g.symbol("W2")), Adjoint("L", "z2"))),)
    assert step(mlp, "chain", "z1").forms[0] == Product((adjoint("a1"), Partial("a1", "z1")), hadamard=True)
    lines = latex_lines(mlp)
    assert lines[("chain", "a1")] == (r"\frac{\partial L}{\partial \mathbf{a}_{1}} = "
                                      r"\mathbf{W}_{2}^{\top} \frac{\partial L}{\partial \mathbf{z}_{2}}")
    assert r"\odot" in lines[("chain", "z1")] and r"\sigma(\mathbf{z}_{1})" in lines[("chain", "z1")]


def test_bp3_bias_gradient_is_the_error(mlp):
    for l in (1, 2):
        assert step(mlp, "param", f"b{l}").forms[-1] == adjoint(f"z{l}")
        assert mlp.gradients[f"b{l}"] == Adjoint("L", f"z{l}")


def test_bp4_weight_gradient_is_the_error_times_the_previous_activation_transposed(mlp):
    g = mlp.graph
    lines = latex_lines(mlp)
    for l, previous in ((2, "a1"), (1, "x")):
        assert mlp.gradients[f"W{l}"] == matmul(Adjoint("L", f"z{l}"), transpose(g.symbol(previous)))
        bold = r"\mathbf{x}" if previous == "x" else r"\mathbf{a}_{1}"
        assert lines[("param", f"W{l}")] == (rf"\frac{{\partial L}}{{\partial \mathbf{{W}}_{{{l}}}}} = "
                                             rf"\frac{{\partial L}}{{\partial \mathbf{{z}}_{{{l}}}}} {bold}^{{\top}}")


def test_a_three_layer_network_repeats_the_equations_layer_by_layer_in_backward_order():
    d = derive(sigmoid_mlp([3, 5, 4, 2]))
    order = [(s.kind, s.subject) for s in d.steps if s.kind != "update"]
    assert order == [
        ("loss", "a3"), ("local", "a3"), ("chain", "z3"), ("param", "W3"), ("param", "b3"),
        ("chain", "a2"), ("local", "a2"), ("chain", "z2"), ("param", "W2"), ("param", "b2"),
        ("chain", "a1"), ("local", "a1"), ("chain", "z1"), ("param", "W1"), ("param", "b1"),
    ]
    g = d.graph
    for l in (1, 2, 3):
        assert step(d, "chain", f"z{l}").forms[0] == Product((adjoint(f"a{l}"), Partial(f"a{l}", f"z{l}")), True)
        assert d.gradients[f"b{l}"] == Adjoint("L", f"z{l}")
        previous = g.symbol("x" if l == 1 else f"a{l - 1}")
        assert d.gradients[f"W{l}"] == matmul(Adjoint("L", f"z{l}"), transpose(previous))
    for l in (1, 2):
        assert step(d, "chain", f"a{l}").forms == (Math(matmul(transpose(g.symbol(f"W{l + 1}")), Adjoint("L", f"z{l + 1}"))),)


# ---- softmax with cross-entropy -----------------------------------------------------------------------------
def softmax_ce_graph(classes: int = 3) -> Graph:
    g = Graph("softmax cross-entropy")
    x = g.input("x", (classes,))
    y = g.input("y", (classes,), onehot=True)
    b = g.param("b", (classes,))
    z = g.node("z", x + b)
    p = g.node("p", softmax(z))
    g.loss("L", -sum_(y * sp.log(p)))
    return g


@pytest.mark.parametrize("graph", [softmax_ce_graph, lambda: example("iris"), lambda: example("digits")],
                         ids=["python", "iris", "digits"])
def test_softmax_cross_entropy_with_one_hot_labels_gives_p_minus_y(graph):
    g = graph()
    z = "z" if "z" in g.quantities else "z2"
    d = derive(g)
    assert step(d, "loss", z).forms == (Math(g.symbol("p") - g.symbol("y")),)
    assert latex_lines(d)[("loss", z)].endswith(r"= \mathbf{p} - \mathbf{y}")


def test_log_of_softmax_is_computed_as_z_minus_logsumexp():
    g = softmax_ce_graph()
    z, y = g.symbol("z"), g.symbol("y")
    assert g["L"].expr == -sum_(y * (z - logsumexp(z)))


@pytest.mark.parametrize("label", [0, 1, 2])
def test_softmax_cross_entropy_is_finite_and_silent_for_logits_of_plus_minus_1000(label):
    compiled = compile_gradient(softmax_ce_graph())
    x = np.array([[1000.0, -1000.0, 0.0]])
    y = np.eye(3)[[label]]
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        loss, grads = compiled.loss_and_grad({"b": np.zeros(3)}, {"x": x, "y": y})
        values = compiled.forward({"b": np.zeros(3)}, {"x": x, "y": y})
    # L = logsumexp(z) - z[label], and logsumexp(z) = 1000 up to exp(-1000)
    assert loss == pytest.approx(1000.0 - x[0, label], abs=1e-12)
    p = np.array([1.0, 0.0, np.exp(-1000.0)])
    np.testing.assert_allclose(values["p"][0], p, rtol=0, atol=1e-300)
    np.testing.assert_allclose(grads["b"], p - y[0], rtol=0, atol=1e-15)


# ---- gradients against finite differences and PyTorch --------------------------------------------------------
# Reference networks, written once for NumPy and PyTorch through a namespace of the few functions that differ.
# Batches are rows: a layer is z = a @ W.T + b; the loss is the mean over the rows.
NUMPY = SimpleNamespace(
    sigmoid=lambda z: 1 / (1 + np.exp(-z)), tanh=np.tanh,
    logsumexp=lambda z: np.max(z, -1) + np.log(np.sum(np.exp(z - np.max(z, -1, keepdims=True)), -1)),
    rowsum=lambda v: v.sum(-1))


def torch_ops(torch):
    return SimpleNamespace(sigmoid=torch.sigmoid, tanh=torch.tanh,
                           logsumexp=lambda z: torch.logsumexp(z, -1), rowsum=lambda v: v.sum(-1))


def quadratic(ops, out, y):
    return ops.rowsum((out - y) ** 2).mean() / 2


def ref_mlp_sigmoid(ops, p, d):
    a1 = ops.sigmoid(d["x"] @ p["W1"].T + p["b1"])
    return quadratic(ops, ops.sigmoid(a1 @ p["W2"].T + p["b2"]), d["y"])


def ref_softmax_classifier(ops, p, d):
    """-sum(y log softmax(z)) = logsumexp(z) - y.z for one-hot y (an identity, not symbackprop's rewrite)."""
    z2 = ops.tanh(d["x"] @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
    return (ops.logsumexp(z2) - ops.rowsum(d["y"] * z2)).mean()


def ref_skip_connection(ops, p, d):
    a1 = ops.tanh(d["x"] @ p["W1"].T + p["b1"])
    r = ops.tanh(a1 @ p["W2"].T + p["b2"]) + a1
    return quadratic(ops, r @ p["W3"].T + p["b3"], d["y"])


def ref_tied_autoencoder(ops, p, d):
    h = ops.sigmoid(d["x"] @ p["W"].T + p["b"])
    return quadratic(ops, h @ p["W"] + p["c"], d["x"])


NETWORKS = {
    "mlp_sigmoid": ref_mlp_sigmoid,
    "iris": ref_softmax_classifier,
    "digits": ref_softmax_classifier,
    "skip_connection": ref_skip_connection,
    "tied_autoencoder": ref_tied_autoencoder,
}


def random_point(g: Graph, seed: int = 0, batch: int = 5) -> tuple[dict, dict]:
    """Parameters off any symmetric point, and a small batch (one-hot rows for one-hot inputs)."""
    rng = np.random.default_rng(seed)
    params = {q.name: rng.normal(scale=0.5, size=q.shape) for q in g.params}
    data = {}
    for q in g.input_list:
        data[q.name] = (np.eye(q.shape[0])[rng.integers(0, q.shape[0], batch)] if q.onehot
                        else rng.normal(size=(batch,) + q.shape))
    return params, data


def finite_differences(loss, params: dict, name: str, h: float = 1e-3) -> np.ndarray:
    """Fourth-order central differences, (-f(2h) + 8 f(h) - 8 f(-h) + f(-2h)) / 12h: error O(h^4)."""
    out = np.zeros_like(params[name])
    for i in np.ndindex(out.shape):
        f = {}
        for k in (-2, -1, 1, 2):
            shifted = params[name].copy()
            shifted[i] += k * h
            f[k] = loss({**params, name: shifted})
        out[i] = (-f[2] + 8 * f[1] - 8 * f[-1] + f[-2]) / (12 * h)
    return out


def assert_close(got: np.ndarray, expected: np.ndarray, rel: float, what: str) -> None:
    err = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert err <= rel, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("name", NETWORKS)
def test_loss_equals_the_independent_numpy_network(name):
    g = example(name)
    params, data = random_point(g)
    loss, _ = compile_gradient(g).loss_and_grad(params, data)
    assert loss == pytest.approx(NETWORKS[name](NUMPY, params, data), rel=1e-13)


@pytest.mark.parametrize("name", NETWORKS)
def test_gradients_equal_central_finite_differences(name):
    g = example(name)
    params, data = random_point(g)
    _, grads = compile_gradient(g).loss_and_grad(params, data)
    for p in g.params:
        fd = finite_differences(lambda q: NETWORKS[name](NUMPY, q, data), params, p.name)
        assert grads[p.name].shape == p.shape
        assert_close(grads[p.name], fd, 1e-9, f"{name}: dL/d{p.name}")


@pytest.mark.parametrize("name", NETWORKS)
def test_gradients_equal_pytorch_autograd(name):
    torch = pytest.importorskip("torch")
    g = example(name)
    params, data = random_point(g, seed=1)
    _, grads = compile_gradient(g).loss_and_grad(params, data)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    NETWORKS[name](torch_ops(torch), tp, {k: torch.tensor(v) for k, v in data.items()}).backward()
    for p in g.params:
        assert_close(grads[p.name], tp[p.name].grad.numpy(), 1e-12, f"{name}: dL/d{p.name}")


def test_a_deeper_python_api_mlp_matches_pytorch():
    torch = pytest.importorskip("torch")
    sizes = [4, 6, 5, 3]
    g = sigmoid_mlp(sizes)
    params, data = random_point(g, seed=2, batch=7)
    _, grads = compile_gradient(g).loss_and_grad(params, data)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    a = torch.tensor(data["x"])
    for l in range(1, len(sizes)):
        a = torch.sigmoid(a @ tp[f"W{l}"].T + tp[f"b{l}"])
    (((a - torch.tensor(data["y"])) ** 2).sum(-1).mean() / 2).backward()
    for name, t in tp.items():
        assert_close(grads[name], t.grad.numpy(), 1e-12, f"dL/d{name}")


def test_skip_connection_sums_both_paths_into_the_hidden_adjoint():
    d = derive(example("skip_connection"))
    g = d.graph
    accumulate = step(d, "accumulate", "a1")
    assert d.adjoint_value("a1") == Adjoint("L", "r") + matmul(transpose(g.symbol("W2")), Adjoint("L", "z2"))
    assert len(accumulate.forms[-1].terms) == 2


def test_tied_weight_gradient_is_the_decoder_and_encoder_outer_products():
    d = derive(example("tied_autoencoder"))
    g = d.graph
    h, x = g.symbol("h"), g.symbol("x")
    assert d.gradients["W"] == matmul(h, transpose(Adjoint("L", "xhat"))) + matmul(Adjoint("L", "z"), transpose(x))


# ---- every tensor operation, against finite differences of a NumPy loss ---------------------------------------
def sig(z):
    return 1 / (1 + np.exp(-z))


# name: (declare the graph and return the loss expression, the same mean loss in NumPy over a batch)
TENSOR_CASES = {
    "tanh of a matrix product with a matrix input": (
        lambda g: sum_(sp.tanh(g.param("W", (4, 3)) @ g.input("X", (3, 2)))),
        lambda p, d: np.mean(np.sum(np.tanh(p["W"] @ d["X"]), axis=(1, 2)))),
    "row vector times matrix": (
        lambda g: sum_(g.node("r", g.input("x", (3,)).T @ g.param("W", (3, 4))) ** 2),
        lambda p, d: np.mean(np.sum((d["x"] @ p["W"]) ** 2, 1))),
    "outer product": (
        lambda g: sum_(sp.tanh(g.param("u", (2,)) @ g.input("x", (3,)).T)),
        lambda p, d: np.mean(np.sum(np.tanh(p["u"][None, :, None] * d["x"][:, None, :]), axis=(1, 2)))),
    "scalar times vector": (
        lambda g: sum_(sigmoid(g.param("s") * g.input("x", (3,)) + g.param("v", (3,)))),
        lambda p, d: np.mean(np.sum(sig(p["s"] * d["x"] + p["v"]), 1))),
    "mean, relu, softplus, logsumexp": (
        lambda g: mean(relu(g.node("h", softplus(g.param("W", (2, 3)) @ g.input("x", (3,)))) - 0.3))
        + logsumexp(g.symbol("h")),
        lambda p, d: np.mean(np.mean(np.maximum(np.logaddexp(0, d["x"] @ p["W"].T) - 0.3, 0), 1)
                             + np.log(np.sum(np.exp(np.logaddexp(0, d["x"] @ p["W"].T)), 1)))),
    "cross-entropy with labels that are not one-hot": (
        lambda g: -sum_(g.input("y", (3,)) * sp.log(softmax(g.input("x", (3,)) + g.param("b", (3,))))),
        lambda p, d: np.mean(-np.sum(d["y"] * ((d["x"] + p["b"]) - np.log(np.sum(np.exp(d["x"] + p["b"]), 1,
                                                                                   keepdims=True))), 1))),
    "sum of a matrix product with a matrix input": pytest.param(
        lambda g: sum_(g.param("W", (2, 3)) @ g.input("X", (3, 2))),
        lambda p, d: np.mean(np.sum(p["W"] @ d["X"], axis=(1, 2)))),
    "sum of W.T @ W": pytest.param(
        lambda g: sum_(g.param("W", (3, 2)).T @ g.symbol("W")),
        lambda p, d: np.sum(p["W"].T @ p["W"])),
    "sum of W @ x": pytest.param(
        lambda g: sum_(g.param("W", (2, 3)) @ g.input("x", (3,))),
        lambda p, d: np.mean(np.sum(d["x"] @ p["W"].T, 1))),
    "sum of a node z = W @ x": pytest.param(
        lambda g: sum_(g.node("z", g.param("W", (2, 3)) @ g.input("x", (3,)))),
        lambda p, d: np.mean(np.sum(d["x"] @ p["W"].T, 1))),
    "sum of (W.T @ W) @ x": pytest.param(
        lambda g: sum_((g.param("W", (3, 2)).T @ g.symbol("W")) @ g.input("x", (2,))),
        lambda p, d: np.mean(np.sum(d["x"] @ (p["W"].T @ p["W"]).T, 1))),
    "sigmoid of W.T @ x, batch as large as the output": pytest.param(
        lambda g: sum_(sigmoid(g.param("W", (3, 3)).T @ g.input("x", (3,)))),
        lambda p, d: np.mean(np.sum(sig(d["x"] @ p["W"]), 1))),
}


@pytest.mark.parametrize("build, reference", TENSOR_CASES.values(), ids=list(TENSOR_CASES))
def test_tensor_operation_gradients_equal_finite_differences(build, reference):
    g = Graph("tensor case")
    g.loss("L", build(g))
    rng = np.random.default_rng(3)
    params = {q.name: rng.normal(scale=0.5, size=q.shape) for q in g.params}
    data = {q.name: rng.normal(size=(3,) + q.shape) for q in g.input_list}
    loss, grads = compile_gradient(g).loss_and_grad(params, data)
    assert loss == pytest.approx(reference(params, data), rel=1e-13)
    for p in g.params:
        assert np.shape(grads[p.name]) == p.shape, p.name
        fd = finite_differences(lambda q: reference(q, data), params, p.name)
        assert_close(np.asarray(grads[p.name]), fd, 1e-9, f"dL/d{p.name}")


# ---- shape errors ---------------------------------------------------------------------------------------------
def declare(build):
    g = Graph("shapes")
    with pytest.raises(ModelError) as info:
        build(g)
    return str(info.value)


def test_matrix_times_vector_of_the_wrong_size_names_the_node_and_both_shapes():
    message = declare(lambda g: g.node("z", g.param("W", (4, 3)) @ g.input("x", (5,))))
    assert message.startswith("node 'z': matrix product")
    assert "(4, 3)" in message and "(5,)" in message


def test_adding_vectors_of_different_lengths_names_the_node_and_both_shapes():
    message = declare(lambda g: g.node("z", g.input("x", (3,)) + g.param("b", (4,))))
    assert message.startswith("node 'z': shape mismatch") and "(3,)" in message and "(4,)" in message


def test_softmax_of_a_matrix_is_refused_naming_its_shape():
    message = declare(lambda g: g.node("p", softmax(g.input("M", (2, 3)))))
    assert message.startswith("node 'p':") and "needs a vector" in message and "(2, 3)" in message


def test_a_vector_loss_is_refused_naming_its_shape():
    message = declare(lambda g: g.loss("L", g.input("x", (3,)) * g.param("b", (3,))))
    assert message.startswith("loss 'L': the loss must be a scalar") and "(3,)" in message


MODEL = """
[inputs]
x = {{ shape = [3] }}
[params]
W = {{ shape = [4, 3] }}
b = {{ shape = [4] }}
[nodes]
z = "{z}"
[loss]
L = "{loss}"
"""


@pytest.mark.parametrize("z, loss, where, shapes", [
    ("W @ W", "sum(z)", "[nodes] z", ["(4, 3)"]),
    ("W.T @ x", "sum(z)", "[nodes] z", ["(3, 4)", "(3,)"]),
    ("W @ x + x", "sum(z)", "[nodes] z", ["(3,)", "(4,)"]),
    ("W @ x + b", "z", "[loss] L", ["(4,)"]),
    ("W @ x + b", "sum(softmax(W))", "[loss] L", ["(4, 3)"]),
])
def test_shape_errors_in_a_model_file_name_the_file_the_entry_and_the_shapes(z, loss, where, shapes):
    with pytest.raises(ModelError) as info:
        parse_model(MODEL.format(z=z, loss=loss), "net.toml")
    message = str(info.value)
    assert message.startswith(f"net.toml: {where}: ") and "\n" not in message
    for shape in shapes:
        assert shape in message


def test_cli_reports_a_shape_error_in_one_line(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text(MODEL.format(z="W @ W", loss="sum(z)"))
    result = CliRunner().invoke(main, ["derive", str(path)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"Error: {path}: [nodes] z: matrix product") and "Traceback" not in result.output


# ---- LaTeX for vectors and matrices ------------------------------------------------------------------------------
def test_latex_writes_vectors_and_matrices_bold_with_top_and_odot(mlp):
    text = mlp.to("latex")
    assert r"\mathbf{W}_{2}^{\top}" in text and r"\mathbf{a}_{1}^{\top}" in text and r"\odot" in text
    assert r"\mathbf{b}_{1}" in text and r"\mathbf{x}^{\top}" in text
    bare = re.sub(r"\\[A-Za-z]+", "", re.sub(r"\\mathbf\{[A-Za-z]\}", "", text))
    assert re.findall("[Wbxyaz]", bare) == []  # every vector and matrix symbol is bold
    scalar = derive(load_model(EXAMPLES / "neuron.toml").graph).to("latex")
    assert r"\mathbf" not in scalar and r"\odot" not in scalar and r"\top" not in scalar


def test_latex_shapes_show_real_spaces_of_matrices_vectors_and_scalars():
    text = CliRunner().invoke(main, ["derive", str(EXAMPLES / "mlp_sigmoid.toml"), "--shapes"]).output
    lines = {line.split(" = ")[0]: line for line in text.splitlines()}
    assert lines[r"\frac{\partial L}{\partial \mathbf{W}_{1}}"].endswith(r"\quad \in \mathbb{R}^{4 \times 3}")
    assert lines[r"\frac{\partial L}{\partial \mathbf{z}_{1}}"].endswith(r"\quad \in \mathbb{R}^{4}")
    assert lines[r"\frac{\partial L}{\partial \mathbf{W}_{2}}"].endswith(r"\quad \in \mathbb{R}^{2 \times 4}")
    logistic = CliRunner().invoke(main, ["derive", str(EXAMPLES / "breast_cancer.toml"), "--shapes"]).output
    assert r"\frac{\partial L}{\partial z} = \sigma(z) - y \quad \in \mathbb{R}" + "\n" in logistic


def test_the_gradient_of_a_dot_product_weight_is_written_as_the_error_times_the_input():
    d = derive(example("breast_cancer"))
    g = d.graph
    assert d.gradients["w"] == Adjoint("L", "z") * g.symbol("x")
    assert latex_lines(d)[("param", "w")] == (r"\frac{\partial L}{\partial \mathbf{w}} = "
                                              r"\frac{\partial L}{\partial z} \mathbf{x}")
