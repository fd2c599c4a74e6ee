"""A derivation evaluated at one sample: the forward pass, every step and every update with numbers.

The numbers come from the compiled gradient program itself: its ``trace(params, data)`` function
(:func:`symbackprop.compile.compile_trace`) runs the assignments of ``loss_and_grad`` and returns every
node, adjoint and per-sample gradient, with the local derivatives the derivation shows (``da/dz``)
computed by the same printer. The renderers print each step's symbolic forms, then one form again with
these numbers in place of its symbols, then the step's value::

    dL/da = a - y = 0.679178699 - 1 = -0.320821301

The form given numbers is the chain-rule form where every factor already has a value (the product of
numbers shown above it, as worked examples write it), else the step's last form; node definitions in
it are written with the node (``a (1 - a)`` for ``sigma(z) (1 - sigma(z))``), as the program computes
them.

The update is shown with the numbers of the optimizer's first step (t = 1, epoch e = 0, from its initial
state): its displayed steps evaluated in order, as written (:func:`symbackprop.optim.follow_rule`), and
each parameter after it from the optimizer's own numeric step (:meth:`symbackprop.optim.Optimizer.step`,
what training computes), which the displayed steps must reproduce. The learning rate is the optimizer's,
or ``lr`` in its place; plain SGD at a constant rate (the seed's rule, which shows no settings) gets
numbers only when ``lr`` is given.
"""
from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import numpy as np
import sympy as sp

from .graph import Graph, UserError
from .optim import ETA, RuleSymbol, follow_rule, shown_symbols
from .steps import Math, NewValue, Partial, Product, Step, Total, UpdateRule
from .valueprint import DIGITS, value_key

#: longest ``--at`` value read (a 1000 x 1000 matrix of short numbers fits)
MAX_TEXT = 20_000_000


class PointError(UserError):
    """A value given for the point is missing, unknown, unreadable or of the wrong shape."""


def local_symbol(of: str, wrt: str) -> sp.Symbol:
    """The symbol standing for the local derivative ``d(of)/d(wrt)`` (its name keys its value)."""
    return sp.Symbol(f"d{of}/d{wrt}", real=True)


def new_symbol(param: str) -> sp.Symbol:
    """The symbol standing for a parameter's value after the update."""
    return sp.Symbol(f"{param}^(new)", real=True)


# ---- reading a point ---------------------------------------------------------------------------------------
def read_value(text: str, where: str) -> Any:
    """A number or a nested list of numbers written as in Python or JSON, read without ``eval``."""
    if len(text) > MAX_TEXT:
        raise PointError(f"{where}: the value is too long ({len(text)} characters)")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise PointError(f"{where}: cannot read {_show(text)} as a number or a list of numbers "
                         "(write 1.5, or [0.05, 0.1], or [[1, 2], [3, 4]])") from None
    return value


def parse_assignments(texts: list[str] | tuple[str, ...], option: str = "--at") -> dict[str, Any]:
    """``["x=1.5", "w=[0.1, 0.2]"]`` -> ``{"x": 1.5, "w": [0.1, 0.2]}``; each name once."""
    out: dict[str, Any] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise PointError(f"{option} {_show(text)}: write NAME=VALUE, as in {option} x=1.5")
        if name in out:
            raise PointError(f"{option} {name}: given twice")
        out[name] = read_value(value, f"{option} {name}")
    return out


def _show(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit - 3] + "...")


def _as_array(value: Any, where: str) -> np.ndarray:
    def numbers_only(v):
        if isinstance(v, (list, tuple)):
            return all(numbers_only(u) for u in v)
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    if isinstance(value, np.ndarray):
        ok = value.dtype.kind in "iuf"
    else:
        ok = numbers_only(value)
    try:
        array = np.array(value, dtype=np.float64) if ok else None
    except (ValueError, TypeError):
        array = None
    if array is None:
        raise PointError(f"{where}: expected a number or a rectangular list of numbers, got {_show(repr(value))}")
    if not np.all(np.isfinite(array)):
        raise PointError(f"{where}: values must be finite numbers")
    return array


