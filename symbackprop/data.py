"""Training data: CSV and .npz files, a synthetic teacher set, and scikit-learn's bundled data sets.

Every input of the model gets one float64 array with a leading batch axis, ``(N, *shape)``. Bad data is
refused before training starts with a one-line :class:`DataError` naming the file, the column or array,
and the row.

CSV: a header row names the columns. A scalar input ``x`` is the column ``x``; a vector input ``x`` of
shape [3] is the columns ``x[0]``, ``x[1]``, ``x[2]``; a matrix input ``M`` of shape [2, 2] is
``M[0,0]``, ``M[0,1]``, ... Other columns are ignored.

The model file's ``[data]`` table gives a default data set:

* ``[data.synthetic]``: ``samples``, ``seed``, ``teacher`` (parameter values) and ``targets``
  (input name -> node name). Other inputs are drawn from N(0, 1); each target is the named node computed
  with the teacher's parameters.
* ``sklearn = "iris" | "digits" | "breast_cancer"`` with ``features`` (input name), ``labels`` (input
  name), optional ``test_fraction`` (held-out share) and ``seed``. Features are standardised with the
  training part's mean and deviation; labels are one-hot for a vector input, 0/1 for a scalar one.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .graph import Graph, ModelError, UserError


class DataError(UserError):
    """Data that cannot be trained on: says which file, column or array, and row."""


@dataclass
class Dataset:
    """Arrays for training, and optionally a held-out part for evaluation."""

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray] | None = None

    @property
    def size(self) -> int:
        return len(next(iter(self.train.values()))) if self.train else 1


def check_arrays(arrays: dict[str, Any], graph: Graph, source: str) -> dict[str, np.ndarray]:
    """Every input present, float64, shape (N, *shape), one N, finite, one-hot rows summing to one."""
    out: dict[str, np.ndarray] = {}
    n = None
    for q in graph.input_list:
        if q.name not in arrays:
            raise DataError(f"{source}: no data for input '{q.name}'")
        try:
            a = np.asarray(arrays[q.name], dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{source}: '{q.name}' is not numeric") from None
        if a.ndim == 0 or a.shape[1:] != q.shape:
            raise DataError(f"{source}: '{q.name}' has shape {a.shape}, expected (N, {', '.join(map(str, q.shape))})"
                            .replace(", )", ")"))
        if len(a) == 0:
            raise DataError(f"{source}: '{q.name}' has no rows")
        if n is not None and len(a) != n:
            raise DataError(f"{source}: '{q.name}' has {len(a)} rows, other inputs have {n}")
        n = len(a)
        bad = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            value = a.reshape(len(a), -1)[row][~np.isfinite(a.reshape(len(a), -1)[row])][0]
            raise DataError(f"{source}: '{q.name}' row {row} holds {value} (data must be finite)")
        if q.onehot:
            sums = a.reshape(len(a), -1).sum(axis=1)
            off = np.abs(sums - 1) > 1e-6
            if off.any():
                row = int(np.argmax(off))
                raise DataError(f"{source}: one-hot input '{q.name}' row {row} sums to {sums[row]:g}, not 1")
        out[q.name] = a
    return out


def csv_columns(name: str, shape: tuple) -> list[str]:
    if not shape:
        return [name]
    if len(shape) == 1:
        return [f"{name}[{i}]" for i in range(shape[0])]
    return [f"{name}[{i},{j}]" for i in range(shape[0]) for j in range(shape[1])]


def read_csv(path: Path, graph: Graph) -> dict[str, np.ndarray]:
    source = str(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{source}: empty file (expected a header row naming the inputs)")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    if not body:
        raise DataError(f"{source}: no data rows after the header")
    arrays = {}
    for q in graph.input_list:
        columns = csv_columns(q.name, q.shape)
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{source}: missing column '{missing[0]}' for input '{q.name}'")
        index = [header.index(c) for c in columns]
        values = np.empty((len(body), len(columns)))
        for r, row in enumerate(body):
            if len(row) != len(header):
                raise DataError(f"{source}: row {r + 1} has {len(row)} cells, the header has {len(header)}")
            for k, i in enumerate(index):
                try:
                    values[r, k] = float(row[i])
                except ValueError:
                    raise DataError(f"{source}: column '{columns[k]}' row {r + 1}: {row[i][:20]!r} is not a number") from None
                if not np.isfinite(values[r, k]):
                    raise DataError(f"{source}: column '{columns[k]}' row {r + 1} holds {row[i]} (data must be finite)")
        arrays[q.name] = values.reshape((len(body),) + q.shape)
    return check_arrays(arrays, graph, source)


def read_npz(path: Path, graph: Graph) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npz file ({' '.join(str(e).split())[:80]})") from None
    return check_arrays(arrays, graph, str(path))


def load_data(path: str | Path, graph: Graph) -> dict[str, np.ndarray]:
    """Read a CSV or .npz data file for ``graph``'s inputs."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".npz":
        return read_npz(path, graph)
    if path.suffix == ".csv":
        return read_csv(path, graph)
    raise DataError(f"{path}: unknown data format '{path.suffix}' (use .csv or .npz)")


