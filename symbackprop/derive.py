"""Reverse-mode symbolic differentiation over the graph.

The backward pass visits the nodes from the loss back to the inputs. For every node ``v`` and every
quantity ``u`` its definition uses directly, it computes the *contribution* of ``v``'s adjoint
``dL/dv`` to ``u`` (:func:`vjp`). The adjoint of ``u`` is the sum of the contributions of all its
consumers. Because each contribution is written with the symbols ``dL/dv`` and the node symbols, not
with their expanded values, the work and the size of the result grow linearly with the graph.

:func:`vjp` is the whole calculus: SymPy's ``diff`` differentiates the elementwise part of a definition
(``+``, ``*``, powers and activation functions, where the chain rule is an elementwise product), and the
``vjp`` rule of each :class:`~symbackprop.tensor.TensorOp` handles the rest (matrix products, transposes,
sums, softmax).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from math import prod

import sympy as sp
from sympy.polys.polyerrors import BasePolynomialError

from .functions import prime_names, sigmoid
from .graph import Graph, ModelError, UserError
from .steps import Adjoint, Math, Partial, Prime, Product, Step, Total
from .tensor import Shape, TensorOp, infer_shape, ones, sum_, tensor_subterms

#: expanded forms larger than this (in SymPy operations) get ``factor_terms`` only; smaller ones the
#: shortest of a few more rewrites (:func:`shortest_form`), whose cost grows quickly with size.
SIMPLIFY_LIMIT = 20
#: the expanded form of a gradient (every node and adjoint substituted) is built only up to this many
#: operations, counted before it is built (:meth:`Derivation.expanded_size`). It grows exponentially
#: with depth (a 5-step GRU: millions of operations, 10 steps: 1e13), SymPy needs about half a second to
#: build and print 2,000, and a form that long is pages of formula that nobody reads.
EXPAND_LIMIT = 2000


class ExpansionTooLarge(UserError):
    """The expanded form of a gradient would exceed the operation budget (it is not built)."""

    def __init__(self, name: str, size: int, limit: int):
        super().__init__(f"the expanded form of dL/d{name} would have {about(size)} operations "
                         f"(limit {limit:,})")
        self.name, self.size, self.limit = name, size, limit


def about(n: int) -> str:
    """A count for a message: ``4,096`` or, from a million on, ``3.1e12`` (the counts can be astronomical)."""
    if n < 10 ** 6:
        return f"{n:,}"
    mantissa, exponent = f"{n:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def shortest_form(expr: sp.Expr) -> sp.Expr:
    """The shortest (in operations, the first on a tie) of ``expr`` and a few cheap rewrites of it:
    fractions cancelled or combined, products expanded and factored again, powers merged.

    Not SymPy's ``simplify``: on the examples' expanded gradients (5 to 17 operations) it took up to
    6 s each and returned nothing shorter, and often longer, sign-flipped forms (``-(tanh(z)**2 - 1)``
    for ``1 - tanh(z)**2``); it also wrote ``sign(u)`` as ``u/|u|``, undefined at the kink, where the
    derivation's convention says sign(0) = 0. These rewrites leave ``sign`` alone.
    """
    candidates = [expr]
    for rewrite in (sp.cancel, sp.together, sp.powsimp, lambda e: sp.factor_terms(sp.expand_mul(e))):
        try:
            candidates.append(rewrite(expr))
        except (BasePolynomialError, NotImplementedError, TypeError, ValueError):
            continue
    return min(candidates, key=sp.count_ops)


def operation_count(expr: sp.Expr, weight: dict[sp.Symbol, int], memo: dict | None = None) -> int:
    """Operations of ``expr`` with each symbol in ``weight`` replaced by an expression of that many operations.

    As ``sympy.count_ops`` counts them: a sum or product of k terms is k - 1 operations, a power or a
    function one, but a fractional power two (``sqrt(x)``: a power of a division 1/2) and three if it is
    negative (``x**(-3/2)``). Substitution copies a value into every place its symbol is used, so
    counting the expanded form of a graph this way is a dynamic program over its nodes: exact for the
    substituted tree before SymPy combines terms, and never larger than it.
    """
    memo = {} if memo is None else memo
    if expr.is_Atom:
        return weight.get(expr, 0)
    if expr.is_Pow and expr.exp.is_Rational and not expr.exp.is_Integer:
        return operation_count(expr.base, weight, memo) + 2 + int(bool(expr.exp.is_negative))
    if expr not in memo:
        inner = sum(operation_count(a, weight, memo) for a in expr.args)
        memo[expr] = inner + (len(expr.args) - 1 if isinstance(expr, (sp.Add, sp.Mul)) else 1)
    return memo[expr]


class Shapes:
    """Shape lookup with a memo; temporary symbols can be added."""

    def __init__(self, shapes: dict[sp.Symbol, Shape]):
        self.known = dict(shapes)
        self.memo: dict = {}

    def add(self, symbol: sp.Symbol, shape: Shape) -> None:
        self.known[symbol] = shape

    def __call__(self, expr: sp.Expr) -> Shape:
        return infer_shape(expr, self.known, self.memo)


def _unbroadcast(adjoint: sp.Expr, target: Shape, source: Shape) -> sp.Expr:
    """A scalar used elementwise in a tensor expression receives the sum of the tensor adjoint."""
    return sum_(adjoint) if target == () and source != () else adjoint


def vjp(expr: sp.Expr, u: sp.Symbol, g: sp.Expr, shape_of: Shapes) -> sp.Expr:
    """The adjoint that flows into ``u`` when the value ``expr`` has adjoint ``g`` (same shape as ``expr``)."""
    if expr == u:
        return g
    if u not in expr.free_symbols:
        return sp.S.Zero
    out_shape = shape_of(expr)
    stand_ins = {}
    for term in tensor_subterms(expr, u):
        d = sp.Dummy("t", real=True)
        shape_of.add(d, shape_of(term))
        stand_ins[term] = d
    flat = expr.xreplace(stand_ins)
    back = {d: term for term, d in stand_ins.items()}
    total = _unbroadcast(g * flat.diff(u).xreplace(back), shape_of(u), out_shape)
    for term, d in stand_ins.items():
        g_term = _unbroadcast(g * flat.diff(d).xreplace(back), shape_of(term), out_shape)
        if g_term == 0:
            continue
        for arg, g_arg in zip(term.args, term.vjp(g_term, shape_of)):
            total += vjp(arg, u, g_arg, shape_of)
    return total


def _complementary_sigmoids(expr: sp.Expr) -> sp.Expr:
    """``sigmoid(-u) = 1 - sigmoid(u)`` where that makes ``expr`` shorter and keeps it linear in sigmoids.

    The stable binary cross-entropy ``y softplus(-z) + (1 - y) softplus(z)`` has the derivative
    ``-y sigmoid(-z) + (1 - y) sigmoid(z)``, which is ``sigmoid(z) - y``: the form textbooks (and
    PyTorch's ``binary_cross_entropy_with_logits``) use. Products of sigmoids are left factored.
    """
    flipped = {s: 1 - sigmoid(-s.args[0]) for s in expr.atoms(sigmoid) if s.args[0].could_extract_minus_sign()}
    if not flipped or sp.count_ops(expr) > SIMPLIFY_LIMIT:
        return expr
    candidate = sp.factor_terms(sp.expand_mul(expr.xreplace(flipped)))

    def linear(s):
        try:
            return sp.degree(candidate, s) <= 1
        except BasePolynomialError:
            return False

    if sp.count_ops(candidate) < sp.count_ops(expr) and all(linear(s) for s in candidate.atoms(sigmoid)):
        return candidate
    return expr


def tidy(expr: sp.Expr, shape_of: Shapes, unit_sums: dict[sp.Expr, sp.Expr]) -> sp.Expr:
    """Remove the ``ones`` a broadcast leaves behind, use ``sum(y) = 1`` for one-hot inputs, and write
    complementary sigmoids as one (:func:`_complementary_sigmoids`)."""
    def is_ones_product(e):
        return isinstance(e, sp.Mul) and any(isinstance(f, ones) for f in e.args)

    def drop_ones(m):
        rest = [f for f in m.args if not isinstance(f, ones)]
        kept = [f for f in m.args if isinstance(f, ones)][:1]
        return sp.Mul(*rest) if any(shape_of(f) != () for f in rest) else sp.Mul(*rest, *kept)

    def sum_of_broadcast(e):
        if type(e) is not sum_:  # not mean, which subclasses it
            return False
        arg = e.args[0]
        return isinstance(arg, ones) or (isinstance(arg, sp.Mul) and all(
            isinstance(f, ones) or shape_of(f) == () for f in arg.args))

    def count(e):
        arg = e.args[0]
        factors = arg.args if isinstance(arg, sp.Mul) else (arg,)
        size = prod(int(n) for f in factors if isinstance(f, ones) for n in f.args)
        return size * sp.Mul(*[f for f in factors if not isinstance(f, ones)])

    # sign and step are flat away from 0: their derivative is taken as 0 (DiracDelta has no value to compute)
    expr = expr.replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.S.Zero)
    expr = expr.replace(is_ones_product, drop_ones)
    expr = expr.replace(sum_of_broadcast, count)
    expr = _complementary_sigmoids(expr)
    return expr.xreplace(unit_sums) if unit_sums else expr


@dataclass(frozen=True)
class Edge:
    """How the adjoint of ``consumer`` flows into ``wrt``, one of the names its definition uses."""

    consumer: str
    wrt: str
    contribution: sp.Expr
    #: the elementwise local derivative d consumer / d wrt when contribution = adjoint * local
    local: sp.Expr | None = None
    #: ``(f, arg)`` when the consumer is ``f(wrt)`` for a one-argument function f
    prime: tuple | None = None


class Derivation:
    """Every gradient of the loss, derived by reverse mode, with the steps that explain it."""

    def __init__(self, graph: Graph, wrt: list[str] | None = None, optimizer=None, schedule=None):
        from .optim import make_optimizer
        self.graph = graph.validate()
        #: the update rule shown after the gradients (default: the seed's plain gradient descent)
        self.optimizer = make_optimizer(optimizer) if isinstance(optimizer, str) else optimizer or make_optimizer()
        self.schedule = schedule
        self.loss = graph.loss_name
        self.targets = self._check_targets(wrt)
        self.shape_of = Shapes(graph.shapes)
        for q in graph.quantities.values():
            self.shape_of.add(self.adjoint(q.name), q.canonical_shape)
        self.unit_sums = {sum_(q.symbol): sp.S.One for q in graph.input_list if q.onehot}
        self.active = self._active_names()
        self.edges: dict[str, list[Edge]] = {name: [] for name in self.active}
        self.steps: list[Step] = []
        self._weights: dict[sp.Symbol, int] | None = None  # expanded sizes, counted on first request
        self._direct_from_loss: dict[str, sp.Expr] = {}
        # Nodes whose definition is a softmax/logsumexp keep their name in displayed values (p - y).
        self._display_names = {q.expr: q.symbol for q in graph.computed if isinstance(q.expr, TensorOp)}
        self._backward()

    # ---- set-up ------------------------------------------------------------------------------------
    def _check_targets(self, wrt):
        if not wrt:
            return [p.name for p in self.graph.params]
        for name in wrt:
            q = self.graph.quantities.get(name)
            if q is None or q.kind not in ("param", "input"):
                known = ", ".join(p.name for p in self.graph.params + self.graph.input_list)
                raise ModelError("--wrt", f"'{name}' is not a parameter or input (choose from: {known})")
        return list(dict.fromkeys(wrt))

    def _active_names(self) -> set[str]:
        """Quantities on a path from a target to the loss: only they need adjoints."""
        g = self.graph
        reaches_loss = {self.loss}
        for q in reversed(g.computed):
            if q.name in reaches_loss:
                reaches_loss.update(g.dependencies(q.name))
        from_targets = set(self.targets)
        for q in g.computed:
            if any(d in from_targets for d in g.dependencies(q.name)):
                from_targets.add(q.name)
        return reaches_loss & from_targets

    def adjoint(self, name: str) -> sp.Expr:
        """The symbol dL/d(name); the loss's own adjoint is 1."""
        return sp.S.One if name == self.loss else Adjoint(self.loss, name)

    # ---- the backward pass --------------------------------------------------------------------------
    def _backward(self) -> None:
        g = self.graph
        last_consumer = {}
        for q in g.computed:  # forward order: the first consumer is the last one the backward pass meets
            for d in g.dependencies(q.name):
                if d in self.targets and d not in last_consumer and q.name in self.active:
                    last_consumer[d] = q.name
        for q in reversed(g.computed):
            if q.name not in self.active:
                continue
            if q.name != self.loss:
                self._finish(q.name)
            local_steps = [self._add_edge(q.name, u) for u in g.dependencies(q.name) if u in self.active]
            for t in self.targets:  # a layer's parameter gradients come before the next layer's steps
                if last_consumer.get(t) == q.name:
                    self._finish(t)
            self.steps.extend(s for s in local_steps if s is not None)
        for t in self.targets:
            if t not in last_consumer:  # the loss does not depend on it
                self.steps.append(Step(self._target_kind(t), Math(self.adjoint(t)), (Math(sp.S.Zero),), t))
        self._update_steps()

    def _update_steps(self, first_step: bool = False) -> None:
        """The optimizer's update of every parameter derived, after its gradient (see :mod:`.optim`)."""
        from .optim import update_steps
        params = [(p.name, p.symbol, self.adjoint(p.name)) for p in self.graph.params if p.name in self.targets]
        if params:
            self.steps.extend(update_steps(self.optimizer, params, self.schedule, first_step))

    def with_update(self, optimizer, first_step: bool = False) -> "Derivation":
        """This derivation ending with ``optimizer``'s update instead (same schedule; the gradients are not
        derived again). ``first_step`` shows the step count of the first update, ``(t, e) = (1, 0)``, for a
        derivation shown with that update's numbers."""
        other = copy.copy(self)
        other.optimizer = optimizer
        other.steps = [s for s in self.steps if s.kind != "update"]
        other._update_steps(first_step)
        return other

    def _target_kind(self, name: str) -> str:
        return "param" if self.graph[name].kind == "param" else "gradient"

    def _add_edge(self, consumer: str, u: str) -> Step | None:
        """Record how dL/d(consumer) flows into ``u``; return the local-derivative step to show, if any."""
        g = self.graph
        expr, sym = g[consumer].expr, g.symbol(u)
        adj = self.adjoint(consumer)
        contribution = tidy(vjp(expr, sym, adj, self.shape_of), self.shape_of, self.unit_sums)
        local = prime = None
        if not tensor_subterms(expr, sym):
            local = tidy(expr.diff(sym), self.shape_of, self.unit_sums)
            if isinstance(expr, sp.Function) and prime_names(type(expr)) and expr.args == (sym,):
                prime = (type(expr), sym)
        edge = Edge(consumer, u, contribution, local, prime)
        self.edges[u].append(edge)
        if consumer != self.loss and g[u].kind == "node" and local is not None and self._same_shape(edge):
            forms = ((Prime(*prime),) if prime else ()) + (Math(local),)
            return Step("local", Partial(consumer, u), forms, consumer)
        return None

    def _same_shape(self, edge: Edge) -> bool:
        return self.shape_of(self.graph.symbol(edge.wrt)) == self.graph[edge.consumer].canonical_shape

    def _finish(self, name: str) -> None:
        """All consumers of ``name`` are done: write the step that sums them into dL/d(name)."""
        edges = self.edges[name]
        lhs = Math(self.adjoint(name))
        kind = self.graph[name].kind
        if kind in ("param", "input"):
            step_kind = self._target_kind(name)
        elif len(edges) == 1 and edges[0].consumer == self.loss:
            step_kind = "loss"
        else:
            step_kind = "chain" if len(edges) == 1 else "accumulate"
        if len(edges) == 1 and edges[0].consumer == self.loss:
            value = self._shown(edges[0].contribution)
            if kind == "node":
                self._direct_from_loss[name] = value
            self.steps.append(Step(step_kind, lhs, (Math(value),), name))
            return
        chain = [self._chain_form(e) for e in edges]
        values = [self._value_form(e, substitute=kind == "node") for e in edges]
        forms = []
        if all(c is not None for c in chain):
            forms.append(chain[0] if len(chain) == 1 else Total(tuple(chain)))
        forms.append(values[0] if len(values) == 1 else Total(tuple(values)))
        self.steps.append(Step(step_kind, lhs, tuple(forms), name))

    def _hadamard(self, edge: Edge) -> bool:
        return self.graph[edge.consumer].canonical_shape != ()

    def _chain_form(self, edge: Edge):
        if edge.consumer == self.loss or edge.local is None or not self._same_shape(edge):
            return None
        return Product((Math(self.adjoint(edge.consumer)), Partial(edge.consumer, edge.wrt)), self._hadamard(edge))

    def _value_form(self, edge: Edge, substitute: bool):
        """The term in network symbols; an adjoint that is the loss's own derivative is written out
        (dL/dz = (a - y) sigma'(z)) when ``substitute``, while gradients keep dL/dz as the seed does."""
        if edge.consumer == self.loss:
            return Math(self._shown(edge.contribution))
        if edge.local is None or not self._same_shape(edge):
            return Math(self._shown(edge.contribution))
        adj = self.adjoint(edge.consumer)
        if substitute:
            adj = self._direct_from_loss.get(edge.consumer, adj)
        if edge.local == 1:
            return Math(adj)
        return Product((Math(adj), Math(self._shown(edge.local))), self._hadamard(edge))

    def _shown(self, expr: sp.Expr) -> sp.Expr:
        return expr.xreplace(self._display_names) if self._display_names else expr

    # ---- results ------------------------------------------------------------------------------------
    def adjoint_value(self, name: str) -> sp.Expr:
        """dL/d(name) as the sum of its consumers' contributions (per sample, in adjoint symbols)."""
        return sp.Add(*[e.contribution for e in self.edges.get(name, [])])

    @property
    def gradients(self) -> dict[str, sp.Expr]:
        """Per-sample gradient of every target, in adjoint and node symbols."""
        return {t: self.adjoint_value(t) for t in self.targets}

    def _substitution_weights(self) -> dict[sp.Symbol, int]:
        """Operations of every node's value and every adjoint, fully expanded (counted, not built)."""
        if self._weights is None:
            weight: dict[sp.Symbol, int] = {}
            for q in self.graph.computed:  # node values, forward
                weight[q.symbol] = operation_count(q.expr, weight)
            for q in reversed(self.graph.computed):  # adjoints, from the loss back
                if q.name in self.active and q.name != self.loss:
                    weight[self.adjoint(q.name)] = operation_count(self.adjoint_value(q.name), weight)
            self._weights = weight
        return self._weights

    def _used_definitions(self, expr: sp.Expr) -> set[sp.Symbol]:
        """The node and adjoint symbols that ``expr`` uses, directly or through their definitions."""
        used: set[sp.Symbol] = set()
        pending = list(expr.free_symbols)
        while pending:
            s = pending.pop()
            if s in used:
                continue
            q = self.graph.quantities.get(s.name)
            if isinstance(s, Adjoint) and s.of in self.active:
                definition = self.adjoint_value(s.of)
            elif q is not None and q.expr is not None:
                definition = q.expr
            else:
                continue
            used.add(s)
            pending.extend(definition.free_symbols)
        return used

    def expanded_size(self, name: str) -> int:
        """Operations the expanded form of dL/d(name) would have, counted without building it.

        Deterministic and cheap (linear in the size of the graph), however large the count.
        """
        return operation_count(self.adjoint_value(name), self._substitution_weights())

    def expanded(self, name: str, simplify: bool = True, limit: int | None = EXPAND_LIMIT) -> sp.Expr:
        """dL/d(name) written with inputs and parameters only (no node or adjoint symbols).

        The expanded form grows exponentially with depth, so it is built only when
        :meth:`expanded_size` is at most ``limit`` operations (None: no limit), else
        :class:`ExpansionTooLarge` is raised. With ``simplify``, common factors are pulled out, and a
        small result is given its shortest form (:func:`shortest_form`).
        """
        size = self.expanded_size(name)
        if limit is not None and size > limit:
            raise ExpansionTooLarge(name, size, limit)
        g = self.graph
        gradient = self.adjoint_value(name)
        used = self._used_definitions(gradient)  # only these: another branch may be huge
        values: dict[sp.Symbol, sp.Expr] = {}
        for q in g.computed:  # node symbols -> values, forward
            if q.symbol in used:
                values[q.symbol] = q.expr.xreplace(values)
        adjoints: dict[sp.Symbol, sp.Expr] = {}
        for q in reversed(g.computed):  # adjoint symbols -> values, from the loss back
            if self.adjoint(q.name) in used:
                adjoints[self.adjoint(q.name)] = self.adjoint_value(q.name).xreplace(adjoints)
        result = gradient.xreplace(adjoints).xreplace(values)
        if simplify:
            result = sp.factor_terms(result)
            if sp.count_ops(result) <= SIMPLIFY_LIMIT:
                result = shortest_form(result)
        return result

    def expanded_steps(self, limit: int | None = EXPAND_LIMIT) -> list[Step]:
        """One step per target whose expanded form fits in ``limit`` operations: its gradient with every
        node and adjoint substituted, simplified. :meth:`expansion_notice` tells about the others."""
        return [Step("expanded", Math(self.adjoint(t)), (Math(self.expanded(t, limit=limit)),), t)
                for t in self.targets if limit is None or self.expanded_size(t) <= limit]

    def expansion_notice(self, limit: int | None = EXPAND_LIMIT) -> str | None:
        """One line naming the gradients whose expanded form is over ``limit`` and how large it would grow."""
        over = {t: self.expanded_size(t) for t in self.targets}
        over = {t: n for t, n in over.items() if limit is not None and n > limit}
        if not over:
            return None
        names = [f"dL/d{t}" for t in over]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        largest = max(over.values())
        size = f"up to {about(largest)}" if min(over.values()) < largest else about(largest)
        return (f"expanded form of {shown} not shown: it would have {size} operations, over the limit of "
                f"{limit:,} (raise it with --expand-limit OPS, or expand_limit= in Python); the steps above "
                f"give the exact gradient in node form")

    def program(self):
        """The gradient program (forward and backward assignments) that code generation prints."""
        from .program import build_program
        return build_program(self)

    def at(self, point, lr: float | None = None, digits: int = 9, seed: int = 0):
        """This derivation evaluated at one sample: ``d.at({"x": 1.5, "y": 1})``.

        Returns an :class:`~symbackprop.evaluate.Evaluation`: every value (``.value("dL/dw")``,
        ``.loss``, ``.gradients``, ``.updated``: the parameters after the optimizer's first step),
        rendered with numbers by ``.to(fmt)``. Parameters not in ``point`` take their ``init`` values
        (random ones drawn with ``seed``). ``lr`` replaces the optimizer's learning rate; plain SGD (the
        seed's rule, which shows no settings) gets the update's numbers only with it.
        """
        from .evaluate import evaluate
        return evaluate(self, point, lr=lr, digits=digits, seed=seed)

    # ---- display -------------------------------------------------------------------------------------
    def to(self, fmt: str = "latex", **options) -> str:
        from .render import render
        return render(self, fmt, **options)

    def _repr_latex_(self) -> str:
        return self.to("latex", standalone=True)

    def _repr_html_(self) -> str:
        """A notebook shows the steps as MathML, aligned at the equals sign (no script, no MathJax needed)."""
        return self.to("html", fragment=True)

    def _repr_markdown_(self) -> str:
        return self.to("markdown")

    def __str__(self) -> str:
        return self.to("text")


def derive(graph: Graph, wrt: list[str] | None = None, optimizer=None, schedule=None) -> Derivation:
    """Derive dL/dw for every parameter (or for the names in ``wrt``) of ``graph``.

    The steps end with the update of each parameter by ``optimizer`` (an :class:`~symbackprop.optim.Optimizer`
    or its name; default plain SGD, the seed's w_new = w_old - eta dL/dw) under the learning-rate
    ``schedule`` (an :class:`~symbackprop.optim.Schedule`, default none).
    """
    return Derivation(graph, wrt, optimizer, schedule)