def _shape_words(shape: tuple) -> str:
    return "is a scalar" if shape == () else f"has shape {list(shape)}"


def check_point(graph: Graph, given: Mapping[Any, Any], defaults: Mapping[str, np.ndarray] | None = None,
                option: str = "--at") -> dict[str, np.ndarray]:
    """Every input and parameter's value at the point, float64 in its declared shape.

    ``given`` maps names (or the graph's symbols) to numbers or nested lists; parameters not given take
    ``defaults`` (their initial values). A missing input, an unknown name or a wrong shape raises a
    :class:`PointError` naming it.
    """
    known = {q.name: q for q in graph.input_list + graph.params}
    values: dict[str, np.ndarray] = {}
    for key, value in given.items():
        name = getattr(key, "name", key)
        q = known.get(name)
        if q is None:
            choices = ", ".join(known) or "none"
            kind = graph[name].kind if name in graph.quantities else None
            what = {"node": "is a node, not", "loss": "is the loss, not", "constant": "is a constant (its value is "
                    "fixed in the model), not", None: "is not"}[kind]
            raise PointError(f"{option} {name}: '{name}' {what} an input or parameter (choose from: {choices})")
        array = _as_array(value, f"{option} {name}")
        if array.shape != q.shape:
            kind = "parameter" if q.kind == "param" else "input"
            raise PointError(f"{option} {name}: the value {_shape_words(array.shape)}, but {kind} "
                             f"'{name}' {_shape_words(q.shape)}")
        values[name] = array
    for q in graph.input_list:
        if q.name not in values:
            raise PointError(f"{option}: no value for input '{q.name}' (give {option} {q.name}=VALUE)")
    for q in graph.params:
        if q.name not in values:
            if defaults is None or q.name not in defaults:
                raise PointError(f"{option}: no value for parameter '{q.name}'")
            values[q.name] = np.asarray(defaults[q.name], dtype=np.float64).reshape(q.shape)
    return {name: values[name] for name in known}


# ---- the evaluation --------------------------------------------------------------------------------------------
def shown_local_derivatives(derivation) -> list:
    """Program assignments for the local derivatives the derivation shows (``da/dz = a (1 - a)``)."""
    from .program import Assignment
    g = derivation.graph
    reuse = {q.expr: q.symbol for q in g.computed if not q.expr.is_Atom}
    return [Assignment(local_symbol(s.lhs.of, s.lhs.wrt), s.forms[-1].expr.xreplace(reuse), "shown")
            for s in derivation.steps if s.kind == "local"]


