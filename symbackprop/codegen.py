"""Write a gradient program as a standalone, readable Python module that needs only NumPy.

The module follows the contract of DESIGN.md: ``loss_and_grad(params, data) -> (loss, grads)`` with a
leading batch axis on every input, the mean loss over the batch, and one gradient per parameter in the
parameter's shape; ``forward(params, data)`` returns every node's value. Each backward line is
preceded by the chain-rule step it computes.

Both functions first check their arguments against the declared shapes (``_arrays``: a missing or unknown
name, a wrong shape or a missing batch axis is a ``ValueError`` naming the array, its shape and the shape
expected; one check per array, whatever N is). In the shape-checked mode (``check_shapes=True``, default
from the environment variable ``SYMBACKPROP_CHECK_SHAPES=1``, which the test suite sets) every assignment
is followed by ``_check_shape``, which stops at the first array whose shape is not the one the derivation
inferred, naming the line, the variable and both shapes: a wrong broadcast fails where it happens instead
of producing numbers.

``dtype`` (``"float64"``, the default, or ``"float32"``) is the module's constant ``DTYPE``: ``_arrays``
converts parameters and inputs to it, and every array the code creates from nothing (``np.zeros``,
``np.full``, ``np.ones``) is made in it, so a float32 module computes in float32 throughout (Python numbers
in the formulas are NumPy's weak scalars and do not upcast).
"""
from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Sequence

import sympy as sp

from . import __version__
from .codeprint import HELPERS, NumPyBatchPrinter
from .functions import Elementwise
from .graph import UserError
from .program import Program, batch_mean
from .steps import Adjoint


#: Environment variable giving the default of ``check_shapes`` (``1`` turns the shape-checked mode on).
CHECK_SHAPES_VARIABLE = "SYMBACKPROP_CHECK_SHAPES"


#: The floating-point types generated code can compute in; the first is the default.
DTYPES = ("float64", "float32")


def check_dtype(dtype) -> str:
    """The name of ``dtype`` (``"float64"`` or ``"float32"``; ``np.float32`` and ``np.dtype("float32")`` are
    accepted as ``"float32"``) if generated code can compute in it, else a one-line error."""
    name = dtype if isinstance(dtype, str) else getattr(dtype, "__name__", None) or getattr(dtype, "name", None)
    if name not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not supported (use {' or '.join(DTYPES)})")
    return name


def shape_checks_default() -> bool:
    """Whether generated code checks every assignment's shape unless told otherwise (the test suite sets it)."""
    return os.environ.get(CHECK_SHAPES_VARIABLE, "0").strip() not in ("", "0")


#: The helpers generated code always has. (No comprehensions: symbackprop.distributed tells an unedited
#: module by comparing its functions' code objects, and those of comprehensions never compare equal.)
ARRAYS_HELPER = '''\
def _arrays(params, data):
    """The parameters and inputs as arrays of DTYPE, and N, checked against PARAMS and INPUTS.

    Parameters come out aligned and C-contiguous, inputs aligned (a copy only where they are not): NumPy
    copies an unaligned operand of matmul into a C-ordered buffer, so an unaligned or Fortran-ordered W
    would reach BLAS as another layout of W.T, another kernel, and at N = 1 results 1 ulp apart. Arrays
    unpickled by Dask often lie at odd addresses; with this, the numbers depend on the values alone.

    A missing or unknown name, a shape other than the declared one, an input without its leading batch
    axis, or inputs with different numbers of samples raise ValueError naming the array, the shape it has
    and the shape expected. One check per array, whatever the batch size.
    """
    arrays = {}
    for given, declared, kind in ((params, PARAMS, "parameter"), (data, INPUTS, "input")):
        if not isinstance(given, Mapping):
            raise ValueError(f"the {kind}s must be a dict from name to array, got {type(given).__name__}")
        if given.keys() != declared.keys():
            _name_error(given, declared, kind)
        for name, shape in declared.items():
            try:
                arrays[name] = value = np.asarray(given[name], dtype=DTYPE)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{kind} {name!r} is not an array of numbers ({e})") from None
            flags = value.flags
            if not flags.aligned or (kind == "parameter" and not flags.c_contiguous):
                arrays[name] = value = np.array(value, order="C" if kind == "parameter" else "K")
            if kind == "parameter" and value.shape != shape:
                raise ValueError(f"parameter {name!r} has shape {value.shape}, expected {shape}")
            if kind == "input" and (value.ndim != len(shape) + 1 or value.shape[1:] != shape):
                raise ValueError(f"input {name!r} has shape {value.shape}, expected {_batch_shape(shape)}: "
                                 f"N samples along a leading batch axis, each of shape {shape}")
    N, first = None, None
    for name in INPUTS:
        n = arrays[name].shape[0]
        if N is None:
            N, first = n, name
        elif n != N:
            raise ValueError(f"input {name!r} has {n} samples but input {first!r} has {N} (the inputs of one "
                             "batch need the same number of samples N)")
    if N == 0:
        raise ValueError(f"input {first!r} has no samples (N = 0)")
    return arrays, 1 if N is None else N


def _name_error(given, declared, kind):
    for name in given:
        if name not in declared:
            raise ValueError(f"unknown {kind} {name!r} (the model's {kind}s: {', '.join(declared) or 'none'})")
    for name, shape in declared.items():
        if name not in given:
            expected = shape if kind == "parameter" else _batch_shape(shape)
            raise ValueError(f"{kind} {name!r} is missing (expected an array of shape {expected})")


def _batch_shape(shape):
    return "(N, " + ", ".join(map(str, shape)) + ")" if shape else "(N,)"
'''

