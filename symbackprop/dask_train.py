"""Training on a Dask cluster (``symbackprop train MODEL --engine dask``): the update loop of
:mod:`symbackprop.train`, unchanged, over gradients computed where the data live.

:class:`DaskGradients` is a :class:`~symbackprop.train.GradientSource` over the engine of
:mod:`symbackprop.distributed`: the full batch is the sum of every block's gradient times its sample
count, divided by the total (the single-machine numbers to rounding); a mini-batch is a group of whole
blocks, drawn in an order that depends on the seed and the epoch only (:func:`~symbackprop.distributed.
sample_batches`), so a resumed run draws the same. :func:`dask_dataset` connects to a cluster (or starts
a LocalCluster and closes it afterwards), loads the training and held-out data there, and yields the
two sources; :func:`symbackprop.train.train` takes them where it takes arrays:

    with dask_dataset(compiled, "parts/*.parquet", held_out="test/", workers=2) as data:
        result = train(graph, data.train, held_out=data.held_out, optimizer="adam", epochs=20,
                       checkpoint="run.npz")

Optimizers, schedules, checkpoints and exact resume, early stopping, history and progress are the
loop's, so they behave as on one machine. A fault the cluster cannot recover from (a worker lost for
good, a step over its timeout, bad data met by a worker) ends the run with a one-line
:class:`~symbackprop.distributed.DistributedError` or :class:`~symbackprop.data.DataError`, raised before
the step's update: the last checkpoint stays as it was.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from .compile import CompiledGradient
from .data import Dataset
from .distributed import DaskData, DaskGradient, connect, sample_batches, workers_of
from .train import Batch, explain_non_finite


class DaskGradients:
    """A gradient source over data on a Dask cluster (a :class:`~symbackprop.distributed.DaskGradient`).

    ``compiled`` (the model's compiled gradient) lets :meth:`explain` name the node that went
    non-finite; ``predict``/``target`` add the accuracy to the metrics; ``seed`` draws the blocks' order
    in each epoch (:func:`~symbackprop.distributed.block_order`). ``full_batch=True`` (a run of full
    batches) has :meth:`metrics` compute the gradient at the same parameters too, which the loop's next
    step asks for: one pass over the data per epoch instead of two.
    """

    def __init__(self, engine: DaskGradient, compiled: CompiledGradient | None = None, predict: str | None = None,
                 target: str | None = None, seed: int = 0, full_batch: bool = False):
        self.engine, self.data = engine, engine.data
        self.compiled, self.predict, self.target, self.seed = compiled, predict, target, seed
        self.samples = self.data.total
        self.full_batch = full_batch
        self._ahead: tuple[dict, Batch] | None = None  # the full batch at the parameters of the last metrics

    def fingerprint(self) -> str:
        return self.data.fingerprint(self.engine.timeout)

    def batches(self, batch_size: int | None, rng: np.random.Generator, epoch: int) -> list:
        """Whole blocks, at most ``batch_size`` samples a batch (the data were cut into blocks of at most
        that many rows), in the order drawn from the seed and the epoch (``rng`` is not used)."""
        if batch_size is None:
            return [None]
        return sample_batches(self.data.counts, self.seed, epoch, batch_size)

    def batch(self, params: dict[str, np.ndarray], rows: np.ndarray | None) -> Batch:
        ahead, self._ahead = self._ahead, None
        if rows is None and ahead is not None and _same(ahead[0], params):
            return ahead[1]
        loss, grads = self.engine.loss_and_grad(params, rows)
        covered = self.data.total if rows is None else sum(self.data.counts[i] for i in rows)
        return Batch(loss, grads, covered)

    def metrics(self, params: dict[str, np.ndarray]) -> dict[str, float]:
        if not self.full_batch:
            return self.engine.evaluate(params, self.predict, self.target)
        row, grads = self.engine.evaluate_with_gradients(params, self.predict, self.target)
        self._ahead = ({k: np.array(v, dtype=np.float64) for k, v in params.items()},
                       Batch(row["loss"], grads, self.samples))
        return row

    def explain(self, params: dict[str, np.ndarray], rows: np.ndarray | None) -> str:
        """The first block of the batch whose loss or gradient is not finite, fetched here and explained
        as on one machine (the node and the operation; rows counted from the block's first)."""
        if not all(np.all(np.isfinite(v)) for v in params.values()):
            name, value = next((k, v) for k, v in params.items() if not np.all(np.isfinite(v)))
            return f"parameter '{name}' is {value if np.ndim(value) == 0 else 'not finite'}"
        blocks = list(range(len(self.data))) if rows is None else [int(i) for i in rows]
        results = self.engine.block_results(params, blocks)
        bad = next((i for i, (_, loss, grads) in zip(blocks, results)
                    if not (np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values()))), None)
        if bad is None:
            return "the loss or a gradient is not finite over the batch, though it is in every block"
        where = f"in block {self.data.names[bad]}"
        if self.compiled is None:
            return f"the loss or a gradient is not finite {where}"
        block = self.data.fetch(bad)
        return f"{explain_non_finite(self.compiled, params, block, np.arange(self.data.counts[bad]))}, {where}"


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same parameters, bit for bit (so the same gradient)."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], np.asarray(b[k], dtype=np.float64)) for k in a)


@dataclass
class DaskDataset:
    """The sources a run trains on, as :class:`~symbackprop.data.Dataset` describes arrays in memory."""

    train: DaskGradients
    held_out: DaskGradients | None
    description: str

    @property
    def size(self) -> int:
        return self.train.samples

    @property
    def held_out_size(self) -> int:
        return self.held_out.samples if self.held_out is not None else 0


def _load(data: str | Path | Mapping[str, np.ndarray], compiled: CompiledGradient, client: Any,
          batch_size: int | None, persist: bool | None, timeout: float | None) -> DaskData:
    """Files (a glob or directory) read by the workers, or arrays of this process scattered to them: one
    block per worker for the full batch, blocks of at most ``batch_size`` rows for mini-batches."""
    if isinstance(data, Mapping):
        return DaskData.from_arrays(data, client, block_rows=batch_size, model=compiled, timeout=timeout)
    return DaskData.from_files(data, compiled, client, persist=persist, block_rows=batch_size, timeout=timeout)


def _describe(data: DaskData, origin: str, client: Any, scheduler: str | None) -> str:
    """``parts/*.parquet: 8 blocks kept in the memory of 2 Dask workers (a local cluster)``."""
    workers = len(workers_of(client))
    where = f"the scheduler at {scheduler}" if scheduler else "a local cluster"
    kept = "kept in the memory of" if data.persisted else "read from the files at every step by"
    blocks = f"{len(data)} block{'s' if len(data) != 1 else ''}"
    return f"{origin}: {blocks} {kept} {workers} Dask worker{'s' if workers != 1 else ''} ({where})"


@contextlib.contextmanager
def dask_dataset(compiled: CompiledGradient, data: str | Path | Dataset, held_out: str | Path | None = None, *,
                 scheduler: str | None = None, workers: int | None = None, batch_size: int | None = None,
                 seed: int = 0, persist: bool | None = None, timeout: float | None = None,
                 predict: str | None = None, target: str | None = None,
                 **cluster_options: Any) -> Iterator[DaskDataset]:
    """Connect to the Dask scheduler at ``scheduler``, or start a LocalCluster of ``workers`` processes;
    load the training data there and yield a :class:`DaskDataset` of gradient sources; release
    everything (and close the LocalCluster) on leaving.

    ``data``: a glob or directory of Parquet or CSV files, read by the workers; or a
    :class:`~symbackprop.data.Dataset` in this process's memory (a model's ``[data]``), scattered to
    them with its held-out part. ``held_out``: files of held-out data (replacing a Dataset's part).
    ``batch_size`` cuts the training data into blocks of at most that many rows (a batch is then a group
    of whole blocks). ``persist``: keep the files' blocks in worker memory (True), read them at every
    step (False), or choose by their size against the workers' memory (None). ``timeout`` (seconds)
    bounds connecting and every wait for the cluster. Dask's log messages are silenced meanwhile.
    """
    train_source = data.train if isinstance(data, Dataset) else data
    held_source = held_out if held_out is not None else (data.held_out if isinstance(data, Dataset) else None)
    with connect(scheduler, workers, timeout=timeout or 30, quiet=True, **cluster_options) as client, \
            contextlib.ExitStack() as opened:
        def source(origin: Any, rows: int | None, trains: bool) -> DaskGradients:
            loaded = _load(origin, compiled, client, rows, persist, timeout)
            opened.callback(_quietly, loaded.close)
            engine = DaskGradient(compiled, loaded, timeout)
            opened.callback(_quietly, engine.close)
            full_batch = trains and (rows is None or rows >= loaded.total)
            return DaskGradients(engine, compiled, predict, target, seed, full_batch=full_batch)
        train = source(train_source, batch_size, True)
        held = source(held_source, None, False) if held_source is not None else None
        origin = f"{data.description} scattered from this process" if isinstance(data, Dataset) else str(data)
        yield DaskDataset(train, held, _describe(train.data, origin, client, scheduler))


def _quietly(close) -> None:
    """Release what a run held on the cluster; a cluster already gone has nothing left to release."""
    with contextlib.suppress(Exception):
        close()

