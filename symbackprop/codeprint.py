"""Print the expressions of a gradient program as batched NumPy code.

Every per-sample quantity of shape ``s`` is an array of shape ``(N, *s)``; parameters keep their
declared shape. The printer knows each symbol's shape and whether it varies over the batch, so it can

* broadcast a per-sample scalar against a tensor (``g[:, None] * v``);
* write matrix products over the whole batch (``x @ W.T`` for ``W @ x``, ``g @ W`` for ``W.T @ g``);
* reduce a gradient over the batch in one step (``delta.T @ x / N`` for the mean of ``delta x^T``,
  ``g @ x / N`` for the mean of ``g * x``).

One ``_print_<Type>`` method per expression type, as in SymPy's printers.
"""
from __future__ import annotations

import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from .printing import FunctionBases, reading_order
from .tensor import Shape, infer_shape, matmul, transpose

HELPERS = {
    "_softmax": '''\
def _softmax(v):
    """Softmax over the last axis, with the maximum taken out first so exp never overflows."""
    e = np.exp(v - np.max(v, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)
''',
    "_logsumexp": '''\
def _logsumexp(v):
    """log(sum(exp(v))) over the last axis, computed stably."""
    m = np.max(v, axis=-1, keepdims=True)
    return np.log(np.sum(np.exp(v - m), axis=-1)) + m[..., 0]
''',
    "_matmul": '''\
def _matmul(a, b, a_is_vector, b_is_vector, out_shape):
    """Matrix product of per-sample tensors (vectors as columns), then the result in its shape."""
    a = a[..., None] if a_is_vector else a
    b = b[..., None] if b_is_vector else b
    r = np.matmul(a, b)
    return r.reshape(r.shape[:r.ndim - 2] + out_shape)
''',
}

ELEMENTWISE = {sp.tanh: "np.tanh", sp.exp: "np.exp", sp.log: "np.log", sp.Abs: "np.abs", sp.sign: "np.sign"}


