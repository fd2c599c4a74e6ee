"""Operations that are not elementwise: matrix products, transposes, reductions, softmax.

symbackprop writes every network quantity as a plain SymPy ``Symbol``, whatever its shape. SymPy's own
``+``, ``*``, ``**`` and functions then mean *elementwise* operations (which is why they may commute),
and the few operations that mix elements are the ``TensorOp`` classes below. Each keeps, side by side:

* ``shape``: its result shape from its argument shapes (a clear :class:`ShapeError` otherwise);
* ``vjp``: its local backward rule, the adjoint of each argument given the adjoint ``g`` of the result.

These are the matrix-calculus rules of backpropagation (``dL/dW = delta x^T``, ``dL/dx = W^T delta``,
``sum`` broadcasts back, transposes flow back), written once here instead of relying on SymPy's
incomplete matrix derivatives.

Shapes: ``()`` scalar, ``(n,)`` column vector, ``(1, n)`` row vector, ``(m, n)`` matrix. Every shape is
also a matrix (:func:`matrix_shape`: a scalar is 1 x 1, a vector n x 1), and the derivation works with
one *canonical* shape per matrix (:func:`canonical_shape`): a 1 x 1 matrix is a scalar and an n x 1
matrix a vector, whatever shape was declared. So ``W @ x`` with ``W`` of shape ``(1, n)`` is a scalar
that may feed ``V @ h`` with ``V`` of shape ``(m, 1)``, and a parameter declared ``(n, 1)`` gets the same
rules as a vector; the generated code reshapes at its boundary, so arrays keep their declared shapes.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from math import prod

import sympy as sp
from sympy.printing.precedence import PRECEDENCE

Shape = tuple[int, ...]
ShapeOf = Callable[[sp.Expr], Shape]


class ShapeError(ValueError):
    """An operation got operands whose shapes do not fit."""


def _text(expr: sp.Expr) -> str:
    s = str(expr)
    return s if len(s) <= 60 else s[:57] + "..."


class MatrixSyntax:
    """``A @ B`` and ``A.T`` on network quantities and tensor operations, so the Python API reads like NumPy.

    (Other SymPy expressions, such as ``tanh(W @ x)``, have no ``@`` or ``[i]``: write ``matmul(a, b)`` or
    ``index(a, i)`` there.)
    """

    def __matmul__(self, other):
        return matmul(self, sp.sympify(other, strict=True))

    def __rmatmul__(self, other):
        return matmul(sp.sympify(other, strict=True), self)

    @property
    def T(self):
        return transpose(self)

    def __getitem__(self, key):
        """``h[0]``, ``h[-1]``, ``h[1:3]``, ``W[0]`` (a row): see :mod:`symbackprop.indexing`."""
        from .indexing import subscript
        return subscript(self, key)

    __iter__ = None  # ``h[i]`` does not make a quantity a Python sequence: iterating one is a TypeError


class TensorOp(MatrixSyntax, sp.Function):
    """Base class of the operations that are not elementwise."""

    is_real = True

    @property
    def is_number(self) -> bool:
        """Never a number, even with only numbers as arguments: ``ones(2, 3)`` is a matrix."""
        return False

    def shape(self, arg_shapes: list[Shape]) -> Shape:  # pragma: no cover - abstract
        raise NotImplementedError

    def vjp(self, g: sp.Expr, shape_of: ShapeOf) -> list[sp.Expr]:  # pragma: no cover - abstract
        raise NotImplementedError

    def fdiff(self, argindex=1):
        raise TypeError(f"{type(self).__name__} is differentiated by its vjp rule, not by SymPy's diff")


def matrix_shape(shape: Shape) -> tuple[int, int]:
    """The (rows, cols) of a quantity of ``shape``: a scalar is 1 x 1, a vector of n is n x 1."""
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (shape[0], 1)
    return (shape[0], shape[1])


def canonical_shape(shape: Shape) -> Shape:
    """The one shape the derivation uses for a matrix: 1 x 1 is ``()``, n x 1 is ``(n,)``."""
    rows, cols = matrix_shape(shape)
    if cols == 1:
        return () if rows == 1 else (rows,)
    return (rows, cols)


def transpose_of(a: sp.Expr, shape_of: ShapeOf) -> sp.Expr:
    """``a^T`` with scalar factors kept outside: (g x^T)^T = g x for a scalar g; a scalar is its own."""
    if shape_of(a) == ():
        return a
    if isinstance(a, sp.Mul):
        scalars = [f for f in a.args if shape_of(f) == ()]
        if scalars:
            rest = [f for f in a.args if shape_of(f) != ()]
            return sp.Mul(*scalars) * transpose(sp.Mul(*rest))
    return transpose(a)


def mm(a: sp.Expr, b: sp.Expr, shape_of: ShapeOf) -> sp.Expr:
    """Matrix product that degrades to a plain product when either side is a scalar."""
    if shape_of(a) == () or shape_of(b) == ():
        return a * b
    return matmul(a, b)


class matmul(TensorOp):
    """Matrix product ``A @ B`` (a column vector counts as an n x 1 matrix, a scalar as 1 x 1)."""

    nargs = 2
    #: binds like a product in every printer (``W x``, ``W @ x``), so ``u * (W @ x)`` keeps its brackets
    precedence = PRECEDENCE["Mul"]

    def shape(self, arg_shapes):
        (a, b), (c, d) = (matrix_shape(s) for s in arg_shapes)
        if b != c:
            hint = ""
            if len(arg_shapes[0]) == 1 and arg_shapes[0] == arg_shapes[1]:  # two column vectors: a dot product?
                left, right = (_text(arg) for arg in self.args)
                tight = all(arg.is_Symbol or getattr(arg, "precedence", 0) == PRECEDENCE["Atom"] for arg in self.args)
                dot = (f"{left}.T @ {right}" if tight  # names, or names with an index (h[0], W[1])
                       else f"matmul(transpose({left}), {right})")
                hint = f"; for the dot product of two vectors write {dot}"
            raise ShapeError(
                f"matrix product {_text(self)}: shapes {arg_shapes[0]} and {arg_shapes[1]} do not fit "
                f"(inner sizes {b} and {c}){hint}")
        return canonical_shape((a, d))

    def vjp(self, g, shape_of):
        A, B = self.args
        return [mm(g, transpose_of(B, shape_of), shape_of), mm(transpose_of(A, shape_of), g, shape_of)]



class transpose(TensorOp):
    """Transpose ``A.T``; a column vector becomes a row vector and back."""

    nargs = 1

    @classmethod
    def eval(cls, a):
        if isinstance(a, transpose):
            return a.args[0]
        if a.is_Number:
            return a
        if isinstance(a, matmul):  # (A B)^T = B^T A^T: keeps outer products in the form delta x^T
            return matmul(transpose(a.args[1]), transpose(a.args[0]))
        if isinstance(a, sp.Add):
            return sp.Add(*[transpose(t) for t in a.args])
        return None

    def shape(self, arg_shapes):
        rows, cols = matrix_shape(arg_shapes[0])
        return canonical_shape((cols, rows))

    def vjp(self, g, shape_of):
        return [transpose_of(g, shape_of)]



class Reduction(TensorOp):
    """A function of a whole tensor that returns a scalar or keeps the shape (sum, mean, softmax)."""

    nargs = 1

    @property
    def text_name(self) -> str:
        """The name a model file calls it by (``sum`` for the class ``sum_``), as the printers write it."""
        return type(self).__name__.rstrip("_")


class sum_(Reduction):
    """Sum of all elements."""

    latex_name = r"\operatorname{sum}"

    @classmethod
    def eval(cls, a):
        return a if a.is_Number else None

    def shape(self, arg_shapes):
        return ()

    def vjp(self, g, shape_of):
        return [g * ones_of(shape_of(self.args[0]))]


class mean(sum_):
    """Mean of all elements: the sum's rules, divided by the number of elements."""

    latex_name = r"\operatorname{mean}"

    def vjp(self, g, shape_of):
        (g_arg,) = super().vjp(g, shape_of)
        return [g_arg / max(prod(shape_of(self.args[0])), 1)]


