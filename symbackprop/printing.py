"""SymPy printers for network expressions: LaTeX, MathML and plain text.

They differ from SymPy's own printers in what a network needs: they know each symbol's shape (vectors
and matrices in bold, ``\\odot`` between elementwise tensor factors), print adjoints as
``\\frac{\\partial L}{\\partial z}``, print the tensor operations of :mod:`symbackprop.tensor`, and put a
product's factors in reading order (``\\sigma(z) (1 - \\sigma(z))``: plain factors before parenthesised
sums). One ``_print_<Type>`` method per expression type, as in SymPy.
"""
from __future__ import annotations

import html
import re
from collections.abc import Mapping

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.mathml import MathMLPresentationPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from .tensor import Shape, TensorOp, transpose


#: short names written as the Greek letter they abbreviate, as SymPy writes ``alpha`` or ``lamda`` (``lambda``
#: itself is a Python keyword, so a model names weight decay ``lam``)
GREEK_ABBREVIATIONS = {"lam": "lamda", "eps": "epsilon"}
_ABBREVIATED = re.compile(r"(" + "|".join(GREEK_ABBREVIATIONS) + r")(?=$|_|\d)")


def greek_spelled(symbol: sp.Symbol) -> sp.Symbol:
    """``symbol`` under the name SymPy prints as a Greek letter (``lam`` -> ``lamda``, ``eps_2`` -> ``epsilon_2``)."""
    name = _ABBREVIATED.sub(lambda m: GREEK_ABBREVIATIONS[m.group(1)], symbol.name, count=1)
    if name == symbol.name or not _ABBREVIATED.match(symbol.name):
        return symbol
    return sp.Symbol(name, **symbol.assumptions0)


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

    def _as_ordered_terms(self, expr, order=None):
        """A sum's terms in the order models and textbooks write them: positive terms first (``σ(z) − y``,
        ``x̂ − x``: the prediction first, where SymPy's order gives ``−y + σ(z)``), and among terms of
        one sign, products and functions before single symbols before numbers (``w x + b``, ``x + 1``).
        Otherwise SymPy's order."""
        def rank(t):
            negative = t.could_extract_minus_sign()
            magnitude = -t if negative else t
            return negative, 2 if magnitude.is_Number else (1 if magnitude.is_Atom else 0)
        return sorted(super()._as_ordered_terms(expr, order=order), key=rank)

    def shape_of(self, expr: sp.Expr) -> Shape | None:
        """The (canonical) shape of ``expr`` from the shapes of its names; None where it cannot be told."""
        from .tensor import canonical_shape, infer_shape
        try:
            known = {s: canonical_shape(self.shapes.get(getattr(s, "of", s.name), ())) for s in expr.free_symbols}
            return infer_shape(expr, known)
        except ValueError:
            return None

    def is_tensor(self, expr: sp.Expr) -> bool:
        return self.shape_of(expr) not in ((), None)

    def positions(self, expr, rows: bool = True) -> str:
        """What an index or slice selects, 0-based as in the model: ``0``, ``1:3``; with ``rows``, ``0,:`` for a
        row of a matrix (as mathematics writes a row)."""
        from .indexing import OPEN_END, index
        if isinstance(expr, index):
            first = str(expr.args[1])
        else:  # an open end (h[1:], before a graph resolves it) is written as the user wrote it
            first = f"{expr.args[1]}:{'' if expr.args[2] >= OPEN_END else expr.args[2]}"
        return first + (",:" if rows and len(self.shape_of(expr.args[0]) or ()) == 2 else "")

    def stacked(self, expr) -> list:
        """The blocks of a scatter from top to bottom: ``("zeros", k)``, the adjoint, ``("zeros", k)``; and whether
        the adjoint is one row of a matrix (a vector written as a row)."""
        g = expr.args[0]
        g_shape = self.shape_of(g) or ()
        before, after = expr.zeros_around(g_shape)
        cols = expr.operand_shape[1:]
        row = bool(cols) and len(g_shape) < 2
        blocks = [("zeros", (before, *cols))] if before else []
        blocks.append(("row" if row else "value", g))
        return blocks + ([("zeros", (after, *cols))] if after else [])

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
        text = super()._print_Symbol(greek_spelled(expr), style)
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
        if not isinstance(expr, sp.Mul):  # 1/u: SymPy's _print_Pow hands it here, to be written as a fraction
            return super()._print_Mul(expr)
        scalars, tensors = self.split_factors(expr)
        if not tensors:
            return self._with_order("none", super()._print_Mul, sp.Mul(*scalars, evaluate=False))
        head = ""
        if scalars:
            coeff = sp.Mul(*scalars, evaluate=False)
            # a product of scalars needs no brackets before a tensor: 2 \lambda \mathbf{W}, as textbooks write it
            head = "- " if coeff == -1 else ("" if coeff == 1 else
                                             self.parenthesize(coeff, PRECEDENCE["Mul"], strict=True) + " ")
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

    def subscripted(self, expr, exp=None) -> str:
        r"""``{\mathbf{h}}_{0}``: the operand in braces (its own subscript, as in ``W_1``, stays apart)."""
        a = expr.args[0]
        base = f"{{{self._print(a)}}}" if a.is_Atom or isinstance(a, TensorOp) else rf"\left({self._print(a)}\right)"
        text = f"{base}_{{{self.positions(expr)}}}"
        return text if exp is None else rf"\left({text}\right)^{{{exp}}}"

    def _print_index(self, expr, exp=None):
        return self.subscripted(expr, exp)

    def _print_slice_(self, expr, exp=None):
        return self.subscripted(expr, exp)

    def column(self, entries: list[str], exp=None) -> str:
        text = r"\begin{bmatrix} " + r" \\ ".join(entries) + r" \end{bmatrix}"
        return text if exp is None else f"{text}^{{{exp}}}"

    def _print_concat(self, expr, exp=None):
        return self.column([self._print(a) for a in expr.args], exp)

    def _print_scatter(self, expr, exp=None):
        entries = []
        for kind, what in self.stacked(expr):
            if kind == "zeros":
                entries.append("0" if what == (1,) else r"\mathbf{0}_{" + r" \times ".join(map(str, what)) + "}")
            elif kind == "row":
                entries.append(self._print_transpose(transpose(what)))
            else:
                entries.append(self._print(what))
        return self.column(entries, exp)


