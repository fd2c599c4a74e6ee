"""Write a gradient program as a standalone, readable Python module that needs only NumPy.

The module follows the contract of DESIGN.md: ``loss_and_grad(params, data) -> (loss, grads)`` with a
leading batch axis on every input, the mean loss over the batch, and one gradient per parameter in the
parameter's shape; ``forward(params, data)`` returns every node's value. Each backward line is
preceded by the chain-rule step it computes.
"""
from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

import sympy as sp

from . import __version__
from .codeprint import HELPERS, NumPyBatchPrinter
from .functions import Elementwise
from .program import Program, batch_mean
from .steps import Adjoint


def variable_names(program: Program) -> dict[sp.Symbol, str]:
    """A Python name for every symbol: user names as declared, adjoints as ``dL_dz``, all distinct."""
    names: dict[sp.Symbol, str] = {}
    taken: set[str] = set()
    for q in program.inputs + program.params + program.nodes:
        names[q.symbol] = q.name
        taken.add(q.name)
    for a in program.assignments:
        if a.target in names:
            continue
        base = f"d{a.target.loss}_d{a.target.of}" if isinstance(a.target, Adjoint) else a.target.name
        name = base
        while name in taken:
            name += "_"
        names[a.target] = name
        taken.add(name)
    return names


def docstring_safe(text: str, limit: int = 120) -> str:
    """Text that cannot end or escape the module docstring: printable ASCII without quotes or backslashes."""
    cleaned = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "?" for c in str(text))
    return cleaned[:limit]


def _comment(text: str, indent: str) -> list[str]:
    return [indent + "# " + line for line in textwrap.wrap(text, 96, break_long_words=False,
                                                             break_on_hyphens=False)]


