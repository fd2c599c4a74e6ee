"""Elementwise activation functions as SymPy ``Function`` classes.

Each class keeps, side by side, everything the tool needs to know about one function:

* ``eval``: exact values SymPy may fold (``sigmoid(0) = 1/2``);
* ``fdiff``: the local derivative, used by the chain rule in :mod:`symbackprop.derive` (by argument, for
  a function of several arguments);
* ``latex_name``: how the function is written in a derivation (``\\sigma``);
* ``numpy``: a numerically stable NumPy expression (``{x}`` is the argument; a function of several
  arguments names them in ``arguments``), and ``helper``, the source of a small function the generated
  module defines when the expression needs more than one line;
* ``numpy_into`` (optional): the same function written into an existing array ``{out}`` (which may be
  ``{x}`` itself; ``{x}`` is a call argument there), for blocked in-place code
  (:mod:`symbackprop.inplace`), and ``helper_into``, its helper; without it, blocked code evaluates
  ``numpy`` into a new array;
* ``numpy_into_negative`` (optional): the same into ``{out}`` from ``{minus_x}``, the argument negated,
  and ``helper_into_negative``, its helper: blocked code computes an argument read only by this function
  negated where that costs nothing (``-w*x - b``), saving the pass that negates it (the sigmoid's
  ``exp(-x)``);
* ``torch``: the same function in PyTorch, ``torch(torch_module, x, ...)``, used only to cross-check
  gradients (so this module never imports PyTorch);
* ``_eval_rewrite_as_exp``: the function in SymPy's own terms (``exp``, ``Max``, ``Piecewise``, ``erf``),
  which SymPy can evaluate to any precision (the tests compare derivations exactly with it).

Adding an activation is one new class here plus one line in :data:`FUNCTIONS` (and, if it takes more
than one argument, one line in ``symbackprop.modelfile.ARITY``). Where a function has no derivative at
a point (a kink, a tie), the value chosen there is written in :data:`CONVENTIONS`, which every derivation
that uses the function prints, and in docs/model-files.md.
SymPy's own ``exp``, ``log``, ``tanh``, ``sqrt``, ``Abs``, ``sin`` and ``cos`` are used as they are (their
derivatives and simplifications are SymPy's); the printers know how to write them.
"""
from __future__ import annotations

import sympy as sp


class Elementwise(sp.Function):
    """A function applied elementwise to scalars, vectors and matrices.

    Most take one argument. One of several arguments (``maximum(a, b)``) broadcasts them as ``+`` does:
    equal shapes, or a scalar against a tensor.
    """

    nargs = 1
    is_real = True
    latex_name: str = ""
    text_name: str = ""
    numpy: str = ""
    #: the names of the arguments in the ``numpy`` template (``{x}``, ``{slope}``)
    arguments: tuple[str, ...] = ("x",)
    helper: str | None = None
    numpy_into: str = ""
    helper_into: str | None = None
    numpy_into_negative: str = ""
    helper_into_negative: str | None = None

    @staticmethod
    def torch(torch, x):  # pragma: no cover - every subclass gives its own
        raise NotImplementedError

    @property
    def shown_args(self) -> tuple:
        """The arguments a printer writes: all of them, except an optional one at its default value."""
        return self.args

    def _latex(self, printer, exp=None):
        args = self.shown_args
        inner = ", ".join(printer._print(a) for a in args)
        wrapped = f"({inner})" if len(args) == 1 and args[0].is_Symbol else rf"\left({inner}\right)"
        head = self.latex_name if exp is None else f"{self.latex_name}^{{{exp}}}"
        return head + wrapped


_SIGMOID_HELPER = '''\
def _sigmoid(x):
    """Logistic function; exp(-x) overflows to inf for x < -709, giving exactly 0 (warning suppressed)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))
'''

_SIGMOID_INTO_HELPER = '''\
def _sigmoid_into(x, out):
    """Logistic function of x written into out (which may be x): the operations of _sigmoid, in place."""
    np.negative(x, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    np.add(out, 1.0, out=out)
    return np.divide(1.0, out, out=out)
'''

_SIGMOID_OF_NEGATIVE_INTO_HELPER = '''\
def _sigmoid_of_negative_into(minus_x, out):
    """Logistic function of x written into out, from -x: _sigmoid_into without its first pass (negating x)."""
    with np.errstate(over="ignore"):
        np.exp(minus_x, out=out)
    np.add(out, 1.0, out=out)
    return np.divide(1.0, out, out=out)
'''