class Evaluation:
    """A derivation with every value at one sample; ``to(fmt)`` renders it with numbers.

    ``values`` maps names to arrays in the shapes the derivation computes with: inputs, parameters,
    nodes and the loss by name, adjoints and gradients as ``"dL/dz"``, the local derivatives shown as
    ``"da/dz"``; with the update's numbers, each parameter after it as ``"w^(new)"`` and every quantity
    of the update's steps (settings, ``t``, ``m_w,t``) under its :func:`~symbackprop.valueprint.value_key`.
    ``lr`` is the update's learning rate (None: the update stays symbolic); ``numbered`` the update steps
    that hold at its first step, which get numbers.
    """

    def __init__(self, derivation, point: dict[str, np.ndarray], values: dict[str, np.ndarray],
                 lr: float | None = None, digits: int = DIGITS, numbered: list[Step] = ()):
        self.derivation = derivation
        self.point = point
        self.values = values
        self.lr = lr
        self.digits = digits
        self.numbered = list(numbered)
        g = derivation.graph
        self._reuse = {q.expr: q.symbol for q in g.computed if not q.expr.is_Atom and q.name != g.loss_name}

    # ---- the numbers ---------------------------------------------------------------------------------------
    def value(self, name: str) -> float | np.ndarray:
        """The value of a quantity (``"z"``), adjoint (``"dL/dz"``) or shown local derivative (``"da/dz"``), or
        of a quantity of the update's first step (``"m_w,t"``, ``"beta_1"``, ``"t"``) that no model quantity
        is named."""
        v = self.values[name] if name in self.values else self.values[RuleSymbol(name).value_key]
        return float(v) if np.ndim(v) == 0 else v

    @property
    def loss(self) -> float:
        return float(self.values[self.derivation.loss])

    @property
    def gradients(self) -> dict[str, np.ndarray]:
        """Each target's gradient at this sample, in its declared shape."""
        g = self.derivation.graph
        return {t: self.values[self.derivation.adjoint(t).name].reshape(g[t].shape) for t in self.derivation.targets}

    @property
    def updated(self) -> dict[str, np.ndarray] | None:
        """Each parameter after the optimizer's first update (one step from its initial state, as training
        makes it), in declared shapes; None when the update stays symbolic."""
        if self.lr is None:
            return None
        g = self.derivation.graph
        return {p.name: self.values[new_symbol(p.name).name].reshape(p.shape)
                for p in g.params if new_symbol(p.name).name in self.values}

    # ---- what the renderers print ----------------------------------------------------------------------------
    def forward_steps(self) -> list[Step]:
        """The point (inputs, then parameters and constants) and the forward pass, each node by its definition."""
        g = self.derivation.graph
        given = [Step("given", Math(q.symbol), (), q.name) for q in g.input_list + g.params + g.constants]
        nodes = [Step("value" if q.name == g.loss_name else "forward", Math(q.symbol), (Math(q.expr),), q.name)
                 for q in g.computed]
        return given + nodes

    def value_symbol(self, step: Step) -> sp.Symbol | None:
        """The symbol whose value is the step's result, if it has one."""
        lhs = step.lhs
        if isinstance(lhs, Partial):
            symbol = local_symbol(lhs.of, lhs.wrt)
        elif isinstance(lhs, NewValue):
            symbol = new_symbol(lhs.param.name)
        elif isinstance(lhs, Math) and isinstance(lhs.expr, sp.Symbol):
            symbol = lhs.expr
        else:
            return None
        if step.kind == "update" and (step not in self.numbered or self._is_number(step.forms[0])):
            return None  # a step that does not hold at t = 1, or a value given as a number (t = 1)
        return symbol if value_key(symbol) in self.values else None

    @staticmethod
    def _is_number(form) -> bool:
        return isinstance(form, Math) and not form.expr.free_symbols

    def numeric_form(self, step: Step):
        """The form to print again with numbers, or None when it would only repeat the value."""
        if step.kind == "update":
            if step not in self.numbered:
                return None
            rule = step.forms[0]
            if isinstance(rule, UpdateRule):
                return Math(sp.Add(rule.param, sp.Mul(-1, ETA, rule.gradient, evaluate=False), evaluate=False))
        reuse = {} if step.kind in ("forward", "value", "update") else self._reuse
        for form in step.forms:
            substituted = self._with_values(form, reuse)
            if substituted is not None:
                if isinstance(substituted, Math) and (substituted.expr.is_Atom or not substituted.expr.free_symbols):
                    return None  # a single value or a constant: the value says it all
                return substituted
        return None

    def _with_values(self, form, reuse: dict):
        """``form`` with each local derivative as its symbol, or None if a part of it has no value."""
        if isinstance(form, Math):
            expr = form.expr.xreplace(reuse) if reuse else form.expr
            return Math(expr) if all(value_key(s) in self.values for s in expr.free_symbols) else None
        if isinstance(form, Partial):
            symbol = local_symbol(form.of, form.wrt)
            return Math(symbol) if symbol.name in self.values else None
        if isinstance(form, (Product, Total)):
            parts = form.factors if isinstance(form, Product) else form.terms
            done = [self._with_values(p, reuse) for p in parts]
            if any(d is None for d in done):
                return None
            return Product(tuple(done), form.hadamard) if isinstance(form, Product) else Total(tuple(done))
        return None  # a Prime f'(z) is written with its value form instead

    def notices(self) -> list[str]:
        """Plain-text lines about the update's numbers: a general step that does not hold at t = 1."""
        from .printing import NetworkTextPrinter
        later = [s for s in self.derivation.steps if s.kind == "update" and s not in self.numbered]
        if not self.numbered or not later:
            return []
        text = NetworkTextPrinter().doprint
        names = [text(s.lhs.expr) for s in later]
        starts = [name.rsplit(",", 1)[0] + ",1" for name in names]
        one = len(names) == 1
        return [f"the update is shown at its first step (t = 1), where {' and '.join(names)} "
                f"{'is' if one else 'are'} {' and '.join(starts)} (as {self.derivation.optimizer.torch_name} "
                f"starts {'it' if one else 'them'}); {'its general step holds' if one else 'their general steps hold'} "
                f"from t = 2 on, so {'it has' if one else 'they have'} no numbers"]

    # ---- display ---------------------------------------------------------------------------------------------
    def to(self, fmt: str = "latex", **options) -> str:
        from .render import render
        return render(self.derivation, fmt, evaluation=self, **options)

    def _repr_html_(self) -> str:
        return self.to("html", fragment=True)

    def _repr_latex_(self) -> str:
        return self.to("latex", standalone=True)

    def _repr_markdown_(self) -> str:
        return self.to("markdown")

    def __str__(self) -> str:
        return self.to("text")


