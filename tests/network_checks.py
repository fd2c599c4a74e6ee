"""Numeric checks of one random or hand-written network, shared by the property tests, the regression tests
and the reverted-printer test (see docs/testing.md for the tolerances and the rejection rules).
"""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, event

from strategies import Decl, GraphSpec, reference_values, smallest_prime_above
from symbackprop.codegen import generate_module
from symbackprop.compile import CompiledGradient, compile_gradient
from symbackprop.derive import derive
from symbackprop.functions import FUNCTIONS
from symbackprop.tensor import TENSOR_FUNCTIONS, matmul, transpose

#: finite-difference step: 4th-order central differences have truncation error ~ h**4 f^(5) / 30
#: (~1e-18 here) and rounding error ~ 1.5e-16 |L| / h (~1e-12 |L|), far below the tolerance.
FD_STEP = 1e-4
#: |compiled - finite differences| <= FD_TOL * max(1, |finite differences|), per element.
FD_TOL = 1e-6
#: finite differences with steps h and h/2 agreeing within this are trusted (a well-conditioned point).
FD_AGREE = 1e-8
#: |compiled - torch| <= TORCH_TOL * max(1, |torch|): two float64 evaluations of the same formulas.
TORCH_TOL = 1e-9
#: points closer than this to a kink (strategies._KINKS), or with a value beyond LARGEST, are rejected.
KINK_MARGIN, LARGEST = 1e-2, 1e3



# ---- helpers -----------------------------------------------------------------------------------------
def usable_points(spec: GraphSpec) -> list[tuple[dict, dict]]:
    """(params, data) at each of the spec's batch sizes, if finite differences can be trusted at all of
    them (else the example is rejected)."""
    points = [spec.point(n) for n in spec.batches]
    references = [reference_values(spec, params, data) for params, data in points]
    margin = min(r.kink_margin for r in references)
    largest = max(r.largest for r in references)
    if margin <= KINK_MARGIN:
        event("rejected: an argument near a kink")
    if largest >= LARGEST:
        event("rejected: a value beyond 1e3")
    assume(margin > KINK_MARGIN and largest < LARGEST)
    return points


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


# ---- the properties, as checks of one network --------------------------------------------------------
def check_forward_pass(spec: GraphSpec) -> None:
    """Every node and the loss, at every batch size, equal the independent per-sample evaluation."""
    compiled = compile_gradient(spec.build())
    for n in spec.batches:
        params, batch = spec.point(n)
        reference = reference_values(spec, params, batch)
        assume(reference.largest < LARGEST)
        values = compiled.forward(params, batch)
        for name, expected in reference.values.items():
            got = np.asarray(values[name], dtype=np.float64)
            assert got.shape == expected.shape, f"{name} at N={n}: forward gives shape {got.shape}, expected {expected.shape}"
            np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=f"node {name} at N={n}")
        loss, _ = compiled.loss_and_grad(params, batch)
        assert loss == pytest.approx(float(np.mean(reference.losses)), rel=1e-10, abs=1e-10), f"loss at N={n}"


def check_finite_differences(spec: GraphSpec) -> None:
    """The gradient, at every batch size, equals finite differences of the compiled forward loss."""
    points = usable_points(spec)
    compiled = compile_gradient(spec.build())
    for params, batch in points:
        _, grads = compiled.loss_and_grad(params, batch)
        n = batch_size(batch)
        assert_close(grads, finite_difference_gradients(compiled, params, batch), FD_TOL,
                     f"finite differences at N={n}")


def check_against_torch(spec: GraphSpec) -> None:
    """The loss and the gradient, at every batch size, equal PyTorch autograd's (skipped without torch)."""
    pytest.importorskip("torch")
    from symbackprop.torch_eval import torch_loss_and_grad

    points = usable_points(spec)
    graph = spec.build()
    compiled = compile_gradient(graph)
    for params, batch in points:
        n = batch_size(batch)
        loss, grads = compiled.loss_and_grad(params, batch)
        torch_loss, torch_grads = torch_loss_and_grad(graph, params, batch)
        assert loss == pytest.approx(torch_loss, rel=TORCH_TOL, abs=TORCH_TOL), f"loss at N={n}"
        assert_close(grads, torch_grads, TORCH_TOL, f"torch autograd at N={n}")


