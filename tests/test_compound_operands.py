"""The networks of issue 10, each checked at batch sizes 1, each of its sides and a prime above every side.

Before the printer bracketed from the tree (docs/testing.md, bugs 12 and 13), a fractional or symbolic
power of a per-sample scalar used against a vector crashed (``t0**(3/2)[:, None]``), and a matrix product
whose operand was not a single name gave wrong numbers at N = 1 or N = a side and crashed at other N
(``2*t0 - 2*y[:, :, None]*x[:, None, :]``). Each test checks the loss against an independent per-sample
evaluation, and the gradient (in each parameter's declared shape) against finite differences and PyTorch
autograd, with the generated code shape-checked (tests/conftest.py).
"""
from __future__ import annotations

import pytest

from network_checks import assert_matches_reference_and_torch, spec_of

X3, Y3 = ("input", "x", (3,)), ("input", "y", (3,))


# ---- powers of a per-sample scalar against a vector: normalisations ------------------------------------------
@pytest.mark.parametrize("loss", [
    "sum(h/sqrt(sum(h*h)))",                                          # the model: L2-normalise
    "sum((h/sqrt(sum(h*h)) - y)**2)",                                 # L2-normalise, fitted
    "sum(((h - mean(h))/sqrt(mean((h - mean(h))**2) + 1e-5) - y)**2)",  # layer norm
    "sum((h/sqrt(mean(h**2) + 1e-5) - y)**2)",                        # RMSNorm
    "(sum(h*y)/(sqrt(sum(h*h))*sqrt(sum(y*y))) - 1)**2",              # cosine similarity
    "(sum(h*y)/sqrt(sum(h*h)*sum(y*y)) - 1)**2",                      # the same, one sqrt
], ids=["l2-sum", "l2", "layer-norm", "rms-norm", "cosine", "cosine-one-sqrt"])
def test_a_normalised_vector_is_exact(loss):
    assert_matches_reference_and_torch(spec_of([X3, ("param", "w", (3,)), Y3], [("h", "w*x")], loss))


def test_a_vector_divided_by_a_parameter_power_of_a_per_sample_scalar_is_exact():
    """x / s**c with s a per-sample scalar (here a squared norm, so positive) and c a parameter."""
    assert_matches_reference_and_torch(spec_of(
        [X3, ("param", "w", (3,)), ("param", "c", ()), Y3],
        [("s", "sum(x*x) + 1/10"), ("h", "w*x/s**c")], "sum((h - y)**2)"))


def test_a_per_sample_scalar_to_a_fractional_power_scales_a_matrix():
    assert_matches_reference_and_torch(spec_of(
        [X3, ("param", "W", (3, 3)), ("input", "s", ()), Y3],
        [("M", "W/(s**2 + 1)**(3/2)")], "sum((tanh(matmul(M, x)) - y)**2)"))


# ---- matrix products whose operands are expressions ----------------------------------------------------------
def test_a_sum_of_weights_times_a_vector_is_exact():
    """The issue's model: sum((tanh((W + U) @ x) - y)**2)."""
    assert_matches_reference_and_torch(spec_of(
        [X3, Y3, ("param", "W", (3, 3)), ("param", "U", (3, 3))], [], "sum((tanh(matmul(W + U, x)) - y)**2)"))


@pytest.mark.parametrize("layer", [
    "matmul(matmul(A, B), x)",              # LoRA: (A @ B) @ x
    "matmul(W, x) + matmul(matmul(A, B), x)",
    "matmul(tanh(matmul(A, B)), x)",        # tanh(U @ V) @ x
    "matmul(matmul(2*A, B), x)",            # (2*U) @ V @ x
    "matmul(A, matmul(B, x/2 + 1))",        # U @ (V @ (x/2 + 1))
    "matmul(transpose(W + matmul(A, B)), x**2)",
], ids=["lora", "w-plus-lora", "tanh-of-product", "scaled-product", "compound-vector", "transposed-sum"])
@pytest.mark.parametrize("loss", ["sum((tanh({}) - y)**2)", "sum(({} - y)**2)/2"], ids=["tanh", "linear"])
def test_a_matrix_product_of_expressions_is_exact(layer, loss):
    """Written inline in the loss, as in the issue: the adjoint of the product is then an expression too."""
    assert_matches_reference_and_torch(spec_of(
        [X3, Y3, ("param", "W", (3, 3)), ("param", "A", (3, 2)), ("param", "B", (2, 3))], [], loss.format(layer)))


@pytest.mark.parametrize("outer", ["matmul(u + x, transpose(x))", "matmul(x/2, transpose(v))",
                                   "matmul(x**2, transpose(v))", "matmul(tanh(b*x), transpose(v - b))"],
                         ids=["sum-outer", "half-outer", "square-outer", "function-outer"])
def test_a_hadamard_product_with_an_outer_product_of_expressions_is_exact(outer):
    """W * ((u + x) @ x.T), (x/2) @ v.T, (x**2) @ v.T: outer products of compound vectors, elementwise with W."""
    assert_matches_reference_and_torch(spec_of(
        [X3, ("input", "v", (3,)), ("param", "u", (3,)), ("param", "b", (3,)), ("param", "W", (3, 3))],
        [("h", f"W*{outer}")], "sum(h)"))
