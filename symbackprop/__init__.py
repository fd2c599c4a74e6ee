"""symbackprop: backpropagation made visible, exact and fast.

Declare a network and its loss as SymPy expressions, derive every dL/dw by the chain rule in reverse
mode, print each step as LaTeX, and turn the gradients into NumPy code.

    from symbackprop import Graph, derive, compile_gradient, sigmoid
    g = Graph("neuron")
    x, y = g.inputs("x y")
    w, b = g.param("w", init=0.5), g.param("b")
    z = g.node("z", w * x + b)
    a = g.node("a", sigmoid(z))
    g.loss("L", (a - y) ** 2 / 2)
    print(derive(g).to("latex"))
"""
__version__ = "0.1.0"

from .functions import (clip, cos, elu, erf, expm1, gelu, leaky_relu, log1p, maximum, minimum, relu,  # noqa: E402
                        sigmoid, silu, sin, softplus, step)
from .graph import Graph, ModelError, TensorSymbol  # noqa: E402
from .tensor import ShapeError, logsumexp, matmul, mean, softmax, sum_, transpose  # noqa: E402
from .indexing import concat, index, slice_  # noqa: E402
from .derive import Derivation, derive  # noqa: E402
from .compile import CompiledGradient, compile_gradient  # noqa: E402

__all__ = [
    "Graph", "ModelError", "TensorSymbol", "ShapeError", "Derivation", "derive", "CompiledGradient",
    "compile_gradient", "sigmoid", "softplus", "relu", "step", "softmax", "logsumexp", "sum_", "mean",
    "matmul", "transpose", "concat", "index", "slice_", "leaky_relu", "elu", "gelu", "silu", "erf", "sin", "cos",
    "log1p", "expm1", "maximum", "minimum", "clip",
]
