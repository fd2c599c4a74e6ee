"""Hypothesis strategies that build random networks, and an independent reference evaluation of them.

A strategy draws a :class:`GraphSpec`: the declarations and node definitions of a random network as
SymPy expressions, written so that every function stays inside its domain *by construction*
(``log(softplus(u) + 1/10)``, ``sqrt(u**2 + 1)``, ``exp(tanh(u))``, division by ``u**2 + 1``), plus a
seed for the parameter values and the data, and the batch sizes to run it at: 1, one of its sides and a
prime larger than every side (a batch size that equals a side is where NumPy broadcasting hides a wrong
shape; see :func:`batch_sizes`). ``repr(spec)`` is the network as text, one definition a line, so a
failing example shrinks to a small network hypothesis can print.

Tensor networks (:func:`tensor_graphs`) are drawn as users write them: every argument of every
operation is itself a random expression (:meth:`TensorBuilder.expression`: sums, differences, scalings by
numbers, parameters and per-sample scalars, Hadamard products, quotients, powers with integer,
fractional, negative and parameter exponents, functions, nested matrix products such as ``(A @ B) @ x``,
``tanh(U @ V) @ x`` or ``(W + U) @ x``, transposes, reductions, softmax, indices, slices and concats such as
``h[-1]``, ``W[0]``, ``h[1:3]``, ``concat(s, v[1:])``), plus normalisations (L2, layer norm, RMSNorm, cosine
similarity), named constants (``c0 = 0.5``) wherever a scalar may stand, and alias nodes (``h2 = h1``).

The kinks (``relu``, ``abs``, ``leaky_relu``, ``elu``'s second derivative, the ties of ``maximum`` and
``minimum``, the bounds of ``clip``) cannot be kept away by construction without making them trivial, so
the reference evaluation reports how close every kink argument comes to 0 and the tests reject points
closer than a margin (finite differences across a kink measure nothing).

:func:`reference_values` evaluates a spec per sample with plain NumPy, one case per SymPy type, naive
textbook formulas (``1/(1 + exp(-u))``, ``exp(v)/sum(exp(v))``), vectors as ``(n, 1)`` columns. It uses
none of symbackprop's derivation, program, printers or stable rewrites (``log(softmax(v))`` is
evaluated as written, before the graph rewrites it), so a printer bug in the generated forward pass
cannot hide behind finite differences of that same forward pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from math import prod

import numpy as np
import sympy as sp
from hypothesis import strategies as st

from symbackprop.functions import (clip, elu, erf, expm1, gelu, leaky_relu, log1p, maximum, minimum, relu, sigmoid,
                                   silu, softplus, step)
from symbackprop.graph import Graph
from symbackprop.indexing import OPEN_END, concat, index, slice_
from symbackprop.tensor import (canonical_shape, infer_shape, logsumexp, matmul, matrix_shape, mean, ones, softmax,
                                sum_, transpose)

Shape = tuple[int, ...]
TENTH, HALF, THREE_HALVES = sp.Rational(1, 10), sp.Rational(1, 2), sp.Rational(3, 2)


# ---- the spec ----------------------------------------------------------------------------------------
@dataclass
class Decl:
    """An input, a parameter or a named constant."""

    name: str
    kind: str  # "input", "param" or "constant"
    shape: Shape
    target: str = ""  # for the target input: "real" or "probabilities"
    value: float = 0.0  # for a constant


@dataclass
class GraphSpec:
    """A random network: declarations, node definitions in forward order, the loss, and a value seed."""

    family: str
    decls: list[Decl] = field(default_factory=list)
    nodes: list[tuple[str, sp.Expr]] = field(default_factory=list)
    loss: sp.Expr | None = None
    seed: int = 0
    batches: tuple[int, ...] = (1, 3)  # the batch sizes N the network is run at

    def __repr__(self) -> str:
        lines = [f"{self.family} network (seed={self.seed}, N in {self.batches}):"]
        for d in self.decls:
            shape = f"{list(d.shape)}" if d.shape else "scalar"
            declared = f"constant {d.name} = {d.value}" if d.kind == "constant" else f"{d.kind} {d.name}: {shape}"
            lines.append("    " + declared)
        lines += [f"    {name} = {expr}" for name, expr in self.nodes]
        lines.append(f"    L = {self.loss}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints for a failing example
        printer.text(repr(self))

    # ---- reading ---------------------------------------------------------------------------------------
    def symbol(self, name: str) -> sp.Symbol:
        return sp.Symbol(name, real=True)

    @property
    def sides(self) -> set[int]:
        """Every vector and matrix dimension of the network (declared and computed), 1 included."""
        declared = {n for d in self.decls for n in d.shape}
        return {1} | declared | {n for shape in self.shapes.values() for n in shape}

    @property
    def shapes(self) -> dict[sp.Symbol, Shape]:
        """Shapes as symbackprop computes with them (canonical: a 1 x 1 matrix is a scalar, n x 1 a vector)."""
        out = {self.symbol(d.name): canonical_shape(d.shape) for d in self.decls}
        for name, expr in self.nodes:
            out[self.symbol(name)] = infer_shape(expr, out)
        return out

    def of_kind(self, kind: str) -> list[Decl]:
        return [d for d in self.decls if d.kind == kind]

    def build(self) -> Graph:
        """The network as a symbackprop Graph (inputs, then parameters, then nodes, then the loss)."""
        g = Graph(f"random {self.family} network")
        for d in self.of_kind("input"):
            g.input(d.name, d.shape)
        for d in self.of_kind("param"):
            g.param(d.name, d.shape)
        for d in self.of_kind("constant"):
            g.constant(d.name, d.value)
        for name, expr in self.nodes:
            g.node(name, expr)
        g.loss("L", self.loss)
        return g

    def point(self, batch: int) -> tuple[dict, dict]:
        """Parameter values (the same at every batch size) and ``batch`` samples of data, from the seed;
        every input inside its domain."""
        rng = np.random.default_rng(self.seed)
        params = {d.name: rng.uniform(-1.2, 1.2, d.shape) if d.shape else float(rng.uniform(-1.2, 1.2))
                  for d in self.of_kind("param")}
        data = {}
        for d in self.of_kind("input"):
            if d.target == "probabilities":
                rows = rng.dirichlet(np.ones(int(np.prod(d.shape))), batch)
                data[d.name] = rows.reshape((batch, *d.shape))
            else:
                data[d.name] = rng.uniform(-2.0, 2.0, (batch, *d.shape))
        return params, data


def smallest_prime_above(n: int) -> int:
    return next(p for p in range(n + 1, 2 * n + 3) if all(p % k for k in range(2, int(p ** 0.5) + 1)))


def batch_sizes(draw, spec: GraphSpec) -> tuple[int, ...]:
    """1, one of the network's sides (drawn), and the smallest prime larger than every side.

    At N = 1 and at N equal to a side, an array of a wrong shape can broadcast into a result of the
    right size (an (N, n, 1) against an (N, n), for instance); at a prime above every side it cannot.
    """
    sides = sorted(spec.sides)
    return tuple(sorted({1, draw(st.sampled_from(sides)), smallest_prime_above(sides[-1])}))


# ---- the reference evaluation ------------------------------------------------------------------------
def _column(value: np.ndarray, shape: Shape):
    """A value of the given declared shape in the reference layout: scalars as floats, vectors (n, 1)."""
    if not shape:
        return float(value)
    return np.asarray(value, dtype=np.float64).reshape(shape if len(shape) == 2 else (shape[0], 1))


def _scalar_if_1x1(value):
    return float(value[0, 0]) if isinstance(value, np.ndarray) and value.shape == (1, 1) else value


_ERF = np.vectorize(math.erf, otypes=[float])

_NAIVE = {
    sigmoid: lambda u: 1.0 / (1.0 + np.exp(-u)),
    softplus: lambda u: np.log(1.0 + np.exp(u)),
    relu: lambda u: np.maximum(u, 0.0),
    step: lambda u: np.where(np.asarray(u) > 0, 1.0, 0.0),
    sp.tanh: np.tanh,
    sp.exp: np.exp,
    sp.log: np.log,
    sp.Abs: np.abs,
    sp.sign: np.sign,
    leaky_relu: lambda u, slope: np.where(np.asarray(u) > 0, u, slope * u),
    elu: lambda u: np.where(np.asarray(u) > 0, u, np.exp(u) - 1.0),
    gelu: lambda u: u / 2 * (1.0 + _ERF(u / math.sqrt(2.0))),
    silu: lambda u: u / (1.0 + np.exp(-u)),
    erf: _ERF,
    sp.sin: np.sin,
    sp.cos: np.cos,
    log1p: lambda u: np.log(1.0 + u),
    expm1: lambda u: np.exp(u) - 1.0,
    maximum: lambda a, b: np.where(np.asarray(a) > b, a, b),
    minimum: lambda a, b: np.where(np.asarray(a) < b, a, b),
    clip: lambda u, lo, hi: np.where(np.asarray(u) < lo, lo, np.where(np.asarray(u) > hi, hi, u)),
}
#: where each function with a kink has it: the arguments whose distance from 0 the tests keep above a margin
#: (elu is smooth once, but its second derivative jumps at 0, which 4th-order differences see)
_KINKS = {
    relu: lambda u: [u],
    sp.Abs: lambda u: [u],
    leaky_relu: lambda u, slope: [u],
    elu: lambda u: [u],
    maximum: lambda a, b: [a - b],
    minimum: lambda a, b: [a - b],
    clip: lambda u, lo, hi: [u - lo, u - hi],
}


class Reference:
    """Per-sample evaluation of SymPy expressions with NumPy; records the distances from their kinks."""

    def __init__(self):
        self.kink_args: list[float] = []

    def __call__(self, e: sp.Expr, env: dict):
        if e.is_Symbol:
            return env[e.name]
        if e.is_Number:
            return float(e)
        args = [self(a, env) for a in e.args]
        if isinstance(e, sp.Add):
            return sum(args[1:], args[0])
        if isinstance(e, sp.Mul):
            return prod(args[1:], start=args[0])
        if isinstance(e, sp.Pow):
            return np.power(args[0], args[1])
        if type(e) in _NAIVE:
            for distance in _KINKS.get(type(e), lambda *a: [])(*args):
                self.kink_args.extend(np.ravel(distance).tolist())
            value = _NAIVE[type(e)](*args)
            return float(value) if np.ndim(value) == 0 else value
        if isinstance(e, matmul):
            return _scalar_if_1x1(np.atleast_2d(args[0]) @ np.atleast_2d(args[1]))
        if isinstance(e, transpose):
            return args[0].T if isinstance(args[0], np.ndarray) else args[0]
        if isinstance(e, mean):
            return float(np.mean(args[0]))
        if isinstance(e, sum_):
            return float(np.sum(args[0]))
        if isinstance(e, softmax):
            return np.exp(args[0]) / np.sum(np.exp(args[0]))
        if isinstance(e, logsumexp):
            return float(np.log(np.sum(np.exp(args[0]))))
        if isinstance(e, ones):
            return np.ones(tuple(int(n) for n in e.args)) if len(e.args) == 2 else np.ones((int(e.args[0]), 1))
        if isinstance(e, index):  # NumPy's own negative indices; a row of a matrix becomes a column
            a, i = args[0], int(e.args[1])
            return float(a[i, 0]) if a.shape[1] == 1 else a[i, :].reshape(-1, 1)
        if isinstance(e, slice_):  # NumPy's own slice rules (negative and past-the-end bounds)
            return _scalar_if_1x1(args[0][int(e.args[1]):int(e.args[2]), :])
        if isinstance(e, concat):
            return np.vstack([np.reshape(a, (-1, 1)) for a in args])
        raise TypeError(f"the reference evaluation has no case for {type(e).__name__}")


@dataclass
class ReferenceResult:
    values: dict[str, np.ndarray]  # node or loss name -> its values over the batch, shape (N, *shape)
    largest: float  # the largest |value| of any node or loss element over the batch
    kink_margin: float  # the smallest distance from a kink over the batch (inf if none)

    @property
    def losses(self) -> np.ndarray:
        return self.values["L"]


def reference_values(spec: GraphSpec, params: dict, data: dict) -> ReferenceResult:
    """Evaluate the spec's own expressions sample by sample.

    Where the naive formulas fail (overflow, log of <= 0; an underflow to 0 is harmless) the result has
    ``largest = inf`` and no values, so that the tests reject the point.
    """
    reference = Reference()
    shapes = {d.name: d.shape for d in spec.decls}
    computed = spec.nodes + [("L", spec.loss)]
    samples = []
    with np.errstate(all="raise", under="ignore"):
        try:
            for i in range(len(next(iter(data.values()))) if data else 1):
                env = {name: _column(v, shapes[name]) for name, v in params.items()}
                env.update({d.name: d.value for d in spec.of_kind("constant")})
                env.update({name: _column(v[i], shapes[name]) for name, v in data.items()})
                for name, expr in computed:
                    env[name] = reference(expr, env)
                samples.append(env)
        except FloatingPointError:
            return ReferenceResult({}, float("inf"), float("inf"))
    node_shapes = {s.name: shape for s, shape in spec.shapes.items()}
    values = {name: np.array([np.reshape(env[name], node_shapes.get(name, ())) for env in samples])
              for name, _ in computed}
    largest = max(float(np.max(np.abs(v))) for v in values.values())
    margin = min(map(abs, reference.kink_args), default=float("inf"))
    return ReferenceResult(values, largest, margin)


# ---- drawing networks --------------------------------------------------------------------------------
#: the elementwise functions of issue 12, each kept in its domain (log1p of a value > -1)
NEW_FUNCTIONS = [
    lambda u: leaky_relu(u),  # kink, as relu
    lambda u: leaky_relu(u, sp.Float(0.2)),
    lambda u: elu(u),
    lambda u: gelu(u),
    lambda u: silu(u),
    lambda u: erf(u),
    lambda u: sp.sin(u),
    lambda u: sp.cos(u),
    lambda u: log1p(softplus(u)),
    lambda u: log1p(u ** 2),
    lambda u: expm1(sp.sin(u)),
    lambda u: expm1(-u ** 2),
]


def _domain_safe_unary(draw, u: sp.Expr, functions: list | None = None) -> sp.Expr:
    """One elementwise function of ``u``, its argument kept in its domain whatever ``u`` is; one of
    ``functions`` where given (tests/test_functions.py draws networks of one function).

    The functions of issue 12 are a group of their own, drawn as often as all the others together (from one
    list of 27, hypothesis rarely reached its end)."""
    if functions:
        return draw(st.sampled_from(functions))(u)
    wrappers = [
        lambda u: sigmoid(u),
        lambda u: sp.tanh(u),
        lambda u: softplus(u),
        lambda u: relu(u),  # kink: the tests keep points away from u = 0
        lambda u: sp.Abs(u),  # kink, as relu
        lambda u: sp.exp(sp.tanh(u)),
        lambda u: sp.exp(-sigmoid(u)),
        lambda u: sp.log(softplus(u) + TENTH),
        lambda u: sp.log(u ** 2 + 1),
        lambda u: sp.sqrt(softplus(u) + TENTH),
        lambda u: sp.sqrt(u ** 2 + 1),
        lambda u: 1 / (u ** 2 + 1),
        lambda u: (sigmoid(u) + HALF) ** -2,
        lambda u: u ** 2,
        lambda u: u ** 3,
    ]
    return draw(st.sampled_from(draw(st.sampled_from([wrappers, NEW_FUNCTIONS]))))(u)


def _several_arguments(draw, u: sp.Expr, other, slope) -> sp.Expr:
    """A function of several arguments of ``u``: maximum or minimum of ``u`` and another expression (either
    order), ``clip(u, lo, hi)`` with lo <= hi by construction (numbers, or ``lo`` and ``lo + p``, ``p`` a
    positive function), or ``leaky_relu(u, slope)`` with a number, a parameter or an expression as slope.

    ``other()`` draws another argument (of ``u``'s shape, or a scalar); ``slope()`` a scalar parameter."""
    kind = draw(st.sampled_from(["maximum", "minimum", "clip", "clip", "leaky_relu"]))
    if kind in ("maximum", "minimum"):
        v = other()
        first, second = (u, v) if draw(st.booleans()) else (v, u)
        return (maximum if kind == "maximum" else minimum)(first, second)
    if kind == "clip":
        bounds = draw(st.sampled_from(["numbers", "expressions"]))
        if bounds == "numbers":
            return clip(u, -HALF, draw(st.sampled_from([HALF, sp.Float(1.5)])))
        lo = other()
        return clip(u, lo, lo + _positive(draw, other()))
    return leaky_relu(u, draw(st.sampled_from([slope, other]))())


def _positive(draw, u: sp.Expr) -> sp.Expr:
    """A positive function of ``u``: a base for any power, a denominator, an argument of log or sqrt."""
    return draw(st.sampled_from([lambda u: u ** 2 + 1, lambda u: softplus(u) + TENTH,
                                 lambda u: sp.exp(sp.tanh(u))]))(u)


class Builder:
    """Declarations and nodes drawn so far; parameters are reused (tied) or created as drawn."""

    def __init__(self, draw, family: str):
        self.draw = draw
        self.spec = GraphSpec(family)
        self.shape_of: dict[sp.Symbol, Shape] = {}
        self.counts: dict[str, int] = {}
        self.min_size = 1  # the smallest vector or matrix dimension drawn
        self.functions: list | None = None  # the elementwise functions to draw from (None: all)

    def declare(self, kind: str, shape: Shape, prefix: str, target: str = "") -> sp.Symbol:
        n = self.counts.get(prefix, 0)
        self.counts[prefix] = n + 1
        name = prefix if target else f"{prefix}{n}"
        self.spec.decls.append(Decl(name, kind, shape, target))
        symbol = self.spec.symbol(name)
        self.shape_of[symbol] = shape
        return symbol

    def param(self, shape: Shape) -> sp.Symbol:
        """An existing parameter of this shape (a shared weight), or a new one."""
        existing = [self.spec.symbol(d.name) for d in self.spec.of_kind("param") if d.shape == shape]
        if existing and self.draw(st.booleans()):
            return self.draw(st.sampled_from(existing))
        prefix = "w" if not shape else ("b" if len(shape) == 1 else "W")
        return self.declare("param", shape, prefix)

    def pool(self, shape=None) -> list[sp.Symbol]:
        """Quantities (of ``shape``, if given), the latest node first, so shrinking prefers deep chains."""
        nodes = [self.spec.symbol(n) for n, _ in reversed(self.spec.nodes)]
        declared = [self.spec.symbol(d.name) for d in self.spec.decls if not d.target]
        return [s for s in nodes + declared if shape is None or self.shape_of[s] == shape]

    def pick(self, shape=None) -> sp.Symbol | None:
        candidates = self.pool(shape)
        if not candidates:
            return None
        return candidates[self.draw(st.integers(0, len(candidates) - 1))]

    def pick_or_param(self, shape: Shape) -> sp.Symbol:
        found = self.pick(shape) if self.draw(st.booleans()) else None
        return found if found is not None else self.param(shape)

    def term(self, u: sp.Expr) -> sp.Expr:
        """``u`` itself or scaled by a scalar weight (shared weights come from here too)."""
        return u if self.draw(st.booleans()) else self.param(()) * u

    def add_node(self, expr: sp.Expr) -> sp.Symbol:
        name = f"h{len(self.spec.nodes) + 1}"
        self.spec.nodes.append((name, expr))
        symbol = self.spec.symbol(name)
        self.shape_of[symbol] = infer_shape(expr, self.shape_of)
        return symbol

    def latest(self) -> sp.Symbol:
        return self.spec.symbol(self.spec.nodes[-1][0])


# ---- scalar networks ---------------------------------------------------------------------------------
def _scalar_node(b: Builder, first: sp.Symbol | None = None) -> sp.Expr:
    draw = b.draw
    u = b.term(first if first is not None else b.pick(()))
    kind = draw(st.sampled_from(["unary", "add", "sub", "mul", "div", "affine", "three", "power", "several"]))
    if kind == "unary":
        return _domain_safe_unary(draw, u, b.functions)
    if kind == "several":  # maximum, minimum, clip, leaky_relu with a second argument
        return _several_arguments(draw, u, lambda: b.term(b.pick(())), lambda: b.param(()))
    if kind == "power":  # fractional, negative and parameter exponents of a positive base
        exponent = draw(st.sampled_from([HALF, THREE_HALVES, -HALF, -THREE_HALVES, "parameter"]))
        return _positive(draw, u) ** (b.param(()) if exponent == "parameter" else exponent)
    v = b.term(b.pick(()))
    if kind == "add":
        return u + v
    if kind == "sub":
        return u - v
    if kind == "mul":
        return u * v
    if kind == "div":
        denominator = draw(st.sampled_from([v ** 2 + 1, softplus(v) + HALF, sp.exp(sp.tanh(v))]))
        return u / denominator
    if kind == "affine":
        return b.param(()) * u + b.param(())
    return u * v + b.term(b.pick(()))  # a node using three earlier quantities


@st.composite
def scalar_graphs(draw, max_nodes: int = 7, max_inputs: int = 2, functions: list | None = None) -> GraphSpec:
    """Scalar networks of 1 to ``max_nodes`` nodes over 1 to ``max_inputs`` inputs and shared weights."""
    b = Builder(draw, "scalar")
    b.functions = functions
    for _ in range(draw(st.integers(1, max_inputs))):
        b.declare("input", (), "x")
    b.param(())
    for _ in range(draw(st.integers(1, max_nodes))):
        b.add_node(_scalar_node(b))
    y = b.declare("input", (), "y", target="real")
    out = b.latest()
    extra = b.pick(()) if len(b.spec.nodes) > 1 and draw(st.booleans()) else None
    prediction = out if extra is None else out + extra / 2
    b.spec.loss = (prediction - y) ** 2 / 2
    b.spec.seed = draw(st.integers(0, 2 ** 32 - 1))
    b.spec.batches = batch_sizes(draw, b.spec)
    return b.spec


# ---- tensor networks: a random expression in every argument position ------------------------------------
#: eps of a normalisation: 1/10, or 1e-5 as users write it (a Float in the printed code)
EPSILONS = (TENTH, sp.Float(1e-5))
#: values of named constants: a scale, a negative one, weight-decay sized, and a number SymPy would keep exact
CONSTANT_VALUES = (0.5, -1.5, 0.01, 2.0)


def _matrix_of(rows: int, cols: int) -> Shape:
    return canonical_shape((rows, cols))


class TensorBuilder(Builder):
    """Draws expressions of a given (canonical) shape whose every argument is again an expression."""

    def __init__(self, draw, family: str):
        super().__init__(draw, family)
        self.unused: list[sp.Symbol] = []  # nodes no later node uses (yet), latest last

    def param(self, shape: Shape) -> sp.Symbol:
        """An existing parameter of this computed shape (a shared weight), or a new one."""
        return self.declared("param", shape)

    def data(self, shape: Shape) -> sp.Symbol:
        """An existing input of this shape, or a new one (a per-sample scalar, vector, row or matrix)."""
        return self.declared("input", shape)

    def declared(self, kind: str, shape: Shape) -> sp.Symbol:
        """An existing quantity of ``kind`` and computed ``shape`` (mostly, for inputs), or a new one, declared
        sometimes in another spelling of the same matrix (``(n, 1)`` for a vector, ``(1,)`` or ``(1, 1)`` for
        a scalar)."""
        existing = [s for s in self.pool(shape) if self.kind_of(s) == kind]
        if existing and self.draw(st.integers(0, 3)) < (3 if kind == "input" else 2):
            return self.draw(st.sampled_from(existing))
        spellings = {(): [(), (), (1,), (1, 1)]}.get(shape, [shape, shape, (*shape, 1)] if len(shape) == 1 else [shape])
        prefix = ("s" if not shape else "x") if kind == "input" else ("w" if not shape else "b" if len(shape) == 1 else "W")
        return self.declare(kind, self.draw(st.sampled_from(spellings)), prefix)

    def declare(self, kind: str, shape: Shape, prefix: str, target: str = "") -> sp.Symbol:
        symbol = super().declare(kind, shape, prefix, target)
        self.shape_of[symbol] = canonical_shape(shape)
        return symbol

    def add_node(self, expr: sp.Expr) -> sp.Symbol:
        self.unused = [s for s in self.unused if s not in expr.free_symbols]
        symbol = super().add_node(expr)
        self.unused.append(symbol)
        return symbol

    def kind_of(self, symbol: sp.Symbol) -> str:
        return next((d.kind for d in self.spec.decls if d.name == symbol.name), "node")

    def size(self) -> int:
        return self.draw(st.integers(1, 4))

    def tensor_shape(self) -> Shape:
        """A vector (most often), a matrix or a row; a side of 1 makes it a vector or a scalar."""
        kind = self.draw(st.sampled_from(["vector", "matrix", "row"]))
        if kind == "vector":
            return canonical_shape((self.size(),))
        return _matrix_of(1 if kind == "row" else self.size(), self.size())

    def either(self, shape: Shape) -> Shape:
        """``shape``, or a scalar (per-sample or not) that broadcasts against it."""
        return shape if not shape or self.draw(st.booleans()) else ()

    def leaf(self, shape: Shape) -> sp.Expr:
        """A parameter, a node no later node uses yet (so nodes chain), an input, a tied transpose, a named
        constant (for a scalar), or any earlier quantity of ``shape``."""
        kind = self.draw(st.sampled_from(["param"] * 4 + ["node"] * 2 + ["input"] * 2 + ["tied", "quantity",
                                                                                          "constant"]))
        if kind == "constant" and shape == ():
            return self.constant()
        unused = [s for s in self.unused if self.shape_of[s] == shape]
        if kind == "node" and unused:
            self.unused.remove(unused[-1])
            return unused[-1]
        if kind == "quantity" and self.pool(shape):
            return self.pick(shape)
        if kind == "tied" and len(shape) == 2:
            tied = [s for s in self.pool(_matrix_of(shape[1], shape[0])) if self.kind_of(s) == "param"]
            if tied:
                return transpose(self.draw(st.sampled_from(tied)))
        return self.param(shape) if kind == "param" else self.data(shape)

    def constant(self) -> sp.Symbol:
        """An existing named constant, or a new one (``c0 = 0.5``): a scalar no gradient flows into."""
        existing = [s for s in self.pool(()) if self.kind_of(s) == "constant"]
        if existing and self.draw(st.booleans()):
            return self.draw(st.sampled_from(existing))
        symbol = self.declare("constant", (), "c")
        self.spec.decls[-1].value = self.draw(st.sampled_from(CONSTANT_VALUES))
        return symbol

    def position(self, n: int) -> int:
        """An index into a side of ``n``: from the start (``0 .. n-1``) or from the end (``-n .. -1``)."""
        return self.draw(st.integers(-n, n - 1))

    def part(self, shape: Shape, operand) -> sp.Expr:
        """An expression of ``shape`` (a scalar, vector or matrix) picked out of a larger one, ``operand(s)``:
        an element or a row by index (``v[-1]``, ``W[0]``), or elements or rows by slice (``v[1:3]``, ``v[-2:]``,
        ``W[1:]``), with the bounds written as users write them (from the end, open, past the end)."""
        draw = self.draw
        if shape == () or (len(shape) == 1 and draw(st.booleans())):  # v[i], or row i of a matrix
            n = draw(st.integers(2, 4))
            source = canonical_shape((n,)) if shape == () else _matrix_of(n, shape[0])
            return index(operand(source), self.position(n))
        rows, cols = matrix_shape(shape)
        extra = draw(st.integers(1, 3))
        n = rows + extra
        start = draw(st.integers(0, extra))
        source = canonical_shape((n,)) if cols == 1 else _matrix_of(n, cols)
        style = draw(st.sampled_from(["plain", "from the end", "open", "past the end"]))
        stop = start + rows
        if style == "from the end":
            start, stop = start - n, (stop - n) if stop < n else OPEN_END
        elif style == "open" and stop == n:
            stop = OPEN_END
        elif style == "past the end" and stop == n:
            stop = n + draw(st.integers(1, 3))
        return slice_(operand(source), start, stop)

    def joined(self, n: int, piece) -> sp.Expr:
        """A vector of ``n`` (at least 2) as the concat of 2 or 3 pieces, scalars (one element) or vectors,
        ``piece(shape)`` each."""
        cuts = sorted(self.draw(st.sets(st.integers(1, n - 1), min_size=1, max_size=min(2, n - 1))))
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, n])]
        return concat(*[piece(canonical_shape((k,))) for k in sizes])

    def expression(self, shape: Shape, depth: int) -> sp.Expr:
        """An expression of ``shape``: at depth 0 a quantity (:meth:`leaf`); else a compound whose every argument
        is an expression of depth - 1 (or, sometimes, a quantity).

        Where SymPy folds the compound to a number (``u - u``), a quantity takes its place."""
        expr = self.compound(shape, depth)
        if expr.is_number or infer_shape(expr, self.shape_of) != shape:
            return self.leaf(shape)
        return expr

    def compound(self, shape: Shape, depth: int) -> sp.Expr:
        draw = self.draw
        if depth <= 0:
            return self.leaf(shape)
        forms = ["sum", "difference", "scaling", "product", "quotient", "power", "function", "matmul", "leaf",
                 "several"]
        if shape:
            forms.append("transpose")
        if shape == ():
            forms += ["reduction", "cosine"]
        if len(shape) == 1:
            forms += ["softmax", "normalise", "concat"]
        forms.append("part")  # an index or a slice of a larger expression
        kind = draw(st.sampled_from(forms))
        sub = lambda s=shape: self.expression(s, depth - 1)  # noqa: E731
        if kind == "leaf":
            return self.leaf(shape)
        if kind == "part":
            return self.part(shape, sub)
        if kind == "concat":
            return self.joined(shape[0], sub)
        if kind == "sum":
            return sub() + sub(self.either(shape))
        if kind == "difference":
            return sub() - sub(self.either(shape))
        if kind == "scaling":  # by a number, a parameter, or a per-sample scalar expression
            if draw(st.booleans()):
                return draw(st.sampled_from([sp.Integer(2), HALF, sp.Integer(-3), sp.Float(0.5)])) * sub()
            return sub(()) * sub()
        if kind == "product":
            return sub() * sub(self.either(shape))
        if kind == "quotient":
            return sub() / _positive(draw, sub(self.either(shape)))
        if kind == "power":
            return self.power(sub())
        if kind == "function":
            return _domain_safe_unary(draw, sub(), self.functions)
        if kind == "several":
            return _several_arguments(draw, sub(), lambda: sub(self.either(shape)), lambda: self.param(()))
        if kind == "matmul":  # (rows x k) @ (k x cols), each side an expression: (A @ B) @ x, tanh(U @ V) @ x, ...
            rows, cols = matrix_shape(shape)
            k = self.size()
            return matmul(sub(_matrix_of(rows, k)), sub(_matrix_of(k, cols)))
        if kind == "transpose":
            rows, cols = matrix_shape(shape)
            return transpose(sub(_matrix_of(cols, rows)))
        if kind == "reduction":
            reduction = draw(st.sampled_from([sum_, mean, logsumexp]))
            inner = canonical_shape((self.size(),)) if reduction is logsumexp else self.tensor_shape()
            return reduction(sub(inner))
        if kind == "cosine":  # cosine similarity of two vectors
            n = canonical_shape((self.size(),))
            u, v = sub(n), sub(n)
            return sum_(u * v) / sp.sqrt(sum_(u * u) * sum_(v * v))
        if kind == "softmax":
            return draw(st.sampled_from([softmax, lambda v: sp.log(softmax(v))]))(sub())
        return self.normalised(sub())

    def around(self, a: sp.Expr, depth: int) -> sp.Expr:
        """An operation with ``a`` as one argument and expressions of ``depth`` as the others: the next layer
        of a network on ``a`` (``E @ a``, ``a @ E``, ``a + E``, ``E * a``, ``a / (E**2 + 1)``, ``f(a)``, ...)."""
        draw = self.draw
        shape = infer_shape(a, self.shape_of)
        rows, cols = matrix_shape(shape)
        forms = ["matmul", "function", "sum", "difference", "scaling", "product", "quotient", "power", "matmul_right",
                 "several"]
        if shape:
            forms += ["transpose", "reduction"]
        if len(shape) == 1:
            forms += ["softmax", "normalise", "cosine", "normalise", "cosine"]  # normalisations twice as often
        if len(shape) <= 1:
            forms.append("concat")
        if shape:
            forms.append("part")
        kind = draw(st.sampled_from(forms))
        sub = lambda s=shape: self.expression(s, depth)  # noqa: E731
        swap = lambda u, v: (u, v) if draw(st.booleans()) else (v, u)  # noqa: E731
        if kind == "concat":  # a joined with an expression, either side: concat(a, E) or concat(E, a)
            other = sub(canonical_shape((self.size(),)) if draw(st.booleans()) else ())
            return concat(*swap(a, other))
        if kind == "part":  # a[i] (an element, or a row of a matrix) or a[start:stop] (elements or rows)
            if rows == 1 or draw(st.booleans()):
                return index(a, self.position(rows))
            first = draw(st.integers(0, rows - 1))
            last = draw(st.integers(first + 1, rows))
            start = first - rows if draw(st.booleans()) else first
            stop = draw(st.sampled_from([last, OPEN_END if last == rows else last - rows]))
            return slice_(a, start, stop)
        if kind == "matmul":  # E @ a
            return matmul(sub(_matrix_of(self.size(), rows)), a)
        if kind == "matmul_right":  # a @ E
            return matmul(a, sub(_matrix_of(cols, self.size())))
        if kind == "function":
            return _domain_safe_unary(draw, a, self.functions)
        if kind == "several":
            return _several_arguments(draw, a, lambda: sub(self.either(shape)), lambda: self.param(()))
        if kind == "sum":
            return sp.Add(*swap(a, sub(self.either(shape))))
        if kind == "difference":
            u, v = swap(a, sub(self.either(shape)))
            return u - v
        if kind == "scaling":  # by a per-sample (or fixed) scalar expression, never a bare quantity
            return self.expression((), max(depth, 1)) * a
        if kind == "product":
            return a * sub(self.either(shape))
        if kind == "quotient":
            u, v = swap(a, sub(shape))
            return u / _positive(draw, v)
        if kind == "power":
            return self.power(a)
        if kind == "transpose":
            return transpose(a)
        if kind == "reduction":
            return draw(st.sampled_from([sum_, mean] + ([logsumexp] if len(shape) == 1 else [])))(a)
        if kind == "softmax":
            return draw(st.sampled_from([softmax, lambda v: sp.log(softmax(v))]))(a)
        if kind == "cosine":
            v = sub()
            return sum_(a * v) / sp.sqrt(sum_(a * a) * sum_(v * v))
        return self.normalised(a)

    def power(self, u: sp.Expr) -> sp.Expr:
        """``u`` to an integer power, or a positive function of it to a fractional, negative or parameter power."""
        draw = self.draw
        exponent = draw(st.sampled_from(["2", "3", "fractional", "negative", "parameter"]))
        if exponent in ("2", "3"):
            return u ** int(exponent)
        if exponent == "fractional":
            return _positive(draw, u) ** draw(st.sampled_from([HALF, THREE_HALVES]))
        if exponent == "negative":
            return _positive(draw, u) ** draw(st.sampled_from([sp.Integer(-1), sp.Integer(-2), -HALF, -THREE_HALVES]))
        return _positive(draw, u) ** self.param(())

    def normalised(self, v: sp.Expr) -> sp.Expr:
        """v/sqrt(sum(v*v)) (L2), layer norm (v - mean(v))/sqrt(var + eps), or RMSNorm v/sqrt(mean(v**2) + eps)."""
        draw = self.draw
        kind = draw(st.sampled_from(["l2", "layer", "rms"]))
        if kind == "l2":
            return v / sp.sqrt(sum_(v * v))
        eps = draw(st.sampled_from(EPSILONS))
        if kind == "rms":
            return v / sp.sqrt(mean(v ** 2) + eps)
        centred = v - mean(v)
        return centred / sp.sqrt(mean(centred ** 2) + eps)


