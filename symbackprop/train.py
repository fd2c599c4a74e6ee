"""Gradient descent: w_new = w_old - eta * dL/dw, over mini-batches, with checkpoints and resume.

The loss recorded for an epoch is the mean of the mini-batch losses met during that epoch, each taken
before its update (with full batches: the loss at the start of the epoch). Checkpoints hold the
parameters, the epoch, the shuffling generator's state and the history, and are written atomically,
so a run stopped at any moment resumes exactly where its last checkpoint left it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import sympy as sp

from .compile import CompiledGradient, compile_gradient
from .files import atomic_write, write_text_atomically
from .graph import Graph, UserError
from .initializers import initial_params


class TrainingDiverged(UserError):
    """The loss or a gradient stopped being a finite number."""


@dataclass
class TrainResult:
    params: dict[str, np.ndarray]
    history: list[tuple[int, float]] = field(default_factory=list)
    #: epochs completed in total (including those of a resumed run)
    epochs: int = 0

    @property
    def losses(self) -> list[float]:
        return [loss for _, loss in self.history]


def save_checkpoint(path: Path, params: dict, epoch: int, rng: np.random.Generator, history: list) -> None:
    """Write the checkpoint to a temporary file beside ``path``, then rename it over ``path``."""
    arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    arrays["epoch"] = np.array(epoch)
    arrays["rng_state"] = np.array(json.dumps(rng.bit_generator.state))
    arrays["history"] = np.array(history, dtype=np.float64).reshape(-1, 2)
    atomic_write(path, lambda f: np.savez(f, **arrays), binary=True)


def load_checkpoint(path: Path, graph: Graph) -> tuple[dict, int, dict, list]:
    """Parameters, completed epochs, generator state and history of a checkpoint."""
    try:
        with np.load(path, allow_pickle=False) as f:
            params = {p.name: f[f"param/{p.name}"].astype(np.float64) for p in graph.params}
            return params, int(f["epoch"]), json.loads(str(f["rng_state"])), [
                (int(e), float(v)) for e, v in f["history"]]
    except (KeyError, ValueError, OSError) as e:
        raise UserError(f"{path}: not a checkpoint of this model ({' '.join(str(e).split())[:80]})") from None


def explain_non_finite(compiled: CompiledGradient, params: dict, batch: dict) -> str:
    """Name the first node whose value is not finite, and the function that produced it."""
    with np.errstate(all="ignore"):
        values = compiled.forward(params, batch)
    for q in compiled.derivation.graph.computed:
        v = np.asarray(values.get(q.name, 0.0))
        if not np.all(np.isfinite(v)):
            kinds = {type(e).__name__ for e in sp.preorder_traversal(q.expr)}
            hint = ""
            if "log" in kinds:
                hint = " (log of a value <= 0?)"
            elif "Pow" in kinds:
                hint = " (sqrt of a negative value, a division by zero or an overflow?)"
            elif "exp" in kinds:
                hint = " (exp overflowed?)"
            return f"node '{q.name}' = {q.expr} is not finite{hint}"
    return "the gradient is not finite"


def train(graph: Graph, data: dict[str, np.ndarray], lr: float = 0.1, epochs: int = 100,
          batch_size: int | None = None, seed: int = 0, params: dict | None = None,
          checkpoint: str | Path | None = None, resume: bool = False,
          on_epoch: Callable[[int, float], None] | None = None,
          compiled: CompiledGradient | None = None) -> TrainResult:
    """Train ``graph`` on ``data`` by mini-batch gradient descent and return the final parameters.

    ``batch_size=None`` uses the full batch. Batches are drawn from a shuffle seeded by ``seed``.
    With ``checkpoint``, the state is saved after every epoch; with ``resume`` the run continues from it.
    """
    if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        raise UserError(f"learning rate must be a positive number, got {lr}")
    if not isinstance(epochs, int) or epochs < 0:
        raise UserError(f"epochs must be a whole number >= 0, got {epochs}")
    compiled = compiled or compile_gradient(graph)
    n = len(next(iter(data.values()))) if data else 1
    batch = n if batch_size is None else int(batch_size)
    if batch < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    params = {k: np.array(v, dtype=np.float64) for k, v in (params or initial_params(graph, seed)).items()}
    history: list[tuple[int, float]] = []
    start = 0
    path = Path(checkpoint) if checkpoint else None
    if resume and path is not None and path.exists():
        params, start, state, history = load_checkpoint(path, graph)
        rng.bit_generator.state = state
    for epoch in range(start, epochs):
        order = rng.permutation(n) if batch < n else np.arange(n)
        losses = []
        for b, first in enumerate(range(0, n, batch)):
            rows = order[first:first + batch]
            part = {k: v[rows] for k, v in data.items()} if batch < n else data
            with np.errstate(all="ignore"):
                loss, grads = compiled.loss_and_grad(params, part)
            if not np.isfinite(loss) or not all(np.all(np.isfinite(g)) for g in grads.values()):
                where = explain_non_finite(compiled, params, part)
                kept = f"; the last good checkpoint is {path}" if path is not None and path.exists() else ""
                raise TrainingDiverged(f"training diverged at epoch {epoch + 1}, batch {b + 1}: loss is {loss}, "
                                       f"{where}{kept} (try a smaller learning rate)")
            losses.append(loss)
            params = {k: params[k] - lr * np.asarray(grads[k]) for k in params}
        history.append((epoch + 1, float(np.mean(losses))))
        if path is not None:
            save_checkpoint(path, params, epoch + 1, rng, history)
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1][1])
    return TrainResult(params, history, max(epochs, start))


def accuracy(compiled: CompiledGradient, params: dict, data: dict, predict: str, target: str) -> float:
    """Share of samples whose predicted class (argmax, or > 0.5 for a scalar) matches the target's."""
    with np.errstate(all="ignore"):
        pred = np.asarray(compiled.forward(params, data)[predict])
    truth = np.asarray(data[target])
    if pred.ndim == 1:
        return float(np.mean((pred > 0.5) == (truth > 0.5)))
    return float(np.mean(pred.argmax(axis=1) == truth.argmax(axis=1)))


def write_history(path: str | Path, history: list[tuple[int, float]]) -> None:
    """The loss per epoch as CSV: ``epoch,loss``."""
    lines = ["epoch,loss"] + [f"{e},{loss!r}" for e, loss in history]
    write_text_atomically(Path(path), "\n".join(lines) + "\n")


def plot_history(path: str | Path, history: list[tuple[int, float]], title: str) -> None:
    """A loss curve as PNG (needs matplotlib, an optional extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'symbackprop[plot]'") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e for e, _ in history], [loss for _, loss in history])
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss")
    ax.set_yscale("log" if all(loss > 0 for _, loss in history) else "linear")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
