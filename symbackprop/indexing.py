"""Indexing, slicing and joining: ``h[0]``, ``h[1:3]``, ``concat(a, b, ...)``, and the scatter of their backward pass.

They are :class:`~symbackprop.tensor.TensorOp`\\ s like the matrix product: each keeps its result ``shape`` and
its local backward rule ``vjp`` side by side.

* Positions run along the first axis of a quantity, 0-based, with Python's rules: ``h[-1]`` is the last
  element, ``h[1:3]`` the elements 1 and 2, bounds past the end are clipped. A step (``h[::2]``) is refused.
  For a vector (a column) that axis is its elements; for a matrix it is its rows, so ``W[0]`` is the first
  row (as a vector, as in NumPy) and ``W[1:3]`` the matrix of rows 1 and 2. A scalar cannot be indexed.
* ``concat`` joins vectors and scalars (a scalar is one element) into one vector; a matrix is refused.
* Backward: an index or slice puts its adjoint into zeros of the operand's shape at the same positions
  (:class:`scatter`); a concat hands each piece its part of the adjoint (an index or slice of it).

A graph resolves positions against the operand's shape when a node is defined (:func:`resolve_positions`):
negative and clipped positions become the plain ones they mean, and a slice of one element of a vector becomes
an index (a vector of one element is a scalar, :func:`~symbackprop.tensor.canonical_shape`). Everything after
the graph (the derivation, printers, generated code) sees positions ``0 <= i < n`` only.
"""
from __future__ import annotations

from collections.abc import Mapping

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

from .tensor import Shape, ShapeError, TensorOp, _text, canonical_shape, infer_shape, ones

#: a slice written without its end (``h[1:]``): past every side a graph allows (sides are at most 1e6)
OPEN_END = 10 ** 7


def _position(value, what: str) -> sp.Integer:
    """A position as a SymPy Integer; anything but a whole number is a TypeError."""
    if isinstance(value, bool) or not isinstance(value, (int, sp.Integer)):
        shown = _text(value) if isinstance(value, sp.Basic) else repr(value)[:40]
        raise TypeError(f"{what} must be a whole number, got {shown}")
    return sp.Integer(int(value))


def _sides(op: TensorOp, s: Shape) -> tuple[int, int]:
    """(length of the first axis, columns: 0 for a vector) of an indexed operand; a scalar is refused."""
    if s == ():
        raise ShapeError(f"cannot index {_text(op.args[0])}: it is a scalar (shape ()), not a vector or matrix")
    return s[0], (s[1] if len(s) == 2 else 0)


class _Positional(TensorOp):
    """Prints as written (``h[0]``, ``h[1:3]``, ``concat(a, b)``) in ``str()`` and error messages: the network
    text printer's form (:class:`~symbackprop.printing.NetworkTextPrinter`), where a printer has no
    ``_print_<Type>`` method of its own for the class (LaTeX, MathML and NumPy have)."""

    #: a subscript or a bracketed column binds tightest in every printer (``h[0].T``, not ``(h[0]).T``)
    precedence = PRECEDENCE["Atom"]

    def _sympystr(self, printer):
        own = getattr(type(printer), f"_print_{type(self).__name__}", None)
        if own is not None:
            return own(printer, self)
        from .printing import NetworkTextPrinter
        return NetworkTextPrinter().doprint(self)


class index(_Positional):
    """``h[i]``: element ``i`` of a vector (a scalar), or row ``i`` of a matrix (a vector of its columns)."""

    nargs = 2

    @classmethod
    def eval(cls, a, i):
        _position(i, "an index")
        if isinstance(a, ones):  # an element (or row) of ones is one (a row of ones)
            return ones(*a.args[1:]) if len(a.args) == 2 else sp.S.One
        return None

    def shape(self, arg_shapes):
        n, cols = _sides(self, arg_shapes[0])
        i = int(self.args[1])
        if not -n <= i < n:
            raise ShapeError(f"index {i} is out of range for {_text(self.args[0])} of shape {arg_shapes[0]} "
                             f"(0 to {n - 1}, or -{n} to -1 from the end)")
        return (cols,) if cols else ()

    def resolved(self, s: Shape) -> sp.Expr:
        self.shape([s])  # a scalar operand or a position out of range is refused here
        return index(self.args[0], int(self.args[1]) % s[0])

    def vjp(self, g, shape_of):
        s = shape_of(self.args[0])
        i = int(self.args[1])
        return [scatter_of(g, i, i + 1, s), sp.S.Zero]


class slice_(_Positional):
    """``h[start:stop]``: elements (of a vector) or rows (of a matrix) ``start`` to ``stop - 1``."""

    nargs = 3

    @classmethod
    def eval(cls, a, start, stop):
        _position(start, "the start of a slice")
        _position(stop, "the end of a slice")
        if isinstance(a, ones) and 0 <= start < stop <= int(a.args[0]):
            return ones(stop - start, *a.args[1:]) if stop - start > 1 or len(a.args) == 2 else sp.S.One
        return None

    def bounds(self, s: Shape) -> tuple[int, int]:
        """(start, stop) with Python's rules for negative and out-of-range bounds; empty is refused."""
        n, _ = _sides(self, s)
        start, stop, _ = slice(int(self.args[1]), int(self.args[2])).indices(n)
        if stop <= start:
            raise ShapeError(f"the slice {self} of shape {s} is empty (it selects nothing of 0 to {n - 1})")
        return start, stop

    def shape(self, arg_shapes):
        start, stop = self.bounds(arg_shapes[0])
        _, cols = _sides(self, arg_shapes[0])
        return canonical_shape((stop - start, cols) if cols else (stop - start,))

    def resolved(self, s: Shape) -> sp.Expr:
        start, stop = self.bounds(s)
        if len(s) == 1 and stop - start == 1:
            return index(self.args[0], start)
        return slice_(self.args[0], start, stop)

    def vjp(self, g, shape_of):
        s = shape_of(self.args[0])
        start, stop = self.bounds(s)
        return [scatter_of(g, start, stop, s), sp.S.Zero, sp.S.Zero]