def evaluate(derivation, point: Mapping[Any, Any], lr: float | None = None, digits: int = DIGITS,
             seed: int = 0, option: str = "point") -> Evaluation:
    """Evaluate ``derivation`` at one sample.

    ``point`` gives every input (a number, or a nested list in the input's shape) and any parameter;
    other parameters take their ``init`` value (random ones drawn with ``seed``, as training does).
    ``lr`` replaces the optimizer's learning rate (the derivation's settings step shows it); the update
    gets the numbers of its first step whenever its learning rate is shown: always, except for plain SGD
    at a constant rate (the seed's rule) without ``lr``. ``digits`` is the number of significant digits
    printed; ``option`` is how errors name the point (the CLI's ``--at``).
    """
    from .compile import compile_trace
    from .initializers import initial_params
    g = derivation.graph
    if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= 17:
        raise UserError(f"digits must be a whole number from 1 to 17, got {digits!r}")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not np.isfinite(lr) or lr <= 0):
        raise UserError(f"the learning rate must be a positive number, got {lr!r}")
    names = {getattr(k, "name", k) for k in point}
    defaults = initial_params(g, seed) if any(p.name not in names for p in g.params) else {}
    at = check_point(g, point, defaults, option)
    trace = compile_trace(derivation, shown_local_derivatives(derivation))
    params = {p.name: at[p.name] for p in g.params}
    data = {q.name: at[q.name][None] for q in g.input_list}
    with np.errstate(all="ignore"):  # a value that overflows is shown as it is (inf), not warned about
        traced = trace(params, data)
    values = {q.name: at[q.name].reshape(q.canonical_shape) for q in g.input_list + g.params}
    values.update({q.name: np.array(q.value) for q in g.constants})
    values.update({name: np.array(v[0]) for name, v in traced.items()})
    optimizer = derivation.optimizer if lr is None else derivation.optimizer.with_lr(float(lr))
    if not any(s.kind == "update" for s in derivation.steps) or (
            lr is None and optimizer.is_plain and derivation.schedule is None):
        return Evaluation(derivation, at, values, None, digits)  # no update, or the seed's rule without eta
    shown = derivation.with_update(optimizer, first_step=True)
    update, numbered = first_update(shown, values)
    return Evaluation(shown, at, {**values, **update}, optimizer.lr, digits, numbered)


