"""The batched NumPy printer and the gradient program: the code patterns that make generated code as fast
as hand-written NumPy, numbers against an independent hand-written backprop, and the op counts that show
the gradient program costs a small constant times the function and grows linearly with depth.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symbackprop import Graph, derive, sigmoid
from symbackprop.codegen import generate_module
from symbackprop.compile import compile_gradient
from symbackprop.tensor import softmax, sum_


def seed() -> Graph:
    g = Graph("seed")
    x, y = g.inputs("x y")
    w, b = g.param("w"), g.param("b")
    a = g.node("a", sigmoid(g.node("z", w * x + b)))
    g.loss("L", (a - y) ** 2 / 2)
    return g


def tanh_mlp(sizes: list[int], loss: str = "quadratic") -> Graph:
    """tanh layers; "xent" ends in softmax with cross-entropy, "quadratic" in L = sum((a - y)**2) / 2."""
    g = Graph(f"tanh MLP {sizes} {loss}")
    a = g.input("x", (sizes[0],))
    y = g.input("y", (sizes[-1],), onehot=loss == "xent")  # one-hot: sum(y) = 1, so dL/dz = p - y
    for l, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), 1):
        z = g.node(f"z{l}", g.param(f"W{l}", (n_out, n_in)) @ a + g.param(f"b{l}", (n_out,)))
        if l == len(sizes) - 1 and loss == "xent":
            g.loss("L", -sum_(y * sp.log(g.node("p", softmax(z)))))
            return g
        a = g.node(f"a{l}", sp.tanh(z))
    g.loss("L", sum_((a - y) ** 2) / 2)
    return g


def user_source(graph: Graph) -> str:
    """The module as ``symbackprop codegen --no-block`` writes it for a user (without the test suite's shape
    checks): the printer's patterns, one line per assignment over the whole batch (the blocked form writes
    the same expressions in place, block by block: tests/test_blocked.py)."""
    return generate_module(derive(graph).program(), check_shapes=False, blocked=False)


def lines(source: str) -> set[str]:
    """The code lines of the generated ``loss_and_grad``, stripped."""
    body = source.split("def loss_and_grad", 1)[1]
    return {line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")}


# ---- the patterns of batched matrix code ---------------------------------------------------------------
@pytest.fixture(scope="module")
def two_layer_source() -> str:
    return user_source(tanh_mlp([5, 4, 3], "xent"))


def test_a_layer_over_the_batch_is_one_matrix_product_with_the_weight_transposed(two_layer_source):
    assert "z1 = x @ W1.T + b1" in lines(two_layer_source)
    assert "z2 = a1 @ W2.T + b2" in lines(two_layer_source)


def test_a_weight_gradient_is_one_product_of_the_error_and_the_input_reduced_over_the_batch(two_layer_source):
    assert "dL_dW1 = (dL_dz1.T @ x)/N" in lines(two_layer_source)
    assert "dL_dW2 = (dL_dz2.T @ a1)/N" in lines(two_layer_source)


def test_the_error_flows_back_through_the_weight_without_a_transpose(two_layer_source):
    assert "dL_da1 = dL_dz2 @ W2" in lines(two_layer_source)


def test_the_backward_pass_reuses_forward_values_instead_of_recomputing_them(two_layer_source):
    code = lines(two_layer_source)
    assert "dL_dz1 = dL_da1*(1 - a1**2)" in code        # tanh'(z1) from a1, not np.tanh(z1) again
    assert "dL_dz2 = p - y" in code                     # softmax from p, not _softmax(z2) again
    backward = two_layer_source.split("# backward pass", 1)[1]
    assert "np.tanh" not in backward and "_softmax" not in backward


def test_a_scalar_gradient_is_a_dot_product_over_the_batch():
    code = lines(user_source(seed()))
    assert 'dL_dw = np.einsum("i,i->", dL_dz, x)/N' in code   # not dL_dz @ x: multithreaded BLAS
    assert "dL_dz = dL_da*a*(1 - a)" in code
    assert "t0 = a - y" in code and "dL_da = t0" in code   # a - y computed once, for the loss and dL/da


# ---- numbers against a hand-written backprop ----------------------------------------------------------
def test_each_array_is_deleted_after_its_last_use_and_the_results_are_kept(two_layer_source):
    body = two_layer_source.split("def loss_and_grad", 1)[1]
    code = [line.strip() for line in body.splitlines()]
    assert "del z1" in code[code.index("a1 = np.tanh(z1)") + 1]
    deleted = {n.strip() for line in code if line.startswith("del ") for n in line[4:].split(",")}
    assert {"z1", "a1", "p", "dL_dz1", "dL_dz2"} <= deleted
    assert not deleted & {"L", "dL_dW1", "dL_db1", "dL_dW2", "dL_db2"}   # the loss and the gradients


def test_row_and_matrix_products_print_as_numpy_matrix_products():
    g = Graph("rows")
    x, t = g.input("x", (3,)), g.input("t")
    r, M, c = g.param("r", (1, 3)), g.param("M", (3, 3)), g.param("c", (3, 1))
    u = g.node("u", r @ M)
    g.loss("L", (sp.tanh(u @ x) + x.T @ c - t) ** 2 / 2)
    code = lines(user_source(g))
    assert "u = r @ M" in code                       # (1, 3) @ (3, 3), no batch axis
    assert "t1 = np.tanh(x @ u[0])" in code          # a row times a batch of columns: (N, 3) @ (3,)
    assert "dL_dr = np.sum(dL_du @ M.T, axis=0)/N" in code
    assert 'c = arrays["c"].reshape((3,))' in code


def reference_xent(p: dict, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """The textbook four equations for a tanh + softmax cross-entropy network, written in NumPy here."""
    N = x.shape[0]
    a1 = np.tanh(x @ p["W1"].T + p["b1"])
    z2 = a1 @ p["W2"].T + p["b2"]
    logp = z2 - z2.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    d2 = (np.exp(logp) - y) / N
    d1 = (d2 @ p["W2"]) * (1 - a1 ** 2)
    return -float(np.sum(y * logp)) / N, {"W1": d1.T @ x, "b1": d1.sum(0), "W2": d2.T @ a1, "b2": d2.sum(0)}


def test_generated_mlp_gradient_equals_a_hand_written_backprop():
    rng = np.random.default_rng(3)
    sizes, N = [6, 5, 4], 11
    params = {}
    for l, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), 1):
        params[f"W{l}"], params[f"b{l}"] = rng.normal(size=(n_out, n_in)), rng.normal(size=n_out)
    x, y = rng.normal(size=(N, 6)), np.eye(4)[rng.integers(0, 4, N)]
    loss, grads = compile_gradient(tanh_mlp(sizes, "xent")).loss_and_grad(params, {"x": x, "y": y})
    ref_loss, ref_grads = reference_xent(params, x, y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name, value in ref_grads.items():
        assert grads[name].shape == value.shape
        np.testing.assert_allclose(grads[name], value, rtol=1e-10, atol=1e-14)


# ---- op counts: the cheap-gradient principle and linear growth ----------------------------------------------
@pytest.fixture(scope="module")
def mlp_programs():
    return {depth: derive(tanh_mlp([4] * (depth + 1))).program() for depth in (4, 8, 16, 32, 64)}


def backward_ops(program) -> int:
    return program.op_count("backward") + program.op_count("gradient")


def test_the_gradient_costs_at_most_five_times_the_forward_pass_at_any_depth(mlp_programs):
    for depth, program in mlp_programs.items():
        forward = program.op_count("forward")
        assert forward > 0
        assert backward_ops(program) <= 5 * forward, (depth, forward, backward_ops(program))


def test_the_gradient_program_grows_linearly_with_depth(mlp_programs):
    total = {depth: p.op_count() for depth, p in mlp_programs.items()}
    for depth in (8, 16, 32, 64):
        assert 1.8 <= total[depth] / total[depth // 2] <= 2.2, total
    per_layer = [total[d] / d for d in total]
    assert max(per_layer) / min(per_layer) < 1.3, total


def test_an_elementwise_product_with_a_matrix_product_keeps_its_brackets():
    """Bug 10: ``v * (W @ x)`` was printed ``v*x @ W.T``, which Python reads as ``(v*x) @ W.T``."""
    g = Graph("gate")
    x, v = g.input("x", (3,)), g.input("v", (3,))
    W = g.param("W", (3, 3))
    g.node("h", v * (W @ x))
    g.loss("L", sum_(g.symbol("h")))
    compiled = compile_gradient(g, blocked=False)
    assert "h = v*(x @ W.T)" in lines(compiled.source)
    rng = np.random.default_rng(0)
    W0, xs, vs = rng.normal(size=(3, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    loss, grads = compiled.loss_and_grad({"W": W0}, {"x": xs, "v": vs})
    assert loss == pytest.approx(np.mean(np.sum(vs * (xs @ W0.T), axis=1)), rel=1e-12)
    np.testing.assert_allclose(grads["W"], vs.T @ xs / 4, rtol=1e-12)


def test_an_index_binds_to_the_whole_operand_it_is_appended_to():
    """Bugs 12 and 13: ``t0**(3/2)[:, None]`` indexed the exponent, ``2*t0 - 2*y[:, :, None]`` indexed y."""
    g = Graph("normalised")
    x, w = g.input("x", (3,)), g.param("w", (3,))
    h = g.node("h", w * x)
    g.loss("L", sum_(h / sp.sqrt(sum_(h * h))))
    assert "(t0**(3/2))[:, None]" in user_source(g)
    g = Graph("sum of weights")
    x, y = g.input("x", (3,)), g.input("y", (3,))
    W, U = g.param("W", (3, 3)), g.param("U", (3, 3))
    g.loss("L", sum_((sp.tanh((W + U) @ x) - y) ** 2))
    code = lines(user_source(g))
    assert "t0 = np.tanh(x @ (U + W).T)" in code
    assert "t2 = (t1*(2 - 2*t0**2))[:, :, None]*x[:, None, :]" in code