class sigmoid(Elementwise):
    """Logistic sigmoid 1 / (1 + exp(-x)); its derivative sigmoid(x) (1 - sigmoid(x))."""

    latex_name = r"\sigma"
    text_name = "sigmoid"
    numpy = "_sigmoid({x})"
    helper = _SIGMOID_HELPER
    numpy_into = "_sigmoid_into({x}, {out})"
    helper_into = _SIGMOID_INTO_HELPER
    numpy_into_negative = "_sigmoid_of_negative_into({minus_x}, {out})"
    helper_into_negative = _SIGMOID_OF_NEGATIVE_INTO_HELPER
    torch = staticmethod(lambda torch, x: torch.sigmoid(x))

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.Rational(1, 2)
        if x.is_Float:
            return 1 / (1 + sp.exp(-x))
        return None

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))


class softplus(Elementwise):
    """log(1 + exp(x)), written stably as logaddexp(0, x); its derivative is the sigmoid."""

    latex_name = r"\operatorname{softplus}"
    text_name = "softplus"
    numpy = "np.logaddexp(0.0, {x})"
    numpy_into = "np.logaddexp(0.0, {x}, out={out})"
    torch = staticmethod(lambda torch, x: torch.logaddexp(torch.zeros_like(x), x))

    @classmethod
    def eval(cls, x):
        if x.is_Float:
            return sp.log(1 + sp.exp(x))
        return None

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))


class step(Elementwise):
    """Heaviside step with step(0) = 0: the derivative of relu (its subgradient 0 at the kink)."""

    latex_name = r"\operatorname{step}"
    text_name = "step"
    numpy = "np.heaviside({x}, 0.0)"
    numpy_into = "np.heaviside({x}, 0.0, out={out})"
    torch = staticmethod(lambda torch, x: (x > 0).to(x.dtype))

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sp.S.One if x > 0 else sp.S.Zero
        return None

    def fdiff(self, argindex=1):
        return sp.S.Zero


class relu(Elementwise):
    """max(x, 0); derivative step(x), taking the subgradient 0 at x = 0."""

    latex_name = r"\operatorname{relu}"
    text_name = "relu"
    numpy = "np.maximum({x}, 0.0)"
    numpy_into = "np.maximum({x}, 0.0, out={out})"
    torch = staticmethod(lambda torch, x: torch.relu(x))

    @classmethod
    def eval(cls, x):
        if x.is_Number:
            return sp.Max(x, 0)
        return None

    def fdiff(self, argindex=1):
        return step(self.args[0])

    def _eval_rewrite_as_Piecewise(self, x, **kwargs):
        return sp.Piecewise((x, x > 0), (0, True))


def _folds(*args) -> bool:
    """Whether a function of these arguments is folded to a number (all numbers, one of them a float)."""
    return all(a.is_Number for a in args) and any(a.is_Float for a in args)


class leaky_relu(Elementwise):
    """x for x > 0, slope * x otherwise (torch.nn.functional.leaky_relu); slope 0.01 unless given.

    The slope may be any expression, a parameter too (then it is learned, as in PReLU). The derivative
    by x is ``slope + (1 - slope) step(x)``: at the kink x = 0 it is the slope (the left derivative, as
    torch's); by the slope it is ``minimum(x, 0)``.
    """

    nargs = (1, 2)
    latex_name = r"\operatorname{leaky\_relu}"
    text_name = "leaky_relu"
    numpy = "_leaky_relu({x}, {slope})"
    arguments = ("x", "slope")
    helper = '''\
def _leaky_relu(x, slope):
    """x where x > 0, else slope * x (slope a number or an array that broadcasts against x)."""
    return np.where(x > 0, x, slope * x)
'''
    DEFAULT_SLOPE = sp.Float(0.01)

    @staticmethod
    def torch(torch, x, slope):
        if slope.numel() == 1 and not slope.requires_grad:  # a number: PyTorch's own function
            return torch.nn.functional.leaky_relu(x, float(slope))
        return torch.where(x > 0, x, slope * x)  # a learned or per-sample slope (PReLU)

    @classmethod
    def eval(cls, x, slope=None):
        if slope is None:
            return cls(x, cls.DEFAULT_SLOPE)
        if x.is_Number:
            return x if x > 0 else slope * x
        return None

    @property
    def shown_args(self):
        return self.args[:1] if self.args[1] == self.DEFAULT_SLOPE else self.args

    def fdiff(self, argindex=1):
        x, slope = self.args
        if argindex == 1:
            return slope + (1 - slope) * step(x)
        return minimum(x, 0)

    def _eval_rewrite_as_exp(self, x, slope, **kwargs):
        return sp.Piecewise((x, x > 0), (slope * x, True))