class NumPyBatchPrinter(FunctionBases, StrPrinter):
    """Batched NumPy source for one expression at a time."""

    def __init__(self, shapes: dict[sp.Symbol, Shape], batched: set[sp.Symbol], names: dict[sp.Symbol, str]):
        super().__init__({"order": "none"})
        self.shapes = shapes
        self.batched_symbols = batched
        self.names = names
        self.helpers_used: set[str] = set()
        self._shape_memo: dict = {}

    # ---- what the printer knows about an expression --------------------------------------------------
    def shape(self, expr) -> Shape:
        return infer_shape(expr, self.shapes, self._shape_memo)

    def batched(self, expr) -> bool:
        return bool(expr.free_symbols & self.batched_symbols)

    def operand(self, expr, result_rank: int, level: int) -> str:
        """``expr`` as an operand of an elementwise operation whose result has ``result_rank``."""
        text = self.parenthesize(expr, level)
        if result_rank and self.batched(expr) and self.shape(expr) == ():
            if not (expr.is_Symbol or text.endswith(")") and text[0] != "("):
                text = f"({text})"
            text += "[:, " + ", ".join(["None"] * result_rank) + "]"
        return text

    def helper(self, name: str) -> str:
        self.helpers_used.add(name)
        return name

    # ---- atoms ---------------------------------------------------------------------------------------
    def _print_Symbol(self, expr):
        return self.names[expr]

    def _print_Integer(self, expr):
        return str(expr.p)

    def _print_Rational(self, expr):
        return f"{expr.p}/{expr.q}"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Half(self, expr):
        return "0.5"

    # ---- elementwise arithmetic ----------------------------------------------------------------------
    def _print_Add(self, expr, order=None):
        rank = len(self.shape(expr))
        terms = sorted(expr.args, key=lambda t: (t.could_extract_minus_sign(), t.is_Atom))
        out = ""
        for i, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            body = self.operand(-term if negative else term, rank, PRECEDENCE["Add"] + (1 if negative else 0))
            if i == 0:
                out = ("-" + self.operand(-term, rank, PRECEDENCE["Mul"])) if negative else body
            else:
                out += (" - " if negative else " + ") + body
        return out

    def _print_Mul(self, expr):
        rank = len(self.shape(expr))
        coeff, factors = expr.as_coeff_mul()
        if coeff < 0:
            return "-" + self.operand(-expr, rank, PRECEDENCE["Mul"] + 1) if coeff == -1 else \
                "-" + self._print_Mul(-expr)
        numer, denom = [], []
        for f in reading_order(factors):
            if f.is_Pow and f.exp.is_Rational and f.exp.is_negative and f.exp != -sp.S.Half:
                denom.append(f.base ** (-f.exp))
            else:
                numer.append(f)
        if coeff != 1:
            if coeff.is_Rational and not coeff.is_Integer:
                if coeff.p != 1:
                    numer.insert(0, sp.Integer(coeff.p))
                denom.insert(0, sp.Integer(coeff.q))
            else:
                numer.insert(0, coeff)
        text = "*".join(self.operand(f, rank, PRECEDENCE["Mul"]) for f in numer) or "1"
        if denom:
            den = "*".join(self.operand(f, rank, PRECEDENCE["Mul"] + 1) for f in denom)
            text += "/" + (f"({den})" if len(denom) > 1 else den)
        return text

    def _print_Pow(self, expr, rational=False):
        rank = len(self.shape(expr))
        base, exp = expr.args
        if exp == sp.S.Half:
            return f"np.sqrt({self._print(base)})"
        if exp == -sp.S.Half:
            return f"1/np.sqrt({self._print(base)})"
        if exp.is_Rational and exp.is_negative:
            return "1/" + self.operand(base ** (-exp), rank, PRECEDENCE["Mul"] + 1)
        return self.operand(base, rank, PRECEDENCE["Pow"] + 1) + "**" + self.operand(exp, rank, PRECEDENCE["Pow"])

    # ---- functions -----------------------------------------------------------------------------------
    def _print_Elementwise(self, expr):
        if expr.helper:
            self.helper("_" + type(expr).__name__)
        return expr.numpy.format(x=self._print(expr.args[0]))

    def _print_Function(self, expr):
        name = ELEMENTWISE.get(type(expr))
        if name is None:
            return super()._print_Function(expr)
        return f"{name}({self._print(expr.args[0])})"

    # ---- tensor operations ---------------------------------------------------------------------------
    def _print_matmul(self, expr):
        a, b = expr.args
        sa, sb = self.shape(a), self.shape(b)
        if sa == () or sb == ():  # a 1 x 1 factor: the product is a scaling
            return self._print(sp.Mul(a, b))
        ba, bb = self.batched(a), self.batched(b)
        if len(sa) == 2 and len(sb) == 2:  # matrix times matrix: NumPy's @ broadcasts over the batch
            return (f"{self.parenthesize(a, PRECEDENCE['Mul'], strict=True)} @ "
                    f"{self.parenthesize(b, PRECEDENCE['Mul'] + 1)}")
        if len(sa) == 2 and len(sb) == 1 and not ba and bb:
            # W @ x for a batch of columns x: (N, n) @ (n, m), and (N, n) @ (n,) for a row w^T or W: (1, n)
            if isinstance(a, transpose):
                right = self.parenthesize(a.args[0], PRECEDENCE["Mul"] + 1)
            else:
                right = self.parenthesize(a, PRECEDENCE["Atom"], strict=True) + ("[0]" if sa[0] == 1 else ".T")
            return f"{self.parenthesize(b, PRECEDENCE['Mul'])} @ {right}"
        if isinstance(a, transpose) and len(self.shape(a.args[0])) == 1 and len(sb) == 1:
            # a dot product u^T v per sample
            u, v = self.parenthesize(a.args[0], PRECEDENCE["Mul"]), self.parenthesize(b, PRECEDENCE["Mul"] + 1)
            return f"np.sum({u}*{v}, axis=-1)" if ba and bb else f"{u} @ {v}"
        if len(sa) == 2 and len(sb) == 1 and not ba and not bb:
            text = f"{self.parenthesize(a, PRECEDENCE['Mul'])} @ {self.parenthesize(b, PRECEDENCE['Mul'] + 1)}"
            return f"({text})[0]" if sa[0] == 1 else text
        if len(sa) == 1 and isinstance(b, transpose) and len(sb) == 2 and sb[0] == 1 and \
                self.shape(b.args[0]) == (sb[1],):
            # an outer product a b^T per sample
            x = b.args[0]
            if not ba and not self.batched(x):
                return f"np.outer({self._print(a)}, {self._print(x)})"
            left = self._print(a) + ("[:, :, None]" if ba else "[:, None]")
            right = self._print(x) + ("[:, None, :]" if self.batched(x) else "[None, :]")
            return f"{left}*{right}"
        out = self.shape(expr)
        return (f"{self.helper('_matmul')}({self._print(a)}, {self._print(b)}, "
                f"{len(sa) == 1}, {len(sb) == 1}, {out!r})")

    def _print_transpose(self, expr):
        (a,) = expr.args
        s, text, b = self.shape(a), self.parenthesize(a, PRECEDENCE["Atom"], strict=True), self.batched(a)
        if s == ():
            return text
        if len(s) == 1:
            return text + ("[:, None, :]" if b else "[None, :]")
        if s[0] == 1 and self.shape(expr) == (s[1],):
            return text + ("[:, 0, :]" if b else "[0]")
        return f"np.swapaxes({self._print(a)}, -1, -2)" if b else text + ".T"

    def _reduce(self, func: str, expr) -> str:
        (a,) = expr.args
        rank = len(self.shape(a))
        if not self.batched(a) or rank == 0:
            return f"np.{func}({self._print(a)})" if rank else self._print(a)
        axes = "1" if rank == 1 else "(1, 2)"
        return f"np.{func}({self._print(a)}, axis={axes})"

    def _print_sum_(self, expr):
        return self._reduce("sum", expr)

    def _print_mean(self, expr):
        return self._reduce("mean", expr)

    def _print_softmax(self, expr):
        (v,) = expr.args
        if self.shape(v) == ():  # of a single element: 1
            return f"np.ones_like({self._print(v)})"
        return f"{self.helper('_softmax')}({self._print(v)})"

    def _print_logsumexp(self, expr):
        (v,) = expr.args
        if self.shape(v) == ():  # of a single element: the element
            return self._print(v)
        return f"{self.helper('_logsumexp')}({self._print(v)})"

    def _print_ones(self, expr):
        return f"np.ones({tuple(int(n) for n in expr.args)!r})"

    def _print_TensorOp(self, expr):
        raise TypeError(f"no NumPy form for {type(expr).__name__}")

    # ---- reduction over the batch --------------------------------------------------------------------
    def _print_batch_mean(self, expr):
        """Mean over the batch axis, as one BLAS call where the term allows it."""
        (value,) = expr.args
        constant, summed = [], []
        for term in sp.Add.make_args(value):
            (summed if self.batched(term) else constant).append(term)
        parts = [self._print(t) for t in constant]
        if summed:
            total = " + ".join(self.batch_sum(t) for t in summed)
            parts.append(f"({total})/N" if len(summed) > 1 else f"{total}/N")
        return " + ".join(parts)

    def batch_sum(self, term) -> str:
        """Sum over the batch axis of one per-sample term."""
        coeff, factors = term.as_independent(*self.batched_symbols, as_Add=False)
        scale = "" if coeff == 1 else self.parenthesize(coeff, PRECEDENCE["Mul"]) + "*"
        if isinstance(factors, matmul) and isinstance(factors.args[1], transpose):
            a, x = factors.args[0], factors.args[1].args[0]
            if len(self.shape(a)) == 1 and len(self.shape(x)) == 1 and self.batched(a) and self.batched(x):
                return (f"{scale}({self.parenthesize(a, PRECEDENCE['Atom'], strict=True)}.T @ "
                        f"{self.parenthesize(x, PRECEDENCE['Mul'])})")
        if isinstance(factors, sp.Mul) and len(factors.args) == 2 and all(self.batched(f) for f in factors.args):
            # a per-sample scalar times a per-sample scalar or vector: (N,) @ (N,) or (N,) @ (N, n)
            f1, f2 = sorted(factors.args, key=lambda f: len(self.shape(f)))
            if self.shape(f1) == () and len(self.shape(f2)) <= 1:
                right = self.parenthesize(f2, PRECEDENCE['Mul'] + 1)
                if f2.is_Pow and f2.exp.is_negative and not right.startswith("("):  # 1/t prints as a division
                    right = f"({right})"
                return f"{scale}({self.parenthesize(f1, PRECEDENCE['Mul'])} @ {right})"
        return f"{scale}np.sum({self._print(factors)}, axis=0)"