@st.composite
def tensor_graphs(draw, max_nodes: int = 4, max_depth: int = 2, functions: list | None = None) -> GraphSpec:
    """Networks of 1 to ``max_nodes`` nodes. Each node applies one or two operations (:meth:`TensorBuilder.around`)
    to a node no later node uses yet (or the input vector ``x0``), with random expressions of depth up to
    ``max_depth`` in the other argument positions; or it is an alias of an earlier node. Inputs (per-sample
    scalars, vectors, rows, matrices) and parameters are declared as the expressions draw them."""
    b = TensorBuilder(draw, "tensor")
    b.functions = functions
    x = b.data(canonical_shape((b.size(),)))
    for _ in range(draw(st.integers(1, max_nodes))):
        if b.spec.nodes and draw(st.integers(0, 7)) == 0:  # an alias, q = "p"
            b.add_node(b.pick(b.shape_of[b.latest()]))
            continue
        expr = b.unused[-1] if b.unused and draw(st.integers(0, 3)) else (b.pick() if b.spec.nodes else x)
        for _ in range(draw(st.integers(1, 2))):
            expr = b.around(expr, draw(st.integers(0, max_depth)))
        b.add_node(expr)
    out = b.latest()
    shape = b.shape_of[out]
    if len(shape) == 1 and draw(st.booleans()):  # cross-entropy against soft targets
        y = b.declare("input", shape, "y", target="probabilities")
        loss = -sum_(y * sp.log(softmax(out)))
    else:
        y = b.declare("input", shape, "y", target="real")
        loss = sum_((out - y) ** 2) / 2 if shape else (out - y) ** 2 / 2
    scalars = [s for s in b.unused if b.shape_of[s] == () and s != out]
    if scalars and draw(st.booleans()):  # the loss combines another node
        loss = loss + draw(st.sampled_from(scalars)) / 4
    b.spec.loss = loss
    b.spec.seed = draw(st.integers(0, 2 ** 32 - 1))
    b.spec.batches = batch_sizes(draw, b.spec)
    return b.spec
