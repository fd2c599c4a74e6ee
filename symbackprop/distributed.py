"""Data-parallel gradients on Dask: the gradient is evaluated where each block of data lives, and the
partial sums are added up on the client.

The generated gradient is a mean over samples, so over blocks of n_1, ..., n_k samples

    loss = (n_1 * loss_1 + ... + n_k * loss_k) / (n_1 + ... + n_k)        (the same for every gradient)

where loss_i is the mean over block i. Each worker returns n_i and n_i times its block's mean loss and
gradients; the client adds them in block order with compensated (Neumaier) summation and divides by
the total, so a full batch equals the single-machine result to rounding (1e-12), whatever the number
and sizes of the blocks. Every step counts the samples it covered and raises :class:`DistributedError`
if the count is not the expected one: never a silently partial sum.

    from symbackprop import compile_gradient
    from symbackprop.distributed import DaskData, DaskGradient, connect

    with connect(workers=2) as client:                  # a LocalCluster of 2 processes, closed after
        data = DaskData.from_files("parts/*.parquet", graph, client)
        with DaskGradient(compile_gradient(graph), data) as engine:
            loss, grads = engine.loss_and_grad(params)  # mean loss and gradients over all samples

What travels, and when: the gradient once per :class:`DaskGradient` (a generated module as its source
text, compiled once in each worker process; any other callable pickled), the parameters once per step
(a node of the step's graph: a worker that needs them fetches them from one that has them), and back
from each block only its count, loss and gradients. The data
stay on the workers (``persist=True``: read once, kept in worker memory, spilled to disk by Dask when
memory runs short), or are read from the files at every step (``persist=False``: for data larger than
the cluster's memory).

Faults: Dask recomputes the blocks a lost worker held from their source (files, Dask collections), so
the step's result does not change; blocks scattered from this process's memory are scattered again
from it. What Dask gives up on (a block whose workers keep dying, a scheduler gone, a step over its
``timeout``) ends the step with a one-line :class:`DistributedError`.

Dask (``dask``, ``distributed``) and ``pyarrow`` are an optional extra, ``pip install
'symbackprop[dask]'``, imported only when this module is used.
"""
from __future__ import annotations

import contextlib
import hashlib
import linecache
import logging
import os
import signal
import threading
import time
import types
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .compile import CompiledGradient, load_source
from .data import (InputColumns, arrays_from_columns, check_arrays, check_header, sample_count, table_layout,
                   warn_ignored_columns)
from .graph import Graph, UserError
from .partitions import Partition, list_partitions, read_partition

GATHER_CHUNK = 64  # partial results fetched at once: bounds the client's memory to this many gradients
RESUBMITS = 3  # how often a step resubmits the blocks of scattered data that a lost worker held
MAX_LOCAL_WORKERS = 8  # default LocalCluster size: one process per core, at most this many (each ~200 MB)
MEMORY_SHARE = 0.5  # persist=None keeps the data in worker memory when they take at most this share of it


class DistributedError(UserError):
    """A step that could not be completed on the cluster: says what was lost or missing, in one line."""


class LostWork(DistributedError):
    """The cluster lost a worker's results or data, and Dask could not recompute them."""


def _dask():
    """``(dask, distributed)``, or a one-line error saying how to install them."""
    try:
        import dask
        import distributed
    except ImportError:
        raise UserError("the Dask engine needs dask, distributed and pyarrow: "
                        "pip install 'symbackprop[dask]'") from None
    return dask, distributed


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


