"""Properties every derivation must have, on random networks (see docs/testing.md).

For random scalar networks and random small vector/matrix networks (:mod:`strategies`), at random
parameters and a random batch of 3 to 5 samples:

* the compiled forward pass (every node and the loss) equals an independent NumPy evaluation of the
  network's expressions, so finite differences below difference the *right* function;
* the compiled gradient equals 4th-order central finite differences of the compiled forward loss;
* it equals PyTorch autograd of an independent PyTorch evaluation (when torch is installed);
* the standalone module written by codegen, imported from a file, gives the same floats as the
  compiled callable;
* on small scalar networks, the expanded symbolic gradient equals ``sympy.diff`` of the flattened loss,
  compared exactly at random rational points (40 significant digits).

Points where finite differences cannot be trusted are rejected, never passed with a wider tolerance:
a relu/abs argument within ``KINK_MARGIN`` of 0, values beyond ``LARGEST``, or two step sizes that
disagree (an ill-conditioned point). Hypothesis counts each rejection as an event.
"""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, event, given, strategies as st

from strategies import Decl, GraphSpec, reference_values, scalar_graphs, tensor_graphs
from symbackprop.codegen import generate_module
from symbackprop.compile import CompiledGradient, compile_gradient
from symbackprop.derive import derive
from symbackprop.functions import relu, step
from symbackprop.tensor import matmul, sum_, transpose

#: finite-difference step: 4th-order central differences have truncation error ~ h**4 f^(5) / 30
#: (~1e-18 here) and rounding error ~ 1.5e-16 |L| / h (~1e-12 |L|), far below the tolerance.
FD_STEP = 1e-4
#: |compiled - finite differences| <= FD_TOL * max(1, |finite differences|), per element.
FD_TOL = 1e-6
#: finite differences with steps h and h/2 agreeing within this are trusted (a well-conditioned point).
FD_AGREE = 1e-8
#: |compiled - torch| <= TORCH_TOL * max(1, |torch|): two float64 evaluations of the same formulas.
TORCH_TOL = 1e-9
#: points closer than this to a kink of relu/abs, or with a value beyond LARGEST, are rejected.
KINK_MARGIN, LARGEST = 1e-2, 1e3

#: vector and matrix sizes from 1 (size-1 sides found bugs 2, 5, 6 and 7 of docs/testing.md).
GRAPHS = {"scalar": scalar_graphs(), "tensor": tensor_graphs()}
family = pytest.mark.parametrize("family", sorted(GRAPHS))
# ---- helpers -----------------------------------------------------------------------------------------
def usable_point(spec: GraphSpec) -> tuple[dict, dict]:
    """The spec's parameters and data, if finite differences can be trusted there (else reject)."""
    params, data = spec.point()
    reference = reference_values(spec, params, data)
    if reference.kink_margin <= KINK_MARGIN:
        event("rejected: relu/abs argument near its kink")
    if reference.largest >= LARGEST:
        event("rejected: a value beyond 1e3")
    assume(reference.kink_margin > KINK_MARGIN and reference.largest < LARGEST)
    return params, data


def mean_forward_loss(compiled: CompiledGradient, params: dict, data: dict) -> float:
    """The mean loss from the compiled *forward* function only (no backward code involved)."""
    return float(np.mean(compiled.forward(params, data)["L"]))


def moved(params: dict, name: str, index: tuple, delta: float) -> dict:
    value = np.array(params[name], dtype=np.float64)
    value[index] += delta
    return {**params, name: value}


def central_difference(f, params: dict, name: str, index: tuple, h: float) -> float:
    """4th-order central difference (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h along one element."""
    at = [f(moved(params, name, index, k * h)) for k in (-2, -1, 1, 2)]
    return (at[0] - 8 * at[1] + 8 * at[2] - at[3]) / (12 * h)


def finite_difference_gradients(compiled: CompiledGradient, params: dict, data: dict) -> dict:
    """dL/dw for every element by finite differences; rejects points where two steps disagree."""
    f = lambda p: mean_forward_loss(compiled, p, data)  # noqa: E731
    out = {}
    for name, value in params.items():
        grad = np.zeros(np.shape(value))
        for index in np.ndindex(grad.shape):
            fine = central_difference(f, params, name, index, FD_STEP)
            coarse = central_difference(f, params, name, index, 2 * FD_STEP)
            if abs(fine - coarse) > FD_AGREE * max(1.0, abs(fine)):
                event("rejected: finite differences ill-conditioned")
                assume(False)
            grad[index] = fine
        out[name] = grad
    return out


