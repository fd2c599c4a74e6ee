"""The elementwise functions of issue 12: leaky_relu, elu, gelu, silu, erf, sin, cos, log1p, expm1, maximum,
minimum and clip.

Each function's value and derivative, through the derivation and the generated NumPy code (shape-checked,
run with every NumPy warning an error), against PyTorch's own function and autograd (float64) at many
points: ordinary ones, +-1000 wherever the function is defined there, points close to each kink, and the
kinks and ties themselves (where the derivation's convention must be PyTorch's). The derivative also
against finite differences of an independent NumPy form (tests/strategies.py), at a margin from the kinks.
Then small networks at batch sizes 1, each side and a prime; shapes; the printed forms; the model-file
forms and errors; the example; and random networks of each function (tests/strategies.py).
"""
from __future__ import annotations

import math
import re
import warnings
from xml.etree import ElementTree
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from conftest import ROOT
from network_checks import assert_matches_reference_and_torch, check_against_torch, check_finite_differences, \
    check_forward_pass, spec_of
from strategies import _NAIVE, NEW_FUNCTIONS, scalar_graphs, tensor_graphs
from symbackprop import Graph, ShapeError, compile_gradient, derive, sum_
from symbackprop.cli import main
from symbackprop.functions import (CONVENTIONS, FUNCTIONS, clip, elu, erf, expm1, gelu, leaky_relu, log1p, maximum,
                                   minimum, silu)
from symbackprop.graph import ModelError
from symbackprop.modelfile import parse_model
from symbackprop.printing import NetworkLatexPrinter, NetworkMathMLPrinter, NetworkTextPrinter
from symbackprop.tensor import infer_shape
from test_render import parse_latex

NEW = ["leaky_relu", "elu", "gelu", "silu", "erf", "sin", "cos", "log1p", "expm1", "maximum", "minimum", "clip"]
#: |ours - torch| <= tolerance * max(1, |torch|): values and gradients, both float64
VALUE_TOL, GRADIENT_TOL = 1e-14, 1e-10
#: finite differences are taken at least this far from a kink (and with steps a quarter of the distance)
KINK_MARGIN = 1e-3


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


# ---- the functions at points ---------------------------------------------------------------------------------
ORDINARY = [-1000.0, -40.0, -3.0, -1.0, -0.5, -1e-3, 1e-3, 0.25, 1.0, 2.5, 40.0, 1000.0]


@dataclass
class Case:
    """One function of k arguments at points: ``build(*symbols)`` for symbackprop, ``torch(torch, *tensors)`` for
    PyTorch, ``naive`` the NumPy form of tests/strategies.py; ``points`` has k rows, one column per point;
    ``kinks(*rows)`` gives the distances from a kink (the columns within KINK_MARGIN are not differenced)."""

    build: Callable
    torch: Callable
    naive: Callable
    points: list[list[float]]
    kinks: Callable = field(default=lambda *rows: [])


def _unary(cls, torch_name, points=ORDINARY, kinked=False, naive=None) -> Case:
    return Case(lambda p: cls(p), lambda torch, x: getattr(torch.nn.functional, torch_name)(x),
                naive or _NAIVE[cls], [points], (lambda x: [x]) if kinked else (lambda x: []))