# ---- the cluster ----------------------------------------------------------------------------------------
def default_workers() -> int:
    """Worker processes of a LocalCluster when none are asked for: one per CPU core this process may use
    (Dask's count, which honours cgroup limits), at most MAX_LOCAL_WORKERS."""
    dask, _ = _dask()
    import dask.system
    return max(1, min(dask.system.CPU_COUNT, MAX_LOCAL_WORKERS))


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Silence Dask's log messages in this process (workers lost and restarted, failed tasks, connections
    closed) and asyncio's, so that an error is the one line its exception says; restored on leaving."""
    from distributed.utils import silence_logging_cmgr
    loggers = [logging.getLogger(name) for name in ("asyncio", "tornado")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        with silence_logging_cmgr(logging.CRITICAL + 1), silence_logging_cmgr(logging.CRITICAL + 1, root="bokeh"):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _ignore_interrupts() -> None:
    """In a worker process: Ctrl-C is for the process that started the cluster, which then closes it
    (a worker interrupted on its own prints a traceback and is restarted)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt_plugin() -> Any:
    """A worker plugin that runs :func:`_ignore_interrupts` in every worker, restarted ones too."""
    _, distributed = _dask()

    class IgnoreInterrupts(distributed.WorkerPlugin):
        name = "symbackprop-ignore-interrupts"

        def setup(self, worker):
            _ignore_interrupts()
    return IgnoreInterrupts()


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """SIGINT ignored in this process while worker processes are started: they inherit it from birth."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, timeout: float = 30,
            quiet: bool = False, **cluster_options: Any) -> Iterator[Any]:
    """A ``distributed.Client``: to the scheduler at ``scheduler`` (``"tcp://host:8786"``), or else to a
    ``LocalCluster`` of ``workers`` processes (default :func:`default_workers`: one per CPU core, at most
    8; one thread each), started here and closed on leaving the ``with`` block. ``cluster_options`` go
    to ``LocalCluster`` (``memory_limit="2GB"``, ``local_directory=...``).

    ``quiet=True`` (the command line's choice) silences Dask's log messages while connected, and the
    processes of a LocalCluster started here ignore Ctrl-C: it interrupts this process, which closes
    them, instead of printing a traceback from each worker.
    """
    _, distributed = _dask()
    if scheduler is not None and workers is not None:
        raise UserError("give a scheduler address or a number of workers, not both")
    with quiet_logs() if quiet else contextlib.nullcontext():
        if scheduler is not None:
            try:
                client = distributed.Client(scheduler, timeout=timeout)
            except (OSError, TimeoutError, ValueError) as e:
                raise DistributedError(f"cannot connect to the Dask scheduler at {scheduler} "
                                       f"({_one_line(e)})") from None
            with client:
                yield client
            return
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise UserError(f"workers must be a whole number >= 1, got {workers!r}")
        options = {"n_workers": workers or default_workers(), "threads_per_worker": 1, "processes": True,
                   "dashboard_address": ":0", **({"silence_logs": logging.CRITICAL + 1} if quiet else {}),
                   **cluster_options}
        try:
            with _interrupts_ignored() if quiet else contextlib.nullcontext():
                cluster = distributed.LocalCluster(**options)
        except (OSError, RuntimeError, TimeoutError, ValueError) as e:  # ports, memory, a bad option
            raise DistributedError(f"cannot start a local Dask cluster of {options['n_workers']} workers "
                                   f"({_one_line(e)})") from None
        with cluster, distributed.Client(cluster, timeout=timeout) as client:
            if quiet:
                client.register_plugin(_interrupt_plugin())
            yield client


def _client(client: Any | None) -> Any:
    _, distributed = _dask()
    if client is not None:
        return client
    try:
        return distributed.default_client()
    except ValueError:
        raise DistributedError("no Dask client: start one (distributed.Client(...)) or use "
                               "symbackprop.distributed.connect(workers=2)") from None


# ---- the gradient, as it travels to the workers ---------------------------------------------------------
_COMPILED: dict[str, types.ModuleType] = {}  # in each worker process: generated source hash -> module


class RemoteGradient:
    """A gradient that can be sent to workers: a generated module's source text, compiled on first use
    in each worker process (and cached there by the text's hash), or any other callable, pickled.

    ``loss_and_grad(params, data) -> (mean loss, grads)`` as in DESIGN.md; ``forward`` when the source
    defines it; ``loss_name`` (the loss node) when known, for :meth:`DaskGradient.evaluate`.
    """

    def __init__(self, source: str | None = None, function: Callable | None = None,
                 loss_name: str | None = None):
        if (source is None) == (function is None):
            raise TypeError("give the generated source or a function, not both")
        self.source, self.function, self.loss_name = source, function, loss_name

    @property
    def module(self) -> types.ModuleType | None:
        if self.source is None:
            return None
        key = hashlib.sha256(self.source.encode()).hexdigest()
        if key not in _COMPILED:
            _COMPILED[key] = load_source(self.source, f"distributed {key[:12]}")
        return _COMPILED[key]

    def loss_and_grad(self, params: dict, data: dict) -> tuple[float, dict]:
        return self.function(params, data) if self.source is None else self.module.loss_and_grad(params, data)

    @property
    def forward(self) -> Callable | None:
        return getattr(self.module, "forward", None) if self.source is not None else None


def _generated_source(function: Callable) -> str | None:
    """The source text of the module that defines ``function``, if compiling that text gives the same
    functions (the module as imported, not a file edited since); None where there is no such text."""
    text = "".join(linecache.getlines(function.__code__.co_filename))
    if not text:
        return None
    try:
        compiled = vars(RemoteGradient(text).module)
    except Exception:  # a module that needs more than its own text: send the function pickled instead
        return None
    imported = function.__globals__

    def same(name: str, f: types.FunctionType) -> bool:  # flags aside: compile() adds __future__ ones
        code = getattr(imported.get(name), "__code__", None)
        return code is not None and f.__code__.replace(co_flags=code.co_flags) == code
    return text if all(same(n, f) for n, f in compiled.items() if isinstance(f, types.FunctionType)) else None