class concat(_Positional):
    """``concat(a, b, ...)``: vectors and scalars (one element each) joined into one vector, in order."""

    nargs = None  # any number; a model file asks for at least two

    def shape(self, arg_shapes):
        for a, s in zip(self.args, arg_shapes):
            if len(s) == 2:
                raise ShapeError(f"concat joins vectors and scalars, but {_text(a)} is a matrix of shape {s}")
        return canonical_shape((sum(s[0] if s else 1 for s in arg_shapes),))

    def vjp(self, g, shape_of):
        parts, offset = [], 0
        for a in self.args:
            s = shape_of(a)
            size = s[0] if s else 1
            parts.append(part_of(g, offset, offset + size, shape_of))
            offset += size
        return parts


class scatter(_Positional):
    """``g`` placed at positions ``start`` to ``start + k - 1`` of zeros of shape ``(rows,)`` or ``(rows, cols)``:
    the adjoint of an index or a slice flowing back into its operand.

    Arguments ``(g, start, rows)`` for a vector operand, ``(g, start, rows, cols)`` for a matrix one. ``g`` is
    what the index or slice gave: a scalar or vector of ``k`` elements, or one row (a vector of ``cols``) or
    ``k`` rows (a matrix) of a matrix.
    """

    nargs = (3, 4)

    @classmethod
    def eval(cls, g, *positions):
        return sp.S.Zero if g.is_zero else None

    @property
    def start(self) -> int:
        return int(self.args[1])

    @property
    def operand_shape(self) -> Shape:
        return tuple(int(n) for n in self.args[2:])

    def block(self, g_shape: Shape) -> int:
        """How many positions ``g`` fills (k)."""
        if len(self.args) == 3:  # into a vector: a scalar is one element, a vector k of them
            return g_shape[0] if g_shape else 1
        return g_shape[0] if len(g_shape) == 2 else 1  # into a matrix: a vector is one row

    def shape(self, arg_shapes):
        rows = self.operand_shape[0]
        k = self.block(arg_shapes[0])
        if self.start + k > rows:
            raise ShapeError(f"scatter of {k} into {rows} from {self.start} does not fit")
        return canonical_shape(self.operand_shape)

    def zeros_around(self, g_shape: Shape) -> tuple[int, int]:
        """(positions before g, positions after it): the zero blocks of the stacked form."""
        k = self.block(g_shape)
        return self.start, self.operand_shape[0] - self.start - k

    def vjp(self, g, shape_of):  # pragma: no cover - only the backward pass builds it; nothing differentiates it
        raise TypeError("scatter is a backward-pass value; it is not differentiated again")


def part_of(g: sp.Expr, start: int, stop: int, shape_of) -> sp.Expr:
    """``g[start]`` (one position) or ``g[start:stop]``, with the scalar factors of a product outside:
    ``dL/dz v[3]``, not ``(dL/dz v)[3]``."""
    scalars = []
    if isinstance(g, sp.Mul):
        scalars = [f for f in g.args if shape_of(f) == ()]
        g = sp.Mul(*[f for f in g.args if shape_of(f) != ()])
    picked = index(g, start) if stop == start + 1 else slice_(g, start, stop)
    return sp.Mul(*scalars) * picked


def scatter_of(g: sp.Expr, start: int, stop: int, operand_shape: Shape) -> sp.Expr:
    """The adjoint of ``operand[start:stop]`` (or of ``operand[start]`` when ``stop = start + 1``) given ``g``."""
    if len(operand_shape) == 1 and (start, stop) == (0, operand_shape[0]):
        return g  # the whole vector
    return scatter(g, start, *operand_shape)


def resolve_positions(expr: sp.Expr, shapes: Mapping[sp.Symbol, Shape], memo: dict | None = None) -> sp.Expr:
    """``expr`` with every index and slice in its plain form (``0 <= i < n``, see the module docstring).

    A position out of range, an empty slice or an indexed scalar is a :class:`ShapeError` that names the
    operand and its shape.
    """
    if not expr.has(index, slice_):
        return expr
    memo = {} if memo is None else memo

    def plain(e):
        return e.resolved(infer_shape(e.args[0], shapes, memo))

    return expr.replace(lambda e: isinstance(e, (index, slice_)), plain)


def subscript(a: sp.Expr, key) -> sp.Expr:
    """``a[key]`` for the Python API: an int is an index, a slice without a step a slice."""
    if isinstance(key, slice):
        if key.step is not None:
            raise TypeError(f"a slice with a step ({_text(a)}[::{key.step}]) is not supported: "
                            "use concat of indices")
        start = 0 if key.start is None else _position(key.start, "the start of a slice")
        stop = OPEN_END if key.stop is None else _position(key.stop, "the end of a slice")
        return slice_(a, start, stop)
    if isinstance(key, tuple):
        raise TypeError(f"{_text(a)}[{', '.join(map(str, key))}]: one position only (W[i] is row i; "
                        "for an element write W[i][j])")
    return index(a, _position(key, "an index"))
