"""Properties every derivation must have, on random networks (see docs/testing.md).

For random scalar networks and random vector/matrix networks drawn as users write them (:mod:`strategies`),
at random parameters and random data, each at the network's batch sizes (1, one of its sides, and a prime
larger than every side), with the generated code shape-checked (tests/conftest.py):

* the compiled forward pass (every node and the loss) equals an independent NumPy evaluation of the
  network's expressions, so finite differences below difference the *right* function;
* the compiled gradient equals 4th-order central finite differences of the compiled forward loss;
* it equals PyTorch autograd of an independent PyTorch evaluation (when torch is installed);
* the standalone module written by codegen, imported from a file, gives the same floats as the
  compiled callable;
* on small scalar networks, the expanded symbolic gradient equals ``sympy.diff`` of the flattened loss,
  compared exactly at random rational points (40 significant digits).

Points where finite differences cannot be trusted are rejected, never passed with a wider tolerance:
an argument within ``KINK_MARGIN`` of a kink (relu, abs, leaky_relu, elu, ties of maximum/minimum, bounds
of clip), values beyond ``LARGEST``, or two step sizes that disagree (an ill-conditioned point). Hypothesis counts each rejection as an event.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

from network_checks import (FD_TOL, assert_close, assert_matches_reference_and_torch, check_against_torch,
                            check_finite_differences, check_forward_pass, check_module_file,
                            finite_difference_gradients, spec_of)
from strategies import Decl, GraphSpec, scalar_graphs, tensor_graphs
from symbackprop.compile import compile_gradient
from symbackprop.derive import derive
from symbackprop.functions import relu, step

#: vector and matrix sizes from 1 (size-1 sides found bugs 2, 5, 6 and 7 of docs/testing.md).
GRAPHS = {"scalar": scalar_graphs(), "tensor": tensor_graphs()}
family = pytest.mark.parametrize("family", sorted(GRAPHS))
#: networks per numeric property test: the profile's count, at least 100 (in the default profile, 40 found a
#: printer that brackets by looking at the text in about 3 runs of 4; 100 in 19 of 20, docs/testing.md)
EXAMPLES = max(100, settings.default.max_examples)
numeric_property = settings(max_examples=EXAMPLES)


# ---- properties --------------------------------------------------------------------------------------
@family
@numeric_property
@given(data=st.data())
def test_compiled_forward_pass_equals_an_independent_evaluation(family, data):
    check_forward_pass(data.draw(GRAPHS[family], label="network"))


@family
@numeric_property
@given(data=st.data())
def test_compiled_gradient_equals_finite_differences_of_the_forward_loss(family, data):
    check_finite_differences(data.draw(GRAPHS[family], label="network"))


@family
@numeric_property
@given(data=st.data())
def test_compiled_gradient_equals_pytorch_autograd(family, data):
    check_against_torch(data.draw(GRAPHS[family], label="network"))


@family
@numeric_property
@given(data=st.data())
def test_generated_module_file_gives_the_same_floats_as_the_compiled_callable(family, data):
    check_module_file(data.draw(GRAPHS[family], label="network"))


def flattened_loss(spec: GraphSpec) -> sp.Expr:
    """The spec's loss with every node substituted: the one expression sympy.diff differentiates."""
    values: dict[sp.Symbol, sp.Expr] = {}
    for name, expr in spec.nodes:
        values[spec.symbol(name)] = expr.xreplace(values)
    return spec.loss.xreplace(values)


def rational_point(spec: GraphSpec, rng: np.random.Generator) -> dict[str, sp.Rational]:
    return {d.name: sp.Rational(int(rng.integers(-60, 61)), int(rng.integers(23, 41))) for d in spec.decls}


def exact_value(expr: sp.Expr, point: dict[str, sp.Rational]) -> sp.Float:
    """``expr`` at ``point`` (matched by name), to 40 significant digits.

    The functions are first written in SymPy's own terms, which it evaluates to any precision: sigmoid
    and softplus as exp/log, relu as Max, step as a Piecewise (``softplus(0)`` or ``relu(1/(1 + exp(2)))``
    would otherwise stay unevaluated).
    """
    exact = expr.xreplace({s: point[s.name] for s in expr.free_symbols}).rewrite(sp.exp)
    exact = exact.replace(relu, lambda a: sp.Max(a, 0))
    exact = exact.replace(step, lambda a: sp.Piecewise((1, a > 0), (0, True)))
    return sp.N(exact, 40)


@given(spec=scalar_graphs(max_nodes=3))
def test_expanded_gradient_equals_sympy_diff_of_the_flattened_loss(spec):
    derivation = derive(spec.build())
    loss = flattened_loss(spec)
    rng = np.random.default_rng(spec.seed)
    points = [rational_point(spec, rng) for _ in range(3)]
    for d in spec.of_kind("param"):
        ours = derivation.expanded(d.name)
        assert ours.free_symbols <= {derivation.graph.symbol(q.name) for q in
                                     derivation.graph.params + derivation.graph.input_list}
        expected = sp.diff(loss, spec.symbol(d.name))
        for point in points:
            a, b = exact_value(ours, point), exact_value(expected, point)
            # A Float in either form (leaky_relu's slope 0.01) means SymPy has already done arithmetic on
            # 15-digit coefficients (3*0.99 is 2.97 rounded to a double), and the two forms round differently:
            # they can agree only to double precision. With exact numbers only, they must agree exactly.
            floats = ours.has(sp.Float) or expected.has(sp.Float)
            assert abs(a - b) <= sp.Float("1e-14" if floats else "1e-30") * max(1, abs(b)), (
                f"dL/d{d.name} at {point}: expanded {ours} = {a}, sympy.diff gives {expected} = {b}")


