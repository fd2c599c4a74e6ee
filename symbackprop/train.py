"""The update loop: an optimizer of :mod:`symbackprop.optim` over mini-batches, with checkpoints, exact
resume, learning-rate schedules and early stopping.

Where the gradients come from is kept apart from what is done with them. The loop (:func:`fit`) asks a
:class:`GradientSource` for the mean loss and gradients of a batch of rows (``rows=None``: all of them)
and for the loss and accuracy over all its data after each epoch; it owns everything else: the seeded
shuffle, the optimizer and its state, the schedule, early stopping, checkpoints, history and progress
callbacks. :class:`ArrayGradients` is the source for arrays in memory (the compiled symbolic gradient);
another source (data in partitions on a cluster) can reuse the loop unchanged. See docs/training.md.

History: one row per epoch, epochs 1 to E; row k describes the parameters after epoch k, and
``TrainResult.initial`` the same for the initial parameters (epoch 0). ``loss`` is the mean loss over the
whole training set at those parameters (not the mean of the batch losses met on the way, which mixes
parameters of different steps); ``held_out_loss``, ``accuracy`` and ``held_out_accuracy`` are added when
there is held-out data or a ``predict``/``target`` pair, and ``lr`` (the rate used in that epoch) when a
schedule changes it.

Precision: float64 unless ``train(..., dtype="float32")``; then the gradient is compiled to compute in
float32, the data are converted once, and the parameters, the optimizer's state, checkpoints and saved
parameters are float32 too (a checkpoint's settings record the dtype, and a resume needs the same). The
history's losses are Python floats either way.

A loss, gradient or parameter that stops being finite ends the run with :class:`TrainingDiverged`,
naming the epoch, the batch, and the first node that went non-finite with the function that did it
(``log of a non-positive value in node 'h'``); the last checkpoint, written before, stays as it was.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import numpy as np
import sympy as sp

from .codeprint import NumPyBatchPrinter
from .codegen import check_dtype
from .compile import CompiledGradient, compile_gradient, evaluate_printed
from .data import Dataset, check_arrays, sample_count
from .files import atomic_write, write_text_atomically
from .graph import Graph, ModelError, UserError
from .initializers import initial_params
from .optim import OPTIMIZER_KEYS, SCHEDULE_KEYS, Optimizer, Schedule, batches, make_optimizer, make_schedule
from .paramfile import float_array

CHECKPOINT_FORMAT = 2


class TrainingDiverged(UserError):
    """The loss, a gradient or a parameter stopped being a finite number."""


@dataclass
class TrainResult:
    """The outcome of :func:`train`: the parameters kept and the per-epoch history.

    ``params`` are the parameters after the last epoch, or with early stopping (``patience``) those of
    ``best_epoch``, the epoch with the lowest held-out loss.
    """

    params: dict[str, np.ndarray]
    history: list[dict[str, float]]  # one row per epoch, 1 to E
    initial: dict[str, float]  # the same row for the initial parameters (epoch 0)
    epochs: int = 0  # epochs completed in total, including those before a resume
    resumed_from: int | None = None
    best_epoch: int | None = None  # with early stopping: the epoch whose parameters are kept
    stopped_early: bool = False  # the held-out loss stopped improving before the last epoch asked for

    @property
    def losses(self) -> list[float]:
        """The loss after each epoch, 1 to E."""
        return [row["loss"] for row in self.history]

    @property
    def initial_loss(self) -> float:
        return self.initial["loss"]

    @property
    def last(self) -> dict[str, float]:
        """The row of the last epoch run (the initial row when no epoch ran)."""
        return self.history[-1] if self.history else self.initial

    @property
    def kept(self) -> dict[str, float]:
        """The row of the parameters kept (``params``): the best epoch's with early stopping, else ``last``."""
        return self.last if self.best_epoch is None else ([self.initial] + self.history)[self.best_epoch]

    @property
    def final_loss(self) -> float:
        return self.kept["loss"]

    def loss_curve(self, title: str = "training loss") -> str:
        """The loss per epoch (and the held-out loss, if any) as an inline SVG chart, from epoch 0."""
        from .svg import line_chart
        rows = [self.initial, *self.history]
        series = {"loss": [r["loss"] for r in rows]}
        if any("held_out_loss" in r for r in rows):
            series["held-out loss"] = [r.get("held_out_loss") for r in rows]
        return line_chart([r["epoch"] for r in rows], series, title)

    def _repr_html_(self) -> str:
        """A notebook shows the result as a short summary and its loss curve."""
        import html
        first, last = self.initial, self.last
        cells = [("epochs", str(self.epochs)), ("loss", f"{first['loss']:.6g} \u2192 {last['loss']:.6g}")]
        for key, label in (("accuracy", "training accuracy"), ("held_out_accuracy", "held-out accuracy")):
            if key in last:
                cells.append((label, f"{last[key]:.2%}"))
        rows = "".join(f"<tr><th style=\"text-align:left;padding-right:1em\">{html.escape(k)}</th>"
                       f"<td>{html.escape(v)}</td></tr>" for k, v in cells)
        return f'<div class="symbackprop-train"><table>{rows}</table>{self.loss_curve()}</div>'


