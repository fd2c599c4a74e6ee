"""Hypothesis strategies that build random networks, and an independent reference evaluation of them.

A strategy draws a :class:`GraphSpec`: the declarations and node definitions of a random network as
SymPy expressions, written so that every function stays inside its domain *by construction*
(``log(softplus(u) + 1/10)``, ``sqrt(u**2 + 1)``, ``exp(tanh(u))``, division by ``u**2 + 1``), plus a
seed for the parameter values and the batch. ``repr(spec)`` is the network as text, one definition a
line, so a failing example shrinks to a small network hypothesis can print.

The two kinks (``relu`` and ``abs``) cannot be kept away from 0 by construction without making them
trivial, so the reference evaluation reports how close every kink argument comes to 0 and the tests
reject points closer than a margin (finite differences across a kink measure nothing).

:func:`reference_values` evaluates a spec per sample with plain NumPy, one case per SymPy type, naive
textbook formulas (``1/(1 + exp(-u))``, ``exp(v)/sum(exp(v))``), vectors as ``(n, 1)`` columns. It uses
none of symbackprop's derivation, program, printers or stable rewrites (``log(softmax(v))`` is
evaluated as written, before the graph rewrites it), so a printer bug in the generated forward pass
cannot hide behind finite differences of that same forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np
import sympy as sp
from hypothesis import strategies as st

from symbackprop.functions import relu, sigmoid, softplus, step
from symbackprop.graph import Graph
from symbackprop.tensor import (canonical_shape, infer_shape, logsumexp, matmul, mean, ones, softmax, sum_, transpose)

Shape = tuple[int, ...]
TENTH, HALF = sp.Rational(1, 10), sp.Rational(1, 2)


# ---- the spec ----------------------------------------------------------------------------------------
@dataclass
class Decl:
    """An input or a parameter."""

    name: str
    kind: str  # "input" or "param"
    shape: Shape
    target: str = ""  # for the target input: "real" or "probabilities"


@dataclass
class GraphSpec:
    """A random network: declarations, node definitions in forward order, the loss, and a value seed."""

    family: str
    decls: list[Decl] = field(default_factory=list)
    nodes: list[tuple[str, sp.Expr]] = field(default_factory=list)
    loss: sp.Expr | None = None
    seed: int = 0
    batch: int = 3

    def __repr__(self) -> str:
        lines = [f"{self.family} network (seed={self.seed}, N={self.batch}):"]
        for d in self.decls:
            shape = f"{list(d.shape)}" if d.shape else "scalar"
            lines.append(f"    {d.kind} {d.name}: {shape}")
        lines += [f"    {name} = {expr}" for name, expr in self.nodes]
        lines.append(f"    L = {self.loss}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints for a failing example
        printer.text(repr(self))

    # ---- reading ---------------------------------------------------------------------------------------
    def symbol(self, name: str) -> sp.Symbol:
        return sp.Symbol(name, real=True)

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
        for name, expr in self.nodes:
            g.node(name, expr)
        g.loss("L", self.loss)
        return g

    def point(self) -> tuple[dict, dict]:
        """Parameter values and a batch of data, from the seed; every input inside its domain."""
        rng = np.random.default_rng(self.seed)
        params = {d.name: rng.uniform(-1.2, 1.2, d.shape) if d.shape else float(rng.uniform(-1.2, 1.2))
                  for d in self.of_kind("param")}
        data = {}
        for d in self.of_kind("input"):
            if d.target == "probabilities":
                data[d.name] = rng.dirichlet(np.ones(d.shape[0]), self.batch)
            else:
                data[d.name] = rng.uniform(-2.0, 2.0, (self.batch, *d.shape))
        return params, data


# ---- the reference evaluation ------------------------------------------------------------------------
def _column(value: np.ndarray, shape: Shape):
    """A value of the given declared shape in the reference layout: scalars as floats, vectors (n, 1)."""
    if not shape:
        return float(value)
    return np.asarray(value, dtype=np.float64).reshape(shape if len(shape) == 2 else (shape[0], 1))


def _scalar_if_1x1(value):
    return float(value[0, 0]) if isinstance(value, np.ndarray) and value.shape == (1, 1) else value


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
}
_KINKED = (relu, sp.Abs)


class Reference:
    """Per-sample evaluation of SymPy expressions with NumPy; records the arguments of relu and abs."""

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
            if isinstance(e, _KINKED):
                self.kink_args.extend(np.ravel(args[0]).tolist())
            return _NAIVE[type(e)](args[0])
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
        raise TypeError(f"the reference evaluation has no case for {type(e).__name__}")


@dataclass
class ReferenceResult:
    values: dict[str, np.ndarray]  # node or loss name -> its values over the batch, shape (N, *shape)
    largest: float  # the largest |value| of any node or loss element over the batch
    kink_margin: float  # the smallest |argument| of relu/abs over the batch (inf if none)

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
            for i in range(spec.batch):
                env = {name: _column(v, shapes[name]) for name, v in params.items()}
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
def _domain_safe_unary(draw, u: sp.Expr) -> sp.Expr:
    """One elementwise function of ``u``, its argument kept in its domain whatever ``u`` is."""
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
    return draw(st.sampled_from(wrappers))(u)


class Builder:
    """Declarations and nodes drawn so far; parameters are reused (tied) or created as drawn."""

    def __init__(self, draw, family: str):
        self.draw = draw
        self.spec = GraphSpec(family)
        self.shape_of: dict[sp.Symbol, Shape] = {}
        self.counts: dict[str, int] = {}
        self.min_size = 1  # the smallest vector or matrix dimension drawn

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
    kind = draw(st.sampled_from(["unary", "add", "sub", "mul", "div", "affine", "three"]))
    if kind == "unary":
        return _domain_safe_unary(draw, u)
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
def scalar_graphs(draw, max_nodes: int = 7, max_inputs: int = 2) -> GraphSpec:
    """Scalar networks of 1 to ``max_nodes`` nodes over 1 to ``max_inputs`` inputs and shared weights."""
    b = Builder(draw, "scalar")
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
    b.spec.batch = draw(st.integers(3, 5))
    return b.spec


# ---- small tensor networks ---------------------------------------------------------------------------
def _size(b: Builder) -> int:
    return b.draw(st.integers(b.min_size, 4))


def _vector_node(b: Builder, a: sp.Symbol, n: int) -> sp.Expr:
    draw = b.draw
    kind = draw(st.sampled_from(["linear", "unary", "hadamard", "scale", "skip", "div", "softmax",
                                 "log_softmax", "logsumexp", "sum", "mean", "quadratic", "inner",
                                 "outer", "row", "gate"]))
    if kind == "linear":  # W @ a + b, or a tied W.T @ a where a weight of the transposed shape exists
        m = _size(b)
        tied = [b.spec.symbol(d.name) for d in b.spec.of_kind("param") if d.shape == (n, m)]
        if tied and draw(st.booleans()):
            return matmul(transpose(draw(st.sampled_from(tied))), a) + b.param((m,))
        return matmul(b.param((m, n)), a) + b.param((m,))
    if kind == "unary":
        return _domain_safe_unary(draw, a)
    if kind == "hadamard":
        return a * b.pick_or_param((n,))
    if kind == "scale":
        return b.pick_or_param(()) * a
    if kind == "skip":
        return a + b.pick_or_param((n,))
    if kind == "div":
        other = b.pick_or_param(draw(st.sampled_from([(n,), ()])))
        return a / (other ** 2 + 1)
    if kind == "softmax":
        return softmax(a)
    if kind == "log_softmax":
        return sp.log(softmax(a))
    if kind == "logsumexp":
        return logsumexp(a)
    if kind == "sum":
        return sum_(a)
    if kind == "mean":
        return mean(a)
    if kind == "quadratic":  # a.T @ (W @ a)
        return matmul(transpose(a), matmul(b.param((n, n)), a))
    if kind == "gate":  # a Hadamard product with a bare matrix product, g * (W @ a) (bug 10)
        m = _size(b)
        return b.pick_or_param((m,)) * matmul(b.param((m, n)), a)
    if kind == "inner":
        return matmul(transpose(a), b.pick_or_param((n,)))
    if kind == "outer":  # a column times a row: a matrix node
        return matmul(a, transpose(b.pick_or_param((_size(b),))))
    return matmul(transpose(a), b.param((n, _size(b))))  # a row vector a.T @ W


def _matrix_node(b: Builder, a: sp.Symbol, m: int, n: int) -> sp.Expr:
    draw = b.draw
    kind = draw(st.sampled_from(["times_vector", "transpose_times_vector", "times_matrix", "unary",
                                 "hadamard", "scale", "sum"]))
    if kind == "times_vector":
        return matmul(a, b.pick_or_param((n,)))
    if kind == "transpose_times_vector":
        return matmul(transpose(a), b.pick_or_param((m,)))
    if kind == "times_matrix":
        return matmul(a, b.param((n, _size(b))))
    if kind == "unary":
        return _domain_safe_unary(draw, a)
    if kind == "hadamard":
        return a * b.pick_or_param((m, n))
    if kind == "scale":
        return b.pick_or_param(()) * a
    return sum_(a)


def _row_node(b: Builder, a: sp.Symbol, n: int) -> sp.Expr:
    draw = b.draw
    kind = draw(st.sampled_from(["times_vector", "transpose", "unary", "scale", "sum"]))
    if kind == "times_vector":
        return matmul(a, b.pick_or_param((n,)))
    if kind == "transpose":
        return transpose(a)
    if kind == "unary":
        return _domain_safe_unary(draw, a)
    if kind == "scale":
        return b.pick_or_param(()) * a
    return sum_(a)


def _tensor_node(b: Builder) -> sp.Expr:
    a = b.pick()
    shape = b.shape_of[a]
    if len(shape) == 1:
        return _vector_node(b, a, shape[0])
    if len(shape) == 2 and shape[0] == 1:
        return _row_node(b, a, shape[1])
    if len(shape) == 2:
        return _matrix_node(b, a, *shape)
    return _scalar_node(b, a)


@st.composite
def tensor_graphs(draw, max_nodes: int = 6, min_size: int = 1) -> GraphSpec:
    """Networks of vectors and matrices of sizes ``min_size`` to 4 (with some scalars), and a scalar loss."""
    b = Builder(draw, "tensor")
    b.min_size = min_size
    b.declare("input", (_size(b),), "x")
    if draw(st.booleans()):
        b.declare("input", (), "s")
    for _ in range(draw(st.integers(1, max_nodes))):
        b.add_node(_tensor_node(b))
    out = b.latest()
    shape = b.shape_of[out]
    if len(shape) == 1 and draw(st.booleans()):  # cross-entropy against soft targets
        y = b.declare("input", shape, "y", target="probabilities")
        loss = -sum_(y * sp.log(softmax(out)))
    else:
        y = b.declare("input", shape, "y", target="real")
        loss = sum_((out - y) ** 2) / 2 if shape else (out - y) ** 2 / 2
    scalars = [s for s in b.pool(()) if s.name.startswith("h") and s != out]
    if scalars and draw(st.booleans()):  # the loss combines another node
        loss = loss + draw(st.sampled_from(scalars)) / 4
    b.spec.loss = loss
    b.spec.seed = draw(st.integers(0, 2 ** 32 - 1))
    b.spec.batch = draw(st.integers(3, 5))
    return b.spec