def remote_gradient(gradient: Any) -> tuple[RemoteGradient, list[InputColumns] | None]:
    """What to send for ``gradient``, and its inputs as table columns when it says what they are.

    ``gradient`` is a :class:`~symbackprop.compile.CompiledGradient` or a generated module (or its
    ``loss_and_grad``): their source text is sent, and compiled once by each worker, which then needs
    nothing but NumPy to run it. Any other callable with the same contract is pickled.
    """
    if isinstance(gradient, RemoteGradient):
        return gradient, None
    if isinstance(gradient, CompiledGradient):
        graph = gradient.derivation.graph
        return RemoteGradient(gradient.source, loss_name=graph.loss_name), table_layout(graph)
    function = getattr(gradient, "loss_and_grad", None) if isinstance(gradient, types.ModuleType) else gradient
    if not callable(function):
        raise UserError(f"expected a compiled gradient, a generated module or a loss_and_grad(params, data) "
                        f"callable, got {getattr(gradient, '__name__', type(gradient).__name__)}")
    namespace = getattr(function, "__globals__", {})
    if namespace.get("loss_and_grad") is not function:  # not a module's own loss_and_grad
        return RemoteGradient(function=function), None
    inputs = namespace.get("INPUTS")
    layout = table_layout(inputs) if isinstance(inputs, Mapping) else None
    source = _generated_source(function)
    return (RemoteGradient(source) if source is not None else RemoteGradient(function=function)), layout


def model_layout(model: Any) -> list[InputColumns]:
    """The inputs (as table columns) of a graph, compiled gradient, generated module or ``INPUTS`` dict."""
    if isinstance(model, CompiledGradient):
        model = model.derivation.graph
    if isinstance(model, (Graph, Mapping)) or (isinstance(model, Sequence) and all(
            isinstance(q, InputColumns) for q in model)):
        layout = table_layout(model)
    else:
        layout = remote_gradient(model)[1]
        if layout is None:
            raise UserError("cannot tell the model's inputs: give the graph, the compiled gradient or "
                            "the generated module (its INPUTS)")
    if not layout:
        raise UserError("the model has no inputs: there is no data to distribute")
    return layout


# ---- work done on the workers ------------------------------------------------------------------------------
def _rows(block: dict) -> int:
    return sample_count(block)


def _take_rows(block: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop].copy() for k, v in block.items()}


def _frame_block(frame: Any, layout: list[InputColumns], name: str) -> dict:
    """A pandas partition of a Dask dataframe, with columns named as in CSV, as input arrays."""
    return arrays_from_columns({c: frame[c].to_numpy() for q in layout for c in q.columns}, layout, name)


def _array_block(arrays: dict, layout: list[InputColumns] | None, name: str) -> dict:
    """A block's arrays as float64, checked as a data file is when the model's inputs are known."""
    checked = check_arrays(arrays, layout, name, row_name=lambda i: f"row index {i}") if layout else arrays
    return {k: np.asarray(v, dtype=np.float64) for k, v in checked.items()}


def _partial_sums(gradient: RemoteGradient, params: dict, block: dict) -> tuple[int, float, dict]:
    """n, and n times the block's mean loss and gradients."""
    n = sample_count(block)
    with np.errstate(all="ignore"):  # a non-finite result is the training loop's to report
        loss, grads = gradient.loss_and_grad(params, block)
        return n, float(loss) * n, {k: np.asarray(g, dtype=np.float64) * n for k, g in grads.items()}


CORRECT = "#correct"  # the key of the correct predictions among an evaluation's sums (no parameter's name)


def _partial_evaluation(gradient: RemoteGradient, params: dict, block: dict, predict: str | None,
                        target: str | None, gradients: bool = False) -> tuple[int, float, dict]:
    """n, the block's summed loss, its number of correct predictions (with predict and target, under
    CORRECT) and, with ``gradients``, n times its mean gradients (under the parameters' names): the
    evaluation and the next full-batch step in one pass over the block."""
    from .train import accuracy
    n, sums = sample_count(block), {}
    with np.errstate(all="ignore"):
        if gradients:
            sums = _partial_sums(gradient, params, block)[2]
        if gradient.forward is None or gradient.loss_name is None:
            return n, float(gradient.loss_and_grad(params, block)[0]) * n, sums
        values = gradient.forward(params, block)
        losses = np.broadcast_to(np.asarray(values[gradient.loss_name], dtype=np.float64), (n,))
        if predict:
            sums[CORRECT] = float(round(accuracy(values, block, predict, target) * n))
        return n, float(losses.sum()), sums


