"""SymPy printers for network expressions: LaTeX and plain text.

They differ from SymPy's own printers in what a network needs: they know each symbol's shape (vectors
and matrices in bold, ``\\odot`` between elementwise tensor factors), print adjoints as
``\\frac{\\partial L}{\\partial z}``, print the tensor operations of :mod:`symbackprop.tensor`, and put a
product's factors in reading order (``\\sigma(z) (1 - \\sigma(z))``: plain factors before parenthesised
sums). One ``_print_<Type>`` method per expression type, as in SymPy.
"""
from __future__ import annotations

from collections.abc import Mapping

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from .tensor import Shape


def reading_order(factors) -> list:
    """Numbers first, then symbols and function values, then powers, then parenthesised sums."""
    def rank(f):
        if f.is_Number:
            return 0
        if isinstance(f, sp.Add) or (isinstance(f, sp.Pow) and isinstance(f.base, sp.Add)):
            return 3
        return 1
    return sorted(factors, key=rank)


class FunctionBases:
    """Route ``_print_<Base>`` for our function base classes.

    SymPy's printers skip intermediate ``Function`` base classes when they look for a
    ``_print_<Class>`` method (unless the name ends in ``Base``), so ``_print_Elementwise`` and
    ``_print_Reduction`` are dispatched here.
    """

    bases = ("Elementwise", "Reduction")

    def _print_Function(self, expr, **kwargs):
        for cls in type(expr).__mro__:
            if cls.__name__ in self.bases and hasattr(self, f"_print_{cls.__name__}"):
                return getattr(self, f"_print_{cls.__name__}")(expr, **kwargs)
        return super()._print_Function(expr, **kwargs)


class _ShapeAware(FunctionBases):
    """Shape lookup shared by the printers: ``shapes`` maps names to shapes."""

    def _init_shapes(self, shapes: Mapping[str, Shape] | None):
        self.shapes = dict(shapes or {})

    def _with_order(self, order, method, expr):
        """Print with a term order: SymPy's default for sums (``a - y``), as written for products."""
        saved = self._settings["order"]
        self._settings["order"] = order
        try:
            return method(expr)
        finally:
            self._settings["order"] = saved

    def _print_Add(self, expr, order=None):
        return self._with_order(None, super()._print_Add, expr)

    def is_tensor(self, expr: sp.Expr) -> bool:
        from .tensor import canonical_shape, infer_shape
        try:
            known = {s: canonical_shape(self.shapes.get(getattr(s, "of", s.name), ())) for s in expr.free_symbols}
            return infer_shape(expr, known) != ()
        except ValueError:
            return False

    def split_factors(self, expr: sp.Mul):
        scalars, tensors = [], []
        for f in reading_order(expr.args):
            (tensors if self.is_tensor(f) else scalars).append(f)
        return scalars, tensors


def matmul_operands(printer, expr) -> tuple[str, str]:
    """``A`` and ``B`` of ``A @ B``: a product on the right is bracketed, ``W^T (g * x)``, not ``(W^T g) * x``."""
    a, b = expr.args
    return (printer.parenthesize(a, PRECEDENCE["Mul"], strict=True),
            printer.parenthesize(b, PRECEDENCE["Mul"], strict=False))


class NetworkLatexPrinter(_ShapeAware, LatexPrinter):
    """LaTeX for network expressions; ``shapes`` (name -> shape) makes tensors bold."""

    def __init__(self, shapes: Mapping[str, Shape] | None = None, **settings):
        LatexPrinter.__init__(self, dict(settings))
        self._init_shapes(shapes)

    def _print_Symbol(self, expr, style="plain"):
        text = super()._print_Symbol(expr, style)
        base, sep, rest = text.partition("_")
        if self.shapes.get(expr.name, ()) != ():
            return rf"\mathbf{{{base}}}" + sep + rest
        if len(base) > 1 and not base.startswith("\\"):  # a word such as "out", not o*u*t
            return rf"\mathrm{{{base}}}" + sep + rest
        return text

    def _print_Adjoint(self, expr):
        of = self._print_Symbol(sp.Symbol(expr.of))
        loss = self._print_Symbol(sp.Symbol(expr.loss))
        return rf"\frac{{\partial {loss}}}{{\partial {of}}}"

    def _print_Mul(self, expr):
        scalars, tensors = self.split_factors(expr)
        if not tensors:
            return self._with_order("none", super()._print_Mul, sp.Mul(*scalars, evaluate=False))
        head = ""
        if scalars:
            coeff = sp.Mul(*scalars, evaluate=False)
            head = "- " if coeff == -1 else ("" if coeff == 1 else self.parenthesize(coeff, PRECEDENCE["Mul"]) + " ")
        body = r" \odot ".join(self.parenthesize(t, PRECEDENCE["Mul"]) for t in tensors)
        return head + body

    def _print_matmul(self, expr, exp=None):
        text = " ".join(matmul_operands(self, expr))
        return text if exp is None else rf"\left({text}\right)^{{{exp}}}"

    def _print_transpose(self, expr, exp=None):
        arg = expr.args[0]
        inner = self._print(arg) if arg.is_Atom else rf"\left({self._print(arg)}\right)"
        text = inner + r"^{\top}"
        return text if exp is None else rf"\left({text}\right)^{{{exp}}}"

    def _print_Reduction(self, expr, exp=None):
        arg = expr.args[0]
        inner = self._print(arg)
        head = expr.latex_name if exp is None else f"{expr.latex_name}^{{{exp}}}"
        return head + (f"({inner})" if arg.is_Atom else rf"\left({inner}\right)")

    def _print_ones(self, expr, exp=None):
        return r"\mathbf{1}"


class NetworkTextPrinter(_ShapeAware, StrPrinter):
    """Plain text close to NumPy: ``*`` is elementwise, ``@`` the matrix product, ``dL/dz`` an adjoint."""

    def __init__(self, shapes: Mapping[str, Shape] | None = None, **settings):
        StrPrinter.__init__(self, dict(settings))
        self._init_shapes(shapes)

    def _print_Adjoint(self, expr):
        return expr.name

    def _print_Mul(self, expr):
        return self._with_order("none", super()._print_Mul, sp.Mul(*reading_order(expr.args), evaluate=False))

    def _print_matmul(self, expr):
        return " @ ".join(matmul_operands(self, expr))

    def _print_transpose(self, expr):
        return self.parenthesize(expr.args[0], PRECEDENCE["Atom"], strict=True) + ".T"

    def _print_Reduction(self, expr):
        return f"{type(expr).__name__.rstrip('_')}({self._print(expr.args[0])})"

    def _print_ones(self, expr):
        return f"ones({', '.join(str(n) for n in expr.args)})"

    def _print_Elementwise(self, expr):
        return f"{expr.text_name}({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"