def assert_close(got: dict, expected: dict, tol: float, what: str) -> None:
    """Per element |got - expected| <= tol * max(1, |expected|), with the worst element in the message."""
    assert set(got) == set(expected)
    for name in expected:
        g = np.asarray(got[name], dtype=np.float64)
        e = np.asarray(expected[name], dtype=np.float64)
        assert g.shape == e.shape, f"dL/d{name}: shape {g.shape}, {what} gives {e.shape}"
        error = np.abs(g - e) / np.maximum(1.0, np.abs(e))
        assert np.all(error <= tol), (
            f"dL/d{name}: compiled {g.ravel().tolist()} but {what} {e.ravel().tolist()} "
            f"(scaled error {error.max():.2e} > {tol:.0e})")


def import_module_file(source: str, directory: str):
    path = Path(directory) / "generated_grad.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("generated_grad_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- properties --------------------------------------------------------------------------------------
@family
@given(data=st.data())
def test_compiled_forward_pass_equals_an_independent_evaluation(family, data):
    spec = data.draw(GRAPHS[family], label="network")
    params, batch = spec.point()
    reference = reference_values(spec, params, batch)
    assume(reference.largest < LARGEST)
    graph = spec.build()
    compiled = compile_gradient(graph)
    values = compiled.forward(params, batch)
    for name, expected in reference.values.items():
        got = np.asarray(values[name], dtype=np.float64)
        assert got.shape == expected.shape, f"{name}: forward gives shape {got.shape}, expected {expected.shape}"
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=f"node {name}")
    loss, _ = compiled.loss_and_grad(params, batch)
    assert loss == pytest.approx(float(np.mean(reference.losses)), rel=1e-10, abs=1e-10)


@family
@given(data=st.data())
def test_compiled_gradient_equals_finite_differences_of_the_forward_loss(family, data):
    spec = data.draw(GRAPHS[family], label="network")
    params, batch = usable_point(spec)
    compiled = compile_gradient(spec.build())
    _, grads = compiled.loss_and_grad(params, batch)
    assert_close(grads, finite_difference_gradients(compiled, params, batch), FD_TOL, "finite differences")


@family
@given(data=st.data())
def test_compiled_gradient_equals_pytorch_autograd(family, data):
    pytest.importorskip("torch")
    from symbackprop.torch_eval import torch_loss_and_grad

    spec = data.draw(GRAPHS[family], label="network")
    params, batch = usable_point(spec)
    graph = spec.build()
    loss, grads = compile_gradient(graph).loss_and_grad(params, batch)
    torch_loss, torch_grads = torch_loss_and_grad(graph, params, batch)
    assert loss == pytest.approx(torch_loss, rel=TORCH_TOL, abs=TORCH_TOL)
    assert_close(grads, torch_grads, TORCH_TOL, "torch autograd")


@family
@given(data=st.data())
def test_generated_module_file_gives_the_same_floats_as_the_compiled_callable(family, data):
    spec = data.draw(GRAPHS[family], label="network")
    params, batch = spec.point()
    derivation = derive(spec.build())
    compiled = compile_gradient(derivation)
    with tempfile.TemporaryDirectory() as directory:
        module = import_module_file(generate_module(derivation.program()), directory)
        try:
            with np.errstate(all="ignore"):  # both sides see the same floats, warnings or not
                loss, grads = module.loss_and_grad(params, batch)
                expected_loss, expected_grads = compiled.loss_and_grad(params, batch)
        finally:
            sys.modules.pop("generated_grad_under_test", None)
    assert np.array_equal(loss, expected_loss, equal_nan=True)
    assert set(grads) == set(expected_grads)
    for name in grads:
        assert np.array_equal(grads[name], expected_grads[name], equal_nan=True), name


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
            assert abs(a - b) <= sp.Float("1e-30") * max(1, abs(b)), (
                f"dL/d{d.name} at {point}: expanded {ours} = {a}, sympy.diff gives {expected} = {b}")


