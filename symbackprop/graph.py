"""The computation graph: inputs, parameters, named nodes and a scalar loss, with shapes.

A network is declared in order. Every node is a SymPy expression of inputs, parameters and earlier
nodes, so the graph can never have a cycle, and each name is defined once. Every quantity is a
:class:`TensorSymbol` (a real SymPy ``Symbol``) whatever its shape; the shapes live in the graph and
are checked as each node is added (see :mod:`symbackprop.tensor` for the rules).

Errors are :class:`ModelError`\\ s that say where (``node 'z'``, or ``[nodes] z`` for a model file) and
what (the offending name, the shapes that do not fit).
"""
from __future__ import annotations

import builtins
import keyword
import math
import re
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from .functions import Elementwise, FUNCTIONS
from .indexing import resolve_positions
from .stable import stable_forms
from .tensor import TENSOR_FUNCTIONS, MatrixSyntax, Shape, ShapeError, TensorOp, canonical_shape, infer_shape


class UserError(ValueError):
    """Bad input from the user (model, data, options): the CLI shows it as one line, never a traceback."""


class ModelError(UserError):
    """A model that cannot be used as written; ``str()`` is one line naming the entry and the problem."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


class TensorSymbol(MatrixSyntax, sp.Symbol):
    """A named network quantity. Supports ``A @ B`` and ``A.T`` so the Python API reads like NumPy."""

    def __new__(cls, name: str):
        return super().__new__(cls, name, real=True)

    def __getnewargs_ex__(self):
        return ((self.name,), {})


NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
MAX_NAME_LENGTH = 64
#: Names a user may not take: functions, Python keywords and builtins, and names the generated code uses.
RESERVED = (set(FUNCTIONS) | set(TENSOR_FUNCTIONS) | set(keyword.kwlist) | set(dir(builtins))
            | {"np", "numpy", "N", "T", "params", "data", "loss", "grads", "values", "matmul", "transpose",
               "ones", "pi", "E", "I", "oo", "nan", "inf", "eta", "forward", "loss_and_grad", "concat", "index",
               "arrays", "DTYPE", "BLOCK"})


def check_name(name: Any, where: str) -> str:
    """Return ``name`` if it can name a network quantity, else raise a ModelError saying why."""
    if not isinstance(name, str):
        raise ModelError(where, f"a name must be text, got {type(name).__name__}")
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH or "__" in name:
        raise ModelError(where, f"{name[:40]!r} is not a valid name (use letters, digits and single "
                                f"underscores, starting with a letter, at most {MAX_NAME_LENGTH} characters)")
    if name in RESERVED:
        raise ModelError(where, f"'{name}' is reserved (a function, keyword or name used by generated code)")
    return name


@dataclass
class Quantity:
    """One named quantity of the graph."""

    name: str
    symbol: TensorSymbol
    shape: Shape
    kind: str  # "input", "param", "constant", "node" or "loss"
    expr: sp.Expr | None = None  # the definition, for nodes and the loss
    init: Any = None  # the initial value spec, for parameters
    onehot: bool = False  # inputs whose rows sum to one (class labels), so sum(y) = 1
    value: float | None = None  # the number, for constants

    @property
    def canonical_shape(self) -> Shape:
        """The shape the derivation and the generated code compute with (``(n, 1)`` is ``(n,)``, and so on)."""
        return canonical_shape(self.shape)


def _check_shape(shape: Any, where: str) -> Shape:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or len(shape) > 2 or not all(
            isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1_000_000 for n in shape):
        raise ModelError(where, f"shape must be [], [n] or [m, n] with sizes from 1 to 1000000, "
                                f"got {repr(shape)[:40]}")
    return tuple(shape)


@dataclass
class Graph:
    """A network declared in order: inputs, parameters, nodes, then one scalar loss."""

    name: str = "network"
    quantities: dict[str, Quantity] = field(default_factory=dict)
    loss_name: str | None = None
    #: indices into :data:`symbackprop.stable.RULES` of the stable forms its definitions were rewritten to
    stable_rules: set[int] = field(default_factory=set)

    # ---- declaring -------------------------------------------------------------------------------
    def input(self, name: str, shape: Shape = (), onehot: bool = False, where: str | None = None) -> TensorSymbol:
        """Declare per-sample data (a scalar, or a vector/matrix of the given shape)."""
        where = where or f"input '{name}'"
        return self._declare(name, _check_shape(shape, where), "input", where, onehot=bool(onehot))

    def inputs(self, names: str) -> tuple[TensorSymbol, ...]:
        """Declare several scalar inputs at once: ``x, y = g.inputs("x y")``."""
        return tuple(self.input(n) for n in names.split())

    def param(self, name: str, shape: Shape = (), init: Any = 0.0, where: str | None = None) -> TensorSymbol:
        """Declare a trainable parameter with its initial value (a number, a list, or an initialiser)."""
        where = where or f"param '{name}'"
        return self._declare(name, _check_shape(shape, where), "param", where, init=init)

    def constant(self, name: str, value: float, where: str | None = None) -> TensorSymbol:
        """Declare a named number (``lam = 0.01``): a symbol in the derivation, its value in the code.

        A constant is a scalar that no gradient flows into; naming it keeps the derivation in the symbols
        the user thinks in (weight decay ``lam * sum(W*W)`` differentiates to ``2 lam W``).
        """
        where = where or f"constant '{name}'"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ModelError(where, f"a constant must be a finite number, got {str(value)[:40]}")
        return self._declare(name, (), "constant", where, value=float(value))

    def node(self, name: str, expr: Any, where: str | None = None) -> TensorSymbol:
        """Define a named intermediate value from inputs, parameters and earlier nodes."""
        return self._define(name, expr, "node", where or f"node '{name}'")

    def loss(self, name: str, expr: Any, where: str | None = None) -> TensorSymbol:
        """Define the per-sample scalar loss; it must come last."""
        where = where or f"loss '{name}'"
        symbol = self._define(name, expr, "loss", where)
        if self.quantities[name].shape != ():
            shape = self.quantities.pop(name).shape
            raise ModelError(where, f"the loss must be a scalar per sample, but '{name}' has shape {shape} "
                                    "(wrap it in sum(...) or mean(...))")
        self.loss_name = name
        return symbol

    def _declare(self, name: str, shape: Shape, kind: str, where: str, **extra) -> TensorSymbol:
        check_name(name, where)
        if self.loss_name is not None:
            raise ModelError(where, "nothing can be declared after the loss")
        if name in self.quantities:
            kind = self.quantities[name].kind
            raise ModelError(where, f"'{name}' is defined twice (already {'an' if kind[0] in 'aeiou' else 'a'} {kind})")
        symbol = TensorSymbol(name)
        self.quantities[name] = Quantity(name, symbol, shape, kind, **extra)
        return symbol

    def _define(self, name: str, expr: Any, kind: str, where: str) -> TensorSymbol:
        applied: set[int] = set()
        try:
            expr = resolve_positions(self._adopt(expr, where), self.shapes)
            expr = stable_forms(expr, self._definition, self.shapes, applied)
            shape = infer_shape(expr, self.shapes)
        except ShapeError as e:
            raise ModelError(where, str(e)) from None
        symbol = self._declare(name, shape, kind, where, expr=expr)
        self.stable_rules |= applied
        return symbol

    def _adopt(self, expr: Any, where: str) -> sp.Expr:
        """Check an expression uses only declared names and known operations; use the graph's symbols."""
        if isinstance(expr, (int, float)) and not isinstance(expr, bool):
            expr = sp.Float(expr) if isinstance(expr, float) else sp.Integer(expr)
        if not isinstance(expr, sp.Expr):
            raise ModelError(where, f"expected a SymPy expression, got {type(expr).__name__}")
        mapping = {}
        for s in expr.free_symbols:
            q = self.quantities.get(s.name)
            if q is None:
                raise ModelError(where, f"undefined name '{s.name}'")
            if q.kind == "loss":
                raise ModelError(where, f"'{s.name}' is the loss; nothing can use it")
            mapping[s] = q.symbol
        expr = expr.xreplace(mapping)
        for e in sp.preorder_traversal(expr):
            if e.is_Symbol or isinstance(e, (sp.Add, sp.Mul, sp.Pow, Elementwise, TensorOp)):
                continue
            if e.is_Number:
                if not e.is_finite or not e.is_real:
                    raise ModelError(where, f"the number {e} is not a finite real number")
                continue
            if isinstance(e, sp.Function) and type(e) in set(FUNCTIONS.values()) | {sp.sign}:
                continue
            name = getattr(type(e), "__name__", str(e))
            raise ModelError(where, f"unknown function or operation '{name}'")
        return expr

    def _definition(self, symbol: sp.Symbol) -> sp.Expr | None:
        """The definition of a node (None for inputs and parameters): stable forms look through nodes."""
        q = self.quantities.get(symbol.name)
        return q.expr if q is not None and q.kind == "node" else None

    # ---- reading ---------------------------------------------------------------------------------
    def of_kind(self, kind: str) -> list[Quantity]:
        return [q for q in self.quantities.values() if q.kind == kind]

    @property
    def params(self) -> list[Quantity]:
        return self.of_kind("param")

    @property
    def input_list(self) -> list[Quantity]:
        return self.of_kind("input")

    @property
    def constants(self) -> list[Quantity]:
        return self.of_kind("constant")

    @property
    def computed(self) -> list[Quantity]:
        """Nodes and the loss, in declaration (forward) order."""
        return [q for q in self.quantities.values() if q.kind in ("node", "loss")]

    @property
    def loss_quantity(self) -> Quantity:
        if self.loss_name is None:
            raise ModelError("loss", "no loss is defined")
        return self.quantities[self.loss_name]

    @property
    def shapes(self) -> dict[sp.Symbol, Shape]:
        """Each quantity's canonical shape (see :func:`symbackprop.tensor.canonical_shape`)."""
        return {q.symbol: q.canonical_shape for q in self.quantities.values()}

    def __getitem__(self, name: str) -> Quantity:
        return self.quantities[name]

    def symbol(self, name: str) -> TensorSymbol:
        return self.quantities[name].symbol

    def dependencies(self, name: str) -> list[str]:
        """Names the definition of ``name`` uses directly, in declaration order."""
        expr = self.quantities[name].expr
        if expr is None:
            return []
        used = {s.name for s in expr.free_symbols}
        return [n for n in self.quantities if n in used]

    def flattened(self) -> dict[sp.Symbol, sp.Expr]:
        """Each node (and the loss) written with inputs and parameters only: the expression that swells."""
        values: dict[sp.Symbol, sp.Expr] = {}
        for q in self.computed:
            values[q.symbol] = q.expr.xreplace(values)
        return values

    def data_dependent(self) -> set[str]:
        """Names whose value changes from sample to sample: inputs and everything computed from them."""
        varying: set[str] = set()
        for q in self.quantities.values():
            if q.kind == "input" or any(d in varying for d in self.dependencies(q.name)):
                varying.add(q.name)
        return varying

    def validate(self) -> "Graph":
        """Check the graph is complete: a loss is defined (cycles and shapes are checked on the way)."""
        self.loss_quantity
        return self