CASES = {
    "leaky_relu": _unary(leaky_relu, "leaky_relu", ORDINARY + [0.0], kinked=True,
                         naive=lambda x: _NAIVE[leaky_relu](x, 0.01)),
    "leaky_relu(x, 0.2)": Case(lambda p: leaky_relu(p, sp.Float(0.2)),
                               lambda torch, x: torch.nn.functional.leaky_relu(x, 0.2),
                               lambda x: np.where(x > 0, x, 0.2 * x), [ORDINARY + [0.0]], lambda x: [x]),
    "elu": _unary(elu, "elu", ORDINARY + [0.0], kinked=True),  # its second derivative jumps at 0
    "gelu": _unary(gelu, "gelu", ORDINARY + [0.0, -8.0, -20.0]),
    "silu": _unary(silu, "silu", ORDINARY + [0.0]),
    "erf": Case(lambda p: erf(p), lambda torch, x: torch.erf(x), _NAIVE[erf], [ORDINARY + [0.0, 1e-9, 3.5, 5.9]]),
    "sin": Case(lambda p: sp.sin(p), lambda torch, x: torch.sin(x), np.sin, [ORDINARY + [0.0]]),
    "cos": Case(lambda p: sp.cos(p), lambda torch, x: torch.cos(x), np.cos, [ORDINARY + [0.0]]),
    "log1p": Case(lambda p: log1p(p), lambda torch, x: torch.log1p(x), _NAIVE[log1p],
                  [[-0.9999, -0.5, -1e-3, 0.0, 1e-12, 1e-3, 0.25, 3.0, 40.0, 1000.0]],
                  lambda x: [x + 1]),  # the edge of the domain, like a kink, is not differenced across
    # expm1(+1000) is e^1000, beyond float64 in every library: up to 700 here
    "expm1": Case(lambda p: expm1(p), lambda torch, x: torch.expm1(x), _NAIVE[expm1],
                  [[-1000.0, -40.0, -3.0, -1e-3, 0.0, 1e-12, 1e-3, 0.25, 3.0, 40.0, 700.0]]),
    # two and three arguments: ties and bounds included (the rows are the arguments)
    "maximum": Case(lambda a, b: maximum(a, b), lambda torch, a, b: torch.maximum(a, b), _NAIVE[maximum],
                    [[-1000.0, 1000.0, 0.5, 0.5, -2.0, 1.0, 1.001, 0.3], [1000.0, -1000.0, 0.5, 0.499, -2.0, 3.0, 1.0, -0.7]],
                    lambda a, b: [a - b]),
    "minimum": Case(lambda a, b: minimum(a, b), lambda torch, a, b: torch.minimum(a, b), _NAIVE[minimum],
                    [[-1000.0, 1000.0, 0.5, 0.5, -2.0, 1.0, 1.001, 0.3], [1000.0, -1000.0, 0.5, 0.499, -2.0, 3.0, 1.0, -0.7]],
                    lambda a, b: [a - b]),
    "clip": Case(lambda x, lo, hi: clip(x, lo, hi), lambda torch, x, lo, hi: torch.clamp(x, min=lo, max=hi),
                 _NAIVE[clip],
                 [[-1000.0, 1000.0, -1.0, 1.0, 0.2, -1.001, 1.001, -0.999, 0.999, 5.0, 0.3],
                  [-1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 2.0, 0.3],
                  [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 6.0, 0.3]],
                 lambda x, lo, hi: [x - lo, x - hi]),
    # a learned slope (PReLU): torch's prelu with one slope per point (channel)
    "leaky_relu(x, a)": Case(lambda x, a: leaky_relu(x, a),
                             lambda torch, x, a: torch.nn.functional.prelu(x[None], a)[0], _NAIVE[leaky_relu],
                             [[-1000.0, -2.0, -1e-3, 0.0, 1e-3, 0.7, 1000.0], [0.25, -0.5, 0.1, 0.3, 0.2, 1.5, 0.01]],
                             lambda x, a: [x]),
}


def symbackprop_at_points(case: Case) -> tuple[np.ndarray, list[np.ndarray]]:
    """Values and partial derivatives by the generated code: L = c * sum(f(p1, ...)) for parameter vectors
    p1, ... of the points and one sample c = 1, so dL/dpk is the k-th partial derivative at each point.
    Every NumPy warning and floating-point error (but underflow, exact at these points) is an exception."""
    g = Graph("one function at points")
    c = g.input("c")
    args = [g.param(f"p{k}", (len(row),)) for k, row in enumerate(case.points)]
    g.node("h", case.build(*args))
    g.loss("L", c * sum_(g.symbol("h")))
    compiled = compile_gradient(g)
    params = {f"p{k}": np.array(row) for k, row in enumerate(case.points)}
    with warnings.catch_warnings(), np.errstate(all="raise", under="ignore"):
        warnings.simplefilter("error")
        _, grads = compiled.loss_and_grad(params, {"c": np.ones(1)})
        values = compiled.forward(params, {"c": np.ones(1)})["h"][0]
    return values, [grads[f"p{k}"] for k in range(len(case.points))]