# ---- bugs the properties found, fixed: their minimal networks as plain regression tests ------------------
def test_forward_gives_every_node_a_batch_axis_even_when_no_input_reaches_it():
    """Bug 3: a node that no input reaches was returned without the batch axis forward() promises."""
    spec = GraphSpec("scalar", nodes=[("h1", sp.Symbol("w0", real=True) ** 2)], batch=3)
    spec.decls = [Decl("x0", "input", ()), Decl("w0", "param", ()), Decl("y", "input", (), "real")]
    spec.loss = (sp.Symbol("h1", real=True) - sp.Symbol("y", real=True)) ** 2 / 2
    params, batch = spec.point()
    assert compile_gradient(spec.build()).forward(params, batch)["h1"].shape == (3,)


def test_a_batch_reduced_product_with_a_reciprocal_factor_is_parenthesised():
    """Bug 9: the mean of ``t0 * (1/t1)`` was printed ``t0 @ 1/t1``, which Python reads as (t0 @ 1)/t1."""
    spec = spec_of([("input", "x", ()), ("param", "w", ())], [], "log(x**2*w**2 + 1)/4")
    params, batch = spec.point()
    compiled = compile_gradient(spec.build())
    _, grads = compiled.loss_and_grad(params, batch)
    assert_close(grads, finite_difference_gradients(compiled, params, batch), FD_TOL, "finite differences")


def test_two_parameters_with_equal_gradients_each_get_their_own():
    """Bug 1: cse shared one batch mean between dL/da and dL/db (and between unused parameters)."""
    spec = spec_of([("input", "x", (2,)), ("param", "a", (2,)), ("param", "b", (2,)), ("param", "W", (2, 2)),
                    ("input", "y", (2,))], [("h", "a*x + b*x")], "sum((h - y)**2)/2")
    params, batch = spec.point()
    compiled = compile_gradient(spec.build())
    _, grads = compiled.loss_and_grad(params, batch)
    assert_close(grads, finite_difference_gradients(compiled, params, batch), FD_TOL, "finite differences")
    assert grads["a"] is not grads["b"]
    assert np.array_equal(grads["W"], np.zeros((2, 2)))


# ---- bugs 2 and 4-7: matrices with a size-1 side (docs/testing.md) ----------------------------------------
def spec_of(decls: list[tuple[str, str, tuple]], nodes: list[tuple[str, str]], loss: str) -> GraphSpec:
    """A spec from text, for the minimal reproductions below (names become real symbols)."""
    symbols = {name: sp.Symbol(name, real=True) for _, name, _ in decls}
    symbols.update({name: sp.Symbol(name, real=True) for name, _ in nodes})
    namespace = {**symbols, **{f.__name__.rstrip("_"): f for f in (matmul, transpose, sum_)},
                 "tanh": sp.tanh, "log": sp.log}
    spec = GraphSpec("minimal", [Decl(n, k, s, "real" if n == "y" else "") for k, n, s in decls], batch=3)
    spec.nodes = [(name, sp.sympify(text, locals=namespace)) for name, text in nodes]
    spec.loss = sp.sympify(loss, locals=namespace)
    return spec


def assert_matches_reference_and_torch(spec: GraphSpec) -> None:
    """Forward loss against the reference evaluation; the gradient, in each parameter's declared shape,
    against finite differences and (when installed) PyTorch autograd."""
    graph = spec.build()
    params, batch = spec.point()
    compiled = compile_gradient(graph)
    loss, grads = compiled.loss_and_grad(params, batch)
    assert loss == pytest.approx(float(np.mean(reference_values(spec, params, batch).losses)), rel=1e-12)
    assert {n: np.shape(g) for n, g in grads.items()} == {q.name: q.shape for q in graph.params}
    assert_close(grads, finite_difference_gradients(compiled, params, batch), FD_TOL, "finite differences")
    try:
        from symbackprop.torch_eval import torch_loss_and_grad
        assert_close(grads, torch_loss_and_grad(graph, params, batch)[1], TORCH_TOL, "torch autograd")
    except ImportError:
        pass


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