class NetworkTextPrinter(_ShapeAware, StrPrinter):
    """Plain text close to NumPy: ``*`` is elementwise, ``@`` the matrix product, ``dL/dz`` an adjoint."""

    def __init__(self, shapes: Mapping[str, Shape] | None = None, **settings):
        StrPrinter.__init__(self, dict(settings))
        self._init_shapes(shapes)

    def _print_Adjoint(self, expr):
        return expr.name

    def _print_Mul(self, expr):
        """Factors in reading order joined by ``" * "``, a denominator after ``" / "``: the same spacing
        everywhere (``dL/dz * x``, ``(a - y)**2 / 2``), so an adjoint's own ``/`` never runs into a product."""
        sign = ""
        if expr.could_extract_minus_sign():
            sign, expr = "-", -expr
        numer, denom = [], []
        for f in reading_order(sp.Mul.make_args(expr)):
            if f.is_Pow and f.exp.is_Rational and f.exp.is_negative:
                denom.append(f.base ** -f.exp)
            elif f.is_Rational and not f.is_Integer:
                numer += [sp.Integer(f.p)] if f.p != 1 else []
                denom.append(sp.Integer(f.q))
            else:
                numer.append(f)
        text = " * ".join(self.parenthesize(f, PRECEDENCE["Mul"]) for f in numer) or "1"
        if denom:
            below = " * ".join(self.parenthesize(f, PRECEDENCE["Mul"]) for f in denom)
            text += " / " + (f"({below})" if len(denom) > 1 else below)
        return sign + text

    def _print_matmul(self, expr):
        return " @ ".join(matmul_operands(self, expr))

    def _print_transpose(self, expr):
        return self.parenthesize(expr.args[0], PRECEDENCE["Atom"], strict=True) + ".T"

    def _print_ones(self, expr):
        return f"ones({', '.join(str(n) for n in expr.args)})"

    def subscripted(self, expr) -> str:
        """``h[0]``, ``tanh(z)[1:3]``, ``(2 * h)[0]``: a call or a name takes the subscript as it is, as in Python."""
        return self.parenthesize(expr.args[0], PRECEDENCE["Func"], strict=True) + f"[{self.positions(expr, False)}]"

    def _print_index(self, expr):
        return self.subscripted(expr)

    def _print_slice_(self, expr):
        return self.subscripted(expr)

    def _print_concat(self, expr):
        return f"concat({', '.join(self._print(a) for a in expr.args)})"

    def _print_scatter(self, expr):
        """The stacked column, as in NumPy's ``np.block`` without the brackets: ``[zeros(1); g; zeros(2)]``."""
        entries = []
        for kind, what in self.stacked(expr):
            if kind == "zeros":
                entries.append(f"zeros({', '.join(map(str, what))})")
            else:
                entries.append(self._print(transpose(what)) if kind == "row" else self._print(what))
        return f"[{'; '.join(entries)}]"

    def _print_Elementwise(self, expr):
        return f"{expr.text_name}({', '.join(self._print(a) for a in expr.shown_args)})"

    def _print_Reduction(self, expr):  # sum(v), softmax(v): a name and its argument, as functions
        return f"{expr.text_name}({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"