def torch_at_points(torch, case: Case) -> tuple[np.ndarray, list[np.ndarray]]:
    tensors = [torch.tensor(row, dtype=torch.float64, requires_grad=True) for row in case.points]
    out = case.torch(torch, *tensors)
    out.sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


def assert_scaled_close(got, expected, tol: float, what: str) -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    error = np.abs(got - expected) / np.maximum(1.0, np.abs(expected))
    assert np.all(np.isfinite(got)) and np.all(error <= tol), f"{what}: {got.tolist()} but {expected.tolist()}"


@pytest.mark.parametrize("name", CASES)
def test_values_and_derivatives_equal_pytorchs_at_every_point_kinks_and_plus_minus_1000_included(torch, name):
    case = CASES[name]
    values, grads = symbackprop_at_points(case)
    torch_values, torch_grads = torch_at_points(torch, case)
    assert_scaled_close(values, torch_values, VALUE_TOL, f"{name} values")
    for k, (g, t) in enumerate(zip(grads, torch_grads)):
        assert_scaled_close(g, t, GRADIENT_TOL, f"{name} derivative by argument {k + 1}")


@pytest.mark.parametrize("name", CASES)
def test_derivatives_equal_finite_differences_of_an_independent_form_away_from_the_kinks(name):
    """4th-order central differences of the NumPy forms of tests/strategies.py, step 1e-3 (a quarter of the
    distance to a kink where that is less), for every argument at every point at least KINK_MARGIN from a kink."""
    case = CASES[name]
    _, grads = symbackprop_at_points(case)
    rows = [np.array(row) for row in case.points]
    distances = [np.abs(d) * np.ones(len(rows[0])) for d in case.kinks(*rows)]
    nearest = np.min(distances, axis=0) if distances else np.full(len(rows[0]), np.inf)
    checked = 0
    for k in range(len(rows)):
        for i in np.flatnonzero(nearest > KINK_MARGIN):
            h = min(1e-3, nearest[i] / 4)

            def f(delta):
                moved = [row.copy() for row in rows]
                moved[k][i] += delta
                with np.errstate(all="ignore"):  # the naive forms overflow in their unused branches at 1000
                    return float(np.asarray(case.naive(*(m[i] for m in moved))))

            fd = (f(-2 * h) - 8 * f(-h) + 8 * f(h) - f(2 * h)) / (12 * h)
            assert abs(grads[k][i] - fd) <= 1e-7 * max(1.0, abs(fd)), (name, k, rows[k][i], grads[k][i], fd)
            checked += 1
    assert checked >= len(rows) * 4


def test_at_kinks_and_ties_the_derivatives_are_the_stated_conventions():
    """The numbers docs/model-files.md states (and PyTorch computes): leaky_relu'(0) is the slope, elu'(0) = 1,
    a tie of maximum/minimum gives each argument half, clip's gradient at a bound goes to x, not the bound."""
    def grads(case_name):
        return symbackprop_at_points(CASES[case_name])[1]

    assert grads("leaky_relu")[0][-1] == 0.01 and grads("leaky_relu(x, 0.2)")[0][-1] == 0.2
    assert grads("elu")[0][-1] == 1.0
    (da, db) = grads("maximum")
    assert (da[2], db[2]) == (0.5, 0.5) and (da[4], db[4]) == (0.5, 0.5)
    (da, db) = grads("minimum")
    assert (da[2], db[2]) == (0.5, 0.5)
    dx, dlo, dhi = grads("clip")
    assert (dx[2], dlo[2], dhi[2]) == (1.0, 0.0, 0.0) and (dx[3], dlo[3], dhi[3]) == (1.0, 0.0, 0.0)
    assert (dx[0], dlo[0], dhi[0]) == (0.0, 1.0, 0.0) and (dx[1], dlo[1], dhi[1]) == (0.0, 0.0, 1.0)
    assert (dx[10], dlo[10], dhi[10]) == (1.0, 0.0, 0.0)  # lo = x = hi: all to x, as torch.clamp
    dx, da = grads("leaky_relu(x, a)")
    assert (dx[3], da[3]) == (0.3, 0.0)


