"""Write one assignment of a gradient program as in-place NumPy: ufunc calls with ``out=`` into a buffer.

Blocked code (:mod:`symbackprop.blocked`) evaluates each per-sample value of a block of samples into a
buffer allocated once per call, instead of letting every operator make a new array. For

    dL_dz = dL_da*a*(1 - a)

it writes

    dL_dz = _b2
    np.subtract(1, a, out=dL_dz)
    np.multiply(dL_dz, a, out=dL_dz)
    np.multiply(dL_dz, dL_da, out=dL_dz)

Why: a buffer reused block after block stays in the CPU's cache, while a new array per operator costs
an allocation, page faults and a trip to memory (with the blocks, the seed at N = 1e6 runs about 3x
faster than the whole-array form, benchmarks/README.md).

The operations written in place are the elementwise ones (sums, products, quotients, powers, NumPy's
functions, and the activation functions that give a ``numpy_into`` form) and the product of a batch of
rows with a fixed matrix (``np.matmul(x, W.T, out=z)``). Anything else (reductions, softmax, transposes,
other matrix products, a function without ``numpy_into``) is printed by
:class:`~symbackprop.codeprint.NumPyBatchPrinter` as usual and makes its own (block-sized) array: the
printer stays the one place that knows how to write each operation, and this module only decides where
the result goes.

Buffers come from a :class:`BufferPool`: every value that is written in place takes a buffer, and gives it
back after its last use, so values whose lifetimes do not overlap share one. An operand never shares a
buffer with the value being computed (the value's buffer is taken while its operands still hold theirs).
"""
from __future__ import annotations

import sympy as sp

from .codeprint import ELEMENTWISE, Code, NumPyBatchPrinter, fraction_factors
from .functions import Elementwise
from .tensor import Shape, matmul


class BufferPool:
    """Buffers named ``_b0``, ``_b1``, ... of shape ``(block rows, *shape)``, handed out and given back."""

    def __init__(self) -> None:
        self.shapes: list[Shape] = []  # index -> per-sample shape
        self.free: dict[Shape, list[int]] = {}

    def take(self, shape: Shape) -> str:
        free = self.free.get(shape)
        if free:
            return f"_b{free.pop()}"
        self.shapes.append(tuple(shape))
        return f"_b{len(self.shapes) - 1}"

    def give_back(self, name: str) -> None:
        index = int(name[2:])
        self.free.setdefault(self.shapes[index], []).append(index)

    @property
    def names(self) -> list[str]:
        return [f"_b{i}" for i in range(len(self.shapes))]


