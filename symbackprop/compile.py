"""Turn a derivation into a NumPy callable: the generated module, loaded in memory.

The callable and the standalone module of :mod:`symbackprop.codegen` are the same source, so they give
the same floats. The source is produced by our own printer from a validated graph: names are plain
identifiers checked by :func:`symbackprop.graph.check_name`, numbers are printed by SymPy, and functions
come from our registry; no text from a model file reaches it verbatim.
"""
from __future__ import annotations

import linecache
import types
from dataclasses import dataclass
from typing import Any, Callable

from .codegen import generate_module, generate_traced_module
from .derive import Derivation, derive
from .graph import Graph


@dataclass
class CompiledGradient:
    """``loss_and_grad(params, data) -> (loss, grads)`` and ``forward(params, data)`` for one model."""

    loss_and_grad: Callable[[dict, dict], tuple[float, dict[str, Any]]]
    forward: Callable[[dict, dict], dict[str, Any]]
    source: str
    derivation: Derivation
    dtype: str = "float64"  # what the callables compute in and return ("float64" or "float32")

    def __call__(self, params: dict, data: dict):
        return self.loss_and_grad(params, data)


def load_source(source: str, name: str) -> types.ModuleType:
    """Run generated module source as a module (registered with linecache, so tracebacks show lines)."""
    filename = f"<symbackprop generated: {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType("symbackprop_generated")
    code = compile(source, filename, "exec")
    exec(code, module.__dict__)  # our printer's output, never user text (see the module docstring)
    return module


def evaluate_printed(expression: str, namespace: dict) -> Any:
    """Evaluate one expression printed by :class:`~symbackprop.codeprint.NumPyBatchPrinter` in ``namespace``.

    The same trust as :func:`load_source`: the text is our printer's output for a validated graph.
    Used to find which operation inside a node first gave a non-finite value.
    """
    return eval(compile(expression, "<symbackprop printed expression>", "eval"), namespace)


def compile_gradient(model: Graph | Derivation, source: str | None = None,
                     check_shapes: bool | None = None, dtype: str = "float64", blocked: bool = True,
                     block: int | None = None) -> CompiledGradient:
    """Compile the gradient of a graph (or of an existing derivation) into a NumPy callable.

    Called with a missing or unknown name or a wrong shape, the callable raises ``ValueError`` naming the
    array and both shapes. ``check_shapes=True`` makes every assignment check its array's shape (for
    tests; see :func:`symbackprop.codegen.generate_module`, whose default it shares). ``dtype``
    (``"float64"`` or ``"float32"``) is what the callable computes in: parameters and inputs are converted to
    it, and every array it returns is of it (the loss and scalar gradients are Python floats). ``blocked`` and
    ``block``: ``loss_and_grad`` in blocks of samples, in place (the default), or whole-array
    (``blocked=False``), as for :func:`~symbackprop.codegen.generate_module`.
    """
    derivation = model if isinstance(model, Derivation) else derive(model)
    text = generate_module(derivation.program(), source, check_shapes, dtype, blocked, block)
    module = load_source(text, derivation.graph.name)
    return CompiledGradient(module.loss_and_grad, module.forward, text, derivation, module.DTYPE.__name__)


def compile_trace(derivation: Derivation, shown=(), check_shapes: bool | None = None, dtype: str = "float64"
                  ) -> Callable[[dict, dict], dict[str, Any]]:
    """``trace(params, data) -> {name: array (N, *shape)}``: every node, adjoint and per-sample gradient of
    the compiled gradient program, and the ``shown`` assignments (see :func:`generate_traced_module`),
    computed in ``dtype``."""
    text = generate_traced_module(derivation.program(), shown, check_shapes=check_shapes, dtype=dtype)
    return load_source(text, derivation.graph.name).trace