_NAMED_ENTITY = re.compile(r"&(?!(?:amp|lt|gt|quot|apos);)[A-Za-z][A-Za-z0-9]*;")


def _character_reference(match: re.Match) -> str:
    return "".join(f"&#{ord(c)};" for c in html.unescape(match.group(0)))


#: MathML names of functions whose text name is not how they are written in mathematics
MATHML_NAMES = {"sigmoid": "\u03c3", "maximum": "max", "minimum": "min"}
#: the minus sign (U+2212) as MathML Core wants it, not the hyphen SymPy writes
MINUS = "<mo>&#8722;</mo>"
_NEGATIVE_NUMBER = re.compile(r"<mn>-([^<]*)</mn>")
#: name endings written as accents over the rest of the name (``xhat`` is x with a hat), as in SymPy's LaTeX
ACCENTS = {"hat": "^", "bar": "\u00af", "tilde": "~", "dot": "\u02d9", "vec": "\u2192"}
#: the first bold letter or digit of each alphabet in Unicode's Mathematical Alphanumeric Symbols
_BOLD_STARTS = (("A", "Z", 0x1D400), ("a", "z", 0x1D41A), ("0", "9", 0x1D7CE),
                ("\u0391", "\u03a9", 0x1D6A8), ("\u03b1", "\u03c9", 0x1D6C2))


def math_bold(text: str) -> str:
    """``text`` in Unicode's mathematical bold letters (W -> U+1D416): how MathML Core shows a bold symbol."""
    def bold(c):
        for first, last, start in _BOLD_STARTS:
            if first <= c <= last:
                return chr(start + ord(c) - ord(first))
        return c
    return "".join(bold(c) for c in text)


def mathml_name(text_name: str) -> str:
    """How a function named ``text_name`` (``sigmoid``, ``tanh``) is written in MathML (``σ``, ``tanh``)."""
    return MATHML_NAMES.get(text_name, text_name)