def _block_digest(block: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(block):
        h.update(name.encode())
        h.update(np.ascontiguousarray(block[name], dtype=np.float64).tobytes())
    return h.hexdigest()


# ---- data on the cluster ---------------------------------------------------------------------------------
@dataclass
class DaskData:
    """Data on a cluster, in blocks: what a step evaluates the gradient on.

    ``blocks`` are Dask futures held in worker memory (persisted), or ``Delayed`` objects that read a
    block from its source at every step. ``counts`` are the samples in each block, counted when the
    data were loaded and checked: each step checks that it covered exactly these. ``names`` say where a
    block comes from (``parts/p3.parquet (row group 0)``). ``local`` keeps blocks scattered from this
    process's memory, so that a block lost with its worker can be scattered again.
    """

    client: Any
    blocks: list
    counts: list[int]
    names: list[str]
    layout: list[InputColumns] | None = None
    persisted: bool = True
    local: list[dict] | None = field(default=None, repr=False)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def __len__(self) -> int:
        return len(self.blocks)

    # -- constructors --
    @classmethod
    def from_files(cls, source: str | os.PathLike, model: Any, client: Any = None, persist: bool | None = True,
                   block_rows: int | None = None, timeout: float | None = None) -> "DaskData":
        """A glob or directory of Parquet or CSV files (see :mod:`symbackprop.partitions`), columns named
        as in CSV; one block per Parquet row group or CSV file, split into blocks of at most
        ``block_rows`` rows if given. ``model`` (graph, compiled gradient, generated module) gives the
        inputs' columns. Every file is read and checked once here, so bad data fail before a step.
        ``persist=None`` keeps the blocks in worker memory when the data, as float64, take at most half
        of the workers' memory limits together (:func:`estimated_bytes`), and reads them at every step
        otherwise.
        """
        dask, _ = _dask()
        layout = model_layout(model)
        parts = list_partitions(source, layout)
        client = _client(client)
        if persist is None:
            persist = estimated_bytes(parts, layout) <= MEMORY_SHARE * cluster_memory(client)
        read = [dask.delayed(read_partition, pure=True)(p, layout, dask_key_name=_key("read", p)) for p in parts]
        return cls._load(client, read, [str(p) for p in parts], layout, persist, block_rows, timeout)

    @classmethod
    def from_dataframe(cls, frame: Any, model: Any, client: Any = None, persist: bool = True,
                       block_rows: int | None = None, timeout: float | None = None) -> "DaskData":
        """A Dask dataframe whose columns are named as in CSV (``x``, ``x[0]``, ``"M[0,1]"``); one block
        per partition (or per ``block_rows`` rows of one)."""
        dask, _ = _dask()
        layout = model_layout(model)
        warn_ignored_columns("dataframe", check_header([str(c) for c in frame.columns], layout, "dataframe"))
        names = [f"dataframe partition {i}" for i in range(frame.npartitions)]
        blocks = [dask.delayed(_frame_block, pure=True)(part, layout, name)
                  for part, name in zip(frame.to_delayed(), names)]
        return cls._load(_client(client), blocks, names, layout, persist, block_rows, timeout)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], client: Any = None, blocks: int | None = None,
                    block_rows: int | None = None, model: Any = None, persist: bool = True,
                    timeout: float | None = None) -> "DaskData":
        """Input name -> array ``(N, *shape)``, as for ``loss_and_grad``.

        Dask arrays: one block per chunk of rows (the first array's row chunks; the others are
        rechunked to match). NumPy arrays: split into ``blocks`` blocks of nearly equal size (default:
        one per worker) or blocks of ``block_rows`` rows, and scattered to the workers. ``model``, if
        given, checks names, shapes and values as a data file is checked.
        """
        dask, _ = _dask()
        import dask.array as da
        client = _client(client)
        layout = model_layout(model) if model is not None else None
        if not arrays:
            raise UserError("no arrays: give input name -> array (N, *shape)")
        if not any(isinstance(v, da.Array) for v in arrays.values()):
            data = check_arrays(arrays, layout, "arrays", row_name=lambda i: f"row index {i}") if layout else {
                k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
            n = sample_count(data)
            lengths = {k: len(v) for k, v in data.items()}
            if len(set(lengths.values())) > 1:
                raise UserError(f"arrays: the inputs have different numbers of rows {lengths}")
            if block_rows is not None:
                k = -(-n // _positive(block_rows, "block_rows"))
            else:
                k = _positive(blocks, "blocks") if blocks is not None else len(workers_of(client)) or 1
            bounds = np.linspace(0, n, min(k, n) + 1).round().astype(int)
            parts = [{name: v[a:b] for name, v in data.items()} for a, b in zip(bounds, bounds[1:])]
            return cls.from_partitions(parts, client, timeout=timeout)
        first = next(v for v in arrays.values() if isinstance(v, da.Array))
        rows = first.chunks[0]
        chunked = {}
        for name, v in arrays.items():
            v = v if isinstance(v, da.Array) else da.from_array(np.asarray(v))
            if v.ndim == 0 or v.shape[0] != first.shape[0]:
                raise UserError(f"arrays: '{name}' has shape {v.shape}, but the first array has {first.shape[0]} rows")
            chunked[name] = v.rechunk((rows,) + tuple(-1 for _ in v.shape[1:])).to_delayed().reshape(-1)
        names = [f"array block {i}" for i in range(len(rows))]
        blocks_ = [dask.delayed(_array_block, pure=True)({k: chunked[k][i] for k in chunked}, layout, names[i])
                   for i in range(len(rows))]
        return cls._load(client, blocks_, names, layout, persist, block_rows, timeout)

    @classmethod
    def from_partitions(cls, partitions: Sequence[Any], client: Any = None, model: Any = None,
                        timeout: float | None = None) -> "DaskData":
        """Blocks given one by one: dicts of NumPy arrays (scattered to the workers, and kept here to
        scatter again if a worker is lost), or futures / ``Delayed`` objects that compute to such dicts."""
        dask, _ = _dask()
        client = _client(client)
        layout = model_layout(model) if model is not None else None
        if not partitions:
            raise UserError("no partitions")
        names = [f"partition {i}" for i in range(len(partitions))]
        if all(isinstance(p, Mapping) for p in partitions):
            local = [_array_block(dict(p), layout, name) for p, name in zip(partitions, names)]
            futures = [_scatter(client, block, timeout) for block in local]
            return cls(client, futures, [sample_count(b) for b in local], names, layout, True, local)
        blocks = [dask.delayed(_array_block, pure=True)(p, layout, name) for p, name in zip(partitions, names)]
        return cls._load(client, blocks, names, layout, True, None, timeout)

    @classmethod
    def _load(cls, client: Any, blocks: list, names: list[str], layout, persist: bool,
              block_rows: int | None, timeout: float | None) -> "DaskData":
        """Read and check every block once (keeping them in worker memory if ``persist``), count rows,
        and split blocks into ``block_rows`` pieces."""
        dask, _ = _dask()
        if persist:
            blocks = client.compute(blocks, optimize_graph=False)
        counts = [int(n) for n in _gather(client, _compute_each(client, _rows, [(b,) for b in blocks]), timeout)]
        if block_rows is not None:
            limit = _positive(block_rows, "block_rows")
            pieces = []  # (block, first row, end row, name)
            for b, n, name in zip(blocks, counts, names):
                bounds = np.linspace(0, n, -(-n // limit) + 1).round().astype(int).tolist()
                pieces += [(b, start, stop, f"{name} rows {start}-{stop - 1}" if len(bounds) > 2 else name)
                           for start, stop in zip(bounds, bounds[1:])]
            cuts = [(b, start, stop) for b, start, stop, _ in pieces]
            blocks = (_compute_each(client, _take_rows, cuts) if persist
                      else [dask.delayed(_take_rows, pure=True)(*cut) for cut in cuts])
            counts, names = [stop - start for _, start, stop, _ in pieces], [name for *_, name in pieces]
        return cls(client, blocks, counts, names, layout, persist)

    # -- use --
    def fetch(self, index: int) -> dict[str, np.ndarray]:
        """Block ``index`` as NumPy arrays on the client (to look at a batch that went wrong)."""
        b = self.blocks[index]
        return _gather(self.client, _compute_each(self.client, _take_rows, [(b, 0, self.counts[index])]), None)[0]

    def fingerprint(self, timeout: float | None = None) -> str:
        """A hash of every block's arrays and of the blocking, so a resumed run can refuse other data."""
        digests = _gather(self.client, _compute_each(self.client, _block_digest, [(b,) for b in self.blocks]), timeout)
        h = hashlib.sha256()
        for n, d in zip(self.counts, digests):
            h.update(f"{n}:{d};".encode())
        return h.hexdigest()[:16]

    def close(self) -> None:
        """Let go of the blocks held in worker memory (released, not cancelled: another DaskData on the
        same files shares their keys and keeps them)."""
        for b in self.blocks:
            if isinstance(b, _dask()[1].Future):
                b.release()
        self.blocks, self.local = [], None


def estimated_bytes(parts: Sequence[Partition], layout: Sequence[InputColumns]) -> int:
    """The memory the partitions' data take as float64 arrays: exact for Parquet (its footers count the
    rows), the file's size for CSV (whose rows are counted only when read; a number written with 8 to 20
    characters takes 8 bytes)."""
    columns = sum(len(q.columns) for q in layout)
    total = 0
    for p in parts:
        total += p.rows * columns * 8 if p.rows is not None else os.path.getsize(p.path)
    return total


def workers_of(client: Any) -> dict[str, dict]:
    """Every worker the scheduler knows: address -> what it says about it (memory limit, ...)."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]  # some Dask versions list 5 unless asked
    except TypeError:  # versions without n_workers list them all
        return client.scheduler_info()["workers"]


def cluster_memory(client: Any) -> float:
    """The workers' memory limits added up, in bytes (infinite when a worker has no limit)."""
    limits = [w.get("memory_limit") or 0 for w in workers_of(client).values()]
    return float("inf") if not limits or 0 in limits else float(sum(limits))


def _compute_each(client: Any, func: Callable, argument_lists: Sequence[tuple]) -> list:
    """Futures of ``func(*args)`` for each ``args``, sent to the scheduler at once (one message, not one
    per block). An argument may be a future (a block in worker memory) or a ``Delayed`` (a block read
    from its source within the same graph)."""
    dask, _ = _dask()
    from dask.delayed import Delayed
    if not any(isinstance(a, Delayed) for args in argument_lists for a in args):
        return client.map(func, *zip(*argument_lists), pure=False)
    return client.compute([dask.delayed(func, pure=False)(*args) for args in argument_lists], optimize_graph=False)


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def _key(prefix: str, part: Partition) -> str:
    digest = hashlib.sha256(repr(part).encode()).hexdigest()[:16]
    return f"symbackprop-{prefix}-{digest}"


def _literal(value: Any, kind: str) -> Any:
    """``value`` as a node of a Dask graph (a ``Delayed``): it travels with the graph that uses it, and
    the scheduler can compute it again on another worker if the one holding it dies. (Scattered data
    cannot be recomputed, and a scatter broadcast to a worker that has just died can hang.)"""
    dask, _ = _dask()
    return dask.delayed(value, name=f"symbackprop-{kind}-{uuid.uuid4().hex}", traverse=False)


def _scatter(client: Any, value: Any, timeout: float | None) -> Any:
    """A future of ``value``, held by one worker: for blocks of this process's data, which the step scatters
    again from this process if that worker dies. A worker dying under the send fails it: it is sent
    again once the scheduler has noticed, RESUBMITS times at most, then a LostWork error."""
    _, distributed = _dask()
    for attempt in range(RESUBMITS + 1):
        try:  # a list of one value: scattering a dict itself would scatter its arrays under their names
            return client.scatter([value], hash=False, timeout=timeout)[0]
        except (TimeoutError, distributed.TimeoutError):
            raise DistributedError(f"the cluster did not take the data within {timeout} s") from None
        except OSError as e:  # the connection to a worker closed under the send
            if attempt == RESUBMITS:
                raise LostWork(f"the cluster lost the work: cannot send data to the workers ({_one_line(e)})") from None
            time.sleep(0.25 * 2 ** attempt)


def _gather(client: Any, futures: list, timeout: float | None) -> list:
    """Results of ``futures`` (one per block); a lost worker or a timeout becomes a DistributedError."""
    _, distributed = _dask()
    try:
        distributed.wait(futures, timeout=timeout)
        return client.gather(futures)
    except UserError:
        raise
    except (TimeoutError, distributed.TimeoutError):
        client.cancel(futures)
        raise DistributedError(f"the cluster did not finish within {timeout} s") from None
    except (distributed.scheduler.KilledWorker, distributed.client.FutureCancelledError,
            distributed.CancelledError, OSError) as e:
        client.cancel(futures)
        raise LostWork(f"the cluster lost the work: {_one_line(e)}") from None


# ---- summing partial results ------------------------------------------------------------------------------
class CompensatedSum:
    """Neumaier's compensated sum of arrays, elementwise: the result is the exact sum rounded once
    (up to terms of order eps^2), so it does not depend on how the data were cut into blocks."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.error: np.ndarray | None = None

    def add(self, value: Any) -> None:
        x = np.asarray(value, dtype=np.float64)
        if self.total is None:
            self.total, self.error = x.copy(), np.zeros_like(x)
            return
        t = self.total + x
        with np.errstate(invalid="ignore"):  # inf - inf: an infinite sum needs no correction
            lost = np.where(np.abs(self.total) >= np.abs(x), (self.total - t) + x, (x - t) + self.total)
        self.error += np.where(np.isfinite(t), lost, 0.0)
        self.total = t

    def value(self) -> np.ndarray:
        return self.total + self.error


# ---- mini-batches ----------------------------------------------------------------------------------------
def block_order(blocks: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``blocks`` blocks: a permutation drawn from ``seed`` and
    ``epoch`` alone, so a resumed run (or another process) draws the same order."""
    for value, name in ((blocks, "blocks"), (seed, "seed"), (epoch, "epoch")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise UserError(f"{name} must be a whole number >= 0, got {value!r}")
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(blocks))


def block_batches(blocks: int, seed: int, epoch: int, blocks_per_batch: int = 1) -> list[np.ndarray]:
    """The batches of one epoch: :func:`block_order` cut into groups of ``blocks_per_batch`` blocks (the
    last group may be smaller). Each batch's gradient is the mean over all samples of its blocks."""
    order = block_order(blocks, seed, epoch)
    k = _positive(blocks_per_batch, "blocks_per_batch")
    return [order[i:i + k] for i in range(0, len(order), k)]


def sample_batches(counts: Sequence[int], seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
    """The batches of one epoch when a batch may hold at most ``batch_size`` samples: the blocks in
    :func:`block_order`, grouped in that order into as many whole blocks as fit (at least one block;
    blocks of at most ``batch_size`` rows, ``block_rows=batch_size``, never exceed it)."""
    limit = _positive(batch_size, "batch_size")
    batches: list[list[int]] = []
    size = 0
    for i in block_order(len(counts), seed, epoch).tolist():
        if not batches or size + counts[i] > limit:
            batches.append([])
            size = 0
        batches[-1].append(i)
        size += counts[i]
    return [np.array(b) for b in batches]


# ---- the engine --------------------------------------------------------------------------------------------
def _gradients(means: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean gradients as the generated module gives them: a float for a scalar parameter."""
    return {k: float(g) if g.ndim == 0 else g for k, g in means.items()}


class PendingStep:
    """Work submitted to the cluster, one task per block: ``task[0](gradient, params, block, *task[1:])``
    returning ``(n, n * mean loss, {name: n * mean value})``. :meth:`result` waits and adds it up."""

    def __init__(self, engine: "DaskGradient", params: dict, blocks: list[int], task: tuple = (_partial_sums,)):
        self.engine, self.params, self.blocks, self.task = engine, params, blocks, task
        self.futures = engine._submit(task, params, blocks)

    def means(self, timeout: float | None = None) -> dict[str, np.ndarray]:
        """``"loss"`` and every other value, each a mean over all samples of the step's blocks."""
        engine, data = self.engine, self.engine.data
        for attempt in range(RESUBMITS + 1):
            try:
                sums, covered = {}, 0
                for start in range(0, len(self.futures), GATHER_CHUNK):
                    chunk = _gather(engine.client, self.futures[start:start + GATHER_CHUNK], timeout)
                    for i, (n, loss, values) in zip(self.blocks[start:], chunk):  # in block order
                        if n != data.counts[i]:
                            raise DistributedError(f"block {data.names[i]} gave {n} samples, expected "
                                                   f"{data.counts[i]}: the step is refused")
                        covered += n
                        for k, v in [("loss", loss), *values.items()]:  # no parameter is named loss
                            sums.setdefault(k, CompensatedSum()).add(v)
                break
            except LostWork:
                if attempt == RESUBMITS or not engine._scatter_lost():
                    raise
                self.futures = engine._submit(self.task, self.params, self.blocks)
        expected = sum(data.counts[i] for i in self.blocks)
        if covered != expected:
            raise DistributedError(f"the step covered {covered} samples, expected {expected}: refused")
        return {k: s.value() / expected for k, s in sums.items()}

    def result(self, timeout: float | None = None) -> tuple[float, dict[str, Any]]:
        """The mean loss and gradients over every sample of the step's blocks."""
        means = self.means(timeout)
        return float(means.pop("loss")), _gradients(means)


class DaskGradient:
    """A gradient evaluated over data on a Dask cluster; the gradient is sent to the workers once.

    ``gradient``: a :class:`~symbackprop.compile.CompiledGradient`, a generated module (or its
    ``loss_and_grad``), or any callable with the contract of DESIGN.md. ``timeout`` (seconds) bounds
    every wait for the cluster; None waits as long as it takes.
    """

    def __init__(self, gradient: Any, data: DaskData, timeout: float | None = None):
        self.remote, layout = remote_gradient(gradient)
        if layout is not None and data.layout is not None and {q.name for q in layout} != {q.name for q in data.layout}:
            raise UserError(f"the data hold inputs {sorted(q.name for q in data.layout)}, the gradient "
                            f"expects {sorted(q.name for q in layout)}")
        self.data, self.client, self.timeout = data, data.client, timeout
        self._gradient = self.client.compute(_literal(self.remote, "gradient"))  # held by a worker; recomputable

    def __enter__(self) -> "DaskGradient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the gradient held by the workers (the data stay: :meth:`DaskData.close`)."""
        if self._gradient is not None:
            self.client.cancel([self._gradient])
            self._gradient = None

    def loss_and_grad(self, params: Mapping[str, Any], blocks: Sequence[int] | None = None
                      ) -> tuple[float, dict[str, Any]]:
        """The mean loss and gradients over all samples of ``blocks`` (default: every block), at ``params``."""
        return self.submit(params, blocks).result(self.timeout)

    __call__ = loss_and_grad

    def submit(self, params: Mapping[str, Any], blocks: Sequence[int] | None = None) -> PendingStep:
        """Start a step without waiting for it (:meth:`PendingStep.result` waits)."""
        return PendingStep(self, self._params(params), self._blocks(blocks))

    def block_results(self, params: Mapping[str, Any], blocks: Sequence[int] | None = None) -> list[tuple]:
        """Each block's ``(n, n * mean loss, {name: n * mean gradient})``, in the order of ``blocks``: to find
        the block where a value stopped being finite."""
        index = self._blocks(blocks)
        return _gather(self.client, self._submit((_partial_sums,), self._params(params), index), self.timeout)

    def evaluate(self, params: Mapping[str, Any], predict: str | None = None, target: str | None = None,
                 blocks: Sequence[int] | None = None) -> dict[str, float]:
        """The mean loss over all samples (and the accuracy, given a ``predict`` node and ``target``
        input, as in training), from the forward pass only when the gradient has one."""
        return self._evaluation(params, predict, target, blocks, False)[0]

    def evaluate_with_gradients(self, params: Mapping[str, Any], predict: str | None = None,
                                target: str | None = None) -> tuple[dict[str, float], dict[str, Any]]:
        """:meth:`evaluate` over all samples and the full batch's gradients at the same parameters, in
        one pass over the data: a training loop's history row after an epoch and its next step."""
        return self._evaluation(params, predict, target, None, True)

    def _evaluation(self, params, predict, target, blocks, gradients: bool) -> tuple[dict[str, float], dict]:
        if predict is not None and self.remote.forward is None:
            raise UserError("accuracy needs the model's forward pass: give a compiled gradient")
        task = (_partial_evaluation, predict, target, gradients)
        means = PendingStep(self, self._params(params), self._blocks(blocks), task).means(self.timeout)
        row = {"loss": float(means.pop("loss"))}
        if predict:
            row["accuracy"] = float(means.pop(CORRECT))
        return row, _gradients(means)

    def batches(self, seed: int, epoch: int, blocks_per_batch: int = 1) -> list[np.ndarray]:
        """This data's :func:`block_batches` for one epoch."""
        return block_batches(len(self.data), seed, epoch, blocks_per_batch)

    # -- the machinery --
    def _params(self, params: Mapping[str, Any]) -> dict:
        if self._gradient is None:
            raise UserError("this DaskGradient is closed")
        return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}

    def _blocks(self, blocks: Sequence[int] | None) -> list[int]:
        if blocks is None:
            return list(range(len(self.data)))
        index = [int(i) for i in np.asarray(blocks).reshape(-1)]
        if not index:
            raise UserError("a step needs at least one block")
        bad = next((i for i in index if not 0 <= i < len(self.data)), None)
        if bad is not None:
            raise UserError(f"block {bad} does not exist (the data have {len(self.data)} blocks)")
        if len(set(index)) != len(index):
            raise UserError("a step lists a block twice")
        return index

    def _submit(self, task: tuple, params: dict, index: list[int]) -> list:
        """One future per block; the parameters go with the step's graph, once (a worker that needs them
        fetches them from the one that holds them; Dask recomputes them if that worker dies)."""
        sent = _literal(params, "params")
        with warnings.catch_warnings():  # large parameters make a large graph; they are in it once
            warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
            return _compute_each(self.client, task[0], [(self._gradient, sent, self.data.blocks[i], *task[1:])
                                                        for i in index])

    def _scatter_lost(self) -> bool:
        """Scatter again, from this process's copies, the blocks whose data were lost with a worker.
        False if nothing could be scattered again: the step cannot be retried."""
        try:
            again = False
            for i, block in enumerate(self.data.blocks):
                if self.data.local is not None and block.status != "finished":
                    self.data.blocks[i] = _scatter(self.client, self.data.local[i], self.timeout)
                    again = True
            return again
        except Exception:  # the scheduler itself is gone: the step's own error says what was lost
            return False


def dask_loss_and_grad(gradient: Any, params: Mapping[str, Any], data: Any, client: Any = None,
                       model: Any = None, timeout: float | None = None) -> tuple[float, dict[str, Any]]:
    """The mean loss and gradients of ``gradient`` at ``params`` over all samples of ``data``, evaluated
    block by block on the Dask cluster of ``client`` (default: the current client).

    ``data``: a :class:`DaskData`; a Dask dataframe with CSV-named columns; input name -> Dask (or
    NumPy) array ``(N, *shape)``; a list of partitions (dicts of arrays, futures or ``Delayed``); or a
    glob/directory of Parquet or CSV files. ``model`` (a graph, ...) names the inputs' columns and
    checks the data; by default the gradient's own inputs, when it says them (a compiled gradient or a
    generated module). One call sends the gradient, loads the data, takes one full-batch step and
    releases what it sent; for many steps use :class:`DaskGradient`.
    """
    _dask()
    import dask.dataframe as dd
    client = _client(client)
    layout = model_layout(model) if model is not None else remote_gradient(gradient)[1]
    owned = not isinstance(data, DaskData)
    if isinstance(data, (str, os.PathLike)):
        data = DaskData.from_files(data, layout if layout is not None else gradient, client, timeout=timeout)
    elif isinstance(data, dd.DataFrame):
        data = DaskData.from_dataframe(data, layout if layout is not None else gradient, client, timeout=timeout)
    elif isinstance(data, Mapping):
        data = DaskData.from_arrays(data, client, model=layout, timeout=timeout)
    elif isinstance(data, Sequence):
        data = DaskData.from_partitions(data, client, model=layout, timeout=timeout)
    elif not isinstance(data, DaskData):
        raise UserError(f"cannot distribute data of type {type(data).__name__}")
    try:
        with DaskGradient(gradient, data, timeout) as engine:
            return engine.loss_and_grad(params)
    finally:
        if owned:
            data.close()
