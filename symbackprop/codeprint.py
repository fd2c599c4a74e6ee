"""Print the expressions of a gradient program as batched NumPy code.

Every per-sample quantity of shape ``s`` is an array of shape ``(N, *s)``; parameters keep their
declared shape. The printer knows each symbol's shape and whether it varies over the batch, so it can

* broadcast a per-sample scalar against a tensor (``g[:, None]*v``);
* write matrix products over the whole batch (``x @ W.T`` for ``W @ x``, ``g @ W`` for ``W.T @ g``);
* reduce a gradient over the batch in one step (``(delta.T @ x)/N`` for the mean of ``delta x^T``,
  ``np.einsum("i,i->", g, x)/N`` for the mean of per-sample scalars ``g * x``: not ``g @ x``, which
  OpenBLAS threads and a busy core then stalls).

**Brackets come from the tree, never from the printed text.** Every ``_print_<Type>`` returns
:class:`Code`: the text together with the Python precedence of its own top-level operator (``x @ W.T`` is a
product, ``t0**(3/2)`` a power, ``np.sqrt(t0)`` an atom). One rule, :meth:`NumPyBatchPrinter.fit`,
brackets an operand whose precedence is lower than its slot needs, and every place that forms a sum, a
product, a matrix product or a power, or appends an index or ``.T``, goes through it
(:meth:`~NumPyBatchPrinter.binary`, :meth:`~NumPyBatchPrinter.postfix`, :meth:`~NumPyBatchPrinter.negate`).
Appending ``[:, None]`` to text whose last atom is not the whole operand (``t0**(3/2)[:, None]``,
``2*t0 - 2*y[:, :, None]``) caused bugs 12 and 13 in docs/testing.md (bugs 9 and 10 were precedence too).

One ``_print_<Type>`` method per expression type, as in SymPy's printers.
"""
from __future__ import annotations

import ast
from functools import lru_cache

import sympy as sp
from sympy.printing.str import StrPrinter