def first_update(derivation, values: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[Step]]:
    """The numbers of the optimizer's first update (t = 1, epoch 0, from its initial state) at the gradients
    in ``values``, and the update steps that hold at t = 1.

    Each quantity the update's steps show is its step evaluated as written (:func:`~symbackprop.optim.follow_rule`);
    each parameter after the update is the optimizer's own numeric step (``Optimizer.step``, what training
    computes). The two must agree: a shown rule that computed something else would be a wrong worked example.
    """
    g, optimizer = derivation.graph, derivation.optimizer
    params = [p for p in g.params if p.name in derivation.targets]
    start = {p.name: values[p.name] for p in params}
    grads = {p.name: values[derivation.adjoint(p.name).name] for p in params}
    known = {ETA: optimizer.lr, **{p.symbol: start[p.name] for p in params},
             **{derivation.adjoint(p.name): grads[p.name] for p in params}}
    steps = [s for s in derivation.steps if s.kind == "update"]
    followed = follow_rule(steps, known)
    with np.errstate(all="ignore"):
        stepped = optimizer.step(start, grads, optimizer.init_state(start), optimizer.lr)
    for name, new in stepped.items():
        followed_new = np.asarray(followed.new[name], dtype=np.float64)
        finite = np.isfinite(followed_new) & np.isfinite(new)
        scale = 1e-12 * (np.max(np.abs(start[name]), initial=0.0) + optimizer.lr)
        if not np.allclose(followed_new[finite], new[finite], rtol=1e-9, atol=scale):
            raise RuntimeError(f"the shown update of {name} gives {followed_new}, but {optimizer.torch_name}'s "
                               f"step gives {new}: please report this bug in symbackprop")
    shown = shown_symbols(steps) | {ETA}  # eta: the last line's numbers use it
    update = {value_key(symbol): np.asarray(v, dtype=np.float64) for symbol, v in followed.values.items()
              if symbol in shown and isinstance(symbol, RuleSymbol)}
    update.update({new_symbol(name).name: new for name, new in stepped.items()})
    return update, followed.held


def evaluation_from_options(derivation, model, source: str | None = None, at=(), sample: int | None = None,
                            data_path: str | None = None, digits: int = DIGITS, lr: float | None = None) -> Evaluation:
    """The evaluation the command line asks for.

    The point: input values from sample ``sample`` (from 0) of the model's training data (or of the file
    ``data_path``), then the ``--at`` texts (``NAME=VALUE``), which replace them. Parameters not given
    take their init values drawn with the model's ``[train] seed``, as training starts from them. The
    learning rate: ``lr`` (``--lr``), else the derivation's optimizer's, which is the model's ``[train]
    lr`` when the table sets it for that optimizer, else torch's default (shown in the settings step);
    plain SGD without ``--lr`` or a ``[train] lr`` of its own keeps the seed's update symbolic.
    """
    from .data import model_data, sample_count
    from .train import train_settings
    g = derivation.graph
    table = model.train or {}
    optimizer = derivation.optimizer.name
    settings = train_settings(table, g, source, optimizer=optimizer)
    if lr is None and "lr" in table and table.get("optimizer", "sgd") == optimizer:
        lr = settings["lr"]  # the table's lr belongs to this optimizer (else train_settings warns it is unused)
    elif lr is not None and not (np.isfinite(lr) and lr > 0):
        raise PointError(f"--lr: the learning rate must be a positive number, got {lr}")
    point: dict[str, Any] = {}
    if sample is not None:
        data = model_data(g, model.data, data_path, source=source).train
        n = sample_count(data) if data else 0
        if sample >= n:
            raise PointError(f"--sample {sample}: the data has {n} samples (give 0 to {n - 1})" if n else
                             f"--sample {sample}: the model has no data to take a sample from")
        point.update({q.name: data[q.name][sample] for q in g.input_list})
    point.update(parse_assignments(at))
    return evaluate(derivation, point, lr=lr, digits=digits, seed=settings["seed"], option="--at")
