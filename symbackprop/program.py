"""The gradient program: the straight-line assignments that compute the loss and its gradients.

It is what :mod:`symbackprop.codegen` prints and :mod:`symbackprop.compile` runs. Three sections:

* ``forward``: every node from its definition, then the per-sample loss;
* ``backward``: every adjoint ``dL/dv``, as the sum of its consumers' contributions, in the order the
  derivation's steps give (each carries its chain-rule step as a comment);
* ``gradient``: each parameter's gradient, the mean over the batch of its per-sample contributions
  (marked with :class:`batch_mean`, which the printer turns into a single reduction such as
  ``delta.T @ x / N``).

Backward expressions reuse forward values (``sigmoid(z)`` becomes ``a``), and common subexpressions
across the whole program are computed once (``a - y`` for both the loss and ``dL/da``): this is where
hand-written speed comes from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .tensor import Shape, logsumexp, ones, softmax, transpose


class batch_mean(sp.Function):
    """Mean over the batch axis of a per-sample quantity (a no-op for quantities that do not vary)."""

    nargs = 1
    is_real = True


@dataclass
class Assignment:
    target: sp.Symbol
    expr: sp.Expr
    section: str  # "forward", "backward" or "gradient"
    comment: str = ""


@dataclass
class Program:
    """Straight-line gradient code with the shape and batch status of every symbol it assigns."""

    name: str
    loss: sp.Symbol
    inputs: list  # graph Quantities
    params: list
    nodes: list
    assignments: list[Assignment]
    gradients: dict[str, sp.Symbol]  # target name -> symbol holding the batch-mean gradient
    shapes: dict[sp.Symbol, Shape] = field(default_factory=dict)
    batched: set[sp.Symbol] = field(default_factory=set)
    constants: list = field(default_factory=list)  # graph Quantities: named numbers, module-level in the code

    def section(self, name: str) -> list[Assignment]:
        return [a for a in self.assignments if a.section == name]

    def op_count(self, section: str | None = None) -> int:
        """SymPy operations in the right-hand sides (of one section, or all)."""
        chosen = self.assignments if section is None else self.section(section)
        return sum(int(sp.count_ops(a.expr)) for a in chosen)


def _cheap(expr: sp.Expr) -> bool:
    """Temporaries not worth a line (and that would hide patterns like ``delta @ x.T``)."""
    return isinstance(expr, (transpose, ones)) or (
        isinstance(expr, sp.Mul) and len(expr.args) == 2 and expr.args[0] == -1 and expr.args[1].is_Atom)


def share_common_subexpressions(assignments: list[Assignment], taken: set[str]) -> list[Assignment]:
    """Compute each repeated subexpression once, in a temporary placed just before its first use."""
    prefix = "t"
    while any(n.startswith(prefix) and n[len(prefix):].isdigit() for n in taken):
        prefix += "_"
    temps = sp.numbered_symbols(prefix, real=True)
    # A gradient's batch mean is never shared: two parameters with equal per-sample gradients (or two
    # unused ones, of different shapes) would get one temporary of one shape. Their arguments may be.
    means = [isinstance(a.expr, batch_mean) for a in assignments]
    exprs = [a.expr.args[0] if mean else a.expr for a, mean in zip(assignments, means)]
    replacements, reduced = sp.cse(exprs, symbols=temps, order="none")
    reduced = [batch_mean(e) if mean else e for e, mean in zip(reduced, means)]
    inline: dict = {}
    kept = []
    for sym, expr in replacements:
        expr = expr.xreplace(inline)
        if _cheap(expr):
            inline[sym] = expr
        else:
            kept.append((sym, expr))
    reduced = [e.xreplace(inline) for e in reduced]
    placed: set = set()
    out: list[Assignment] = []
    pending = dict(kept)
    order = [s for s, _ in kept]

    def place(expr, section):
        for s in order:
            if s in pending and s not in placed and s in expr.free_symbols:
                place(pending[s], section)
                placed.add(s)
                out.append(Assignment(s, pending[s], section))

    for a, e in zip(assignments, reduced):
        place(e, a.section)
        out.append(Assignment(a.target, e, a.section, a.comment))
    return out


def share_the_exponentials(assignments: list[Assignment]) -> list[Assignment]:
    """``softmax(v)`` as ``exp(v - logsumexp(v))`` wherever ``logsumexp(v)`` is computed too.

    Softmax with cross-entropy needs both: the prediction ``p = softmax(z)`` (and the adjoint ``p - y``) and
    the loss's stable log-softmax ``z - logsumexp(z)``. Each alone takes the max, the exp and the sum; this
    way common-subexpression elimination computes ``logsumexp(z)`` once and the softmax costs one exp
    (as in a hand-written backprop). ``v - logsumexp(v) <= 0``, so the exp cannot overflow."""
    shared = {e.args[0] for a in assignments for e in sp.preorder_traversal(a.expr) if isinstance(e, logsumexp)}
    if not shared:
        return assignments

    def rewrite(expr):
        return expr.replace(lambda e: isinstance(e, softmax) and e.args[0] in shared,
                            lambda e: sp.exp(e.args[0] - logsumexp(e.args[0])))
    return [Assignment(a.target, rewrite(a.expr), a.section, a.comment) for a in assignments]


def build_program(derivation, cse: bool = True) -> Program:
    """Turn a :class:`~symbackprop.derive.Derivation` into a gradient program."""
    from .render import TextRenderer

    g = derivation.graph
    text = TextRenderer(derivation)
    reuse = {q.expr: q.symbol for q in g.computed if not q.expr.is_Atom}
    assignments = [Assignment(q.symbol, q.expr, "forward") for q in g.computed]
    gradients = {}
    for step in derivation.steps:
        if step.kind in ("loss", "chain", "accumulate"):
            assignments.append(Assignment(derivation.adjoint(step.subject),
                                          derivation.adjoint_value(step.subject).xreplace(reuse),
                                          "backward", text.line(step)))
        elif step.kind in ("param", "gradient"):
            target = derivation.adjoint(step.subject)
            value = derivation.adjoint_value(step.subject).xreplace(reuse)
            assignments.append(Assignment(target, batch_mean(value), "gradient",
                                          text.line(step) + "   (mean over the batch)"))
            gradients[step.subject] = target
    taken = set(g.quantities)
    if cse:
        assignments = share_common_subexpressions(share_the_exponentials(assignments), taken)

    shape_of = derivation.shape_of
    varying = {g.symbol(n) for n in g.data_dependent()}
    for a in assignments:
        if isinstance(a.expr, batch_mean):  # a gradient: its shape is its parameter's, and it is one value
            continue
        shape_of.add(a.target, shape_of(a.expr))
        if a.expr.free_symbols & varying:
            varying.add(a.target)
    return Program(g.name, g.symbol(g.loss_name), g.input_list, g.params, g.computed, assignments, gradients,
                   dict(shape_of.known), varying, g.constants)