from .indexing import scatter
from .printing import FunctionBases, reading_order
from .tensor import Shape, infer_shape, matmul, sum_, transpose

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
    "_scatter": '''\
def _scatter(g, start, shape, batched):
    """g at positions start, start + 1, ... of the first axis of zeros of a per-sample shape (the adjoint of an
    index or a slice); with batched, g and the result have the batch axis first."""
    g = np.asarray(g, dtype=DTYPE)
    lead = g.shape[:1] if batched else ()
    block = g.reshape(lead + (-1,) + shape[1:])
    out = np.zeros(lead + shape, dtype=DTYPE)
    out[(slice(None),) * len(lead) + (slice(start, start + block.shape[len(lead)]),)] = block
    return out
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

#: The dtype argument of every array the printed code creates from nothing (``np.zeros``, ``np.full``,
#: ``np.ones``): the generated module's ``DTYPE`` constant, so that a float32 module stays float32 (a float64
#: array, or ``np.full((N,), 1)``'s int64, would upcast every array it meets).
DTYPE_ARGUMENT = "dtype=DTYPE"

#: SymPy's own elementwise functions. sin, cos and atan2 come from SymPy's derivative of |u| where it cannot
#: tell that u is real (|sqrt(v)|' has atan2(0, v), which is 0 for v > 0).
ELEMENTWISE = {sp.tanh: "np.tanh", sp.exp: "np.exp", sp.log: "np.log", sp.Abs: "np.abs", sp.sign: "np.sign",
               sp.sin: "np.sin", sp.cos: "np.cos", sp.atan2: "np.arctan2"}

# ---- Python's operator precedence (the language reference, "Operator precedence"), lowest first ----------
LOWEST = 0  # anything else (and text of unknown precedence): always bracketed as an operand
ADD = 1  # a + b, a - b
MUL = 2  # a*b, a/b, a @ b
UNARY = 3  # -a
POW = 4  # a**b
ATOM = 5  # names, numbers, calls f(a), subscripts a[i], attributes a.T, (brackets)

#: binary operator -> (precedence, the product family it belongs to: "*" for * and /, "@" for @)
BINARY = {"+": (ADD, ""), "-": (ADD, ""), "*": (MUL, "*"), "/": (MUL, "*"), "@": (MUL, "@")}


class Code(str):
    """Printed source that carries the Python precedence of its own top-level operator.

    ``family`` is "*" for a product or quotient and "@" for a matrix product: Python ranks them the same,
    and they are told apart only to bracket one inside the other for the reader (``v*(x @ W.T)``).
    """

    prec: int
    family: str

    def __new__(cls, text: str, prec: int = ATOM, family: str = ""):
        code = super().__new__(cls, text)
        code.prec, code.family = prec, family
        return code


def _node_precedence(node: ast.expr) -> int:
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Pow):
            return POW
        if isinstance(node.op, (ast.Add, ast.Sub)):
            return ADD
        return MUL if isinstance(node.op, (ast.Mult, ast.Div, ast.MatMult, ast.FloorDiv, ast.Mod)) else LOWEST
    if isinstance(node, ast.UnaryOp):
        return LOWEST if isinstance(node.op, ast.Not) else UNARY
    return ATOM if isinstance(node, (ast.Call, ast.Name, ast.Attribute, ast.Subscript, ast.Constant)) else LOWEST


@lru_cache(maxsize=None)
def template_precedence(template: str, arguments: tuple[str, ...] = ("x",)) -> tuple[int, bool]:
    """(precedence of a function's NumPy template, whether every argument (``{x}``, ...) is a call argument
    there).

    Read from the template's syntax tree (the function's definition, not printed output): a template such
    as ``-np.logaddexp(0.0, -{x})`` is a negation, and its argument sits in an operator slot.
    """
    placeholders = {name: f"_symbackprop_argument_{name}_" for name in arguments}
    tree = ast.parse(template.format(**placeholders), mode="eval").body
    in_call = {a.id for n in ast.walk(tree) if isinstance(n, ast.Call) for a in n.args if isinstance(a, ast.Name)}
    return _node_precedence(tree), set(placeholders.values()) <= in_call


def fraction_factors(expr: sp.Mul) -> tuple[bool, list, list]:
    """(negative, numerator factors, denominator factors) of a product, in reading order, as the printed code
    computes it: ``-x*y/(2*z)`` is (True, [x, y], [2, z]). A rational coefficient is split between the two
    (3/2 puts 3 above and 2 below); negative powers go below with their exponent's sign turned."""
    coeff, factors = expr.as_coeff_mul()
    numer, denom = [], []
    for f in reading_order(factors):
        if f.is_Pow and f.exp.is_Rational and f.exp.is_negative:
            denom.append(f.base ** (-f.exp))
        else:
            numer.append(f)
    negative, coeff = coeff < 0, abs(coeff)
    if coeff.is_Rational and not coeff.is_Integer:
        if coeff.p != 1:
            numer.insert(0, sp.Integer(coeff.p))
        denom.insert(0, sp.Integer(coeff.q))
    elif coeff != 1:
        numer.insert(0, coeff)
    return negative, numer, denom


class NumPyBatchPrinter(FunctionBases, StrPrinter):
    """Batched NumPy source for one expression at a time."""

    def __init__(self, shapes: dict[sp.Symbol, Shape], batched: set[sp.Symbol], names: dict[sp.Symbol, str]):
        super().__init__({"order": "none"})
        self.shapes = shapes
        self.batched_symbols = batched
        self.names = names
        self.helpers_used: set[str] = set()
        self._shape_memo: dict = {}
        self._inside_scalar = False  # printing the inside of float(...) (numpy_scalar)
        #: the name of the batch size in the printed code: ``N``, or the length of one block of samples in
        #: blocked code (:mod:`symbackprop.blocked`), where each line computes one block
        self.batch_size = "N"
        #: the function summing over the batch axis: ``np.sum``, or in blocked code ``np.add.reduce``, the ufunc
        #: method np.sum calls, without np.sum's Python wrapper (about 1 us a call: measured 3% of 8 layers of
        #: width 32 at batch 128, with 16 gradients summed per block)
        self.batch_reduce = "np.sum"

    def _print(self, expr, **kwargs) -> Code:
        if self.numpy_scalar(expr):  # float(np.sqrt(2)): see numpy_scalar
            self._inside_scalar = True
            try:
                inside = super()._print(expr, **kwargs)
            finally:
                self._inside_scalar = False
            return self.call("float", inside)
        code = super()._print(expr, **kwargs)
        return code if isinstance(code, Code) else Code(code, LOWEST)  # unknown precedence: always bracketed

    def assigned(self, expr) -> str:
        """The right-hand side of ``name = expr``. A value that is a plain number is a scalar of the module's
        ``DTYPE`` (``h = DTYPE(0)``): a Python number stays one through Python arithmetic, but NumPy
        functions of it do not (``np.abs(0)`` is an int64, ``_sigmoid(0.0)`` a float64, either of which turns
        a float32 module's arrays into another type, and the int64 reaches ``forward``'s results)."""
        if isinstance(expr, sp.Basic) and expr.is_number and self.shape(expr) == ():
            return f"DTYPE({self.doprint(expr)})"
        return self.doprint(expr)

    def numpy_scalar(self, expr) -> bool:
        """Whether ``expr`` is a number that would print as a NumPy call (``np.sqrt(2)``, ``np.log(3)``).

        Such a call gives an ``np.float64``, which, unlike a Python number, upcasts a float32 array: the
        printer writes it as ``float(np.sqrt(2))``, the same number as a Python float. Only the outermost
        such number is wrapped (``float(np.sqrt(2)/2)``), and only a scalar one (``ones(3)`` is a number too).
        """
        if self._inside_scalar or not isinstance(expr, sp.Basic) or not expr.is_number or expr.is_Atom:
            return False
        calls = any(isinstance(e, sp.Function) or (e.is_Pow and not e.exp.is_Integer)
                    for e in sp.preorder_traversal(expr))
        return calls and self.shape(expr) == ()  # (2*pi and pi**2 are Python arithmetic on Python floats)

    # ---- what the printer knows about an expression --------------------------------------------------
    def shape(self, expr) -> Shape:
        return infer_shape(expr, self.shapes, self._shape_memo)

    def batched(self, expr) -> bool:
        return bool(expr.free_symbols & self.batched_symbols)

    def helper(self, name: str) -> str:
        self.helpers_used.add(name)
        return name

    # ---- the one bracketing rule, and the constructions that use it ------------------------------------
    def fit(self, code: Code, need: int, family: str = "") -> Code:
        """``code`` in a slot that needs precedence ``need``: bracketed if its own is lower.

        ``family`` is the product family of the slot ("*" or "@"); a product of the other family is
        bracketed too, although Python would not need it (``(x @ W.T)*v`` reads better than ``x @ W.T*v``).
        """
        if code.prec < need or (family and code.prec == MUL and code.family != family):
            return Code(f"({code})")
        return code

    def binary(self, left: Code, op: str, right: Code) -> Code:
        """``left op right`` for a left-associative operator: the left operand needs at least the
        operator's precedence, the right one more (``a - (b + c)``, ``a/(b*c)``, ``t0 @ (1/t1)``)."""
        prec, family = BINARY[op]
        left, right = self.fit(left, prec, family), self.fit(right, prec + 1, family)
        return Code(f"{left}{op}{right}" if family == "*" else f"{left} {op} {right}", prec, family)

    def power(self, base: Code, exponent: Code) -> Code:
        """``base**exponent``: ``**`` groups to the right and binds tighter than a minus on its left, so the
        base must be an atom (``(-a)**2``, ``(a**b)**c``); so is the exponent, for the reader (``x**(-c)``)."""
        return Code(f"{self.fit(base, ATOM)}**{self.fit(exponent, ATOM)}", POW)

    def negate(self, code: Code) -> Code:
        """``-code``, with a sum or product in brackets (``-(a*b)``). A product prints its sign on its first
        factor instead (``-2*x``, ``-a*b``: ``(-a)*b`` in Python, the same number)."""
        return Code("-" + self.fit(code, UNARY), UNARY)

    def postfix(self, code: Code, suffix: str) -> Code:
        """``code`` followed by an index or attribute (``[:, None]``, ``.T``, ``[0]``), which binds tightest."""
        return Code(self.fit(code, ATOM) + suffix)

    def call(self, function: str, *args: str) -> Code:
        return Code(f"{function}({', '.join(args)})")

    def operand(self, expr, result_rank: int) -> Code:
        """``expr`` as an operand of an elementwise operation whose result has ``result_rank`` axes per sample:
        a per-sample scalar gets axes of length 1 appended, so it broadcasts along the sample axis."""
        return self.along(self._print(expr), expr, result_rank)

    def along(self, code: Code, expr, result_rank: int) -> Code:
        """``code``, the value of ``expr``, with axes of length 1 appended if ``expr`` is a per-sample scalar
        and the result has ``result_rank`` axes per sample (``g[:, None]``), so that it broadcasts along them."""
        if result_rank and self.batched(expr) and self.shape(expr) == ():
            return self.postfix(code, "[:, " + ", ".join(["None"] * result_rank) + "]")
        return code

    def constant(self, expr, value) -> Code:
        """The number ``value`` in ``expr``'s shape, with the batch axis if ``expr`` varies over the batch
        (``np.zeros((N, 3))``, ``np.full((N,), 1)``): for a product that SymPy folds to a number although its
        operands have shapes or vary (``0 @ W``, ``s @ 0``, ``exp(-u) @ exp(u)``)."""
        shape = self.shape(expr)
        if self.batched(expr):
            shape_text = f"({self.batch_size}" + "".join(f", {n}" for n in shape) + ("" if shape else ",") + ")"
        elif shape:
            shape_text = repr(shape)
        else:
            return self._print(value)
        if value == 0:
            return self.call("np.zeros", shape_text, DTYPE_ARGUMENT)
        return self.call("np.full", shape_text, self._print(value), DTYPE_ARGUMENT)

    def join_terms(self, terms: list, show) -> Code:
        """``t1 + t2 - t3``: the first term as ``show`` prints it, each later one with its sign taken out."""
        out = show(terms[0])
        for term in terms[1:]:
            negative = term.could_extract_minus_sign()
            out = self.binary(out, "-" if negative else "+", show(-term if negative else term))
        return out

    # ---- atoms ---------------------------------------------------------------------------------------
    def _print_Symbol(self, expr):
        return Code(self.names[expr])

    def _print_Integer(self, expr):
        return Code(str(expr.p), UNARY if expr.p < 0 else ATOM)

    def _print_Zero(self, expr):
        return Code("0")

    def _print_Rational(self, expr):
        return Code(f"{expr.p}/{expr.q}", MUL, "*")

    def _print_Half(self, expr):
        return Code("0.5")

    def _print_Float(self, expr):
        value = float(expr)
        return Code(repr(value), UNARY if value < 0 else ATOM)

    def _print_Exp1(self, expr):
        return Code("np.e")

    def _print_Pi(self, expr):
        return Code("np.pi")

    # ---- elementwise arithmetic ----------------------------------------------------------------------
    def _print_Add(self, expr, order=None):
        rank = len(self.shape(expr))
        terms = sorted(expr.args, key=lambda t: (t.could_extract_minus_sign(), t.is_Atom))
        return self.join_terms(terms, lambda t: self.operand(t, rank))

    def _print_Mul(self, expr):
        rank = len(self.shape(expr))
        negative, numer, denom = fraction_factors(expr)
        factor_codes = [self.operand(f, rank) for f in numer] or [Code("1")]
        if negative:
            factor_codes[0] = self.negate(factor_codes[0])
        text = self.product(factor_codes)
        if denom:
            text = self.binary(text, "/", self.product([self.operand(f, rank) for f in denom]))
        return text

    def product(self, factors: list[Code]) -> Code:
        out = factors[0]
        for f in factors[1:]:
            out = self.binary(out, "*", f)
        return out

    def _print_Pow(self, expr, rational=False):
        rank = len(self.shape(expr))
        base, exp = expr.args
        if exp == sp.S.Half:
            return self.call("np.sqrt", self._print(base))
        if exp.is_Rational and exp.is_negative:
            return self.binary(Code("1"), "/", self.operand(base ** (-exp), rank))
        return self.power(self.operand(base, rank), self.operand(exp, rank))

    # ---- functions -----------------------------------------------------------------------------------
    def _print_Elementwise(self, expr):
        """The function's NumPy template with its arguments; a per-sample scalar argument of a function of
        several (``maximum(s, v)``) gets the axes that broadcast it, as an operand of ``+`` does."""
        if expr.helper:
            self.helper("_" + type(expr).__name__)
        prec, arguments_in_call = template_precedence(expr.numpy, expr.arguments)
        rank = len(self.shape(expr))
        arguments = [self.operand(a, rank) for a in expr.args]
        if not arguments_in_call:
            arguments = [self.fit(a, ATOM) for a in arguments]
        return Code(expr.numpy.format(**dict(zip(expr.arguments, arguments))), prec)

    def _print_Function(self, expr):
        name = ELEMENTWISE.get(type(expr))
        if name is None:
            return super()._print_Function(expr)
        rank = len(self.shape(expr))
        return self.call(name, *(self.operand(a, rank) for a in expr.args))

    # ---- tensor operations ---------------------------------------------------------------------------
    def _print_matmul(self, expr):
        a, b = expr.args
        sa, sb = self.shape(a), self.shape(b)
        if sa == () or sb == ():  # a 1 x 1 factor: the product is a scaling
            scaled = sp.Mul(a, b)
            return self.constant(expr, scaled) if scaled.is_number else self._print(scaled)
        ba, bb = self.batched(a), self.batched(b)
        if len(sa) == 2 and len(sb) == 2:  # matrix times matrix: NumPy's @ broadcasts over the batch
            return self.binary(self._print(a), "@", self._print(b))
        rows = self.rows_times_matrix(expr)
        if rows is not None:
            return self.binary(self._print(rows[0]), "@", rows[1])
        if isinstance(a, transpose) and len(self.shape(a.args[0])) == 1 and len(sb) == 1:
            # a dot product u^T v per sample
            u = a.args[0]
            if bb:  # (a fixed u against a batch of v is W @ x above)
                return self.call("np.sum", self.binary(self._print(u), "*", self._print(b)), "axis=-1")
            return self.binary(self._print(u), "@", self._print(b))
        if len(sa) == 2 and len(sb) == 1 and not ba and not bb:
            code = self.binary(self._print(a), "@", self._print(b))
            return self.postfix(code, "[0]") if sa[0] == 1 else code
        if len(sa) == 1 and isinstance(b, transpose) and len(sb) == 2 and sb[0] == 1 and \
                self.shape(b.args[0]) == (sb[1],):
            # an outer product a b^T per sample
            x = b.args[0]
            if not ba and not self.batched(x):
                return self.call("np.outer", self._print(a), self._print(x))
            left = self.postfix(self._print(a), "[:, :, None]" if ba else "[:, None]")
            right = self.postfix(self._print(x), "[:, None, :]" if self.batched(x) else "[None, :]")
            return self.binary(left, "*", right)
        return self.call(self.helper("_matmul"), self._print(a), self._print(b), str(len(sa) == 1),
                         str(len(sb) == 1), repr(self.shape(expr)))

    def rows_times_matrix(self, expr) -> tuple[sp.Expr, Code] | None:
        """``W @ x`` for a batch of columns x, as the rows x times a fixed matrix: (x, ``W.T``), for
        ``(N, n) @ (n, m)``; (x, ``w``) for ``(N, n) @ (n,)`` where W is a row w^T or has one row. None for
        other matrix products. (In-place code writes the same product with ``np.matmul(..., out=)``.)"""
        a, b = expr.args
        sa, sb = self.shape(a), self.shape(b)
        if not (len(sa) == 2 and len(sb) == 1 and not self.batched(a) and self.batched(b)):
            return None
        if isinstance(a, transpose):
            return b, self._print(a.args[0])
        return b, self.postfix(self._print(a), "[0]" if sa[0] == 1 else ".T")

    def _print_transpose(self, expr):
        (a,) = expr.args
        s, code, b = self.shape(a), self._print(a), self.batched(a)
        if s == ():
            return code
        if len(s) == 1:
            return self.postfix(code, "[:, None, :]" if b else "[None, :]")
        if s[0] == 1 and self.shape(expr) == (s[1],):
            return self.postfix(code, "[:, 0, :]" if b else "[0]")
        return self.call("np.swapaxes", code, "-1", "-2") if b else self.postfix(code, ".T")

    def _reduce(self, func: str, expr) -> Code:
        (a,) = expr.args
        rank = len(self.shape(a))
        if rank == 0:
            return self._print(a)
        if not self.batched(a):
            return self.call(f"np.{func}", self._print(a))
        return self.call(f"np.{func}", self._print(a), "axis=1" if rank == 1 else "axis=(1, 2)")

    def _print_sum_(self, expr):
        return self._reduce("sum", expr)

    def _print_mean(self, expr):
        return self._reduce("mean", expr)

    def _print_softmax(self, expr):
        (v,) = expr.args
        if self.shape(v) == ():  # of a single element: 1
            return self.call("np.ones_like", self._print(v))
        return self.call(self.helper("_softmax"), self._print(v))

    def _print_logsumexp(self, expr):
        (v,) = expr.args
        if self.shape(v) == ():  # of a single element: the element
            return self._print(v)
        return self.call(self.helper("_logsumexp"), self._print(v))

    def _print_ones(self, expr):
        return self.call("np.ones", repr(tuple(int(n) for n in expr.args)), DTYPE_ARGUMENT)

    def at_positions(self, expr, positions: str) -> Code:
        """``a[:, positions]`` (after the batch axis) or ``a[positions]``: an index binds tightest."""
        a = expr.args[0]
        return self.postfix(self._print(a), f"[:, {positions}]" if self.batched(a) else f"[{positions}]")

    def _print_index(self, expr):
        return self.at_positions(expr, str(expr.args[1]))

    def _print_slice_(self, expr):
        return self.at_positions(expr, f"{expr.args[1]}:{expr.args[2]}")

    def _print_concat(self, expr):
        """``np.concatenate((a, b[:, None]), axis=1)``: each piece as an (N, k) block (a per-sample scalar gets an
        axis, a value the same for every sample is broadcast to N rows, or to a block's rows in blocked code)."""
        batched = self.batched(expr)
        pieces = []
        for a in expr.args:
            shape, code = self.shape(a), self._print(a)
            if not batched:
                pieces.append(code if shape else Code(f"[{code}]"))
            elif not self.batched(a):
                n = self.batch_size
                pieces.append(self.call("np.broadcast_to", code, f"({n}, {shape[0]})") if shape else
                              self.call("np.full", f"({n}, 1)", code, DTYPE_ARGUMENT))
            else:
                pieces.append(code if shape else self.postfix(code, "[:, None]"))
        joined = Code("(" + ", ".join(pieces) + ("," if len(pieces) == 1 else "") + ")")
        return self.call("np.concatenate", joined, "axis=1") if batched else self.call("np.concatenate", joined)

    def _print_scatter(self, expr):
        g = expr.args[0]
        return self.call(self.helper("_scatter"), self._print(g), str(expr.start), repr(expr.operand_shape),
                         str(self.batched(g)))

    def _print_TensorOp(self, expr):
        raise TypeError(f"no NumPy form for {type(expr).__name__}")

    # ---- reduction over the batch --------------------------------------------------------------------
    def _print_batch_mean(self, expr):
        """Mean over the batch axis, as one BLAS call where the term allows it."""
        (value,) = expr.args
        constant, summed = [], []
        for term in sp.Add.make_args(value):
            (summed if self.batched(term) else constant).append(term)
        mean = self.binary(self.join_terms(summed, self.batch_sum), "/", Code("N")) if summed else None
        if not constant:
            return mean
        fixed = self._print(sp.Add(*constant))
        return fixed if mean is None else self.binary(fixed, "+", mean)

    def batch_sum(self, term) -> Code:
        """Sum over the batch axis of one per-sample term."""
        coeff, factors = term.as_independent(*self.batched_symbols, as_Add=False)
        total = self.batch_sum_of_factors(factors)
        if coeff == 1:
            return total
        return self.negate(total) if coeff == -1 else self.binary(self._print(coeff), "*", total)

    def einsum_pair(self, product):
        """(u, v) if ``product`` is u**2 (u, u) or u*v, two per-sample values of its shape; else None."""
        shape = self.shape(product)
        if isinstance(product, sp.Pow) and product.exp == 2:
            pair = (product.base, product.base)
        elif isinstance(product, sp.Mul) and len(product.args) == 2:
            pair = product.args
        else:
            return None
        return pair if all(self.batched(f) and self.shape(f) == shape for f in pair) else None

    def batch_sum_of_factors(self, factors) -> Code:
        if isinstance(factors, scatter) and self.batched(factors.args[0]):
            # the sum of scattered adjoints is the scatter of their sum: no (N, *shape) array of zeros
            g = self.call(self.batch_reduce, self._print(factors.args[0]), "axis=0")
            return self.call(self.helper("_scatter"), g, str(factors.start), repr(factors.operand_shape), "False")
        if isinstance(factors, matmul) and isinstance(factors.args[1], transpose):
            a, x = factors.args[0], factors.args[1].args[0]
            if len(self.shape(a)) == 1 and len(self.shape(x)) == 1 and self.batched(a) and self.batched(x):
                return self.binary(self.postfix(self._print(a), ".T"), "@", self._print(x))  # (n, N) @ (N, m)
        pair = self.einsum_pair(factors) if self.shape(factors) == () else None
        if pair is not None:
            # u**2 or u*v of per-sample scalars: one pass, no product array, and not u @ v: OpenBLAS runs a dot
            # product of more than 10,000 elements on every core, and one busy core then stalls it (1.9 us ->
            # 790 us at 16k samples); einsum never threads
            return self.call("np.einsum", '"i,i->"', *(str(self._print(f)) for f in pair))
        if isinstance(factors, sum_) and len(self.shape(factors.args[0])) in (1, 2):
            # the batch's sum of sum(u**2) or sum(u*v), per-sample vectors or matrices (the quadratic loss): one
            # pass over u and v, no u**2 array and no per-sample sums; einsum never threads (see above)
            pair = self.einsum_pair(factors.args[0])
            if pair is not None:
                axes = "ij" if len(self.shape(factors.args[0])) == 1 else "ijk"
                return self.call("np.einsum", f'"{axes},{axes}->"', *(str(self._print(f)) for f in pair))
        if isinstance(factors, sp.Mul) and len(factors.args) == 2 and all(self.batched(f) for f in factors.args):
            # a per-sample scalar times a per-sample vector: (N,) @ (N, n) (two scalars: einsum, above)
            f1, f2 = sorted(factors.args, key=lambda f: len(self.shape(f)))
            if self.shape(f1) == () and len(self.shape(f2)) == 1:
                return self.binary(self._print(f1), "@", self._print(f2))
        return self.call(self.batch_reduce, self._print(factors), "axis=0")