# ---- settings -------------------------------------------------------------------------------------------
GENERAL_DEFAULTS: dict[str, Any] = {"epochs": 100, "batch_size": None, "seed": 0, "predict": None, "target": None,
                                    "patience": None}
TRAIN_KEYS = sorted({*GENERAL_DEFAULTS, "optimizer", "schedule", *OPTIMIZER_KEYS, *SCHEDULE_KEYS})


def _whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_general(values: dict[str, Any], where: dict[str, str]) -> None:
    """epochs, batch_size, seed and patience: whole numbers in range (batch_size, patience may be None)."""
    rules = {"epochs": (0, None, ">= 0"), "batch_size": (1, None, ">= 1"), "patience": (1, None, ">= 1"),
             "seed": (0, 2**32 - 1, "from 0 to 2**32 - 1")}
    for key, (low, high, text) in rules.items():
        value = values.get(key)
        if value is None and key in ("batch_size", "patience"):
            continue
        if not _whole(value) or value < low or (high is not None and value > high):
            raise ModelError(where[key], f"must be a whole number {text}, got {value!r}")


def _option_label(key: str) -> str:
    return f"--{key.replace('_', '-')}"


def train_settings(table: dict | None, graph: Graph, source: str | None = None,
                   overrides: dict[str, Any] | None = None, **given: Any) -> dict[str, Any]:
    """The run's settings from the options ``given`` (not None), then ``overrides`` (``--set KEY=VALUE``),
    then the model's ``[train]`` table, then the defaults (torch's, for the optimizer and the schedule).

    Every value is checked; an error names where the value came from (``--lr``, ``--set momentum``,
    ``model.toml: [train] betas``). The table is checked on its own, against its own optimizer and
    schedule. When ``--optimizer`` (or ``--schedule``) chooses another one than the table, the table's
    settings of its own are not used: ``ignored`` lists them, for a warning.

    Returns ``lr`` (the optimizer's), ``epochs``, ``batch_size``, ``seed``, ``predict``, ``target``,
    ``patience``, ``optimizer`` (an :class:`~symbackprop.optim.Optimizer`), ``schedule`` (a
    :class:`~symbackprop.optim.Schedule` or None) and ``ignored``.
    """
    table_where = f"{source}: [train]" if source else "[train]"
    table = table or {}
    if not isinstance(table, dict):
        raise ModelError(table_where, "must be a table")
    unknown = sorted(set(table) - set(TRAIN_KEYS))
    if unknown:
        raise ModelError(f"{table_where} {unknown[0]}", f"unknown key (allowed: {', '.join(TRAIN_KEYS)})")
    for key in sorted(overrides or {}):
        if key not in TRAIN_KEYS:
            raise ModelError(f"--set {key}", f"unknown setting (allowed: {', '.join(TRAIN_KEYS)})")
    command = {k: (v, f"--set {k}") for k, v in (overrides or {}).items()}
    command.update({k: (v, _option_label(k)) for k, v in given.items() if v is not None})
    in_file = {k: (v, f"{table_where} {k}") for k, v in table.items()}

    ignored: list[str] = []
    chosen = {}
    for kind, keys, make in (("optimizer", OPTIMIZER_KEYS, make_optimizer), ("schedule", SCHEDULE_KEYS, make_schedule)):
        file_name = table.get(kind, "sgd" if kind == "optimizer" else None)
        file_settings = {k: v for k, v in table.items() if k in keys}
        make(file_name, where={k: w for k, (_, w) in in_file.items()}, **file_settings)  # the table on its own
        name, name_where = command.get(kind, (file_name, in_file.get(kind, (None, kind))[1]))
        layers = [command] if name != file_name else [command, in_file]
        unused = [k for k in file_settings if k not in command]
        if name != file_name and unused:
            ignored.append(f"{table_where} {', '.join(unused)}: not used, the table sets {'it' if len(unused) == 1 else 'them'} "
                           f"for {file_name or 'no schedule'} and this run uses {name or 'no schedule'} "
                           f"({command[kind][1]})")
        values, where = {}, {kind: name_where}
        for key in keys:
            layer = next((layer for layer in layers if key in layer), None)
            if layer is not None:
                values[key], where[key] = layer[key]
        chosen[kind] = make(name, where=where, **values)

    general, where = {}, {}
    for key, default in GENERAL_DEFAULTS.items():
        general[key], where[key] = command.get(key, in_file.get(key, (default, f"{table_where} {key}")))
    check_general(general, where)
    for key, kinds in (("predict", ("node", "loss")), ("target", ("input",))):
        name = general[key]
        if name is not None and (not isinstance(name, str) or name not in graph.quantities
                                 or graph[name].kind not in kinds):
            raise ModelError(where[key], f"must name {'a node' if key == 'predict' else 'an input'}, got {name!r}")
    if (general["predict"] is None) != (general["target"] is None):
        raise ModelError(table_where, "give both predict (a node) and target (an input) for accuracy, or neither")
    if general["predict"] is not None and graph[general["predict"]].canonical_shape != graph[general["target"]].canonical_shape:
        raise ModelError(where["predict"], f"node '{general['predict']}' and input '{general['target']}' differ in shape")
    return {"lr": chosen["optimizer"].lr, **general, "optimizer": chosen["optimizer"], "schedule": chosen["schedule"],
            "ignored": ignored}


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
    """The module's names (np, DTYPE, its helpers), with parameters and inputs in the dtype it computes in
    (a float32 exp overflows where a float64 one does not)."""
    namespace = dict(compiled.loss_and_grad.__globals__)  # np and the helpers the module defines
    dtype = compiled.dtype
    namespace.update({q.name: np.reshape(np.asarray(params[q.name], dtype=dtype), q.canonical_shape)
                      for q in graph.params})
    namespace.update({q.name: np.reshape(np.asarray(batch[q.name], dtype=dtype), (-1, *q.canonical_shape))
                      for q in graph.input_list})
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


