"""Elementwise activation functions as SymPy ``Function`` classes.

Each class keeps, side by side, everything the tool needs to know about one function:

* ``eval``: exact values SymPy may fold (``sigmoid(0) = 1/2``);
* ``fdiff``: the local derivative, used by the chain rule in :mod:`symbackprop.derive`;
* ``latex_name``: how the function is written in a derivation (``\\sigma``);
* ``numpy``: a numerically stable NumPy expression (``{x}`` is the argument), and ``helper``, the source
  of a small function the generated module defines when the expression needs more than one line;
* ``numpy_into`` (optional): the same function written into an existing array ``{out}`` (which may be
  ``{x}`` itself; ``{x}`` is a call argument there), for blocked in-place code
  (:mod:`symbackprop.inplace`), and ``helper_into``, its helper; without it, blocked code evaluates
  ``numpy`` into a new array;
* ``numpy_into_negative`` (optional): the same into ``{out}`` from ``{minus_x}``, the argument negated,
  and ``helper_into_negative``, its helper: blocked code computes an argument read only by this function
  negated where that costs nothing (``-w*x - b``), saving the pass that negates it (the sigmoid's
  ``exp(-x)``);
* ``torch``: the same function in PyTorch, ``torch(torch_module, x)``, used only to cross-check
  gradients (so this module never imports PyTorch).

Adding an activation is one new class here plus one line in :data:`FUNCTIONS`.
SymPy's own ``exp``, ``log``, ``tanh``, ``sqrt`` and ``Abs`` are used as they are (their derivatives and
simplifications are SymPy's); the printers know how to write them.
"""
from __future__ import annotations

import sympy as sp


class Elementwise(sp.Function):
    """A function of one argument applied elementwise to scalars, vectors and matrices."""

    nargs = 1
    is_real = True
    latex_name: str = ""
    text_name: str = ""
    numpy: str = ""
    helper: str | None = None
    numpy_into: str = ""
    helper_into: str | None = None
    numpy_into_negative: str = ""
    helper_into_negative: str | None = None

    @staticmethod
    def torch(torch, x):  # pragma: no cover - every subclass gives its own
        raise NotImplementedError

    def _latex(self, printer, exp=None):
        arg = self.args[0]
        inner = printer._print(arg)
        wrapped = f"({inner})" if arg.is_Symbol else rf"\left({inner}\right)"
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
}

def prime_names(func: type) -> tuple[str, str] | None:
    """(LaTeX, text) name under which ``f'(x)`` is written, or None where a prime would not read well."""
    if issubclass(func, Elementwise):
        return func.latex_name, func.text_name
    return {sp.tanh: (r"\tanh", "tanh"), sp.exp: (r"\exp", "exp"), sp.log: (r"\log", "log")}.get(func)


#: Conventions at points without a derivative, stated (LaTeX, text) in every derivation that meets them.
CONVENTIONS = {
    sp.Abs: (r"\frac{d}{dx}\left|x\right| = \operatorname{sign}(x),\ \operatorname{sign}(0) = 0",
             "d|x|/dx = sign(x), sign(0) = 0 (a subgradient)"),
    relu: (r"\operatorname{relu}'(0) = 0", "relu'(0) = 0 (a subgradient)"),
    step: (r"\operatorname{step}(0) = 0,\ \operatorname{step}'(x) = 0", "step(0) = 0, step'(x) = 0"),
    sp.sign: (r"\operatorname{sign}'(x) = 0", "sign'(x) = 0 (also at 0)"),
}
