"""Parameter files: one ``.npz`` array per parameter name, in the parameter's declared shape.

``train --save-params FILE.npz`` writes them (with ``--epochs 0``: the initial values), ``train
--init-params``, ``predict`` and ``evaluate`` read them. Reading checks everything before anything is
computed, with one-line errors naming the file and the parameter: every parameter present and no other
name, the declared shape (a scalar is a 0-d array), numbers (float64 after reading), all finite.
Parameters trained in float32 (``train --dtype float32``) are written as float32 arrays: the file records
the precision they were trained in (and float64 reading is exact).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import npz_arrays
from .files import atomic_write
from .graph import Graph, UserError


def float_array(value) -> np.ndarray:
    """``value`` as an array of its own float type (float32 or float64); anything else as float64: the
    precision a parameter is stored in (here and in checkpoints)."""
    a = np.asarray(value)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def save_params(path: str | Path, params: dict[str, np.ndarray], graph: Graph) -> None:
    """Write ``params`` to ``path`` (.npz), one array per parameter in its declared shape: float32 if the
    parameter is float32, else float64."""
    arrays = {q.name: np.reshape(float_array(params[q.name]), q.shape) for q in graph.params}
    atomic_write(Path(path), lambda f: np.savez(f, **arrays), binary=True)


def load_params(path: str | Path, graph: Graph) -> dict[str, np.ndarray]:
    """Parameters from a .npz file, checked against ``graph`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such parameter file")
    arrays = npz_arrays(path, "parameter ")
    names = [q.name for q in graph.params]
    extra = sorted(set(arrays) - set(names))
    if extra:
        raise UserError(f"{path}: '{extra[0]}' is not a parameter of '{graph.name}' "
                        f"(its parameters: {', '.join(names)})")
    params = {}
    for q in graph.params:
        if q.name not in arrays:
            raise UserError(f"{path}: no array for parameter '{q.name}' (the file has {', '.join(arrays) or 'none'})")
        value = arrays[q.name]
        if value.dtype.kind not in "biuf":
            raise UserError(f"{path}: parameter '{q.name}' is not numeric (dtype {value.dtype})")
        if value.shape != q.shape:
            raise UserError(f"{path}: parameter '{q.name}' has shape {list(value.shape)}, "
                            f"the model declares {list(q.shape)}")
        value = value.astype(np.float64)
        if not np.all(np.isfinite(value)):
            bad = value.reshape(-1)[~np.isfinite(value.reshape(-1))][0]
            raise UserError(f"{path}: parameter '{q.name}' holds {bad} (parameters must be finite numbers)")
        params[q.name] = value
    return params