# ---- where the gradients come from ---------------------------------------------------------------------------
@dataclass
class Batch:
    """What a gradient source gives for one batch."""

    loss: float  # the mean loss over the batch's samples
    grads: dict[str, np.ndarray]  # the gradient of that mean, per parameter, in its declared shape
    samples: int  # how many samples the batch held


@runtime_checkable
class GradientSource(Protocol):
    """Where :func:`fit` gets losses and gradients: the seam between the data and the update loop.

    ``rows`` say which samples a batch holds: whatever the source's :meth:`batches` gives (for arrays in
    memory, indices into the ``samples`` rows from the loop's seeded shuffle; for data in blocks on a
    cluster, a group of whole blocks), or None for every row (the full batch: a distributed source sums
    its partitions' gradients, weighted by their sample counts, and divides by the total). Everything
    else (optimizer, schedule, checkpoints, early stopping, history, progress) belongs to the loop.
    """

    samples: int

    def fingerprint(self) -> str:
        """Identifies the data, so a checkpoint is not resumed on other data."""

    def batches(self, batch_size: int | None, rng: np.random.Generator, epoch: int) -> list:
        """The ``rows`` of each batch of epoch ``epoch`` (from 1): ``[None]`` for the full batch
        (``batch_size`` None). Drawn from ``rng`` (the loop's seeded generator, whose state checkpoints
        keep) or from the epoch and a seed of the source's own, so that a resumed run draws the same."""

    def batch(self, params: dict[str, np.ndarray], rows: np.ndarray | None) -> Batch:
        """Mean loss and gradients over ``rows`` (None: all) at ``params``."""

    def metrics(self, params: dict[str, np.ndarray]) -> dict[str, float]:
        """``loss`` (and ``accuracy``) over all rows at ``params``."""

    def explain(self, params: dict[str, np.ndarray], rows: np.ndarray | None) -> str:
        """Why the loss or a gradient over ``rows`` is not finite at ``params`` (for the error message)."""


