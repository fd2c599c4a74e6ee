"""Specification: matrices with a side of size 1, and the canonical shapes the derivation computes with.

A quantity declared ``(n, 1)`` is the column vector ``(n,)``, one declared ``(1,)`` or ``(1, 1)`` is a
scalar, and a 1 x 1 matrix product is a scalar; arrays in and out of the generated code keep their
declared shapes. These are the cases where the random-graph properties found bugs 2 and 4-8
(docs/testing.md).
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symbackprop import Graph, compile_gradient, derive, softmax, sum_
from symbackprop.tensor import canonical_shape, matrix_shape
from symbackprop.train import accuracy, train
from symbackprop.verify import verify_gradients


@pytest.mark.parametrize("declared, matrix, canonical", [
    ((), (1, 1), ()), ((1,), (1, 1), ()), ((1, 1), (1, 1), ()), ((3,), (3, 1), (3,)), ((3, 1), (3, 1), (3,)),
    ((1, 3), (1, 3), (1, 3)), ((2, 3), (2, 3), (2, 3)),
])
def test_every_shape_is_a_matrix_with_one_canonical_shape(declared, matrix, canonical):
    assert matrix_shape(declared) == matrix
    assert canonical_shape(declared) == canonical


def bottleneck() -> Graph:
    """3 -> 1 -> 3: a width-one layer between a row matrix W1 [1, 3] and a column matrix W2 [3, 1]."""
    g = Graph("bottleneck")
    x, y = g.input("x", (3,)), g.input("y", (3,))
    W1, W2, b = g.param("W1", (1, 3)), g.param("W2", (3, 1)), g.param("b", (1,))
    h = g.node("h", sp.tanh(W1 @ x) + b)
    r = g.node("r", W2 @ h)
    g.loss("L", sum_((r - y) ** 2) / 2)
    return g


def bottleneck_by_hand(W1, W2, b, x, y):
    """The same network written with NumPy arrays of the declared shapes, and its backprop by hand."""
    z = x @ W1.T                        # (N, 1)
    h = np.tanh(z) + b                  # (N, 1)
    r = h @ W2.T                        # (N, 3)
    loss = np.mean(np.sum((r - y) ** 2, axis=1) / 2)
    dr = (r - y) / len(x)
    dh = dr @ W2                        # (N, 1)
    dz = dh * (1 - np.tanh(z) ** 2)
    return loss, {"W1": dz.T @ x, "W2": dr.T @ h, "b": dh.sum(axis=0)}


def test_a_width_one_layer_has_scalar_nodes_and_its_gradients_in_the_declared_shapes():
    g = bottleneck()
    assert (g["h"].shape, g["r"].shape) == ((), (3,))
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(1, 3)), "W2": rng.normal(size=(3, 1)), "b": rng.normal(size=(1,))}
    data = {"x": rng.normal(size=(5, 3)), "y": rng.normal(size=(5, 3))}
    loss, grads = compile_gradient(g).loss_and_grad(params, data)
    expected_loss, expected = bottleneck_by_hand(params["W1"], params["W2"], params["b"], data["x"], data["y"])
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for name in expected:
        assert grads[name].shape == params[name].shape
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-12, atol=1e-14)


def test_the_forward_values_of_a_width_one_layer_have_a_batch_axis_and_the_canonical_shape():
    rng = np.random.default_rng(1)
    params = {"W1": rng.normal(size=(1, 3)), "W2": rng.normal(size=(3, 1)), "b": np.zeros(1)}
    values = compile_gradient(bottleneck()).forward(params, {"x": rng.normal(size=(4, 3)), "y": np.zeros((4, 3))})
    assert {k: v.shape for k, v in values.items()} == {"h": (4,), "r": (4, 3), "L": (4,)}


def test_verify_passes_on_a_width_one_layer_and_training_keeps_the_declared_shapes():
    g = bottleneck()
    report = verify_gradients(g, seed=3, use_torch=False)
    assert report.ok, str(report)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 3))
    y = np.tanh(x @ np.array([[0.5, -1.0, 0.3]]).T) @ np.array([[1.0, -2.0, 0.5]])
    start = {"W1": rng.normal(size=(1, 3)), "W2": rng.normal(size=(3, 1)), "b": np.zeros(1)}
    result = train(g, {"x": x, "y": y}, lr=0.1, epochs=30, params=start)
    assert {k: v.shape for k, v in result.params.items()} == {"W1": (1, 3), "W2": (3, 1), "b": (1,)}
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_the_python_api_chains_matrix_products_of_tensor_operations():
    """Bug 8: ``x.T @ (W @ x)`` raised TypeError (a matrix product had no ``@`` of its own)."""
    g = Graph("quadratic form")
    x, y = g.input("x", (2,)), g.input("y")
    W = g.param("W", (2, 2))
    q = g.node("q", x.T @ (W @ x))
    p = g.node("p", (W @ x).T @ x + (W @ x).T.T.T @ (x.T).T)
    g.loss("L", (q + p - y) ** 2 / 2)
    assert g["q"].shape == () and g["p"].shape == ()
    rng = np.random.default_rng(3)
    W0, xs, ys = rng.normal(size=(2, 2)), rng.normal(size=(6, 2)), rng.normal(size=6)
    _, grads = compile_gradient(g).loss_and_grad({"W": W0}, {"x": xs, "y": ys})
    # L = (3 x^T W x - y)^2 / 2, so dL/dW = mean of 3 (3 x^T W x - y) x x^T
    residual = 3 * np.einsum("ni,ij,nj->n", xs, W0, xs) - ys
    expected = 3 * np.einsum("n,ni,nj->ij", residual, xs, xs) / len(xs)
    np.testing.assert_allclose(grads["W"], expected, rtol=1e-12)


def test_softmax_of_a_single_class_is_one_and_its_cross_entropy_has_zero_gradient():
    g = Graph("one class")
    x, y = g.input("x", (3,)), g.input("y", (1,), onehot=True)
    W = g.param("W", (1, 3))
    z = g.node("z", W @ x)
    g.loss("L", -sum_(y * sp.log(softmax(z))))
    compiled = compile_gradient(g)
    rng = np.random.default_rng(4)
    params, data = {"W": rng.normal(size=(1, 3))}, {"x": rng.normal(size=(5, 3)), "y": np.ones((5, 1))}
    loss, grads = compiled.loss_and_grad(params, data)
    assert loss == 0.0
    np.testing.assert_array_equal(grads["W"], np.zeros((1, 3)))
    report = verify_gradients(g, seed=0, use_torch=False)
    assert report.ok, str(report)


def test_a_one_element_target_is_scored_by_threshold_whatever_its_declared_shape():
    values = {"a": np.array([0.9, 0.2, 0.7, 0.4])}
    data = {"y": np.array([[1.0], [0.0], [0.0], [0.0]])}
    assert accuracy(values, data, "a", "y") == 0.75


def test_a_declared_column_prints_as_a_column_in_latex_and_computes_as_a_vector():
    g = Graph("column")
    x, y = g.input("x", (3,)), g.input("y")
    w = g.param("w", (3, 1))
    g.loss("L", (x.T @ w - y) ** 2 / 2)
    latex = derive(g).to("latex")
    assert r"\frac{\partial L}{\partial \mathbf{w}}" in latex
    source = compile_gradient(g).source
    assert 'w = arrays["w"].reshape((3,))' in source
    assert '"w": np.reshape(dL_dw, (3, 1))' in source


# ---- a sum whose tensor terms cancel keeps the shape the user wrote ------------------------------------------
def _cancelling_model(loss: str, nodes: str = "") -> "Model":
    from symbackprop.modelfile import parse_model
    return parse_model(f'[inputs]\nx = {{ shape = [3] }}\n[params]\nb = {{}}\nW = {{ shape = [2, 3] }}\n'
                       f'[nodes]\n{nodes}\n[loss]\nL = "{loss}"', "cancel.toml")


def test_a_vector_expression_whose_vector_terms_cancel_is_still_a_vector():
    """SymPy makes (x + b) - x the scalar b; the user wrote a vector of three b's, whose sum is 3b."""
    graph = _cancelling_model("sum((x + b) - x)").graph
    loss, grads = compile_gradient(graph).loss_and_grad({"b": 0.7, "W": np.zeros((2, 3))}, {"x": np.ones((4, 3))})
    assert loss == pytest.approx(2.1, rel=1e-15)
    assert grads["b"] == pytest.approx(3.0, rel=1e-15)


def test_a_stable_rewrite_that_cancels_the_vector_terms_keeps_the_vector():
    """log(softmax(x)) - x is -logsumexp(x) in every element (bug 18: the rewrite made it a scalar, and
    W @ h then failed with a shape error); W @ h sums W's rows times that value."""
    graph = _cancelling_model("sum(W @ h)", 'h = "log(softmax(x)) - x"').graph
    assert graph["h"].shape == (3,)
    rng = np.random.default_rng(0)
    W, x = rng.normal(size=(2, 3)), rng.normal(size=(5, 3))
    loss, grads = compile_gradient(graph).loss_and_grad({"b": 0.0, "W": W}, {"x": x})
    lse = np.log(np.sum(np.exp(x), axis=1))
    assert loss == pytest.approx(float(np.mean(-lse * W.sum())), rel=1e-12)
    np.testing.assert_allclose(grads["W"], np.full((2, 3), -lse.mean()), rtol=1e-12)