def _vector_only(op: TensorOp, s: Shape) -> None:
    """softmax and logsumexp take a column vector (a vector of one element is a scalar)."""
    if len(s) == 2:
        raise ShapeError(f"{type(op).__name__}({_text(op.args[0])}) needs a vector, got shape {s}")


class logsumexp(Reduction):
    """log(sum(exp(v))) of a vector, computed stably (the maximum is taken out first)."""

    latex_name = r"\operatorname{logsumexp}"

    def shape(self, arg_shapes):
        _vector_only(self, arg_shapes[0])
        return ()

    def vjp(self, g, shape_of):
        return [g * softmax(self.args[0])]


class softmax(Reduction):
    """exp(v) / sum(exp(v)) of a vector, computed stably."""

    latex_name = r"\operatorname{softmax}"

    def shape(self, arg_shapes):
        _vector_only(self, arg_shapes[0])
        return arg_shapes[0]

    def vjp(self, g, shape_of):
        s = softmax(self.args[0])
        return [s * (g - sum_(g * s))]


class ones(TensorOp):
    """A tensor of ones of a given shape: what a scalar adjoint becomes when it flows back into a tensor."""

    nargs = (1, 2)

    def shape(self, arg_shapes):
        return tuple(int(n) for n in self.args)

    def vjp(self, g, shape_of):
        return []