class ArrayGradients:
    """A :class:`GradientSource` for arrays in memory: the compiled symbolic gradient of a model."""

    def __init__(self, compiled: CompiledGradient, data: dict[str, np.ndarray], predict: str | None = None,
                 target: str | None = None):
        self.compiled, self.data = compiled, data
        self.predict, self.target = predict, target
        self.samples = sample_count(data)

    def fingerprint(self) -> str:
        return data_fingerprint(self.data)

    def batches(self, batch_size, rng, epoch):
        return batches(self.samples, batch_size, rng)

    def rows(self, rows: np.ndarray | None) -> dict[str, np.ndarray]:
        return self.data if rows is None else {k: v[rows] for k, v in self.data.items()}

    def batch(self, params, rows):
        part = self.rows(rows)
        loss, grads = self.compiled.loss_and_grad(params, part)
        return Batch(loss, grads, sample_count(part))

    def metrics(self, params):
        return evaluate(self.compiled, params, self.data, self.compiled.derivation.graph.loss_name,
                        self.predict, self.target)

    def explain(self, params, rows):
        return explain_non_finite(self.compiled, params, self.rows(rows),
                                  np.arange(self.samples) if rows is None else rows)


# ---- checkpoints ---------------------------------------------------------------------------------------------
def data_fingerprint(data: dict[str, np.ndarray]) -> str:
    """A hash of the training data, so a resume on other data is refused rather than silently inexact."""
    h = hashlib.sha256()
    for name in sorted(data):
        h.update(name.encode())
        h.update(np.ascontiguousarray(data[name], dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


@dataclass
class Run:
    """Everything a run carries from one epoch to the next: what a checkpoint holds."""

    params: dict[str, np.ndarray]
    optimizer_state: dict[str, dict]  # per parameter: the optimizer's moments, buffers and step count
    lr: float  # the learning rate of the next epoch (the schedule moves it)
    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)  # rows from epoch 0
    best_epoch: int | None = None  # early stopping: the epoch with the lowest held-out loss so far
    best_params: dict[str, np.ndarray] | None = None
    waited: int = 0  # epochs since best_epoch


def save_checkpoint(path: Path, run: Run, rng: np.random.Generator, config: dict) -> None:
    """Write the run, the shuffling generator's state and the run's settings to ``path`` atomically.
    Arrays keep their dtype (float32 in a float32 run, whose ``config`` says ``"dtype": "float32"``)."""
    arrays = {f"param/{k}": float_array(v) for k, v in run.params.items()}
    for name, slots in run.optimizer_state.items():
        arrays.update({f"optim/{name}/{slot}": np.asarray(value) for slot, value in slots.items()})
    if run.best_params is not None:
        arrays.update({f"best/{k}": float_array(v) for k, v in run.best_params.items()})
    arrays["epoch"] = np.array(run.epoch)
    arrays["rng_state"] = np.array(json.dumps(rng.bit_generator.state))
    arrays["history"] = np.array(json.dumps(run.history))
    arrays["config"] = np.array(json.dumps(config))
    arrays["run"] = np.array(json.dumps({"lr": run.lr, "best_epoch": run.best_epoch, "waited": run.waited}))
    atomic_write(Path(path), lambda f: np.savez(f, **arrays), binary=True)


def read_checkpoint(path: str | Path, shapes: dict[str, tuple]) -> dict[str, Any]:
    """A checkpoint's ``run`` (:class:`Run`), ``rng_state``, ``config`` (and, for callers of the earlier
    layout, ``params``, ``epoch`` and ``history``); ``shapes`` maps each parameter to its shape."""
    try:
        with np.load(path, allow_pickle=False) as f:
            config = json.loads(str(f["config"]))
            if config.get("format") != CHECKPOINT_FORMAT:
                raise UserError(f"{path}: written by another version of symbackprop (checkpoint format "
                                f"{config.get('format')}, this one reads {CHECKPOINT_FORMAT}); start a new run")
            params = {name: float_array(f[f"param/{name}"]) for name in shapes}
            state: dict[str, dict] = {name: {} for name in shapes}
            for key in f.files:
                if key.startswith("optim/"):
                    _, name, slot = key.split("/", 2)
                    value = f[key]
                    state[name][slot] = int(value) if slot == "step" else float_array(value)
            saved = json.loads(str(f["run"]))
            best = {name: float_array(f[f"best/{name}"]) for name in shapes} if saved["best_epoch"] is not None else None
            run = Run(params, state, float(saved["lr"]), int(f["epoch"]), json.loads(str(f["history"])),
                      saved["best_epoch"], best, int(saved["waited"]))
            rng_state = json.loads(str(f["rng_state"]))
    except FileNotFoundError:
        raise UserError(f"{path}: no checkpoint to resume from") from None
    except (KeyError, ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a checkpoint of this model ({' '.join(str(e).split())[:80]})") from None
    for name, shape in shapes.items():
        if run.params[name].shape != tuple(shape):
            raise UserError(f"{path}: parameter '{name}' has shape {run.params[name].shape}, the model says {shape}")
    return {"run": run, "rng_state": rng_state, "config": config, "params": run.params, "epoch": run.epoch,
            "history": run.history}


def checkpoint_epoch(path: str | Path) -> int | None:
    """The epoch a checkpoint file holds, or None when there is no readable checkpoint there."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return int(f["epoch"])
    except (OSError, KeyError, ValueError, EOFError, TypeError):
        return None


def load_checkpoint(path: str | Path, graph: Graph) -> dict[str, Any]:
    """:func:`read_checkpoint` with the shapes of ``graph``'s parameters."""
    return read_checkpoint(path, {p.name: p.shape for p in graph.params})


RESUME_CHECKS = (("lr", "learning rate"), ("optimizer", "optimizer"), ("schedule", "schedule"),
                 ("patience", "patience"), ("batch_size", "batch size"), ("seed", "seed"),
                 ("dtype", "dtype"), ("samples", "number of samples"), ("data", "data (fingerprint)"))
#: what a checkpoint written before a setting existed is taken to have used
RESUME_DEFAULTS = {"dtype": "float64"}


def check_resume_epochs(path: str | Path, epochs: int, epoch: int | None = None) -> int:
    """The checkpoint's epoch, or a one-line error if it is past the ``epochs`` asked for (or missing)."""
    epoch = checkpoint_epoch(path) if epoch is None else epoch
    if epoch is None:
        raise UserError(f"{path}: no checkpoint to resume from" if not Path(path).exists()
                        else f"{path}: not a checkpoint (no epoch in it)")
    if epochs < epoch:
        raise UserError(f"{path}: cannot resume: the checkpoint is already at epoch {epoch}, past the {epochs} "
                        f"epochs asked for (ask for {epoch} or more epochs)")
    return epoch


def _check_resumable(path: Path, saved: dict, config: dict, epochs: int, epoch: int) -> None:
    for key, label in RESUME_CHECKS:
        if saved.get(key, RESUME_DEFAULTS.get(key)) != config[key]:
            raise UserError(f"{path}: cannot resume: the checkpoint's {label} is "
                            f"{saved.get(key, RESUME_DEFAULTS.get(key))!r}, this run's "
                            f"is {config[key]!r} (resume needs the same settings and data)")
    check_resume_epochs(path, epochs, epoch)


# ---- history files -------------------------------------------------------------------------------------------
HELD_OUT = "held-out"  # how the summary, the plot legend and (as held_out_) the history columns name it


def write_history(path: str | Path, history: list[dict[str, float]]) -> None:
    """The history as CSV: ``epoch,loss`` and any further columns, one row per epoch."""
    columns = list(dict.fromkeys(k for row in history for k in row)) or ["epoch", "loss"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    write_text_atomically(Path(path), out.getvalue())


def plot_history(path: str | Path, history: list[dict[str, float]], title: str, best_epoch: int | None = None) -> None:
    """The loss curve as PNG (matplotlib is an optional extra, imported only here)."""
    from .extras import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [row["epoch"] for row in history]
    for column, label in (("loss", "training loss"), ("held_out_loss", f"{HELD_OUT} loss")):
        if any(column in row for row in history):
            ax.plot(epochs, [row.get(column, np.nan) for row in history], label=label)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"kept (epoch {best_epoch})")
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


def fit(source: GradientSource, params: dict[str, np.ndarray], optimizer: Optimizer, epochs: int, *,
        batch_size: int | None = None, seed: int = 0, schedule: Schedule | None = None,
        patience: int | None = None, held_out: GradientSource | None = None,
        checkpoint: str | Path | None = None, resume: bool = False, history_csv: str | Path | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        on_start: Callable[[int], None] | None = None, name: str = "") -> TrainResult:
    """Train ``params`` with ``optimizer`` on the batches of ``source`` for ``epochs`` epochs.

    ``batch_size=None`` takes the full batch (no shuffling); otherwise each epoch visits a fresh seeded
    permutation in batches (the last one may be smaller). ``schedule`` moves the learning rate after each
    epoch. ``patience`` stops when the held-out loss has not improved for that many epochs and keeps
    the best parameters. ``checkpoint`` is written atomically at the start and after every epoch;
    ``resume=True`` continues from it exactly. ``on_start(epoch)`` is called when the first epoch is about
    to start (``epoch``: the epochs already done, 0 or the checkpoint's), ``on_epoch(row)`` after every
    epoch, once its checkpoint is written.
    """
    if patience is not None and held_out is None:
        raise UserError("patience: early stopping watches the held-out loss, but there is no held-out data "
                        "(hold some out with [data] test_fraction, or give --held-out)")
    n = source.samples
    batch = None if batch_size is None or batch_size >= n else int(batch_size)
    rng = np.random.default_rng(seed)
    path = Path(checkpoint) if checkpoint is not None else None
    config = None if path is None else {  # only checkpoints need it (a fingerprint may read all the data)
        "format": CHECKPOINT_FORMAT, "lr": optimizer.lr, "optimizer": optimizer.describe(),
        "schedule": schedule.describe() if schedule is not None else None, "patience": patience,
        "batch_size": batch or n, "seed": int(seed), "samples": n, "data": source.fingerprint(), "model": name,
        "dtype": params_dtype(params)}

    def row_for(epoch: int, p: dict, lr: float) -> dict[str, float]:
        row = {"epoch": epoch, **source.metrics(p)}
        if held_out is not None:
            row.update({f"held_out_{k}": v for k, v in held_out.metrics(p).items()})
        if schedule is not None and epoch > 0:
            row["lr"] = lr
        return row

    def save_files(run: Run) -> None:
        if path is not None:
            save_checkpoint(path, run, rng, config)
        if history_csv is not None:
            write_history(history_csv, run.history[1:])

    resumed_from = None
    if resume:
        if path is None:
            raise UserError("resume needs a checkpoint file")
        state = read_checkpoint(path, {k: np.shape(v) for k, v in params.items()})
        _check_resumable(path, state["config"], config, epochs, state["run"].epoch)
        run, resumed_from = state["run"], state["run"].epoch
        rng.bit_generator.state = state["rng_state"]
    else:
        run = Run(params, optimizer.init_state(params), optimizer.lr)
        run.history.append(row_for(0, params, run.lr))
        if not np.isfinite(run.history[0]["loss"]):
            raise TrainingDiverged("the loss is not finite before training starts: " + source.explain(params, None))
        if patience is not None:
            run.best_epoch, run.best_params = 0, params
        save_files(run)

    def diverged(when: str, why: str) -> TrainingDiverged:
        kept = f"; the last good checkpoint (epoch {run.epoch}) is {path}" if path is not None else ""
        return TrainingDiverged(f"training diverged {when}: {why}{kept} (try a smaller learning rate)")

    stopped = patience is not None and run.waited >= patience
    if on_start is not None:
        on_start(run.epoch)
    for epoch in range(run.epoch + 1, epochs + 1):
        if stopped:
            break
        for b, rows in enumerate(source.batches(batch, rng, epoch), 1):
            with np.errstate(all="ignore"):
                result = source.batch(run.params, rows)
                updated = optimizer.step(run.params, result.grads, run.optimizer_state, run.lr)
            if not _finite(result.loss, result.grads) or not _finite(0.0, updated):
                bad = run.params if not _finite(result.loss, result.grads) else updated
                raise diverged(f"at epoch {epoch}, batch {b}", source.explain(bad, rows))
            run.params = updated
        row = row_for(epoch, run.params, run.lr)
        if not np.isfinite(row["loss"]):
            raise diverged(f"after epoch {epoch}", source.explain(run.params, None))
        run.history.append(row)
        run.epoch = epoch
        if schedule is not None:
            run.lr = schedule.advance(run.lr, epoch, optimizer.lr)
        if patience is not None:
            if row["held_out_loss"] < run.history[run.best_epoch]["held_out_loss"]:
                run.best_epoch, run.best_params, run.waited = epoch, run.params, 0
            else:
                run.waited += 1
            stopped = run.waited >= patience
        save_files(run)
        if on_epoch is not None:
            on_epoch(row)
    kept = run.best_params if patience is not None else run.params
    return TrainResult(kept, run.history[1:], run.history[0], run.epoch, resumed_from, run.best_epoch,
                       stopped and run.epoch < epochs)


def params_dtype(params: dict) -> str:
    """``"float32"`` when every parameter is a float32 array (a float32 run), else ``"float64"``."""
    float32 = params and all(np.asarray(v).dtype == np.float32 for v in params.values())
    return "float32" if float32 else "float64"


def _optimizer(optimizer: Optimizer | str | None, lr: float | None) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        optimizer = make_optimizer(optimizer or "sgd", where={"optimizer": "train optimizer"})
    return optimizer if lr is None else optimizer.with_lr(lr, "train lr")


def start_params(graph: Graph, seed: int, params: dict | None = None, source: str | None = None) -> dict[str, np.ndarray]:
    """Initial values from each parameter's ``init`` (seeded), replaced by those given in ``params``."""
    current = initial_params(graph, seed, source)
    for name, value in (params or {}).items():
        if name not in current:
            raise UserError(f"params: '{name}' is not a parameter of the model")
        value = np.array(value, dtype=np.float64)
        if value.shape != current[name].shape:
            raise UserError(f"params: '{name}' has shape {value.shape}, the model says {current[name].shape}")
        current[name] = value
    return current


def train(graph: Graph, data: dict[str, np.ndarray] | Dataset | GradientSource, lr: float | None = None,
          epochs: int = 100, batch_size: int | None = None, seed: int = 0, params: dict | None = None,
          on_epoch: Callable[[dict[str, float]], None] | None = None,
          checkpoint: str | Path | None = None, resume: bool = False,
          history_csv: str | Path | None = None, plot: str | Path | None = None,
          predict: str | None = None, target: str | None = None,
          held_out: dict[str, np.ndarray] | GradientSource | None = None, compiled: CompiledGradient | None = None,
          optimizer: Optimizer | str | None = None, schedule: Schedule | None = None,
          patience: int | None = None, on_start: Callable[[int], None] | None = None,
          dtype: str | None = None) -> TrainResult:
    """Train ``graph`` on ``data`` with ``optimizer`` (default plain SGD, w_new = w_old - lr * dL/dw).

    ``data`` maps input names to arrays (N, *shape), or is a :class:`Dataset` (whose held-out part is
    evaluated each epoch), or a :class:`GradientSource` (data elsewhere: a cluster's, which computes its
    own metrics, so ``predict``/``target`` apply to arrays only); ``held_out`` likewise. ``lr`` replaces
    the optimizer's learning rate (torch's default otherwise: 1e-3 for SGD). ``params`` overrides initial
    values (others come from their ``init`` with ``seed``). ``history_csv`` is written after every epoch
    and ``plot`` (from epoch 0) at the end. Files given are overwritten: the CLI asks first. ``dtype``
    (``"float64"`` or ``"float32"``; default: ``compiled``'s, else float64) is what the gradient computes
    in and what the parameters and the optimizer's state are kept in (see the module docstring). See
    :func:`fit` for the other arguments.
    """
    if isinstance(data, Dataset):
        data, held_out = data.train, data.held_out if held_out is None else held_out
    optimizer = _optimizer(optimizer, lr)
    check_general({"epochs": epochs, "batch_size": batch_size, "seed": seed, "patience": patience},
                  {k: f"train {k}" for k in GENERAL_DEFAULTS})
    graph.validate()
    if predict is not None and (target is None or predict not in graph.quantities or target not in graph.quantities):
        raise UserError(f"accuracy needs a node to predict and an input as target, got {predict!r} and {target!r}")
    arrays_given = isinstance(data, Mapping) or (held_out is not None and isinstance(held_out, Mapping))
    dtype = check_dtype(dtype or (compiled.dtype if compiled is not None else "float64"))
    if compiled is not None and compiled.dtype != dtype:
        raise UserError(f"train: the compiled gradient computes in {compiled.dtype}, but dtype {dtype!r} was asked for")
    compiled = compiled or (compile_gradient(graph, dtype=dtype) if arrays_given else None)

    def gradient_source(arrays, label: str) -> GradientSource:
        if isinstance(arrays, GradientSource):
            return arrays
        checked = check_arrays(arrays, graph, label)  # converted once, not at every batch:
        return ArrayGradients(compiled, {k: np.asarray(v, dtype=dtype) for k, v in checked.items()}, predict, target)
    source = gradient_source(data, "training data")
    given = held_out is not None and (len(held_out) > 0 if isinstance(held_out, Mapping) else True)
    held = gradient_source(held_out, "held-out data") if given else None
    start = {k: np.asarray(v, dtype=dtype) for k, v in start_params(graph, seed, params).items()}
    result = fit(source, start, optimizer, epochs, batch_size=batch_size, seed=seed,
                 schedule=schedule, patience=patience, held_out=held, checkpoint=checkpoint, resume=resume,
                 history_csv=history_csv, on_epoch=on_epoch, on_start=on_start, name=graph.name)
    if plot is not None:
        plot_history(plot, [result.initial] + result.history, graph.name, result.best_epoch)
    return result