class NetworkMathMLPrinter(_ShapeAware, MathMLPresentationPrinter):
    """Presentation MathML for network expressions, element for element what the LaTeX printer writes.

    SymPy's MathML printers build ``xml.dom`` elements; ``doprint`` returns the markup as text.
    """

    def __init__(self, shapes: Mapping[str, Shape] | None = None, **settings):
        MathMLPresentationPrinter.__init__(self, dict(settings))
        self._init_shapes(shapes)

    def doprint(self, expr) -> str:
        """The markup, with SymPy's HTML entity names (``&InvisibleTimes;``) as character references,
        so that it is well-formed XML as well as HTML, and the minus sign U+2212 for SymPy's hyphen."""
        text = _NAMED_ENTITY.sub(_character_reference, super().doprint(expr))
        return _NEGATIVE_NUMBER.sub(rf"<mrow>{MINUS}<mn>\1</mn></mrow>", text.replace("<mo>-</mo>", MINUS))

    # ---- small element builders ----------------------------------------------------------------------
    def element(self, tag: str, *children, text: str | None = None, **attributes):
        e = self.dom.createElement(tag)
        for k, v in attributes.items():
            e.setAttribute(k.replace("_", "-"), v)
        if text is not None:
            e.appendChild(self.dom.createTextNode(text))
        for c in children:
            e.appendChild(c)
        return e

    def row(self, *children):
        return self.element("mrow", *children)

    def op(self, text: str):
        return self.element("mo", text=text)

    def bracketed(self, inner):
        return self.row(self.op("("), inner, self.op(")"))

    def applied(self, name: str, *args):
        """``name(arg, ...)``, the name upright."""
        inner = self.row()
        for i, arg in enumerate(args):
            if i:
                inner.appendChild(self.op(","))
            inner.appendChild(self._print(arg))
        return self.row(self.element("mi", text=name, mathvariant="normal"), self.bracketed(inner))

    # ---- symbols -------------------------------------------------------------------------------------
    def _print_Symbol(self, expr, style="plain"):
        """A name as SymPy writes it (``W_1``, ``δ``), with an accent for ``xhat``-style names and, for a
        vector or matrix, the bold letters of Unicode (MathML Core ignores ``mathvariant="bold"``)."""
        e = super()._print_Symbol(greek_spelled(expr), style)
        base = e if e.tagName == "mi" else e.firstChild
        text = base.firstChild.data
        tensor = self.shapes.get(expr.name, ()) != ()
        accent = next((a for a in ACCENTS if text.endswith(a) and len(text) > len(a)), None)
        if accent:
            text = text[:-len(accent)]
        base.firstChild.data = math_bold(text) if tensor else text
        if accent:
            over = self.element("mover", accent="true")
            if base is not e:
                e.replaceChild(over, base)
            over.appendChild(base)
            over.appendChild(self.op(ACCENTS[accent]))
            e = over if base is e else e
        return e

    def _print_Adjoint(self, expr):
        of = self._print_Symbol(sp.Symbol(expr.of))
        loss = self._print_Symbol(sp.Symbol(expr.loss))
        return self.element("mfrac", self.row(self.op("\u2202"), loss), self.row(self.op("\u2202"), of))

    # ---- products: scalars first, then tensors joined by the Hadamard product ------------------------------
    def _print_Mul(self, expr):
        scalars, tensors = self.split_factors(expr)
        if not tensors:  # "old" is the MathML printer's word for "as given": here, reading order
            return self._with_order("old", super()._print_Mul, sp.Mul(*scalars, evaluate=False))
        out = self.row()
        if scalars:
            coeff = sp.Mul(*scalars, evaluate=False)
            if coeff == -1:
                out.appendChild(self.op("\u2212"))
            elif coeff != 1:
                out.appendChild(self.parenthesize(coeff, PRECEDENCE["Mul"], strict=True))
        for i, t in enumerate(tensors):
            if i:
                out.appendChild(self.op("\u2299"))
            out.appendChild(self.parenthesize(t, PRECEDENCE["Mul"]))
        return out

    # ---- tensor operations -----------------------------------------------------------------------------
    def _print_matmul(self, expr):
        return self.row(*matmul_operands(self, expr))

    def _print_transpose(self, expr):
        arg = expr.args[0]
        base = self._print(arg) if arg.is_Atom else self.bracketed(self._print(arg))
        return self.element("msup", base, self.op("\u22a4"))

    def _print_ones(self, expr):
        return self.element("mn", text=math_bold("1"))

    def _print_Elementwise(self, expr):
        return self.applied(mathml_name(expr.text_name), *expr.shown_args)

    def _print_Reduction(self, expr):  # sum(v), softmax(v): a name and its argument, as functions
        return self.applied(mathml_name(expr.text_name), expr.args[0])

    def subscripted(self, expr):
        a = expr.args[0]
        base = self._print(a) if a.is_Atom or isinstance(a, TensorOp) else self.bracketed(self._print(a))
        parts = []
        for piece in re.split(r"([:,])", self.positions(expr)):
            if piece:
                parts.append(self.op(piece) if piece in ":," else self.element("mn", text=piece))
        return self.element("msub", base, self.row(*parts))

    def _print_index(self, expr):
        return self.subscripted(expr)

    def _print_slice_(self, expr):
        return self.subscripted(expr)

    def column(self, entries: list):
        table = self.element("mtable")
        for e in entries:
            table.appendChild(self.element("mtr", self.element("mtd", e)))
        return self.row(self.op("["), table, self.op("]"))

    def _print_concat(self, expr):
        return self.column([self._print(a) for a in expr.args])

    def _print_scatter(self, expr):
        entries = []
        for kind, what in self.stacked(expr):
            if kind == "zeros":
                size = "\u00d7".join(map(str, what))
                block = self.element("msub", self.element("mn", text=math_bold("0")), self.element("mn", text=size))
                entries.append(self.element("mn", text="0") if what == (1,) else block)
            else:
                entries.append(self._print(transpose(what)) if kind == "row" else self._print(what))
        return self.column(entries)