# ---- bugs the properties found, fixed: their minimal networks as plain regression tests ------------------
def test_forward_gives_every_node_a_batch_axis_even_when_no_input_reaches_it():
    """Bug 3: a node that no input reaches was returned without the batch axis forward() promises."""
    spec = GraphSpec("scalar", nodes=[("h1", sp.Symbol("w0", real=True) ** 2)])
    spec.decls = [Decl("x0", "input", ()), Decl("w0", "param", ()), Decl("y", "input", (), "real")]
    spec.loss = (sp.Symbol("h1", real=True) - sp.Symbol("y", real=True)) ** 2 / 2
    for n in (1, 3):
        params, batch = spec.point(n)
        assert compile_gradient(spec.build()).forward(params, batch)["h1"].shape == (n,)


def test_a_batch_reduced_product_with_a_reciprocal_factor_is_parenthesised():
    """Bug 9: the mean of ``t0 * (1/t1)`` was printed ``t0 @ 1/t1``, which Python reads as (t0 @ 1)/t1."""
    assert_matches_reference_and_torch(spec_of([("input", "x", ()), ("param", "w", ())], [], "log(x**2*w**2 + 1)/4"))


def test_two_parameters_with_equal_gradients_each_get_their_own():
    """Bug 1: cse shared one batch mean between dL/da and dL/db (and between unused parameters)."""
    spec = spec_of([("input", "x", (2,)), ("param", "a", (2,)), ("param", "b", (2,)), ("param", "W", (2, 2)),
                    ("input", "y", (2,))], [("h", "a*x + b*x")], "sum((h - y)**2)/2")
    assert_matches_reference_and_torch(spec)
    params, batch = spec.point(3)
    _, grads = compile_gradient(spec.build()).loss_and_grad(params, batch)
    assert grads["a"] is not grads["b"]
    assert np.array_equal(grads["W"], np.zeros((2, 2)))


# ---- bugs 2 and 4-7: matrices with a size-1 side (docs/testing.md) ----------------------------------------
def test_a_width_one_layer_can_feed_a_matrix_product():
    """Bug 2: the 1 x 1 product W1 @ x was a scalar, which W2 @ h then refused."""
    assert_matches_reference_and_torch(spec_of(
        [("input", "x", (3,)), ("param", "W1", (1, 3)), ("param", "W2", (3, 1)), ("input", "y", (3,))],
        [("h", "tanh(matmul(W1, x))"), ("r", "matmul(W2, h)")], "sum((r - y)**2)/2"))


def test_torch_gradients_of_a_parameter_the_loss_does_not_use_are_zero():
    """Bug 4: PyTorch's backward() refused a loss that no parameter reaches."""
    assert_matches_reference_and_torch(spec_of(
        [("input", "x", ()), ("param", "w", ()), ("input", "y", ())], [("h", "2*x")], "(h - y)**2/2"))


def test_the_gradient_of_a_column_matrix_parameter_has_its_shape():
    """Bug 5: dL/dW of W: [3, 1] came back with shape (3,)."""
    assert_matches_reference_and_torch(spec_of(
        [("input", "x", (3,)), ("param", "W", (3, 1)), ("input", "y", ())],
        [("h", "matmul(transpose(x), W)")], "(h - y)**2/2"))


def test_an_outer_product_with_a_length_one_vector_gives_the_right_loss():
    """Bug 6: x @ b.T with x, b: [1] was printed as an outer product of shape (N, 1, 1)."""
    assert_matches_reference_and_torch(spec_of(
        [("input", "x", (1,)), ("param", "b", (1,)), ("input", "y", ())],
        [("h", "matmul(x, transpose(b))")], "(h - y)**2/2"))


def test_tied_one_by_one_weights_are_derived():
    """Bug 7: with tied 1 x 1 weights, dL/db of b: [1] came back with shape (1, 1)."""
    assert_matches_reference_and_torch(spec_of(
        [("input", "x", (1,)), ("param", "W", (1, 1)), ("param", "b", (1,)), ("input", "y", (1,))],
        [("h", "b + matmul(W, x)"), ("h2", "matmul(transpose(W), h)")], "sum((h2 - y)**2)/2"))


def test_a_matrix_product_with_a_zero_factor_keeps_its_shape_and_batch_axis():
    """Bug 14: ``0 @ W`` and ``s @ 0`` printed as the scalar 0 (found by the shape checks): np.zeros now."""
    assert_matches_reference_and_torch(spec_of(
        [("input", "s", ()), ("param", "W", (1, 2)), ("param", "w", ()), ("input", "y", (1, 2))],
        [("h", "matmul(0, W)"), ("k", "matmul(s, 0)")], "sum((h + k + w*W - y)**2)/2"))


def test_the_gradient_of_the_absolute_value_of_a_square_root_runs():
    """Bug 16: SymPy differentiates |sqrt(u)| for a u it cannot tell is real into sin, cos and atan2(0, u),
    which the printer did not know (NameError: atan2); they print as np.sin, np.cos, np.arctan2."""
    assert_matches_reference_and_torch(spec_of(
        [("input", "x", (2,)), ("param", "w", ()), ("input", "y", ())],
        [("h", "abs(sqrt(sum(x*x)*w**2 + 1))")], "(h - y)**2/2"))


def test_a_matrix_product_that_folds_to_a_number_keeps_its_batch_axis():
    """Bug 17: ``exp(-tanh(s)) @ exp(tanh(s))`` (1 for every sample) printed as the number 1 (found by the
    long profile's shape checks, as bug 14 was for 0): np.full((N,), 1) now."""
    assert_matches_reference_and_torch(spec_of(
        [("input", "s", ()), ("param", "w", ()), ("input", "y", ())],
        [("h", "matmul(exp(-tanh(s)), exp(tanh(s)))")], "(w*h - y)**2/2"))
