"""Gradient descent: w_new = w_old - eta * dL/dw, over mini-batches, with checkpoints and exact resume.

The update is plain SGD on the gradient of the batch-mean loss, with the symbolic gradient compiled
once. Mini-batches come from a shuffle per epoch drawn from a generator seeded by ``seed``; its state is
saved in every checkpoint, so a run stopped and resumed ends with the same bits as one that was not.

History: one row per epoch, epochs 1 to E; row k describes the parameters after epoch k, and
``TrainResult.initial`` the same for the initial parameters (epoch 0). ``loss`` is the mean loss over the
whole training set at those parameters (not the mean of the batch losses met on the way, which mixes
parameters of different steps); ``test_loss``, ``accuracy`` and ``test_accuracy`` are added when there
is held-out data or a ``predict``/``target`` pair.

A loss, gradient or parameter that stops being finite ends the run with :class:`TrainingDiverged`,
naming the epoch, the batch, and the first node that went non-finite with the function that did it
(``log of a non-positive value in node 'h'``); the last checkpoint, written before, stays as it was.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import sympy as sp

from .codeprint import NumPyBatchPrinter
from .compile import CompiledGradient, compile_gradient, evaluate_printed
from .data import Dataset, check_arrays, sample_count
from .files import atomic_write, write_text_atomically
from .graph import Graph, ModelError, UserError
from .initializers import initial_params

CHECKPOINT_FORMAT = 1


class TrainingDiverged(UserError):
    """The loss, a gradient or a parameter stopped being a finite number."""


@dataclass
class TrainResult:
    """The outcome of :func:`train`: final parameters and the per-epoch history."""

    params: dict[str, np.ndarray]
    history: list[dict[str, float]]  # one row per epoch, 1 to E
    initial: dict[str, float]  # the same row for the initial parameters (epoch 0)
    epochs: int = 0  # epochs completed in total, including those before a resume
    resumed_from: int | None = None

    @property
    def losses(self) -> list[float]:
        """The loss after each epoch, 1 to E."""
        return [row["loss"] for row in self.history]

    @property
    def initial_loss(self) -> float:
        return self.initial["loss"]

    @property
    def last(self) -> dict[str, float]:
        """The row of the final parameters (the initial row when no epoch ran)."""
        return self.history[-1] if self.history else self.initial

    @property
    def final_loss(self) -> float:
        return self.last["loss"]

    def loss_curve(self, title: str = "training loss") -> str:
        """The loss per epoch (and the held-out loss, if any) as an inline SVG chart, from epoch 0."""
        from .svg import line_chart
        rows = [self.initial, *self.history]
        series = {"loss": [r["loss"] for r in rows]}
        if any("test_loss" in r for r in rows):
            series["held-out loss"] = [r.get("test_loss") for r in rows]
        return line_chart([r["epoch"] for r in rows], series, title)

    def _repr_html_(self) -> str:
        """A notebook shows the result as a short summary and its loss curve."""
        import html
        first, last = self.initial, self.last
        cells = [("epochs", str(self.epochs)), ("loss", f"{first['loss']:.6g} \u2192 {last['loss']:.6g}")]
        for key, label in (("accuracy", "training accuracy"), ("test_accuracy", "held-out accuracy")):
            if key in last:
                cells.append((label, f"{last[key]:.2%}"))
        rows = "".join(f"<tr><th style=\"text-align:left;padding-right:1em\">{html.escape(k)}</th>"
                       f"<td>{html.escape(v)}</td></tr>" for k, v in cells)
        return f'<div class="symbackprop-train"><table>{rows}</table>{self.loss_curve()}</div>'


# ---- settings -------------------------------------------------------------------------------------------
TRAIN_KEYS = {"lr", "epochs", "batch_size", "seed", "predict", "target"}
DEFAULTS = {"lr": 0.1, "epochs": 100, "batch_size": None, "seed": 0, "predict": None, "target": None}


def train_settings(table: dict | None, graph: Graph, source: str | None = None, **given: Any) -> dict[str, Any]:
    """Settings from the options given (not None), then the model's ``[train]`` table, then DEFAULTS."""
    where = f"{source}: [train]" if source else "[train]"
    table = table or {}
    if not isinstance(table, dict):
        raise ModelError(where, "must be a table")
    unknown = sorted(set(table) - TRAIN_KEYS)
    if unknown:
        raise ModelError(f"{where} {unknown[0]}", f"unknown key (allowed: {', '.join(sorted(TRAIN_KEYS))})")
    s = {k: given[k] if given.get(k) is not None else table.get(k, DEFAULTS[k]) for k in DEFAULTS}
    check_settings(s["lr"], s["epochs"], s["batch_size"], s["seed"], where)
    for key, kinds in (("predict", ("node", "loss")), ("target", ("input",))):
        name = s[key]
        if name is not None and (not isinstance(name, str) or name not in graph.quantities
                                 or graph[name].kind not in kinds):
            raise ModelError(f"{where} {key}", f"must name {'a node' if key == 'predict' else 'an input'}, got {name!r}")
    if (s["predict"] is None) != (s["target"] is None):
        raise ModelError(where, "give both predict (a node) and target (an input) for accuracy, or neither")
    if s["predict"] is not None and graph[s["predict"]].canonical_shape != graph[s["target"]].canonical_shape:
        raise ModelError(f"{where} predict", f"node '{s['predict']}' and input '{s['target']}' differ in shape")
    return s