class elu(Elementwise):
    """x for x > 0, exp(x) - 1 otherwise (torch.nn.functional.elu, alpha = 1). Its derivative
    ``exp(minimum(x, 0))`` is continuous (1 on both sides of 0), so there is no kink to choose at."""

    latex_name = r"\operatorname{elu}"
    text_name = "elu"
    numpy = "_elu({x})"
    helper = '''\
def _elu(x):
    """x where x > 0, else expm1(x); expm1 only of min(x, 0), so a large x never overflows."""
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
'''
    torch = staticmethod(lambda torch, x: torch.nn.functional.elu(x))

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.Zero
        if _folds(x):
            return x if x > 0 else sp.exp(x) - 1
        return None

    def fdiff(self, argindex=1):
        return sp.exp(minimum(self.args[0], 0))

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.Piecewise((x, x > 0), (sp.exp(x) - 1, True))


class erf(Elementwise):
    """The error function 2/sqrt(pi) * integral of exp(-t**2) from 0 to x (torch.erf); derivative
    2/sqrt(pi) exp(-x**2). NumPy has no erf: the generated module computes it with math.erf."""

    latex_name = r"\operatorname{erf}"
    text_name = "erf"
    numpy = "_erf({x})"
    helper = '''\
def _erf(x):
    """erf elementwise by the standard library's math.erf (NumPy has no erf): within an ulp, as torch.erf.
    It costs about 0.1 s per million elements, some 80 times np.exp."""
    import math
    x = np.asarray(x)
    dtype = x.dtype if x.dtype.kind == "f" else np.float64  # a float32 array stays float32
    return np.fromiter(map(math.erf, x.ravel().tolist()), dtype, x.size).reshape(x.shape)
'''
    torch = staticmethod(lambda torch, x: torch.erf(x))

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.Zero
        if _folds(x):
            return sp.erf(x).evalf()
        return None

    def fdiff(self, argindex=1):
        return 2 / sp.sqrt(sp.pi) * sp.exp(-self.args[0] ** 2)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.erf(x)


class gelu(Elementwise):
    """x Phi(x) = x/2 (1 + erf(x/sqrt(2))), the exact form (torch.nn.functional.gelu's default);
    derivative Phi(x) + x phi(x) = (1 + erf(x/sqrt(2)))/2 + x exp(-x**2/2)/sqrt(2 pi)."""

    latex_name = r"\operatorname{gelu}"
    text_name = "gelu"
    numpy = "_gelu({x})"
    helper = '''\
def _gelu(x):
    """x/2 erfc(-x/sqrt(2)) by math.erfc: the exact GELU, without the cancellation in 1 + erf(x/sqrt(2))
    for x << 0 (about 0.1 s per million elements, as math.erf)."""
    import math
    x = np.asarray(x)
    dtype = x.dtype if x.dtype.kind == "f" else np.float64  # a float32 array stays float32
    flat = x.ravel()
    tail = np.fromiter(map(math.erfc, (-flat / math.sqrt(2.0)).tolist()), dtype, flat.size)
    return (0.5 * flat * tail).reshape(x.shape)
'''
    torch = staticmethod(lambda torch, x: torch.nn.functional.gelu(x))

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.Zero
        if _folds(x):
            return (x / 2 * (1 + sp.erf(x / sp.sqrt(2)))).evalf()
        return None

    def fdiff(self, argindex=1):
        x = self.args[0]
        return (1 + erf(x / sp.sqrt(2))) / 2 + x * sp.exp(-x ** 2 / 2) / sp.sqrt(2 * sp.pi)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return x / 2 * (1 + sp.erf(x / sp.sqrt(2)))


class silu(Elementwise):
    """x sigmoid(x), also called swish (torch.nn.functional.silu); derivative
    sigmoid(x) (1 + x (1 - sigmoid(x)))."""

    latex_name = r"\operatorname{silu}"
    text_name = "silu"
    numpy = "_silu({x})"
    helper = '''\
def _silu(x):
    """x sigmoid(x); exp(-x) overflows to inf for x < -709, giving exactly 0 (warning suppressed)."""
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-x))
'''
    torch = staticmethod(lambda torch, x: torch.nn.functional.silu(x))

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.Zero
        if _folds(x):
            return x / (1 + sp.exp(-x))
        return None

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 + self.args[0] * (1 - s))

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return x / (1 + sp.exp(-x))