CHECK_SHAPE_HELPER = '''\
def _check_shape(name, value, shape, N=None):
    """Shape-checked mode: the array just assigned must have the shape the derivation inferred for it,
    (N, *shape) for a value per sample, and be of DTYPE (a Python number is fine: NumPy does not let it
    upcast an array). Otherwise stop, naming the line, the variable and both shapes (or dtypes)."""
    expected = shape if N is None else (N, *shape)
    wrong_dtype = isinstance(value, (np.ndarray, np.generic)) and value.dtype != DTYPE
    if np.shape(value) != expected or wrong_dtype:
        caller = sys._getframe(1)
        line = caller.f_lineno - 1
        text = linecache.getline(caller.f_code.co_filename, line).strip()
        where = f"at line {line} of {caller.f_code.co_filename} ({text})"
        if wrong_dtype:
            raise AssertionError(f"dtype check failed {where}: {name} is {value.dtype}, but the module "
                                 f"computes in {np.dtype(DTYPE)}")
        inferred = str(shape) if N is None else f"{_batch_shape(shape)} with N = {N}"
        raise AssertionError(f"shape check failed {where}: "
                             f"{name} has shape {np.shape(value)}, but the derivation inferred {inferred}")
'''


def variable_names(program: Program) -> dict[sp.Symbol, str]:
    """A Python name for every symbol: user names as declared, adjoints as ``dL_dz``, all distinct."""
    names: dict[sp.Symbol, str] = {}
    taken: set[str] = set()
    for q in program.inputs + program.params + program.constants + program.nodes:
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

    def __init__(self, program: Program, source: str | None = None, check_shapes: bool = False,
                 dtype: str = "float64", blocked: bool = False, block: int | None = None):
        self.program = program
        self.dtype = check_dtype(dtype)
        self.source = source
        self.check_shapes = check_shapes
        #: blocked in-place ``loss_and_grad`` (symbackprop.blocked) in blocks of ``block`` samples, whenever
        #: something varies over the batch
        self.blocked = blocked and bool(program.batched)
        self.block = block
        canonical = {q.name: q.canonical_shape for q in program.params + program.inputs}
        #: the shape of every symbol the code assigns (a gradient's is its parameter's)
        self.shapes = {**program.shapes, **{sym: canonical[name] for name, sym in program.gradients.items()}}
        self.names = variable_names(program)
        self.printer = NumPyBatchPrinter(program.shapes, program.batched, self.names)
        self.indent = "    "

    def assign(self, a) -> list[str]:
        target = self.names[a.target]
        if isinstance(a.expr, batch_mean) and a.expr.args[0] == 0:
            shape = self.shapes[a.target]
            rhs = f"np.zeros({shape!r}, dtype=DTYPE)" if shape else "0.0"
        else:
            rhs = self.printer.assigned(a.expr)
        lines = _comment(a.comment, self.indent) if a.comment else []
        return lines + [f"{self.indent}{target} = {rhs}"] + self.shape_check(
            target, self.shapes[a.target], a.target in self.program.batched)

    def shape_check(self, name: str, shape: tuple, batched: bool) -> list[str]:
        """In the shape-checked mode, the line that checks the array just assigned to ``name``: ``shape``,
        after the batch axis if ``batched``."""
        if not self.check_shapes:
            return []
        return [f'{self.indent}_check_shape("{name}", {name}, {shape!r}{", N" if batched else ""})']

    def unpack(self, blocked: bool = False) -> list[str]:
        """Parameters and inputs as arrays of DTYPE, reshaped where the code computes with another shape.

        A parameter declared ``(n, 1)`` is computed with as the vector ``(n,)``, one declared ``(1,)`` as a
        scalar (see :func:`symbackprop.tensor.canonical_shape`); the gradients go back to the declared shapes.
        In blocked code (``blocked``) the inputs stay in ``arrays``, reshaped there once, and each block
        takes its slice of them (:mod:`symbackprop.blocked`).
        """
        i = self.indent
        lines = [f"{i}arrays, N = _arrays(params, data)"]
        for q in self.program.params + self.program.inputs:
            value = f'arrays["{q.name}"]'
            reshaped = q.canonical_shape != q.shape
            if reshaped:
                shape = q.canonical_shape if q.kind == "param" else (-1, *q.canonical_shape)
                value += f".reshape({shape!r})"
            if q.kind == "param" or not blocked:
                lines.append(f"{i}{q.name} = {value}")
            elif reshaped:
                lines.append(f'{i}arrays["{q.name}"] = {value}')
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
        return lines + self.return_lines()

    def return_lines(self) -> list[str]:
        """The end of ``loss_and_grad``: the gradients in their parameters' declared shapes, returned."""
        p, i = self.program, self.indent
        grads = []
        declared = {q.name: q.shape for q in p.params + p.inputs}
        for name, sym in sorted(p.gradients.items(), key=lambda kv: list(self.names.values()).index(kv[0])):
            value, shape = self.names[sym], declared[name]
            if shape == ():
                value = f"float({value})"
            elif p.shapes[sym] == ():  # declared (1,) or (1, 1): the gradient may be a number, such as 0.0
                value = f"np.reshape(np.asarray({value}, dtype=DTYPE), {shape!r})"
            elif p.shapes[sym] != shape:
                value = f"np.reshape({value}, {shape!r})"
            grads.append(f'"{name}": {value}')
        return [f"{i}grads = {{{', '.join(grads)}}}", f"{i}return loss, grads"]

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
            lines.append(f"{i}{self.names[a.target]} = {self.printer.assigned(expr)}")
            lines += self.shape_check(self.names[a.target], self.printer.shape(expr), self.printer.batched(expr))
            if a.target in returned:
                shape = p.shapes.get(a.target) or self.printer.shape(expr)
                values.append(f'"{a.target.name}": np.broadcast_to(np.asarray({self.names[a.target]}, '
                              f"dtype=DTYPE), (N, *{tuple(shape)!r}))")
        return lines + [f"{i}return {{{', '.join(values)}}}"]

    def constant_lines(self) -> str:
        """The model's named constants as module-level scalars of DTYPE (``lam = DTYPE(0.01)``), read by every
        function. (A Python float would do for ``lam * W``, but ``np.sqrt(lam)`` of one is a float64 that turns
        a float32 module's arrays into float64.)"""
        if not self.program.constants:
            return ""
        return "\n# constants of the model\n" + "".join(f"{q.name} = DTYPE({q.value!r})\n"
                                                           for q in self.program.constants)

    def helpers(self) -> list[str]:
        used = sorted(self.printer.helpers_used)
        sources = {"_" + cls.__name__: cls.helper for cls in _elementwise_classes() if cls.helper}
        sources.update({"_" + cls.__name__ + "_into": cls.helper_into for cls in _elementwise_classes()
                        if cls.helper_into})
        sources.update({"_" + cls.__name__ + "_of_negative_into": cls.helper_into_negative
                        for cls in _elementwise_classes() if cls.helper_into_negative})
        sources.update(HELPERS)
        if "_add_block" in used:
            from .blocked import ADD_BLOCK_HELPER
            sources["_add_block"] = ADD_BLOCK_HELPER
        return [sources[name] for name in used]

    def write(self) -> str:
        p = self.program
        forward = self.forward_function()
        if self.blocked:
            from .blocked import BlockedFunction, default_block
            block = self.block or default_block(p)
            loss_and_grad = BlockedFunction(self).lines()  # printing records the helpers used
        else:
            loss_and_grad = self.loss_and_grad_function()
        origin = f"from {docstring_safe(self.source)}" if self.source else "from a Python declaration"
        imports = "import linecache\nimport sys\nfrom collections.abc import Mapping" if self.check_shapes else \
            "from collections.abc import Mapping"
        checked = ("\nShape-checked: every assignment checks its array's shape (_check_shape), for tests.\n"
                   if self.check_shapes else "")
        shapes = lambda qs: "{" + ", ".join(f'"{q.name}": {q.shape!r}' for q in qs) + "}"
        header = f'''\
"""Loss and gradients of '{docstring_safe(p.name)}', generated by symbackprop {__version__} {origin}.

It needs only NumPy; read it, edit it, ship it.

    loss, grads = loss_and_grad(params, data)

params: parameter name -> array in the parameter's shape (PARAMS below).
data:   input name -> array with a leading batch axis, shape (N, *shape) (INPUTS below).
loss:   the mean of the per-sample loss {p.loss} over the N samples.
grads:  parameter name -> gradient of that mean, in the parameter's shape.
A missing or unknown name or a wrong shape raises ValueError.
Computes in {self.dtype} (DTYPE): parameters and inputs are converted to it, and every array is of it.
{checked}"""
{imports}

import numpy as np

PARAMS = {shapes(p.params)}
INPUTS = {shapes(p.inputs)}
DTYPE = np.{self.dtype}
'''
        if self.blocked:
            header += f"BLOCK = {block}  # samples per block in loss_and_grad (a larger batch runs block by block)\n"
        header += self.constant_lines()
        checks = [ARRAYS_HELPER] + ([CHECK_SHAPE_HELPER] if self.check_shapes else [])
        parts = [header] + checks + self.helpers() + ["\n".join(forward) + "\n", "\n".join(loss_and_grad) + "\n"]
        return "\n\n".join(part.rstrip("\n") + "\n" for part in parts)


