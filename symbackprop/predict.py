"""Using trained parameters: a node's value for every sample (``predict``), and loss and accuracy on
data sets (``evaluate``).

Prediction needs only the inputs the node depends on (no labels to predict a class). Its output is a
CSV file with the node's columns named as data columns are (``p[0]``, ``p[1]``, ...; see
:mod:`symbackprop.data`), or a .npz file with one array named like the node, shape ``(N, *shape)``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .compile import CompiledGradient
from .data import csv_columns, sample_count
from .files import atomic_write, write_text_atomically
from .graph import Graph, UserError
from .train import ArrayGradients

OUTPUT_FORMATS = (".csv", ".npz")


def needed_inputs(graph: Graph, node: str) -> list[str]:
    """The inputs whose values ``node`` depends on, directly or through other nodes, in declaration order."""
    needed, stack = set(), [node]
    while stack:
        name = stack.pop()
        for used in graph.dependencies(name):
            if used not in needed:
                needed.add(used)
                stack.append(used)
    return [q.name for q in graph.input_list if q.name in needed]


def check_node(graph: Graph, node: str | None, where: str) -> str:
    """``node`` if it names a node (or the loss) of ``graph``; else a one-line error listing them."""
    nodes = [q.name for q in graph.computed]
    if node is None:
        raise UserError(f"{where}: no node to predict: give --node NAME (one of {', '.join(nodes)}), "
                        "or set predict in the model's [train] table")
    if node not in nodes:
        raise UserError(f"{where}: '{node}' is not a node of the model (nodes: {', '.join(nodes)})")
    return node


def predict(compiled: CompiledGradient, params: dict[str, np.ndarray], data: dict[str, np.ndarray],
            node: str) -> np.ndarray:
    """The value of ``node`` for every sample of ``data``: shape ``(N, *declared shape)``.

    ``data`` needs only the inputs of :func:`needed_inputs`; the forward pass gets zeros for the others
    (their values cannot reach ``node``).
    """
    graph = compiled.derivation.graph
    n = sample_count(data)
    full = {q.name: data[q.name] if q.name in data else np.zeros((n, *q.shape)) for q in graph.input_list}
    with np.errstate(all="ignore"):
        values = compiled.forward(params, full)
    q = graph[node]
    out = np.broadcast_to(np.asarray(values[node], dtype=np.float64), (n, *q.canonical_shape)).reshape((n, *q.shape))
    bad = ~np.isfinite(out.reshape(n, -1)).all(axis=1)
    if bad.any():
        raise UserError(f"node '{node}' is not finite for sample {int(np.argmax(bad))} (row index, from 0)")
    return out


def predictions_csv(node: str, values: np.ndarray) -> str:
    """CSV text: a header of the node's columns (``p[0],p[1]``), then one row per sample (full precision)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(csv_columns(node, values.shape[1:]))
    for row in values.reshape(len(values), -1):
        writer.writerow([repr(float(v)) for v in row])
    return out.getvalue()


def write_predictions(path: str | Path, node: str, values: np.ndarray) -> None:
    """Write predictions to a .csv (:func:`predictions_csv`) or .npz (one array named ``node``) file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        write_text_atomically(path, predictions_csv(node, values))
    elif suffix == ".npz":
        atomic_write(path, lambda f: np.savez(f, **{node: values}), binary=True)
    else:
        raise UserError(f"{path}: unknown output format '{path.suffix}' (use .csv or .npz)")


def evaluate_sets(compiled: CompiledGradient, params: dict[str, np.ndarray],
                  sets: list[tuple[str, dict[str, np.ndarray]]], predict_node: str | None = None,
                  target: str | None = None) -> list[tuple[str, int, dict[str, float]]]:
    """``(label, samples, {"loss": ..., "accuracy": ...})`` for each ``(label, data)``: the mean loss
    (and accuracy with a ``predict``/``target`` pair), computed as training computes its history."""
    return [(label, sample_count(data), ArrayGradients(compiled, data, predict_node, target).metrics(params))
            for label, data in sets]