def _keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ModelError(where, f"unknown key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


def synthetic(graph: Graph, spec: dict) -> dict[str, np.ndarray]:
    """Inputs from N(0, 1), targets computed by the model itself with the teacher's parameters."""
    from .compile import compile_gradient
    from .initializers import initial_params
    where = "[data.synthetic]"
    _keys(spec, {"samples", "seed", "teacher", "targets"}, where)
    n, seed = spec.get("samples", 256), spec.get("seed", 0)
    if not isinstance(n, int) or not 1 <= n <= 10_000_000 or not isinstance(seed, int):
        raise ModelError(where, "samples must be an integer from 1 to 10000000 and seed an integer")
    targets, teacher = spec.get("targets", {}), spec.get("teacher", {})
    if not isinstance(targets, dict) or not isinstance(teacher, dict):
        raise ModelError(where, "targets and teacher must be tables")
    for inp, node in targets.items():
        if inp not in graph.quantities or graph[inp].kind != "input":
            raise ModelError(f"{where} targets", f"'{inp}' is not an input")
        if node not in graph.quantities or graph[node].kind != "node" or graph[node].shape != graph[inp].shape:
            raise ModelError(f"{where} targets", f"'{node}' is not a node of the same shape as '{inp}'")
    rng = np.random.default_rng(seed)
    data = {q.name: rng.normal(size=(n,) + q.shape) for q in graph.input_list}
    params = initial_params(graph, seed)
    for name, value in teacher.items():
        if name not in params:
            raise ModelError(f"{where} teacher", f"'{name}' is not a parameter")
        params[name] = np.broadcast_to(np.asarray(value, dtype=np.float64), graph[name].shape).copy()
    if targets:
        values = compile_gradient(graph).forward(params, data)
        for inp, node in targets.items():
            data[inp] = np.asarray(values[node], dtype=np.float64)
    return check_arrays(data, graph, where)


SKLEARN_SETS = {"iris": "load_iris", "digits": "load_digits", "breast_cancer": "load_breast_cancer"}


def from_sklearn(graph: Graph, spec: dict) -> Dataset:
    """One of scikit-learn's bundled data sets (no download), standardised, with a held-out split."""
    where = "[data]"
    _keys(spec, {"sklearn", "features", "labels", "test_fraction", "seed"}, where)
    name = spec["sklearn"]
    if name not in SKLEARN_SETS:
        raise ModelError(f"{where} sklearn", f"unknown data set '{name}' (choose from {', '.join(SKLEARN_SETS)})")
    try:
        import sklearn.datasets
    except ImportError:
        raise DataError(f"the '{name}' example needs scikit-learn: pip install 'symbackprop[data]'") from None
    bunch = getattr(sklearn.datasets, SKLEARN_SETS[name])()
    x_name, y_name = spec.get("features", "x"), spec.get("labels", "y")
    for n in (x_name, y_name):
        if n not in graph.quantities or graph[n].kind != "input":
            raise ModelError(where, f"'{n}' is not an input of the model")
    X, labels = bunch.data.astype(np.float64), bunch.target
    classes = int(labels.max()) + 1
    y_shape = graph[y_name].shape
    Y = np.eye(classes)[labels] if y_shape == (classes,) else labels.astype(np.float64)
    if y_shape not in ((classes,), ()):
        raise ModelError(where, f"'{y_name}' must have shape [{classes}] (one-hot) or be a scalar")
    rng = np.random.default_rng(spec.get("seed", 0))
    order = rng.permutation(len(X))
    n_test = int(round(float(spec.get("test_fraction", 0.0)) * len(X)))
    test, train = order[:n_test], order[n_test:]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    std[std == 0] = 1.0
    X = (X - mean) / std
    source = f"sklearn:{name}"
    part = lambda idx: check_arrays({x_name: X[idx], y_name: Y[idx]}, graph, source)
    return Dataset(part(train), part(test) if n_test else None)


def model_data(graph: Graph, table: dict, path: str | Path | None = None) -> Dataset:
    """The data to train on: the file at ``path`` if given, else the model's ``[data]`` table."""
    if path is not None:
        return Dataset(load_data(path, graph))
    if "synthetic" in table:
        _keys(table, {"synthetic"}, "[data]")
        return Dataset(synthetic(graph, table["synthetic"]))
    if "sklearn" in table:
        return from_sklearn(graph, table)
    if not graph.input_list:
        return Dataset({})
    raise DataError("no data: give --data FILE (.csv or .npz), or a [data] table in the model file")