def ones_of(shape: Shape) -> sp.Expr:
    """``ones(*shape)``, or plain 1 for a scalar."""
    return ones(*shape) if shape else sp.S.One


def keep_shape(expr: sp.Expr, shape: Shape, shapes: Mapping[sp.Symbol, Shape], memo: dict | None = None) -> sp.Expr:
    """``expr`` as a tensor of ``shape``: broadcast with ``ones`` when SymPy has cancelled its tensor terms.

    SymPy simplifies as it builds: ``(x + b) - x`` is ``b``, and the stable form of ``log(softmax(v)) - v``
    is ``-logsumexp(v)``, both scalars although the user's expression is a vector whose every element is
    that scalar (``sum`` of it is n times larger). Where the tensor terms cancel, the result is multiplied
    by ``ones(shape)`` so that it keeps the shape (and the value) the user wrote. (A result of exactly 0
    stays 0: SymPy folds ``0 * ones``, and a zero broadcast sums, multiplies and adds as zeros do.)
    """
    if shape == () or expr.is_zero:
        return expr
    try:
        if infer_shape(expr, shapes, memo) != ():
            return expr
    except ShapeError:
        return expr
    return expr * ones_of(shape)


#: Tensor functions a model may call by name.
TENSOR_FUNCTIONS = {"sum": sum_, "mean": mean, "softmax": softmax, "logsumexp": logsumexp}


def infer_shape(expr: sp.Expr, shapes: Mapping[sp.Symbol, Shape], memo: dict | None = None) -> Shape:
    """Shape of ``expr`` given the shapes of its symbols; elementwise operands must match or be scalars."""
    memo = {} if memo is None else memo
    if expr in memo:
        return memo[expr]
    if expr.is_Symbol:
        try:
            result = shapes[expr]
        except KeyError:
            raise ShapeError(f"no shape is known for '{expr}'") from None
    elif isinstance(expr, TensorOp):
        result = canonical_shape(expr.shape([infer_shape(a, shapes, memo) for a in expr.args]))
    elif expr.is_number:
        result = ()
    else:
        arg_shapes = [infer_shape(a, shapes, memo) for a in expr.args]
        if isinstance(expr, (sp.Add, sp.Mul, sp.Pow, sp.Function)):
            distinct = {s for s in arg_shapes if s != ()}
            if len(distinct) > 1:
                a, b = sorted(distinct)[:2]
                raise ShapeError(f"shape mismatch in {_text(expr)}: {a} and {b} (elementwise operations "
                                 "need equal shapes, or a scalar)")
            result = distinct.pop() if distinct else ()
        else:
            raise ShapeError(f"unsupported operation {type(expr).__name__} in {_text(expr)}")
    memo[expr] = result
    return result


def tensor_subterms(expr: sp.Expr, wrt: sp.Symbol) -> list[sp.Expr]:
    """The outermost ``TensorOp`` applications inside ``expr`` that contain ``wrt``."""
    found: list[sp.Expr] = []

    def walk(e):
        if wrt not in e.free_symbols:
            return
        if isinstance(e, TensorOp):
            if e not in found:
                found.append(e)
            return
        for a in e.args:
            walk(a)

    walk(expr)
    return found