class ModuleWriter:
    """Assembles the module's source from a program."""

    def __init__(self, program: Program, source: str | None = None):
        self.program = program
        self.source = source
        self.names = variable_names(program)
        self.printer = NumPyBatchPrinter(program.shapes, program.batched, self.names)
        self.indent = "    "

    def assign(self, a) -> list[str]:
        target = self.names[a.target]
        if isinstance(a.expr, batch_mean) and a.expr.args[0] == 0:
            shape = self.program.shapes[a.target]
            rhs = f"np.zeros({shape!r})" if shape else "0.0"
        else:
            rhs = self.printer.doprint(a.expr)
        lines = _comment(a.comment, self.indent) if a.comment else []
        return lines + [f"{self.indent}{target} = {rhs}"]

    def unpack(self) -> list[str]:
        """Parameters and inputs as float64 arrays, reshaped where the code computes with another shape.

        A parameter declared ``(n, 1)`` is computed with as the vector ``(n,)``, one declared ``(1,)`` as a
        scalar (see :func:`symbackprop.tensor.canonical_shape`); the gradients go back to the declared shapes.
        """
        i = self.indent
        lines = []
        for q in self.program.params + self.program.inputs:
            source = "params" if q.kind == "param" else "data"
            value = f'np.asarray({source}["{q.name}"], dtype=np.float64)'
            if q.canonical_shape != q.shape:
                shape = q.canonical_shape if q.kind == "param" else (-1, *q.canonical_shape)
                value += f".reshape({shape!r})"
            lines.append(f"{i}{q.name} = {value}")
        first = self.program.inputs[0].name if self.program.inputs else None
        lines.append(f"{i}N = {first}.shape[0]" if first else f"{i}N = 1")
        return lines

    def forward_function(self) -> list[str]:
        p, i = self.program, self.indent
        body = [line for a in p.section("forward") for line in self.assign(a)]
        values = []
        for q in p.nodes:
            value = q.name
            if q.symbol not in p.batched:  # the same for every sample: give it the batch axis all the same
                value = f"np.broadcast_to({value}, (N, *{q.canonical_shape!r}))"
            values.append(f'"{q.name}": {value}')
        return ["def forward(params, data):",
                f'{i}"""Every node\'s value for a batch: name -> array of shape (N, *node shape)."""',
                *self.unpack(), *body, f"{i}return {{{', '.join(values)}}}"]

    def loss_and_grad_function(self) -> list[str]:
        p, i = self.program, self.indent
        loss = self.names[p.loss]
        mean = f"np.mean({loss})" if p.loss in p.batched else loss
        forward = p.section("forward")
        backward = [a for a in p.assignments if a.section != "forward"]
        frees = self.frees(forward + backward)
        lines = ["def loss_and_grad(params, data):",
                 f'{i}"""Mean loss over the batch and its gradient for every parameter (in its shape)."""',
                 *self.unpack(), f"{i}# forward pass"]
        for k, a in enumerate(forward):
            lines += self.assign(a) + frees.get(k, [])
        lines += [f"{i}loss = float({mean})",
                  f"{i}# backward pass: adjoints dL/dv, from the loss back (each array is deleted after its",
                  f"{i}# last use, which keeps a deep network's working set small)"]
        for k, a in enumerate(backward, len(forward)):
            lines += self.assign(a) + frees.get(k, [])
        grads = []
        declared = {q.name: q.shape for q in p.params + p.inputs}
        for name, sym in sorted(p.gradients.items(), key=lambda kv: list(self.names.values()).index(kv[0])):
            value, shape = self.names[sym], declared[name]
            if shape == ():
                value = f"float({value})"
            elif p.shapes[sym] != shape:
                value = f"np.reshape({value}, {shape!r})"
            grads.append(f'"{name}": {value}')
        lines.append(f"{i}grads = {{{', '.join(grads)}}}")
        lines.append(f"{i}return loss, grads")
        return lines

    def frees(self, assignments: list) -> dict[int, list[str]]:
        """``del`` lines to place after the k-th assignment: the values it was the last to use.

        The loss (averaged after the forward pass) and the gradients (returned) are kept.
        """
        kept = {self.program.loss, *self.program.gradients.values()}
        targets = {a.target for a in assignments} - kept
        last_use: dict = {}
        for k, a in enumerate(assignments):
            for s in a.expr.free_symbols & targets:
                last_use[s] = k
        dead: dict[int, list[str]] = {}
        for s, k in last_use.items():
            dead.setdefault(k, []).append(self.names[s])
        return {k: [f"{self.indent}del {', '.join(sorted(names))}"] for k, names in dead.items()}

    def trace_function(self, shown: Sequence = ()) -> list[str]:
        """``trace(params, data)``: every value the program computes, by name, for each sample.

        The same assignments as ``loss_and_grad`` (none deleted), then the ``shown`` ones (the local
        derivatives a derivation shows, ``da/dz``). It returns every node, the per-sample loss, every
        adjoint (``"dL/dz"``), each gradient per sample (not its batch mean) and the shown values, each
        with the batch axis: shape (N, *shape).
        """
        p, i = self.program, self.indent
        taken = set(self.names.values())
        for a in shown:
            name = re.sub(r"\W", "_", a.target.name)
            while name in taken:
                name += "_"
            self.names[a.target] = name
            taken.add(name)
        returned = {q.symbol for q in p.nodes} | {a.target for a in shown} | {
            a.target for a in p.assignments if isinstance(a.target, Adjoint)}
        lines = ["def trace(params, data):",
                 f'{i}"""Every node, adjoint and per-sample gradient: name -> array of shape (N, *shape)."""',
                 *self.unpack()]
        values = []
        for a in [*p.assignments, *shown]:
            expr = a.expr.args[0] if isinstance(a.expr, batch_mean) else a.expr
            lines.append(f"{i}{self.names[a.target]} = {self.printer.doprint(expr)}")
            if a.target in returned:
                shape = p.shapes.get(a.target) or self.printer.shape(expr)
                values.append(f'"{a.target.name}": np.broadcast_to(np.asarray({self.names[a.target]}, '
                              f"dtype=np.float64), (N, *{tuple(shape)!r}))")
        return lines + [f"{i}return {{{', '.join(values)}}}"]

    def helpers(self) -> list[str]:
        used = sorted(self.printer.helpers_used)
        sources = {"_" + cls.__name__: cls.helper for cls in _elementwise_classes() if cls.helper}
        sources.update(HELPERS)
        return [sources[name] for name in used]

    def write(self) -> str:
        p = self.program
        forward = self.forward_function()
        loss_and_grad = self.loss_and_grad_function()  # printing records the helpers used
        origin = f"from {docstring_safe(self.source)}" if self.source else "from a Python declaration"
        shapes = lambda qs: "{" + ", ".join(f'"{q.name}": {q.shape!r}' for q in qs) + "}"
        header = f'''\
"""Loss and gradients of '{docstring_safe(p.name)}', generated by symbackprop {__version__} {origin}.

It needs only NumPy; read it, edit it, ship it.

    loss, grads = loss_and_grad(params, data)

params: parameter name -> array in the parameter's shape (PARAMS below).
data:   input name -> array with a leading batch axis, shape (N, *shape) (INPUTS below).
loss:   the mean of the per-sample loss {p.loss} over the N samples.
grads:  parameter name -> gradient of that mean, in the parameter's shape.
"""
import numpy as np

PARAMS = {shapes(p.params)}
INPUTS = {shapes(p.inputs)}
'''
        parts = [header] + self.helpers() + ["\n".join(forward) + "\n", "\n".join(loss_and_grad) + "\n"]
        return "\n\n".join(part.rstrip("\n") + "\n" for part in parts)


def _elementwise_classes():
    stack, seen = [Elementwise], []
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


def generate_module(program: Program, source: str | None = None) -> str:
    """Python source of a module computing ``program``; ``source`` names the model file in its header."""
    return ModuleWriter(program, source).write()


def generate_traced_module(program: Program, shown: Sequence = (), source: str | None = None) -> str:
    """The module of :func:`generate_module` with ``trace(params, data)`` added (see
    :meth:`ModuleWriter.trace_function`): every intermediate value, from the same printed program."""
    writer = ModuleWriter(program, source)
    trace = writer.trace_function(shown)  # printed first, so that the module defines the helpers it uses
    return writer.write() + "\n\n" + "\n".join(trace) + "\n"