def _elementwise_classes():
    stack, seen = [Elementwise], []
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen


def generate_module(program: Program, source: str | None = None, check_shapes: bool | None = None,
                    dtype: str = "float64", blocked: bool = True, block: int | None = None) -> str:
    """Python source of a module computing ``program``; ``source`` names the model file in its header.

    ``dtype``: ``"float64"`` or ``"float32"``, the type the module computes in (its ``DTYPE``).

    ``check_shapes``: every assignment checks its array's shape against the derivation's (for tests; an
    ``AssertionError`` names the line, the variable and both shapes). ``None`` takes
    :func:`shape_checks_default`, i.e. the environment variable ``SYMBACKPROP_CHECK_SHAPES``.
    ``blocked``: ``loss_and_grad`` runs in blocks of ``block`` samples (default
    :func:`symbackprop.blocked.default_block`: 65,536 values per buffer, at least 2,048 samples), in place (:mod:`symbackprop.blocked`); ``False`` gives the
    whole-array form, one line per assignment over all N samples (equal to float rounding). A model
    without inputs (nothing varies over a batch) always gets the whole-array form.
    """
    if check_shapes is None:
        check_shapes = shape_checks_default()
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise ValueError(f"block must be a whole number of samples, at least 1, got {block!r}")
    return ModuleWriter(program, source, check_shapes, dtype, blocked, block).write()


def generate_traced_module(program: Program, shown: Sequence = (), source: str | None = None,
                           check_shapes: bool | None = None, dtype: str = "float64") -> str:
    """The module of :func:`generate_module` with ``trace(params, data)`` added (see
    :meth:`ModuleWriter.trace_function`): every intermediate value, from the same printed program.
    ``check_shapes`` and ``dtype`` as for :func:`generate_module` (the trace's assignments are checked too)."""
    writer = ModuleWriter(program, source, shape_checks_default() if check_shapes is None else check_shapes, dtype)
    trace = writer.trace_function(shown)  # printed first, so that the module defines the helpers it uses
    return writer.write() + "\n\n" + "\n".join(trace) + "\n"
