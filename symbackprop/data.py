"""Training data: CSV and .npz files, a synthetic teacher set, and scikit-learn's bundled data sets.

Every input of the model gets one float64 array with a leading batch axis, ``(N, *shape)``. Bad data is
refused before training starts with a one-line :class:`DataError` naming the file, the column or array,
and the row, so a run never stops half way through because of a bad cell.

CSV: a header row names the columns. A scalar input ``x`` is the column ``x``; a vector input ``x`` of
shape [3] is the columns ``x[0]``, ``x[1]``, ``x[2]``; a matrix input ``M`` of shape [2, 2] is
``"M[0,0]"``, ``"M[0,1]"``, ... (row-major; quoted, as the csv module writes them). Brackets cannot
clash with a scalar input's name (names have no brackets), which ``x_0`` could. Columns no input
uses are ignored with a :class:`DataWarning`. Errors give the file's line number (the header is line 1).

.npz: one array per input, named like it, of shape ``(N, *shape)``; errors give the row index.

The column layout (:class:`InputColumns`, :func:`check_header`, :func:`arrays_from_columns`) is shared
with the partitioned Parquet/CSV sources of :mod:`symbackprop.partitions`, so every table format names
its columns the same way and refuses bad cells with the same words.

The model file's ``[data]`` table (see docs/training.md) gives a default data set: a ``file``, a
``[data.synthetic]`` teacher set, or ``sklearn = "iris" | "digits" | "breast_cancer"``; and optionally
a held-out split with ``test_fraction`` and ``seed``.
"""
from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .extras import require
from .graph import Graph, ModelError, UserError
from .initializers import initial_params, initial_value, param_rng

ONEHOT_TOLERANCE = 1e-6
MAX_SAMPLES = 10_000_000


class DataError(UserError):
    """Data that cannot be trained on: says which file, column or array, and row."""


class DataWarning(UserWarning):
    """Data that can be used, with something the user may want to know (an ignored column)."""


@dataclass
class Dataset:
    """Arrays for training, and optionally a held-out part for evaluation."""

    train: dict[str, np.ndarray]
    held_out: dict[str, np.ndarray] | None = None
    description: str = ""

    @property
    def size(self) -> int:
        return sample_count(self.train)

    @property
    def held_out_size(self) -> int:
        return sample_count(self.held_out) if self.held_out else 0


def sample_count(arrays: dict[str, np.ndarray]) -> int:
    """N, the length of the batch axis (1 for a model without inputs)."""
    return len(next(iter(arrays.values()))) if arrays else 1


def _shape_text(shape: tuple) -> str:
    return "(N" + "".join(f", {n}" for n in shape) + ")"


def _inputs(graph: Graph | Sequence[InputColumns], names: list[str] | None) -> list:
    """The inputs of a graph (or of a table layout), restricted to ``names`` when given."""
    every = graph.input_list if isinstance(graph, Graph) else graph
    return [q for q in every if names is None or q.name in names]


