"""Printers that write each quantity's value where the network printers write its symbol.

A derivation evaluated at a point shows every step with numbers: ``dL/da = a - y = 0.679178699 - 1``.
The form with numbers is the symbolic form itself, printed by a subclass of the LaTeX, MathML or text
printer of :mod:`symbackprop.printing` whose ``_print_Symbol`` prints the value (``values`` maps a
symbol's name, ``"a"`` or ``"dL/da"``, or its :func:`value_key`, to its value). Everything else (order, brackets, fractions,
functions) is the network printer's, so the numbers stand exactly where the symbols stood.

All formats format a number the same way (:func:`number_parts`: ``digits`` significant digits), so
they show the same digits. Vectors are columns and matrices are bracketed arrays (a ``bmatrix`` in
LaTeX), elided past :data:`SHOWN` rows or columns (the first :data:`HEAD`, a ellipsis, the last
:data:`TAIL`). Inside an expression a negative scalar is bracketed (``0.5 \\cdot (-0.3)``); a value
printed on its own is not.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import sympy as sp

from .printing import NetworkLatexPrinter, NetworkMathMLPrinter, NetworkTextPrinter
from .tensor import Shape

DIGITS = 9
#: rows or columns shown in full; longer sides show HEAD of them, an ellipsis, and TAIL
SHOWN, HEAD, TAIL = 6, 3, 2


def value_key(symbol: sp.Symbol) -> str:
    """The key of a symbol's value in ``values``: its name, or the ``value_key`` of a symbol that may share
    its name with another one (an update rule's ``t`` or ``alpha``: :class:`symbackprop.optim.RuleSymbol`)."""
    return getattr(symbol, "value_key", symbol.name)


def number_parts(x: float, digits: int = DIGITS) -> tuple[bool, str, int | None]:
    """(negative, mantissa, exponent or None) of ``x`` to ``digits`` significant digits.

    ``-0.320821301`` is ``(True, "0.320821301", None)``; ``1.5e-07`` is ``(False, "1.5", -7)``.
    Python's ``g`` format decides when an exponent is needed; ``-0`` is ``0``.
    """
    x = float(x)
    if x == 0:
        return False, "0", None
    text = f"{abs(x):.{digits}g}"
    mantissa, _, exponent = text.partition("e")
    return x < 0, mantissa, int(exponent) if exponent else None


def shown(n: int) -> list[int | None]:
    """Indices of a side of length ``n`` to print; ``None`` stands for the elided middle."""
    if n <= SHOWN:
        return list(range(n))
    return [*range(HEAD), None, *range(n - TAIL, n)]


def as_grid(value: np.ndarray) -> np.ndarray:
    """A vector as a column, a matrix as it is: the (rows, columns) a value is printed in."""
    value = np.asarray(value, dtype=np.float64)
    return value.reshape(-1, 1) if value.ndim == 1 else value


class _Values:
    """What the three value printers share: the values, the digits, and which symbols have them."""

    def _init_values(self, values: Mapping[str, np.ndarray], digits: int):
        self.values = values
        self.digits = digits

    def has_value(self, expr: sp.Expr) -> bool:
        return all(value_key(s) in self.values for s in expr.free_symbols)

    def is_negative(self, expr: sp.Expr) -> bool:
        """A symbol whose value is a negative scalar: bracketed when it is a factor."""
        if not (expr.is_Symbol and value_key(expr) in self.values):
            return False
        value = np.asarray(self.values[value_key(expr)])
        return value.ndim == 0 and number_parts(value, self.digits)[0]

    def value_of(self, key: str) -> np.ndarray:
        return np.asarray(self.values[key], dtype=np.float64)

    def _print_Adjoint(self, expr):
        return self._print_Symbol(expr) if value_key(expr) in self.values else super()._print_Adjoint(expr)

    def doprint(self, expr, *args, **kwargs):
        """A symbol alone prints as its value without brackets; anything else as the network printer does."""
        if isinstance(expr, sp.Symbol) and value_key(expr) in self.values:
            return self.value_text(value_key(expr))
        return super().doprint(expr, *args, **kwargs)


class ValueLatexPrinter(_Values, NetworkLatexPrinter):
    """LaTeX with values: ``0.679178699 - 1``, ``1.5 \\times 10^{-7}``, vectors and matrices as ``bmatrix``."""

    def __init__(self, shapes: Mapping[str, Shape] | None, values: Mapping[str, np.ndarray],
                 digits: int = DIGITS, **settings):
        super().__init__(shapes, **{"mul_symbol": "dot", **settings})
        self._init_values(values, digits)

    def number(self, x: float) -> str:
        negative, mantissa, exponent = number_parts(x, self.digits)
        if not np.isfinite(x):
            mantissa = r"\infty" if np.isinf(x) else r"\mathrm{NaN}"
        text = mantissa if exponent is None else rf"{mantissa} \times 10^{{{exponent}}}"
        return "-" + text if negative else text

    def value_text(self, key: str) -> str:
        value = self.value_of(key)
        if value.ndim == 0:
            return self.number(value)
        grid = as_grid(value)
        rows, cols = shown(grid.shape[0]), shown(grid.shape[1])
        lines = []
        for i in rows:
            if i is None:
                cells = [r"\ddots" if j is None else r"\vdots" for j in cols]
            else:
                cells = [r"\cdots" if j is None else self.number(grid[i, j]) for j in cols]
            lines.append(" & ".join(cells))
        return r"\begin{bmatrix}" + r" \\ ".join(lines) + r"\end{bmatrix}"

    def _print_Symbol(self, expr, style="plain"):
        if value_key(expr) not in self.values:
            return super()._print_Symbol(expr, style)
        text = self.value_text(value_key(expr))
        return rf"\left({text}\right)" if self.is_negative(expr) else text


class ValueTextPrinter(_Values, NetworkTextPrinter):
    """Plain text with values: ``0.679178699 - 1``, ``1.5e-07``, arrays as NumPy prints them (``[1, 2]``)."""

    def __init__(self, shapes: Mapping[str, Shape] | None, values: Mapping[str, np.ndarray],
                 digits: int = DIGITS, **settings):
        super().__init__(shapes, **settings)
        self._init_values(values, digits)

    def number(self, x: float) -> str:
        negative, mantissa, exponent = number_parts(x, self.digits)
        if not np.isfinite(x):
            mantissa = "inf" if np.isinf(x) else "nan"
        text = mantissa if exponent is None else f"{mantissa}e{exponent:+03d}"
        return "-" + text if negative else text

    def value_text(self, key: str) -> str:
        value = self.value_of(key)
        if value.ndim == 0:
            return self.number(value)
        row = lambda v: "[" + ", ".join("..." if j is None else self.number(v[j]) for j in shown(len(v))) + "]"
        if value.ndim == 1:
            return row(value)
        return "[" + ", ".join("..." if i is None else row(value[i]) for i in shown(value.shape[0])) + "]"

    def _print_Symbol(self, expr):
        if value_key(expr) not in self.values:
            return super()._print_Symbol(expr)
        text = self.value_text(value_key(expr))
        return f"({text})" if self.is_negative(expr) else text


class ValueMathMLPrinter(_Values, NetworkMathMLPrinter):
    """Presentation MathML with values: ``<mn>`` numbers, U+2212 minus, arrays as a bracketed ``<mtable>``."""

    def __init__(self, shapes: Mapping[str, Shape] | None, values: Mapping[str, np.ndarray],
                 digits: int = DIGITS, **settings):
        super().__init__(shapes, **{"mul_symbol": "dot", **settings})
        self._init_values(values, digits)

    def number(self, x: float):
        negative, mantissa, exponent = number_parts(x, self.digits)
        if not np.isfinite(x):
            mantissa = "\u221e" if np.isinf(x) else "NaN"
        e = self.element("mn", text=mantissa)
        if exponent is not None:
            power = self.element("msup", self.element("mn", text="10"), self.signed(exponent))
            e = self.row(e, self.op("\u00d7"), power)
        return self.row(self.op("\u2212"), e) if negative else e

    def signed(self, n: int):
        return self.row(self.op("\u2212"), self.element("mn", text=str(-n))) if n < 0 else \
            self.element("mn", text=str(n))

    def value_element(self, key: str):
        value = self.value_of(key)
        if value.ndim == 0:
            return self.number(value)
        grid = as_grid(value)
        rows, cols = shown(grid.shape[0]), shown(grid.shape[1])
        table = self.element("mtable")
        for i in rows:
            tr = self.element("mtr")
            for j in cols:
                if i is None:
                    cell = self.element("mo", text="\u22f1" if j is None else "\u22ee")
                else:
                    cell = self.element("mo", text="\u22ef") if j is None else self.number(grid[i, j])
                tr.appendChild(self.element("mtd", cell))
            table.appendChild(tr)
        return self.row(self.op("["), table, self.op("]"))

    def value_text(self, key: str) -> str:
        """The markup, non-ASCII characters as character references (as SymPy's ``doprint`` writes them)."""
        return self.value_element(key).toxml().encode("ascii", "xmlcharrefreplace").decode()

    def _print_Symbol(self, expr, style="plain"):
        if value_key(expr) not in self.values:
            return super()._print_Symbol(expr, style)
        e = self.value_element(value_key(expr))
        return self.bracketed(e) if self.is_negative(expr) else e