class log1p(Elementwise):
    """log(1 + x), accurate also for tiny x (np.log1p, torch.log1p); derivative 1/(1 + x); x > -1."""

    latex_name = r"\operatorname{log1p}"
    text_name = "log1p"
    numpy = "np.log1p({x})"
    torch = staticmethod(lambda torch, x: torch.log1p(x))

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.Zero
        if _folds(x) or (x.is_Number and x <= -1):  # log(0), log of a negative: SymPy's value, refused as such
            return sp.log(1 + x)
        return None

    def fdiff(self, argindex=1):
        return 1 / (1 + self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.log(1 + x)


class expm1(Elementwise):
    """exp(x) - 1, accurate also for tiny x (np.expm1, torch.expm1); derivative exp(x)."""

    latex_name = r"\operatorname{expm1}"
    text_name = "expm1"
    numpy = "np.expm1({x})"
    torch = staticmethod(lambda torch, x: torch.expm1(x))

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.Zero
        if _folds(x):
            return sp.exp(x) - 1
        return None

    def fdiff(self, argindex=1):
        return sp.exp(self.args[0])

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.exp(x) - 1


class _Extremum(Elementwise):
    """maximum and minimum: one rule, the sign turned (``sense``). The derivative by a is
    ``(1 + sense sign(a - b))/2``: 1 for the argument chosen, 0 for the other, and at a tie each argument
    gets half, as torch.maximum's and torch.minimum's gradients."""

    nargs = 2
    arguments = ("a", "b")
    sense = 1  # +1: the larger argument is chosen, -1: the smaller
    sympy_form = sp.Max  # the same function in SymPy's terms, for numbers and for exact evaluation

    @classmethod
    def eval(cls, a, b):
        if a == b:
            return a
        if a.is_Number and b.is_Number:
            return cls.sympy_form(a, b)
        return None

    def fdiff(self, argindex=1):
        a, b = self.args
        chosen = self.sense * sp.sign(a - b)
        return (1 + chosen) / 2 if argindex == 1 else (1 - chosen) / 2

    def _eval_rewrite_as_exp(self, a, b, **kwargs):
        return self.sympy_form(a, b)


class maximum(_Extremum):
    """The larger of a and b (np.maximum, torch.maximum). Its derivative by a is ``(1 + sign(a - b))/2``:
    1 where a > b, 0 where a < b, and at a tie each argument gets half, as torch.maximum's gradient."""

    latex_name = r"\max"
    text_name = "maximum"
    numpy = "np.maximum({a}, {b})"
    torch = staticmethod(lambda torch, a, b: torch.maximum(a, b))


class minimum(_Extremum):
    """The smaller of a and b (np.minimum, torch.minimum). Its derivative by a is ``(1 - sign(a - b))/2``:
    1 where a < b, 0 where a > b, and at a tie each argument gets half, as torch.minimum's gradient."""

    latex_name = r"\min"
    text_name = "minimum"
    numpy = "np.minimum({a}, {b})"
    torch = staticmethod(lambda torch, a, b: torch.minimum(a, b))
    sense = -1
    sympy_form = sp.Min


class clip(Elementwise):
    """x limited to [lo, hi] (np.clip, torch.clamp); lo and hi may be numbers or expressions, lo <= hi.

    Derivatives, with step(0) = 0: by x ``1 - step(lo - x) - step(x - hi)``, 1 on the closed interval
    (at a boundary too, as torch.clamp's gradient); by lo ``step(lo - x)``, by hi ``step(x - hi)`` (so at
    a boundary the gradient goes to x, not to the bound). Where lo > hi the value is hi, as in NumPy and
    PyTorch, but these derivatives assume lo <= hi: numbers lo > hi are refused.
    """

    nargs = 3
    latex_name = r"\operatorname{clip}"
    text_name = "clip"
    numpy = "np.clip({x}, {lo}, {hi})"
    arguments = ("x", "lo", "hi")

    @staticmethod
    def torch(torch, x, lo, hi):
        # torch.clamp's backward does not reduce a broadcast bound (a fixed lo against per-sample x fails with
        # "output with shape [1, 1, 1] doesn't match the broadcast shape [5, 1, 1]"): broadcast first
        return torch.clamp(*torch.broadcast_tensors(x, lo, hi))

    @classmethod
    def eval(cls, x, lo, hi):
        if lo.is_Number and hi.is_Number:
            if lo > hi:
                raise ValueError(f"clip(x, lo, hi) needs lo <= hi, got lo = {lo} and hi = {hi}")
            if x.is_Number:
                return sp.Min(sp.Max(x, lo), hi)
        return None

    def fdiff(self, argindex=1):
        x, lo, hi = self.args
        return {1: 1 - step(lo - x) - step(x - hi), 2: step(lo - x), 3: step(x - hi)}[argindex]

    def _eval_rewrite_as_exp(self, x, lo, hi, **kwargs):
        return sp.Min(sp.Max(x, lo), hi)


#: SymPy's own sine and cosine (np.sin, torch.sin), exported under these names as the classes above are.
sin, cos = sp.sin, sp.cos


#: Functions a model may call, by the name used in model files and in the Python API.
#: Tensor operations (sum, mean, softmax, logsumexp) are added by :mod:`symbackprop.tensor`.
FUNCTIONS: dict[str, type[sp.Function] | object] = {
    "sigmoid": sigmoid,
    "softplus": softplus,
    "relu": relu,
    "step": step,
    "tanh": sp.tanh,
    "exp": sp.exp,
    "log": sp.log,
    "sqrt": sp.sqrt,
    "abs": sp.Abs,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "gelu": gelu,
    "silu": silu,
    "erf": erf,
    "sin": sp.sin,
    "cos": sp.cos,
    "log1p": log1p,
    "expm1": expm1,
    "maximum": maximum,
    "minimum": minimum,
    "clip": clip,
}

def prime_names(func: type) -> tuple[str, str] | None:
    """(LaTeX, text) name under which ``f'(x)`` is written, or None where a prime would not read well."""
    if issubclass(func, Elementwise):
        return func.latex_name, func.text_name
    return {sp.tanh: (r"\tanh", "tanh"), sp.exp: (r"\exp", "exp"), sp.log: (r"\log", "log"),
            sp.sin: (r"\sin", "sin"), sp.cos: (r"\cos", "cos")}.get(func)


#: Conventions at points without a derivative, stated (LaTeX, text) in every derivation that meets them.
CONVENTIONS = {
    sp.Abs: (r"\frac{d}{dx}\left|x\right| = \operatorname{sign}(x),\ \operatorname{sign}(0) = 0",
             "d|x|/dx = sign(x), sign(0) = 0 (a subgradient)"),
    relu: (r"\operatorname{relu}'(0) = 0", "relu'(0) = 0 (a subgradient)"),
    step: (r"\operatorname{step}(0) = 0,\ \operatorname{step}'(x) = 0", "step(0) = 0, step'(x) = 0"),
    sp.sign: (r"\operatorname{sign}'(x) = 0", "sign'(x) = 0 (also at 0)"),
    leaky_relu: (r"\frac{\partial}{\partial x} \operatorname{leaky\_relu}(x, s) = s \text{ at } x = 0",
                 "d/dx leaky_relu(x, s) = s at x = 0 (the left derivative, as torch)"),
    maximum: (r"\frac{\partial}{\partial a} \max(a, b) = \frac{1 + \operatorname{sign}(a - b)}{2}"
              r" \text{ (at a tie each argument gets half)}",
              "d/da maximum(a, b) = (1 + sign(a - b))/2 (at a tie each argument gets half, as torch)"),
    minimum: (r"\frac{\partial}{\partial a} \min(a, b) = \frac{1 - \operatorname{sign}(a - b)}{2}"
              r" \text{ (at a tie each argument gets half)}",
              "d/da minimum(a, b) = (1 - sign(a - b))/2 (at a tie each argument gets half, as torch)"),
    clip: (r"\frac{\partial}{\partial x} \operatorname{clip}(x, l, h) = 1 \text{ for } l \leq x \leq h"
           r" \text{ (boundaries included)},\ \frac{\partial}{\partial l} = \operatorname{step}(l - x),\ "
           r"\frac{\partial}{\partial h} = \operatorname{step}(x - h)",
           "d/dx clip(x, lo, hi) = 1 for lo <= x <= hi (boundaries included, as torch.clamp), "
           "d/dlo = step(lo - x), d/dhi = step(x - hi)"),
}