def test_the_generated_code_is_finite_and_warning_free_at_plus_minus_1000():
    """elu, gelu, silu, expm1 (at -1000; e^1000 is no float64) and log1p (at 1000) in the generated code, with
    every NumPy warning an error (symbackprop_at_points); values equal their limits."""
    for name, expected in [("elu", (-1.0, 1000.0)), ("gelu", (0.0, 1000.0)), ("silu", (0.0, 1000.0)),
                           ("erf", (-1.0, 1.0))]:
        values, (grad,) = symbackprop_at_points(CASES[name])  # ORDINARY starts at -1000 and ends at 1000
        at = [0, len(ORDINARY) - 1]
        assert tuple(values[at]) == pytest.approx(expected, abs=1e-300), name
        assert tuple(grad[at]) == pytest.approx((0.0, 1.0 if name != "erf" else 0.0), abs=1e-300), name
    values, (grad,) = symbackprop_at_points(CASES["expm1"])
    assert (values[0], grad[0]) == (-1.0, 0.0)
    values, (grad,) = symbackprop_at_points(CASES["log1p"])
    assert values[-1] == pytest.approx(math.log(1001.0), rel=1e-15) and grad[-1] == pytest.approx(1 / 1001, rel=1e-15)


# ---- networks at batch sizes 1, each side and a prime --------------------------------------------------------
NETWORKS = {
    "a GELU layer into a PReLU": ([("input", "x", (3,)), ("param", "W", (2, 3)), ("param", "b", (2,)),
                                   ("param", "a", ()), ("input", "y", (2,))],
                                  [("h", "gelu(matmul(W, x) + b)"), ("k", "leaky_relu(3*h - 1, a)")],
                                  "sum((k - y)**2)/2"),
    "silu, elu, erf, sin and cos": ([("input", "x", (3,)), ("param", "W", (3, 3)), ("input", "y", (3,))],
                                    [("z", "matmul(W, x)"), ("h", "silu(z) + elu(z) + erf(z)*sin(z) - cos(2*z)")],
                                    "sum((h - y)**2)/2"),
    "log1p and expm1, and log1p(exp(z)) made stable": (
        [("input", "x", (2,)), ("param", "b", (2,)), ("input", "y", ())],
        [("h", "log1p(x*x + b*b) + expm1(-b*x)")], "(sum(h) + log1p(exp(sum(x*b))) - y)**2/2"),
    "a per-sample scalar against a vector in maximum, minimum and clip": (
        [("input", "x", (3,)), ("input", "s", ()), ("param", "w", (3,)), ("param", "c", ()), ("input", "y", (3,))],
        [("h", "maximum(w*x, s) + minimum(c, x) + clip(x, s - 1, s + w*w + 1)")], "sum((h - y)**2)/2"),
    "leaky_relu with its default slope, a matrix clipped by numbers": (
        [("input", "X", (2, 3)), ("param", "W", (2, 3)), ("param", "v", ()), ("input", "y", ())],
        [("H", "clip(W*X, -0.5, 1.5) + leaky_relu(X - W)"), ("o", "sum(H)*v")], "(o - y)**2/2"),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_networks_of_the_new_functions_match_the_reference_finite_differences_and_pytorch(name):
    """At batch sizes 1, each side and a prime (network_checks.spec_of), shape-checked generated code."""
    assert_matches_reference_and_torch(spec_of(*NETWORKS[name]))


def test_a_scalar_broadcasts_against_a_tensor_in_every_argument_and_unequal_shapes_are_refused():
    g = Graph()
    s, v, m = g.input("s"), g.input("v", (3,)), g.param("M", (2, 3))
    shapes = g.shapes
    assert infer_shape(maximum(s, v), shapes) == (3,) and infer_shape(clip(s, v, 2), shapes) == (3,)
    assert infer_shape(leaky_relu(m, s), shapes) == (2, 3) and infer_shape(minimum(m, 0), shapes) == (2, 3)
    with pytest.raises(ShapeError, match=r"shape mismatch in maximum\(v, M\): \(2, 3\) and \(3,\)"):
        infer_shape(maximum(v, m), shapes)
    with pytest.raises(ModelError, match=r"node 'h'.*shape mismatch in clip"):
        g.node("h", clip(v, m, 1))


# ---- printed forms ------------------------------------------------------------------------------------------
z = sp.Symbol("z", real=True)
u = sp.Symbol("u", real=True)
FORMS = {  # expression -> (LaTeX, text)
    leaky_relu(z): (r"\operatorname{leaky\_relu}(z)", "leaky_relu(z)"),
    leaky_relu(z, u): (r"\operatorname{leaky\_relu}\left(z, u\right)", "leaky_relu(z, u)"),
    elu(z): (r"\operatorname{elu}(z)", "elu(z)"),
    gelu(z + 1): (r"\operatorname{gelu}\left(z + 1\right)", "gelu(z + 1)"),
    silu(z): (r"\operatorname{silu}(z)", "silu(z)"),
    erf(z): (r"\operatorname{erf}(z)", "erf(z)"),
    sp.sin(z): (r"\sin{\left(z \right)}", "sin(z)"),
    sp.cos(z): (r"\cos{\left(z \right)}", "cos(z)"),
    log1p(z): (r"\operatorname{log1p}(z)", "log1p(z)"),
    expm1(z): (r"\operatorname{expm1}(z)", "expm1(z)"),
    maximum(z, u): (r"\max\left(z, u\right)", "maximum(z, u)"),
    minimum(z, 0): (r"\min\left(z, 0\right)", "minimum(z, 0)"),
    clip(z, -1, u): (r"\operatorname{clip}\left(z, -1, u\right)", "clip(z, -1, u)"),
    gelu(z) ** 2: (r"\operatorname{gelu}^{2}(z)", "gelu(z)**2"),
}


@pytest.mark.parametrize("expr", FORMS, ids=str)
def test_each_function_is_written_in_latex_text_and_mathml(expr):
    latex, text = FORMS[expr]
    assert NetworkLatexPrinter().doprint(expr) == latex
    parse_latex(latex)
    assert NetworkTextPrinter().doprint(expr) == text
    mathml = NetworkMathMLPrinter().doprint(expr)
    ElementTree.fromstring(mathml)
    name = text.split("(")[0]
    assert f">{ {'maximum': 'max', 'minimum': 'min'}.get(name, name)}</mi>" in mathml
    if isinstance(expr, (maximum, minimum, clip, leaky_relu)):  # every argument shown, separated by commas
        assert mathml.count("<mo>,</mo>") == len(expr.shown_args) - 1 > 0 or isinstance(expr, leaky_relu)


def test_the_derivation_states_each_kink_convention_in_latex_and_text():
    g = parse_model(KINKED_MODEL, "m.toml").graph
    d = derive(g)
    text = d.to("text").splitlines()
    for cls in (leaky_relu, maximum, minimum, clip):
        assert f"convention: {CONVENTIONS[cls][1]}" in text
        assert CONVENTIONS[cls][0] in d.to("latex")
    for line in d.to("latex", shapes=True).splitlines():
        parse_latex(line)


KINKED_MODEL = """
[inputs]
x = { shape = [2] }
y = {}
[params]
w = { shape = [2] }
[nodes]
h = "maximum(leaky_relu(w*x), minimum(x, 1)) + clip(x, -1, w)"
[loss]
L = "(sum(h) - y)**2/2"
"""


def test_local_derivatives_read_as_the_textbook_writes_them():
    g = Graph()
    x, y = g.input("x"), g.input("y")
    w, a = g.param("w"), g.param("a")
    z = g.node("z", w * x)
    g.node("h", gelu(z))
    g.node("k", leaky_relu(g.symbol("h"), a))
    g.loss("L", (g.symbol("k") - y) ** 2 / 2)
    text = derive(g).to("text")
    assert "dh/dz = gelu'(z) = sqrt(2) * z * exp(-z**2 / 2) / (2 * sqrt(pi)) + erf(sqrt(2) * z / 2) / 2 + 1/2" in text
    assert "dk/dh = step(h) * (1 - a) + a" in text
    assert "dL/da = dL/dk * dk/da = dL/dk * minimum(h, 0)" in text


def test_every_latex_line_of_the_example_renders_in_katex():
    """Skips without node and KaTeX (see tests/test_evaluate.py)."""
    import json
    import os
    import subprocess
    from test_evaluate import KATEX_SCRIPT, katex_node_path
    node_path = katex_node_path()
    if node_path is None:
        pytest.skip("KaTeX check needs node and the katex package (npm install -g katex, or NODE_PATH)")
    lines = derive(parse_model(EXAMPLE.read_text(), str(EXAMPLE)).graph).to("latex", shapes=True).splitlines()
    lines += [latex for latex, _ in FORMS.values()] + [c[0] for c in CONVENTIONS.values()]
    out = subprocess.run(["node", "-e", KATEX_SCRIPT], input=json.dumps([[str(i), t] for i, t in enumerate(lines)]),
                         capture_output=True, text=True, timeout=120, env={**os.environ, "NODE_PATH": node_path})
    assert json.loads(out.stdout) == []


# ---- the model file ---------------------------------------------------------------------------------------------
HEAD = '[inputs]\nx = {}\ny = {}\n[params]\nw = {}\nb = {}\n'


def nodes(text: str) -> str:
    return f'{HEAD}[nodes]\nz = "{text}"\n[loss]\nL = "(z - y)**2"\n'


def test_the_model_file_reads_every_new_function_as_the_python_api_builds_it():
    g = parse_model(nodes("leaky_relu(x) + leaky_relu(x, 0.01) + leaky_relu(x, w) + elu(x) + gelu(x) + silu(x) "
                          "+ erf(x) + sin(x) + cos(x) + log1p(x*x) + expm1(x) + maximum(x, w) + minimum(b, x) "
                          "+ clip(x, b, b + w*w)"), "m.toml").graph
    x, w, b = g.symbol("x"), g.symbol("w"), g.symbol("b")
    expected = (2 * leaky_relu(x) + leaky_relu(x, w) + elu(x) + gelu(x) + silu(x) + erf(x) + sp.sin(x) + sp.cos(x)
                + log1p(x * x) + expm1(x) + maximum(x, w) + minimum(b, x) + clip(x, b, b + w * w))
    assert g["z"].expr == expected
    assert leaky_relu(x) == leaky_relu(x, sp.Float(0.01))  # the default slope is PyTorch's


@pytest.mark.parametrize("text, message", [
    ("maximum(x)", "maximum(...) takes exactly 2 arguments, got 1"),
    ("minimum(x, w, b)", "minimum(...) takes exactly 2 arguments, got 3"),
    ("clip(x, 0)", "clip(...) takes exactly 3 arguments, got 2"),
    ("leaky_relu()", "leaky_relu(...) takes 1 or 2 arguments, got 0"),
    ("leaky_relu(x, w, b)", "leaky_relu(...) takes 1 or 2 arguments, got 3"),
    ("gelu(x, w)", "gelu(...) takes exactly one argument, got 2"),
    ("clip(x, lo=0, hi=1)", "clip(...) takes no keyword arguments (got 'lo=')"),
    ("clip(x, 1, -1)", "cannot compute clip(x, 1, -1): clip(x, lo, hi) needs lo <= hi, got lo = 1 and hi = -1"),
    ("log1p(-1)", "log1p(-1) is not a finite real number"),
    ("elu", "'elu' is a function; call it, as in elu(...)"),
])
def test_wrong_calls_are_one_line_errors_naming_the_file_the_entry_and_the_function(text, message):
    with pytest.raises(ModelError) as e:
        parse_model(nodes(text), "m.toml")
    assert str(e.value) == f"m.toml: [nodes] z: {message}"


def test_names_of_the_new_functions_are_reserved():
    for name in ("gelu", "clip", "sin", "maximum"):
        with pytest.raises(ModelError, match=f"'{name}' is reserved"):
            parse_model(f'{HEAD}[nodes]\n{name} = "x"\n[loss]\nL = "({name} - y)**2"\n', "m.toml")


def test_the_python_api_exports_every_new_function():
    import symbackprop
    for name in NEW:
        assert getattr(symbackprop, name) is FUNCTIONS[name] and name in symbackprop.__all__


# ---- the example -----------------------------------------------------------------------------------------------
EXAMPLE = ROOT / "examples" / "activations.toml"


def test_the_example_derives_verifies_and_trains():
    runner = CliRunner()
    derived = runner.invoke(main, ["derive", str(EXAMPLE), "--format", "text"])
    assert derived.exit_code == 0, derived.output
    assert "convention: d/dx clip(x, lo, hi) = 1 for lo <= x <= hi" in derived.output
    verified = runner.invoke(main, ["verify", str(EXAMPLE)])
    assert verified.exit_code == 0 and "all gradient checks passed" in verified.output, verified.output
    assert "FAILED" not in verified.output and "pytorch autograd" in verified.output
    trained = runner.invoke(main, ["train", str(EXAMPLE)])
    assert trained.exit_code == 0, trained.output
    first, last = map(float, re.search(r"loss (\S+) \(epoch 0\) -> (\S+) \(epoch 300\)", trained.output).groups())
    assert last < 0.1 * first


# ---- random networks -------------------------------------------------------------------------------------------
def uses(spec, cls) -> bool:
    return any(isinstance(e, cls) for _, expr in spec.nodes + [("L", spec.loss)] for e in sp.preorder_traversal(expr))


@pytest.mark.parametrize("family", [scalar_graphs, tensor_graphs], ids=["scalar", "tensor"])
def test_the_random_networks_draw_the_functions_of_several_arguments(family):
    """maximum, minimum, clip (with numbers and expressions as bounds) and leaky_relu with an expression as its
    slope are drawn by the networks of tests/test_properties.py, which check them against the reference, finite
    differences and PyTorch; in 150 networks (derandomised) each appears. (Each one-argument function is drawn,
    and checked, by the next test.)"""
    seen: set[str] = set()

    @settings(max_examples=150, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(spec=family())
    def collect(spec):
        for _, expr in spec.nodes + [("L", spec.loss)]:
            for e in sp.preorder_traversal(expr):
                if isinstance(e, (maximum, minimum)):
                    seen.add(type(e).__name__)
                if isinstance(e, clip):
                    seen.add("clip" + ("" if e.args[2].is_Number else " of expressions"))
                if isinstance(e, leaky_relu) and not e.args[1].is_Number:
                    seen.add("leaky_relu with an expression as slope")

    collect()
    assert seen >= {"maximum", "minimum", "clip", "clip of expressions", "leaky_relu with an expression as slope"}, seen


#: the unary functions of tests/strategies.py grouped by function (leaky_relu at two slopes, log1p at two arguments)
BY_FUNCTION: dict[type, list] = {}
for wrapper in NEW_FUNCTIONS:
    BY_FUNCTION.setdefault(type(wrapper(u)), []).append(wrapper)
#: networks per function and family: an eighth of the profile's, at least 6 (6 by default, 150 in the long profile)
PER_FUNCTION = max(6, settings.default.max_examples // 8)


@pytest.mark.parametrize("family", [scalar_graphs, tensor_graphs], ids=["scalar", "tensor"])
@pytest.mark.parametrize("cls", BY_FUNCTION, ids=lambda c: c.__name__)
def test_random_networks_of_each_function_match_the_reference_finite_differences_and_pytorch(family, cls):
    """Networks whose every drawn elementwise function is ``cls`` (and that use it), at their batch sizes."""
    @settings(max_examples=PER_FUNCTION, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(spec=family(functions=BY_FUNCTION[cls]).filter(lambda spec: uses(spec, cls)))
    def check(spec):
        check_forward_pass(spec)
        check_finite_differences(spec)
        check_against_torch(spec)

    check()