def check_module_file(spec: GraphSpec) -> None:
    """The module codegen writes, imported from a file, gives the compiled callable's floats exactly."""
    derivation = derive(spec.build())
    compiled = compile_gradient(derivation)
    with tempfile.TemporaryDirectory() as directory:
        module = import_module_file(generate_module(derivation.program()), directory)
        try:
            for n in spec.batches:
                params, batch = spec.point(n)
                with np.errstate(all="ignore"):  # both sides see the same floats, warnings or not
                    loss, grads = module.loss_and_grad(params, batch)
                    expected_loss, expected_grads = compiled.loss_and_grad(params, batch)
                assert np.array_equal(loss, expected_loss, equal_nan=True)
                assert set(grads) == set(expected_grads)
                for name in grads:
                    assert np.array_equal(grads[name], expected_grads[name], equal_nan=True), name
        finally:
            sys.modules.pop("generated_grad_under_test", None)


PROPERTIES = {"forward pass": check_forward_pass, "finite differences": check_finite_differences,
              "PyTorch": check_against_torch}


def batch_size(data: dict) -> int:
    return len(next(iter(data.values()))) if data else 1


# ---- hand-written networks: the minimal reproductions of bugs ----------------------------------------------
def spec_of(decls: list[tuple[str, str, tuple]], nodes: list[tuple[str, str]], loss: str,
            batches: tuple[int, ...] | None = None) -> GraphSpec:
    """A spec from text (names become real symbols; the functions of model files), run at ``batches``:
    by default 1, each of its sides and the smallest prime above every side."""
    symbols = {name: sp.Symbol(name, real=True) for _, name, _ in decls}
    symbols.update({name: sp.Symbol(name, real=True) for name, _ in nodes})
    namespace = {**symbols, **FUNCTIONS, **TENSOR_FUNCTIONS, "matmul": matmul, "transpose": transpose}
    spec = GraphSpec("minimal", [Decl(n, k, s, "real" if n == "y" else "") for k, n, s in decls])
    spec.nodes = [(name, sp.sympify(text, locals=namespace)) for name, text in nodes]
    spec.loss = sp.sympify(loss, locals=namespace)
    spec.batches = batches or tuple(sorted({1, *spec.sides, smallest_prime_above(max(spec.sides))}))
    return spec


def assert_matches_reference_and_torch(spec: GraphSpec) -> None:
    """At each of the spec's batch sizes: the loss against the reference evaluation; the gradient, in each
    parameter's declared shape, against finite differences and (when installed) PyTorch autograd."""
    graph = spec.build()
    compiled = compile_gradient(graph)
    for n in spec.batches:
        params, batch = spec.point(n)
        loss, grads = compiled.loss_and_grad(params, batch)
        assert loss == pytest.approx(float(np.mean(reference_values(spec, params, batch).losses)), rel=1e-12), \
            f"loss at N={n}"
        assert {n: np.shape(g) for n, g in grads.items()} == {q.name: q.shape for q in graph.params}
        assert_close(grads, finite_difference_gradients(compiled, params, batch), FD_TOL,
                     f"finite differences at N={n}")
        try:
            from symbackprop.torch_eval import torch_loss_and_grad
        except ImportError:
            continue
        torch_loss, torch_grads = torch_loss_and_grad(graph, params, batch)
        assert loss == pytest.approx(torch_loss, rel=TORCH_TOL, abs=TORCH_TOL), f"loss at N={n}"
        assert_close(grads, torch_grads, TORCH_TOL, f"torch autograd at N={n}")