def check_settings(lr: Any, epochs: Any, batch_size: Any, seed: Any, where: str = "train") -> None:
    def whole(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not np.isfinite(lr) or lr <= 0:
        raise ModelError(f"{where} lr", f"the learning rate must be a positive number, got {lr!r}")
    if not whole(epochs) or epochs < 0:
        raise ModelError(f"{where} epochs", f"must be a whole number >= 0, got {epochs!r}")
    if batch_size is not None and (not whole(batch_size) or batch_size < 1):
        raise ModelError(f"{where} batch_size", f"must be a whole number >= 1, got {batch_size!r}")
    if not whole(seed) or not 0 <= seed < 2**32:
        raise ModelError(f"{where} seed", f"must be a whole number from 0 to 2**32 - 1, got {seed!r}")


# ---- evaluation -----------------------------------------------------------------------------------------
def accuracy(values: dict[str, np.ndarray], data: dict[str, np.ndarray], predict: str, target: str) -> float:
    """Share of samples whose class matches: argmax for vectors, a 0.5 threshold for scalars."""
    samples = lambda a: np.asarray(a).reshape(len(a), -1)  # one row per sample, whatever the shape
    pred, truth = samples(values[predict]), samples(data[target])
    if truth.shape[1] == 1:
        return float(np.mean((pred[:, 0] > 0.5) == (truth[:, 0] > 0.5)))
    return float(np.mean(pred.argmax(axis=1) == truth.argmax(axis=1)))


def evaluate(compiled: CompiledGradient, params: dict, data: dict, loss_name: str,
             predict: str | None = None, target: str | None = None, prefix: str = "") -> dict[str, float]:
    """Mean loss (and accuracy) over a whole data set at ``params``."""
    with np.errstate(all="ignore"):
        values = compiled.forward(params, data)
    loss = np.broadcast_to(np.asarray(values[loss_name], dtype=np.float64), (sample_count(data),))
    row = {f"{prefix}loss": float(np.mean(loss))}
    if predict is not None:
        row[f"{prefix}accuracy"] = accuracy(values, data, predict, target)
    return row


# ---- finding where a value went non-finite ------------------------------------------------------------------
_DESCRIPTIONS = {"log": "log of a non-positive value", "exp": "exp overflowed",
                 "sqrt": "sqrt of a negative value", "division": "division by zero",
                 "power": "a power overflowed or took a negative base", "overflow": "a power overflowed"}


def _operation(e: sp.Expr) -> str:
    if isinstance(e, sp.log):
        return "log"
    if isinstance(e, sp.exp) or e.is_Pow and e.base == sp.E:
        return "exp"
    if e.is_Pow and e.exp in (sp.S.Half, -sp.S.Half):
        return "sqrt"
    if e.is_Pow and e.exp.is_number and e.exp.is_negative:
        return "division"
    if e.is_Pow and e.exp.is_integer:
        return "overflow"
    if e.is_Pow:
        return "power"
    return type(e).__name__


def _batch_namespace(compiled: CompiledGradient, graph: Graph, params: dict, batch: dict, values: dict) -> dict:
    namespace = dict(compiled.loss_and_grad.__globals__)  # np and the helpers the module defines
    namespace.update({q.name: np.reshape(np.asarray(params[q.name], dtype=np.float64), q.canonical_shape)
                      for q in graph.params})
    namespace.update({q.name: np.reshape(batch[q.name], (-1, *q.canonical_shape)) for q in graph.input_list})
    namespace.update(values)
    namespace["N"] = sample_count(batch)
    return namespace


def explain_non_finite(compiled: CompiledGradient, params: dict, batch: dict, rows: np.ndarray) -> str:
    """Name the first node whose value is not finite, the operation that made it, and the data row."""
    graph = compiled.derivation.graph
    for name, value in params.items():
        if not np.all(np.isfinite(value)):
            return f"parameter '{name}' is {value if np.ndim(value) == 0 else 'not finite'}"
    with np.errstate(all="ignore"):
        values = compiled.forward(params, batch)
    first = next((q for q in graph.computed if not np.all(np.isfinite(values.get(q.name, 0.0)))), None)
    if first is None:
        return "every node is finite but a gradient is not (a derivative that is infinite here, such as sqrt at 0)"
    printer = NumPyBatchPrinter(graph.shapes, {graph.symbol(n) for n in graph.data_dependent()},
                                {q.symbol: q.name for q in graph.quantities.values()})
    namespace = _batch_namespace(compiled, graph, params, batch, values)
    culprit, where_bad = None, None
    with np.errstate(all="ignore"):
        for e in sp.postorder_traversal(first.expr):
            if e.is_Atom:
                continue
            try:
                v = np.asarray(evaluate_printed(printer.doprint(e), namespace))
            except Exception:  # a form the printer cannot show alone: keep the node-level answer
                continue
            if not np.all(np.isfinite(v)):
                culprit, where_bad = e, v
                break
    operation = _operation(culprit) if culprit is not None else ""
    what = _DESCRIPTIONS.get(operation, f"{operation or 'an operation'} gave a non-finite value")
    bad = where_bad if where_bad is not None else np.asarray(values[first.name])
    row = ""
    if bad.ndim >= 1 and len(bad) == len(rows) and first.name in graph.data_dependent():
        i = int(np.argmax(~np.isfinite(bad.reshape(len(bad), -1)).all(axis=1)))
        row = f", first at data row {int(rows[i])}"
    return f"{what} in node '{first.name}'{row}"


# ---- checkpoints ---------------------------------------------------------------------------------------------
def data_fingerprint(data: dict[str, np.ndarray]) -> str:
    """A hash of the training data, so a resume on other data is refused rather than silently inexact."""
    h = hashlib.sha256()
    for name in sorted(data):
        h.update(name.encode())
        h.update(np.ascontiguousarray(data[name], dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(path: Path, params: dict, epoch: int, rng: np.random.Generator, history: list,
                    config: dict) -> None:
    """Write parameters, epoch, generator state, history and run settings to ``path`` atomically."""
    arrays = {f"param/{k}": np.asarray(v, dtype=np.float64) for k, v in params.items()}
    arrays["epoch"] = np.array(epoch)
    arrays["rng_state"] = np.array(json.dumps(rng.bit_generator.state))
    arrays["history"] = np.array(json.dumps(history))
    arrays["config"] = np.array(json.dumps(config))
    atomic_write(Path(path), lambda f: np.savez(f, **arrays), binary=True)


def load_checkpoint(path: str | Path, graph: Graph) -> dict[str, Any]:
    """A checkpoint's ``params``, ``epoch``, ``rng_state``, ``history`` and ``config``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            state = {"params": {p.name: f[f"param/{p.name}"].astype(np.float64) for p in graph.params},
                     "epoch": int(f["epoch"]), "rng_state": json.loads(str(f["rng_state"])),
                     "history": json.loads(str(f["history"])), "config": json.loads(str(f["config"]))}
    except FileNotFoundError:
        raise UserError(f"{path}: no checkpoint to resume from") from None
    except (KeyError, ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a checkpoint of this model ({' '.join(str(e).split())[:80]})") from None
    for p in graph.params:
        if state["params"][p.name].shape != p.shape:
            raise UserError(f"{path}: parameter '{p.name}' has shape {state['params'][p.name].shape}, "
                            f"the model says {p.shape}")
    return state


def _check_resumable(path: Path, saved: dict, config: dict) -> None:
    for key, label in (("lr", "learning rate"), ("batch_size", "batch size"), ("seed", "seed"),
                       ("samples", "number of samples"), ("data", "data (fingerprint)")):
        if saved.get(key) != config[key]:
            raise UserError(f"{path}: cannot resume: the checkpoint's {label} is {saved.get(key)!r}, this run's "
                            f"is {config[key]!r} (resume needs the same settings and data)")


# ---- history files -------------------------------------------------------------------------------------------
def write_history(path: str | Path, history: list[dict[str, float]]) -> None:
    """The history as CSV: ``epoch,loss`` and any further columns, one row per epoch."""
    columns = list(dict.fromkeys(k for row in history for k in row)) or ["epoch", "loss"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomically(Path(path), out.getvalue())


def plot_history(path: str | Path, history: list[dict[str, float]], title: str) -> None:
    """The loss curve as PNG (matplotlib is an optional extra, imported only here)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("a loss plot needs matplotlib: pip install 'symbackprop[plot]'") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [row["epoch"] for row in history]
    for column in ("loss", "test_loss"):
        if any(column in row for row in history):
            ax.plot(epochs, [row.get(column, np.nan) for row in history], label=column.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss")
    if all(row["loss"] > 0 for row in history):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=100), binary=True)
    plt.close(fig)


# ---- the loop ------------------------------------------------------------------------------------------------
def _finite(loss: float, grads: dict) -> bool:
    return bool(np.isfinite(loss)) and all(np.all(np.isfinite(g)) for g in grads.values())


def train(graph: Graph, data: dict[str, np.ndarray] | Dataset, lr: float = 0.1, epochs: int = 100,
          batch_size: int | None = None, seed: int = 0, params: dict | None = None,
          on_epoch: Callable[[dict[str, float]], None] | None = None,
          checkpoint: str | Path | None = None, resume: bool = False,
          history_csv: str | Path | None = None, plot: str | Path | None = None,
          predict: str | None = None, target: str | None = None,
          test_data: dict[str, np.ndarray] | None = None,
          compiled: CompiledGradient | None = None) -> TrainResult:
    """Train ``graph`` on ``data`` by SGD, w_new = w_old - lr * dL/dw, and return the final parameters.

    ``data`` maps input names to arrays (N, *shape), or is a :class:`Dataset` (whose held-out part is
    evaluated each epoch). ``batch_size=None`` takes the full batch (no shuffling); otherwise each epoch
    visits a fresh seeded permutation in batches (the last one may be smaller). ``params`` overrides
    initial values (others come from their ``init`` with ``seed``). ``on_epoch(row)`` is called after
    every epoch with its history row. ``checkpoint`` is written atomically at the start and after every
    epoch; ``resume=True`` continues from it exactly. ``history_csv`` is written after every epoch and
    ``plot`` (from epoch 0) at the end. Files given are overwritten: the CLI asks first.
    """
    if isinstance(data, Dataset):
        data, test_data = data.train, data.test if test_data is None else test_data
    check_settings(lr, epochs, batch_size, seed)
    graph.validate()
    data = check_arrays(data, graph, "training data")
    test_data = check_arrays(test_data, graph, "held-out data") if test_data else None
    if predict is not None and (target is None or predict not in graph.quantities or target not in graph.quantities):
        raise UserError(f"accuracy needs a node to predict and an input as target, got {predict!r} and {target!r}")
    compiled = compiled or compile_gradient(graph)
    n = sample_count(data)
    batch = n if batch_size is None else min(int(batch_size), n)
    rng = np.random.default_rng(seed)
    current = initial_params(graph, seed)
    for name, value in (params or {}).items():
        if name not in current:
            raise UserError(f"params: '{name}' is not a parameter of the model")
        value = np.array(value, dtype=np.float64)
        if value.shape != current[name].shape:
            raise UserError(f"params: '{name}' has shape {value.shape}, the model says {current[name].shape}")
        current[name] = value
    config = {"format": CHECKPOINT_FORMAT, "lr": float(lr), "batch_size": batch, "seed": int(seed),
              "samples": n, "data": data_fingerprint(data), "model": graph.name}
    path = Path(checkpoint) if checkpoint is not None else None

    def row_for(epoch: int, p: dict) -> dict[str, float]:
        row = {"epoch": epoch, **evaluate(compiled, p, data, graph.loss_name, predict, target)}
        if test_data is not None:
            row.update(evaluate(compiled, p, test_data, graph.loss_name, predict, target, prefix="test_"))
        return row

    def save_files(epoch: int) -> None:
        if path is not None:
            save_checkpoint(path, current, epoch, rng, history, config)
        if history_csv is not None:
            write_history(history_csv, history[1:])

    start, resumed_from = 0, None
    if resume:
        if path is None:
            raise UserError("resume needs a checkpoint file")
        state = load_checkpoint(path, graph)
        _check_resumable(path, state["config"], config)
        current, start, history = state["params"], state["epoch"], state["history"]
        rng.bit_generator.state = state["rng_state"]
        resumed_from = start
    else:
        history = [row_for(0, current)]
        if not np.isfinite(history[0]["loss"]):
            raise TrainingDiverged("the loss is not finite before training starts: "
                                   + explain_non_finite(compiled, current, data, np.arange(n)))
        save_files(0)
    for epoch in range(start + 1, epochs + 1):
        order = rng.permutation(n) if batch < n else np.arange(n)
        for b, first in enumerate(range(0, n, batch), 1):
            rows = order[first:first + batch]
            part = {k: v[rows] for k, v in data.items()} if batch < n else data
            with np.errstate(all="ignore"):
                loss, grads = compiled.loss_and_grad(current, part)
                updated = {k: current[k] - lr * np.asarray(grads[k], dtype=np.float64) for k in current}
            if not _finite(loss, grads) or not _finite(0.0, updated):
                why = explain_non_finite(compiled, current if not _finite(loss, grads) else updated, part, rows)
                kept = f"; the last good checkpoint (epoch {epoch - 1}) is {path}" if path is not None else ""
                raise TrainingDiverged(f"training diverged at epoch {epoch}, batch {b}: {why}{kept} "
                                       "(try a smaller learning rate)")
            current = updated
        row = row_for(epoch, current)
        if not np.isfinite(row["loss"]):
            kept = f"; the last good checkpoint (epoch {epoch - 1}) is {path}" if path is not None else ""
            raise TrainingDiverged(f"training diverged after epoch {epoch}: "
                                   f"{explain_non_finite(compiled, current, data, np.arange(n))}{kept} "
                                   "(try a smaller learning rate)")
        history.append(row)
        save_files(epoch)
        if on_epoch is not None:
            on_epoch(row)
    if history_csv is not None:
        write_history(history_csv, history[1:])
    if plot is not None:
        plot_history(plot, history, graph.name)
    return TrainResult(current, history[1:], history[0], max(epochs, start), resumed_from)