class InPlaceWriter:
    """The lines computing one expression into a buffer, with ufuncs writing into ``out``."""

    def __init__(self, printer: NumPyBatchPrinter, pool: BufferPool, indent: str, check_shapes: bool = False):
        self.printer = printer
        self.pool = pool
        self.indent = indent
        #: shape-checked mode: an operand the printer writes as a new array is named and checked first (a
        #: ufunc broadcasts its operands into ``out``, so a wrong shape there would not show in the result)
        self.check_shapes = check_shapes
        self.checked = 0
        self.lines: list[str] = []
        self.scratch: list[str] = []

    # ---- which expressions are written in place --------------------------------------------------------
    def in_place(self, expr) -> bool:
        """Whether ``expr`` is a per-sample value this writer computes into a buffer."""
        if expr.is_Atom or not self.printer.batched(expr):
            return False
        if isinstance(expr, (sp.Add, sp.Mul, sp.Pow)):
            return True
        if isinstance(expr, Elementwise):
            return bool(expr.numpy_into)
        if type(expr) in ELEMENTWISE:
            return len(expr.args) == 1
        return isinstance(expr, matmul) and self.printer.rows_times_matrix(expr) is not None

    def fits(self, expr, result) -> bool:
        """Whether ``expr`` can be computed straight into the buffer of ``result`` (same shape, in place)."""
        return self.in_place(expr) and self.printer.shape(expr) == self.printer.shape(result)

    # ---- the entry point -----------------------------------------------------------------------------------
    def assign(self, target: str, expr) -> tuple[list[str], str | None, list[str]]:
        """(lines, the buffer now holding ``target`` or None, the scratch buffers to give back after them).

        A symbol is an alias (``dL_da = t0``: no copy); an expression not written in place is assigned as
        the printer prints it (a new array)."""
        self.lines, self.scratch = [], []
        if expr.is_Symbol or not self.in_place(expr):
            return [f"{self.indent}{target} = {self.printer.assigned(expr)}"], None, []
        buffer = self.pool.take(self.printer.shape(expr))
        self.emit(f"{target} = {buffer}")
        self.write(expr, target)
        return self.lines, buffer, self.scratch

    def emit(self, line: str) -> None:
        self.lines.append(self.indent + line)

    def ufunc(self, name: str, *args: str, out: str) -> None:
        self.emit(f"{name}({', '.join(map(str, args))}, out={out})")

    def operand(self, expr, result_rank: int) -> Code:
        """``expr`` as an operand: a scratch buffer it is computed into, or the printer's text (a name, a
        parameter, a new array); a per-sample scalar gets axes appended to broadcast along the result."""
        if not self.in_place(expr):
            if self.check_shapes and not expr.is_Atom and self.printer.batched(expr):
                name = f"_operand{self.checked}"
                self.checked += 1
                self.emit(f"{name} = {self.printer.doprint(expr)}")
                self.emit(f'_check_shape("{name}", {name}, {self.printer.shape(expr)!r}, {self.printer.batch_size})')
                return self.printer.along(Code(name), expr, result_rank)
            return self.printer.operand(expr, result_rank)
        buffer = self.pool.take(self.printer.shape(expr))
        self.scratch.append(buffer)
        self.write(expr, buffer)
        return self.printer.along(Code(buffer), expr, result_rank)

    # ---- one method per expression type ---------------------------------------------------------------------
    def write(self, expr, out: str) -> None:
        """The lines computing ``expr`` (for which :meth:`in_place` holds) into the array named ``out``."""
        if isinstance(expr, sp.Add):
            self.write_add(expr, out)
        elif isinstance(expr, sp.Mul):
            self.write_mul(expr, out)
        elif isinstance(expr, sp.Pow):
            self.write_pow(expr, out)
        elif isinstance(expr, matmul):
            self.write_rows_times_matrix(expr, out)
        else:
            self.write_function(expr, out)

    def write_add(self, expr, out: str) -> None:
        """Terms added into ``out`` one at a time (subtracted where the printer shows a minus), starting with
        a term computed straight into it where there is one."""
        rank = len(self.printer.shape(expr))
        terms = sorted(expr.args, key=lambda t: (t.could_extract_minus_sign(), t.is_Atom))  # the printer's order
        first = next((t for t in terms if not t.could_extract_minus_sign() and self.fits(t, expr)), None)
        subtracted = next((t for t in terms if t.could_extract_minus_sign() and self.fits(-t, expr)), None)
        # -w*x - b (the sigmoid's argument negated): the sign of -w*x goes on the scalar w, no np.negative
        signed = next((t for t in terms if t.could_extract_minus_sign() and self.fits(t, expr)
                       and self.sign_is_free(t)), None)
        if first is not None:
            self.write(first, out)
            terms.remove(first)
        elif signed is not None:
            self.write(signed, out)
            terms.remove(signed)
        elif subtracted is not None:  # 1 - a**2: a**2 into out, then 1 - out (no scratch buffer)
            self.write(-subtracted, out)
            terms.remove(subtracted)
            if terms[0].could_extract_minus_sign():
                self.ufunc("np.negative", out, out=out)
            else:
                self.ufunc("np.subtract", self.operand(terms.pop(0), rank), out, out=out)
        elif terms[0].could_extract_minus_sign():  # every term has a minus: -u - v is -(u) - v
            self.ufunc("np.negative", self.operand(-terms.pop(0), rank), out=out)
        else:
            start = self.operand(terms.pop(0), rank)
            term = terms.pop(0)
            negative = term.could_extract_minus_sign()
            self.ufunc("np.subtract" if negative else "np.add", start,
                       self.operand(-term if negative else term, rank), out=out)
        for term in terms:
            negative = term.could_extract_minus_sign()
            self.ufunc("np.subtract" if negative else "np.add", out,
                       self.operand(-term if negative else term, rank), out=out)

    def sign_is_free(self, expr) -> bool:
        """Whether :meth:`write_mul` writes the product ``expr`` with its minus sign on a number or on a
        scalar that does not vary over the batch (``-2*x``, ``-w*x``), not as an ``np.negative`` pass."""
        if not isinstance(expr, sp.Mul):
            return False
        coeff, factors = expr.as_coeff_mul()
        return coeff < 0 and (coeff != -1 or self.signed_factor(factors) is not None)

    def signed_factor(self, factors):
        """The factor that can carry a product's minus sign for free: a scalar that does not vary over the
        batch (``-w``: one number negated, not N)."""
        return next((f for f in factors if not self.printer.batched(f) and self.printer.shape(f) == ()
                     and not (f.is_Pow and f.exp.is_negative)), None)

    def write_mul(self, expr, out: str) -> None:
        """Factors multiplied into ``out`` one at a time, then the denominator's divided out, as the printer
        splits them (``x*y/(2*z)``); a factor computed straight into ``out`` goes first where there is one."""
        rank = len(self.printer.shape(expr))
        negative, numer, denom = fraction_factors(expr)
        if negative and numer and numer[0].is_Number:  # the sign goes on the number: -2*x, not -(2*x)
            numer[0], negative = -numer[0], False
        elif negative and self.signed_factor(numer) is not None:  # or on a scalar parameter: -w*x
            k = numer.index(self.signed_factor(numer))
            numer[k], negative = -numer[k], False
        steps = [("np.multiply", f) for f in numer] + [("np.divide", f) for f in denom]
        first = next((s for s in steps if s[0] == "np.multiply" and self.fits(s[1], expr)), None)
        if first is not None:
            self.write(first[1], out)
            steps.remove(first)
        else:
            start = self.operand(steps.pop(0)[1], rank) if steps[0][0] == "np.multiply" else Code("1")
            if not steps:  # a single factor with a minus: -u
                self.ufunc("np.negative", start, out=out)
                return
            op, f = steps.pop(0)
            self.ufunc(op, start, self.operand(f, rank), out=out)
        for op, f in steps:
            self.ufunc(op, out, self.operand(f, rank), out=out)
        if negative:
            self.ufunc("np.negative", out, out=out)

    def write_pow(self, expr, out: str) -> None:
        """``np.sqrt`` for a square root, ``np.square`` for a square, ``1/u**p`` for a negative power (as the
        printer writes it), ``np.power`` otherwise."""
        base, exponent = expr.args
        if exponent == sp.S.Half:
            self.write_unary("np.sqrt", base, expr, out)
        elif exponent == 2:
            self.write_unary("np.square", base, expr, out)
        elif exponent.is_Rational and exponent.is_negative:
            positive = base ** (-exponent)
            if self.fits(positive, expr):
                self.write(positive, out)
                self.ufunc("np.divide", 1, out, out=out)
            else:
                self.ufunc("np.divide", 1, self.operand(positive, len(self.printer.shape(expr))), out=out)
        else:
            rank = len(self.printer.shape(expr))
            self.ufunc("np.power", self.operand(base, rank), self.operand(exponent, rank), out=out)

    def write_unary(self, function: str, argument, expr, out: str) -> None:
        """``function(argument)`` into ``out``, computing the argument into ``out`` first where it fits."""
        if self.fits(argument, expr):
            self.write(argument, out)
            self.ufunc(function, out, out=out)
        else:
            self.ufunc(function, self.operand(argument, len(self.printer.shape(expr))), out=out)

    def write_function(self, expr, out: str) -> None:
        """NumPy's own functions (``np.tanh``) as ufuncs; an activation function through its ``numpy_into``."""
        (argument,) = expr.args
        if isinstance(expr, Elementwise):
            if expr.helper_into:
                self.printer.helper("_" + type(expr).__name__ + "_into")
            if self.fits(argument, expr):
                self.write(argument, out)
                x = out
            else:
                x = self.operand(argument, 0)
            self.emit(expr.numpy_into.format(x=x, out=out))
        else:
            self.write_unary(ELEMENTWISE[type(expr)], argument, expr, out)

    def write_rows_times_matrix(self, expr, out: str) -> None:
        """``W @ x`` over a block of rows x: ``np.matmul(x, W.T, out=z)`` (one BLAS call, no new array)."""
        rows, matrix = self.printer.rows_times_matrix(expr)
        self.ufunc("np.matmul", self.operand(rows, 0), matrix, out=out)