def check_arrays(arrays: dict[str, Any], graph: Graph | Sequence[InputColumns], source: str,
                 row_name=lambda i: f"row {i}", inputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """Every input present, numeric, shape (N, *shape), one N, finite, one-hot rows summing to one.

    ``graph`` gives the inputs: a graph, or its :func:`table_layout` (what a cluster's workers get).
    ``row_name`` turns a 0-based row index into the words an error uses (a CSV gives its line number).
    ``inputs`` restricts the check to those inputs (prediction needs no labels); default: all.
    """
    out: dict[str, np.ndarray] = {}
    first: str | None = None
    for q in _inputs(graph, inputs):
        if q.name not in arrays:
            raise DataError(f"{source}: no data for input '{q.name}'")
        raw = np.asarray(arrays[q.name])
        if raw.dtype.kind not in "biuf":
            raise DataError(f"{source}: '{q.name}' is not numeric (dtype {raw.dtype})")
        a = raw.astype(np.float64)
        if a.ndim == 0 or a.shape[1:] != q.shape:
            raise DataError(f"{source}: '{q.name}' has shape {a.shape}, expected {_shape_text(q.shape)}")
        if len(a) == 0:
            raise DataError(f"{source}: '{q.name}' has no rows")
        if first is not None and len(a) != len(out[first]):
            raise DataError(f"{source}: '{q.name}' has {len(a)} rows, but '{first}' has {len(out[first])}")
        first = first or q.name
        flat = a.reshape(len(a), -1)
        bad = ~np.isfinite(flat).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            value = flat[row][~np.isfinite(flat[row])][0]
            raise DataError(f"{source}: '{q.name}' {row_name(row)} holds {value} (data must be finite numbers)")
        if q.onehot and q.shape:
            sums = flat.sum(axis=1)
            off = np.abs(sums - 1) > ONEHOT_TOLERANCE
            if off.any():
                row = int(np.argmax(off))
                raise DataError(f"{source}: one-hot input '{q.name}' {row_name(row)} sums to {sums[row]:g}, not 1")
        out[q.name] = a
    return out


# ---- tables: one column per element of an input -----------------------------------------------------------
def csv_columns(name: str, shape: tuple) -> list[str]:
    """The CSV columns of one input, in row-major order."""
    if not shape:
        return [name]
    if len(shape) == 1:
        return [f"{name}[{i}]" for i in range(shape[0])]
    return [f"{name}[{i},{j}]" for i in range(shape[0]) for j in range(shape[1])]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class InputColumns:
    """One input as a table holds it: its name, shape, one-hot flag, and the columns of its elements.

    Plain data without SymPy, so that it can be sent to the workers of a cluster, which read tables
    and check them without the model.
    """

    name: str
    shape: tuple[int, ...]
    onehot: bool = False

    @property
    def columns(self) -> list[str]:
        return csv_columns(self.name, self.shape)


def table_layout(model: Graph | Mapping[str, tuple] | Sequence[InputColumns]) -> list[InputColumns]:
    """The inputs of a graph, or of a generated module's ``INPUTS`` (name -> shape), as table columns.

    A layout given as such is returned as it is.
    """
    if isinstance(model, Graph):
        return [InputColumns(q.name, tuple(q.shape), q.onehot) for q in model.input_list]
    if isinstance(model, Mapping):
        return [InputColumns(name, tuple(shape)) for name, shape in model.items()]
    return list(model)


def check_header(header: Sequence[str], layout: Sequence[InputColumns], source: str) -> list[str]:
    """Refuse a column named twice or an input's missing column; return the columns no input uses."""
    duplicate = next((h for i, h in enumerate(header) if h in header[:i]), None)
    if duplicate is not None:
        raise DataError(f"{source}: column '{duplicate}' appears twice in the header")
    present = set(header)
    for q in layout:
        missing = [c for c in q.columns if c not in present]
        if missing:
            expected = q.columns[0] if len(q.columns) == 1 else f"{q.columns[0]} ... {q.columns[-1]}"
            raise DataError(f"{source}: missing column '{missing[0]}' for input '{q.name}' (expected {expected})")
    used = {c for q in layout for c in q.columns}
    return [h for h in header if h not in used]


def warn_ignored_columns(source: str, ignored: Sequence[str], stacklevel: int = 3) -> None:
    """A :class:`DataWarning` naming the columns no input uses (at most five), if there are any."""
    if ignored:
        warnings.warn(f"{source}: ignoring column{'s' if len(ignored) > 1 else ''} "
                      f"{', '.join(repr(c) for c in ignored[:5])}{' ...' if len(ignored) > 5 else ''} "
                      "(no input has that name)", DataWarning, stacklevel=stacklevel)


def arrays_from_columns(columns: Mapping[str, Any], layout: Sequence[InputColumns], source: str,
                        row_name: Callable[[int], str] = lambda i: f"row index {i}") -> dict[str, np.ndarray]:
    """Each input's float64 array ``(N, *shape)`` from its columns (then :func:`check_arrays`).

    A column that is not numeric, or the first cell that is not a finite number (earliest row, then
    the inputs' column order), is refused naming the column: ``row index 7, column 'x[1]': nan ...``.
    """
    values: dict[str, np.ndarray] = {}
    first_bad: tuple[int, str] | None = None
    for c in (c for q in layout for c in q.columns):
        raw = np.asarray(columns[c])
        if raw.dtype.kind not in "biuf":
            raise DataError(f"{source}: column '{c}' is not numeric (dtype {raw.dtype})")
        values[c] = raw.astype(np.float64, copy=False)
        bad = ~np.isfinite(values[c])
        if bad.any() and (first_bad is None or int(np.argmax(bad)) < first_bad[0]):
            first_bad = (int(np.argmax(bad)), c)
    if first_bad is not None:
        row, c = first_bad
        raise DataError(f"{source}: {row_name(row)}, column '{c}': {values[c][row]} is not a finite number")
    arrays = {}
    for q in layout:
        stacked = np.stack([values[c] for c in q.columns], axis=-1) if q.shape else values[q.columns[0]]
        arrays[q.name] = stacked.reshape((len(stacked),) + q.shape)
    return check_arrays(arrays, layout, source, row_name)


# ---- files ----------------------------------------------------------------------------------------------
def read_csv(path: Path, graph: Graph | Sequence[InputColumns], inputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read a CSV file whose header names the inputs' columns (see the module docstring)."""
    source = str(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = [(number, row) for number, row in enumerate(csv.reader(f), 1) if any(c.strip() for c in row)]
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 text (byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{source}: not a readable CSV file ({e})") from None
    if not lines:
        raise DataError(f"{source}: empty file (expected a header row naming the inputs)")
    header = [h.strip() for h in lines[0][1]]
    every = table_layout(graph)
    layout = [q for q in every if inputs is None or q.name in inputs]
    if all(_is_number(h) for h in header if h):
        example = ",".join(c for q in layout for c in q.columns[:2])
        raise DataError(f"{source}: line 1 holds numbers ({','.join(header[:3])}{',...' if len(header) > 3 else ''}), "
                        f"but it must be a header naming the columns, such as {example}")
    check_header(header, layout, source)
    body = lines[1:]
    if not body:
        raise DataError(f"{source}: no data rows after the header")
    known = {c for q in every for c in q.columns}
    warn_ignored_columns(source, [h for h in header if h not in known])
    used = {c for q in layout for c in q.columns}
    index = {h: i for i, h in enumerate(header)}
    values = np.empty((len(body), len(header)))
    for r, (number, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(f"{source}: line {number} has {len(row)} cells, but the header has {len(header)}")
        for column in used:
            cell = row[index[column]].strip()
            try:
                value = float(cell)
            except ValueError:
                raise DataError(f"{source}: line {number}, column '{column}': {cell[:20]!r} is not a number") from None
            if not math.isfinite(value):
                raise DataError(f"{source}: line {number}, column '{column}': {cell} is not a finite number")
            values[r, index[column]] = value
    return arrays_from_columns({c: values[:, index[c]] for c in used}, layout, source,
                               row_name=lambda i: f"line {body[i][0]}")


def npz_arrays(path: str | Path, kind: str = "") -> dict[str, np.ndarray]:
    """Every array of a .npz archive (no pickles); a one-line DataError when it cannot be read as one."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError("a single .npy array, not an archive of named arrays")
            return {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz {kind}file ({' '.join(str(e).split())[:80]})") from None


def read_npz(path: Path, graph: Graph, inputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read a .npz file holding one array per input, shape (N, *shape)."""
    arrays = npz_arrays(path)
    if not arrays:
        raise DataError(f"{path}: empty file (no arrays)")
    ignored = sorted(set(arrays) - {q.name for q in graph.input_list})
    if ignored:
        warnings.warn(f"{path}: ignoring array{'s' if len(ignored) > 1 else ''} {', '.join(map(repr, ignored[:5]))} "
                      "(no input has that name)", DataWarning, stacklevel=2)
    return check_arrays(arrays, graph, str(path), row_name=lambda i: f"row index {i}", inputs=inputs)


def load_data(path: str | Path, graph: Graph, inputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read a CSV or .npz data file for ``graph``'s inputs: input name -> float64 array (N, *shape).

    ``inputs`` names the inputs needed (default: all); the others may be absent."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    readers = {".npz": read_npz, ".csv": read_csv}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unknown data format '{path.suffix}' (use .csv or .npz)")
    return reader(path, graph, inputs)


# ---- the model file's [data] table ------------------------------------------------------------------
DATA_KEYS = {"file", "synthetic", "sklearn", "features", "labels", "test_fraction", "seed"}
SYNTHETIC_KEYS = {"samples", "seed", "teacher", "targets"}
SKLEARN_SETS = {"iris": "load_iris", "digits": "load_digits", "breast_cancer": "load_breast_cancer"}


def _check_keys(table: Any, allowed: set[str], where: str) -> dict:
    if not isinstance(table, dict):
        raise ModelError(where, f"expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ModelError(f"{where} {unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return table


def _integer(table: dict, key: str, default: int, low: int, high: int, where: str) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ModelError(f"{where} {key}", f"must be a whole number from {low} to {high}, got {value!r}")
    return value


def _input_name(table: dict, key: str, graph: Graph, where: str) -> str:
    name = table.get(key)
    if not isinstance(name, str) or name not in graph.quantities or graph[name].kind != "input":
        inputs = ", ".join(q.name for q in graph.input_list) or "none"
        raise ModelError(f"{where} {key}", f"must name an input of the model (inputs: {inputs}), got {name!r}")
    return name


def synthetic(graph: Graph, spec: Any, where: str = "[data.synthetic]") -> dict[str, np.ndarray]:
    """Inputs drawn from N(0, 1) (one-hot inputs: a random class), targets computed by the model itself.

    ``teacher`` gives parameter values in the same forms as ``init`` (numbers, lists, initialiser names);
    parameters it leaves out keep their initial values. ``targets`` maps an input to the node whose value,
    with the teacher's parameters, becomes that input's data.
    """
    from .compile import compile_gradient
    _check_keys(spec, SYNTHETIC_KEYS, where)
    n = _integer(spec, "samples", 256, 1, MAX_SAMPLES, where)
    seed = _integer(spec, "seed", 0, 0, 2**32 - 1, where)
    teacher, targets = spec.get("teacher", {}), spec.get("targets", {})
    for key, value in (("teacher", teacher), ("targets", targets)):
        if not isinstance(value, dict):
            raise ModelError(f"{where} {key}", f"must be a table, got {type(value).__name__}")
    params = initial_params(graph, seed)
    for name, value in teacher.items():
        if name not in params:
            raise ModelError(f"{where} teacher", f"'{name}' is not a parameter")
        params[name] = initial_value(value, graph[name].shape, param_rng(seed, name), f"{where} teacher {name}")
    for inp, node in targets.items():
        if inp not in graph.quantities or graph[inp].kind != "input":
            raise ModelError(f"{where} targets", f"'{inp}' is not an input")
        if not isinstance(node, str) or node not in graph.quantities or graph[node].kind not in ("node", "loss"):
            raise ModelError(f"{where} targets {inp}", f"{node!r} is not a node of the model")
        if graph[node].canonical_shape != graph[inp].canonical_shape:
            raise ModelError(f"{where} targets {inp}", f"node '{node}' has shape {list(graph[node].shape)}, "
                                                      f"input '{inp}' has shape {list(graph[inp].shape)}")
    rng = np.random.default_rng(seed)
    data = {}
    for q in graph.input_list:
        if q.onehot and q.shape:
            data[q.name] = np.eye(q.shape[-1])[rng.integers(0, q.shape[-1], size=(n,) + q.shape[:-1])]
        else:
            data[q.name] = rng.normal(size=(n,) + q.shape)
    if targets:
        with np.errstate(all="ignore"):
            values = compile_gradient(graph).forward(params, data)
        for inp, node in targets.items():
            value = np.broadcast_to(np.asarray(values[node], dtype=np.float64), (n, *graph[node].canonical_shape))
            data[inp] = value.reshape((n,) + graph[inp].shape).copy()
    return check_arrays(data, graph, where)


def _standardise(x: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """Zero mean and unit deviation per feature, with the training part's statistics only."""
    mean, std = x[train_rows].mean(axis=0), x[train_rows].std(axis=0)
    std[std == 0] = 1.0  # constant features (digits' blank border pixels) stay 0
    return (x - mean) / std


def from_sklearn(graph: Graph, table: dict, where: str = "[data]") -> tuple[dict[str, np.ndarray], str]:
    """One of scikit-learn's bundled data sets (no download): raw features and encoded labels."""
    name = table["sklearn"]
    if name not in SKLEARN_SETS:
        raise ModelError(f"{where} sklearn", f"unknown data set {name!r} (choose from {', '.join(SKLEARN_SETS)})")
    x_name = _input_name({"features": "x", **table}, "features", graph, where)
    y_name = _input_name({"labels": "y", **table}, "labels", graph, where)
    datasets = require("sklearn.datasets", "data", f"[data] sklearn = \"{name}\"", "scikit-learn")
    bunch = getattr(datasets, SKLEARN_SETS[name])()
    x, labels = bunch.data.astype(np.float64), bunch.target.astype(int)
    classes = int(labels.max()) + 1
    if graph[x_name].shape != (x.shape[1],):
        raise ModelError(f"{where} features", f"'{name}' has {x.shape[1]} features, so input '{x_name}' needs "
                                              f"shape [{x.shape[1]}], not {list(graph[x_name].shape)}")
    y_shape = graph[y_name].shape
    if y_shape == (classes,):
        y = np.eye(classes)[labels]
    elif y_shape == () and classes == 2:
        y = labels.astype(np.float64)
    else:
        scalar = " or be a scalar (0/1)" if classes == 2 else ""
        raise ModelError(f"{where} labels", f"'{name}' has {classes} classes, so input '{y_name}' needs shape "
                                            f"[{classes}] (one-hot){scalar}, not {list(y_shape)}")
    return {x_name: x, y_name: y}, x_name


def _split(arrays: dict[str, np.ndarray], fraction: float, seed: int, where: str):
    """Rows for training and for the held-out part, from a seeded shuffle."""
    n = sample_count(arrays)
    n_test = int(round(fraction * n))
    if fraction > 0 and not 1 <= n_test < n:
        raise ModelError(f"{where} test_fraction", f"{fraction} of {n} samples leaves no training or no test rows")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def model_data(graph: Graph, table: dict | None, path: str | Path | None = None,
               source: str | None = None) -> Dataset:
    """The data to train on: the file at ``path`` if given, else the model's ``[data]`` table.

    ``source`` is the model file: errors name it, and ``[data] file`` is read relative to it. The
    table's ``test_fraction`` and ``seed`` hold out a part of whichever data is used.
    """
    where = f"{source}: [data]" if source else "[data]"
    table = _check_keys(table or {}, DATA_KEYS, where)
    sources = [k for k in ("file", "synthetic", "sklearn") if k in table]
    if len(sources) > 1:
        raise ModelError(f"{where} {sources[1]}", f"give one data source, not both '{sources[0]}' and '{sources[1]}'")
    for key in ("features", "labels"):
        if key in table and "sklearn" not in table:
            raise ModelError(f"{where} {key}", "only used with sklearn = \"...\"")
    fraction = table.get("test_fraction", 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ModelError(f"{where} test_fraction", f"must be a number from 0 up to (not including) 1, got {fraction!r}")
    seed = _integer(table, "seed", 0, 0, 2**32 - 1, where)
    standardise = None
    if path is not None:
        arrays, description = load_data(path, graph), str(path)
    elif "file" in table:
        if not isinstance(table["file"], str):
            raise ModelError(f"{where} file", "must be a file name in quotes")
        file = Path(table["file"])
        if source and not file.is_absolute():
            file = Path(source).parent / file
        arrays, description = load_data(file, graph), str(file)
    elif "synthetic" in table:
        arrays = synthetic(graph, table["synthetic"], f"{where}.synthetic" if source else "[data.synthetic]")
        description = "synthetic (teacher) data"
    elif "sklearn" in table:
        arrays, standardise = from_sklearn(graph, table, where)
        description = f"scikit-learn's {table['sklearn']} data set"
    elif not graph.input_list:
        return Dataset({}, None, "no inputs")
    else:
        raise DataError("no data: give --data FILE (.csv or .npz), or a [data] table in the model file")
    train_rows, test_rows = _split(arrays, float(fraction), seed, where)
    if standardise is not None:
        arrays = {**arrays, standardise: _standardise(arrays[standardise], train_rows)}
        arrays = check_arrays(arrays, graph, description)
    pick = lambda rows: {k: v[rows] for k, v in arrays.items()}
    if len(test_rows) == 0:
        return Dataset(arrays, None, description)
    return Dataset(pick(train_rows), pick(test_rows), description)
