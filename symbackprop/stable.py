"""Stable forms: ``log(sigmoid(z))`` and its relatives rewritten wherever and however they are written.

``log(sigmoid(z))`` is ``-inf`` in float64 at ``z = -1000`` although its value is ``-1000``; the stable
form ``-softplus(-z)`` is exact everywhere. A user may write the unstable form in many ways: inline,
through a node ``a = sigmoid(z)``, through aliases (``q = "a"``, ``r = "1*q"``), as ``log(1 - a)`` or
``log(-a + 1)``, with the sigmoid itself written out as ``1/(1 + exp(-z))``. :data:`RULES` lists each
form once, as a pattern and its stable replacement, and :func:`stable_forms` applies them to every
definition as the graph receives it, at every subexpression, before and after its parts (so
``exp(z)/(1 + exp(z))`` is one sigmoid, and ``log(1/(1 + exp(-z)))`` becomes ``log(sigmoid(z))`` and
then ``-softplus(-z)``).

A pattern matches *through nodes*: where it expects ``sigmoid(u)`` and finds a node symbol ``a``, it
looks at the definition of ``a`` (and through a chain of aliases). The stable form is then written with
``u`` (the logit ``z``), so the node ``a`` is no longer used by that expression; the derivation differentiates
``softplus`` (whose derivative is the sigmoid) instead of ``log`` and ``sigmoid``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import permutations

import sympy as sp

from .functions import log1p, sigmoid, softplus
from .tensor import Shape, ShapeError, infer_shape, keep_shape, logsumexp, softmax, sum_

#: stands for any expression in a pattern (one name per rule: every ``u`` of a pattern is the same expression)
u = sp.Wild("u")

#: pattern -> stable form, one line per form. A new form is one more line (and a test in
#: tests/test_stable_forms.py against a stable PyTorch reference).
RULES: tuple[tuple[sp.Expr, sp.Expr], ...] = (
    (1 / (1 + sp.exp(u)), sigmoid(-u)),
    (sp.exp(u) / (1 + sp.exp(u)), sigmoid(u)),
    (sp.exp(u) / sum_(sp.exp(u)), softmax(u)),
    (sp.log(sigmoid(u)), -softplus(-u)),
    (sp.log(1 - sigmoid(u)), -softplus(u)),
    (sp.log(1 + sp.exp(u)), softplus(u)),
    (log1p(sp.exp(u)), softplus(u)),
    (sp.log(softmax(u)), u - logsumexp(u)),
    (sp.log(sum_(sp.exp(u))), logsumexp(u)),
    (sp.log(sp.exp(u)), u),
)

#: the definition of a node symbol, or None for anything else (an input, a parameter, a number)
Definition = Callable[[sp.Symbol], "sp.Expr | None"]


def _resolve(expr: sp.Expr, definition: Definition) -> sp.Expr | None:
    """What a node symbol stands for, following a chain of aliases to the end (no recursion)."""
    seen = expr
    while seen.is_Symbol:
        meaning = definition(seen)
        if meaning is None:
            return None if seen is expr else seen
        seen = meaning
    return seen


def match(pattern: sp.Expr, expr: sp.Expr, definition: Definition, bound: dict | None = None) -> dict | None:
    """The binding of ``u`` under which ``pattern`` is ``expr``, looking through node definitions, or None.

    ``+`` and ``*`` match in any order of their terms; a pattern without ``u`` must be equal.
    """
    bound = {} if bound is None else bound
    if pattern == u:
        if u in bound:
            return bound if bound[u] == expr else None
        return {**bound, u: expr}
    if pattern == expr:
        return bound
    if pattern.func == expr.func and len(pattern.args) == len(expr.args) and pattern.args:
        orders = permutations(expr.args) if isinstance(expr, (sp.Add, sp.Mul)) else [expr.args]
        for args in orders:
            found = bound
            for p, e in zip(pattern.args, args):
                found = match(p, e, definition, found)
                if found is None:
                    break
            if found is not None:
                return found
    if expr.is_Symbol and not pattern.is_Atom:
        meaning = _resolve(expr, definition)
        if meaning is not None and meaning != expr:
            return match(pattern, meaning, definition, bound)
    return None


def _rewrite_once(expr: sp.Expr, definition: Definition, shapes: Mapping[sp.Symbol, Shape],
                  applied: set[int]) -> sp.Expr:
    """The stable form of ``expr`` by the first rule that matches its top (and gives valid shapes)."""
    for index, (pattern, stable) in enumerate(RULES):
        if pattern.func != expr.func:
            continue
        bound = match(pattern, expr, definition)
        if bound is None:
            continue
        result = stable.xreplace(bound)
        try:
            infer_shape(result, shapes)  # softmax and logsumexp take vectors only: not formed from a matrix
        except ShapeError:
            continue
        applied.add(index)
        return result
    return expr


def stable_forms(expr: sp.Expr, definition: Definition, shapes: Mapping[sp.Symbol, Shape],
                 applied: set[int] | None = None) -> sp.Expr:
    """``expr`` with every unstable form of :data:`RULES` replaced, the whole before its parts and after.

    ``definition`` gives the definition of a node symbol (None for other symbols), so that forms
    written through nodes and aliases are found; ``shapes`` gives every symbol's shape. The index in
    :data:`RULES` of every rule used is added to ``applied``, so a derivation can say what it computes.
    """
    applied = set() if applied is None else applied
    memo: dict[sp.Expr, sp.Expr] = {}
    shape_memo: dict = {}

    def shape_of(e: sp.Expr) -> Shape | None:
        try:
            return infer_shape(e, shapes, shape_memo)
        except ShapeError:
            return None

    def visit(e: sp.Expr) -> sp.Expr:
        if e.is_Atom:
            return e
        if e not in memo:
            # the whole form first (exp(z)/(1 + exp(z)) before its 1/(1 + exp(z))), then its parts, then the
            # whole again (log(1/(1 + exp(-z))) is log(sigmoid(z)) only once its argument is rewritten)
            top = _rewrite_once(e, definition, shapes, applied)
            args = tuple(visit(a) for a in top.args)
            rebuilt = top.func(*args) if args != top.args else top
            stable = rebuilt if rebuilt.is_Atom else _rewrite_once(rebuilt, definition, shapes, applied)
            # a rewrite may cancel tensor terms (log(softmax(v)) - v is -logsumexp(v)): keep e's shape
            shape = shape_of(e) if stable != e else None
            memo[e] = stable if shape is None else keep_shape(stable, shape, shapes, shape_memo)
        return memo[e]

    return visit(expr)


def rules_used(applied: set[int]) -> list[tuple[sp.Expr, sp.Expr]]:
    """The rules of ``applied`` (indices), in table order, each written with the symbol ``u``."""
    shown = {u: sp.Symbol("u")}  # no assumptions: log(exp(u)) stays as written
    return [(RULES[i][0].xreplace(shown), RULES[i][1].xreplace(shown)) for i in sorted(applied)]
