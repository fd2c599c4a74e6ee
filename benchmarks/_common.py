"""Shared pieces of the benchmarks: side-by-side timing, the benchmark networks, tables, thread settings.

Timing is interleaved: every repeat runs each candidate once in turn (after a warm-up of each), so a
noisy neighbour on a shared machine slows all candidates alike instead of one of them. A result is the
median over the repeats, with the spread (min and max) reported beside it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import sympy as sp  # noqa: E402

from symbackprop.codegen import generate_module  # noqa: E402
from symbackprop.compile import load_source  # noqa: E402,F401  (re-exported for the benchmarks)
from symbackprop.derive import derive  # noqa: E402
from symbackprop.functions import sigmoid  # noqa: E402
from symbackprop.graph import Graph  # noqa: E402
from symbackprop.tensor import softmax, sum_  # noqa: E402


# ---- timing ----------------------------------------------------------------------------------------------
@dataclass
class Timing:
    name: str
    times: list[float]  # seconds per call, one per repeat

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> str:
        """min-max around the median, in percent of the median."""
        m = self.median
        return f"-{100 * (m - min(self.times)) / m:.0f}%/+{100 * (max(self.times) - m) / m:.0f}%"


def time_side_by_side(candidates: dict[str, Callable[[], object]], repeats: int = 9,
                      min_time: float = 0.05) -> dict[str, Timing]:
    """Per-call time of each candidate: warm-up, then ``repeats`` interleaved rounds of ``number`` calls.

    ``number`` is chosen per candidate so a round lasts at least ``min_time`` seconds (timer noise).
    The order of the candidates rotates from round to round, so none always runs first.
    """
    numbers = {}
    for name, f in candidates.items():
        f()  # warm-up: caches, allocator, lazy imports
        start = time.perf_counter()
        f()
        once = max(time.perf_counter() - start, 1e-7)
        numbers[name] = max(1, int(min_time / once))
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            f, n = candidates[name], numbers[name]
            start = time.perf_counter()
            for _ in range(n):
                f()
            times[name].append((time.perf_counter() - start) / n)
    return {name: Timing(name, ts) for name, ts in times.items()}


# ---- thread settings -------------------------------------------------------------------------------------
def blas_threads() -> int:
    """Threads NumPy's BLAS uses (threadpoolctl when installed, else the usual environment variables)."""
    try:
        from threadpoolctl import threadpool_info
        counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
        if counts:
            return max(counts)
    except ImportError:
        pass
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            return int(os.environ[var])
    return os.cpu_count() or 1


def environment() -> str:
    """One line on what the numbers were measured with."""
    parts = [f"python {sys.version.split()[0]}", f"numpy {np.__version__}", f"sympy {sp.__version__}",
             f"cpus {os.cpu_count()}", f"numpy BLAS threads {blas_threads()}"]
    torch = optional_torch()
    if torch is not None:
        parts.append(f"torch {torch.__version__} (threads {torch.get_num_threads()})")
    else:
        parts.append("torch not installed")
    env = [f"{v}={os.environ[v]}" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
           if v in os.environ]
    if env:
        parts.append(" ".join(env))
    return ", ".join(parts)


def optional_torch():
    """PyTorch, set to use as many threads as NumPy's BLAS, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(blas_threads())
    return torch


# ---- tables ----------------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table (readable as plain text too)."""
    cells = [[str(c) for c in row] for row in [headers] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def timing_rows(timings: dict[str, Timing], reference: str, unit: float = 1e-3,
                unit_name: str = "ms") -> tuple[list[str], list[list[object]]]:
    ref = timings[reference].median
    headers = ["implementation", f"median ({unit_name})", "spread (min/max)", f"ratio to {reference}"]
    rows = [[t.name, f"{t.median / unit:.3f}", t.spread, f"{t.median / ref:.3f}"] for t in timings.values()]
    return headers, rows


# ---- the generated module, written to disk and imported -------------------------------------------------
def module_source(graph: Graph) -> str:
    """The module as a user gets it (never the shape-checked mode the test suite turns on)."""
    return generate_module(derive(graph).program(), check_shapes=False)


def import_generated(graph: Graph, directory: str | None = None):
    """Generate the standalone module of ``graph`` into a temporary directory and import it from there."""
    source = module_source(graph)
    directory = directory or tempfile.mkdtemp(prefix="symbackprop_bench_")
    path = Path(directory) / f"grad_{abs(hash(graph.name))}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the benchmark networks -----------------------------------------------------------------------------
def seed_graph() -> Graph:
    """The seed of DESIGN.md (examples/neuron.toml), through the Python API."""
    g = Graph("single sigmoid neuron")
    x, y = g.inputs("x y")
    w, b = g.param("w", init=0.5), g.param("b")
    z = g.node("z", w * x + b)
    a = g.node("a", sigmoid(z))
    g.loss("L", (a - y) ** 2 / 2)
    return g


def tanh_mlp(sizes: list[int], loss: str) -> Graph:
    """tanh hidden layers; ``loss`` is "xent" (softmax output, cross-entropy) or "quadratic" (tanh output,
    L = sum((a - y)**2) / 2)."""
    g = Graph(f"tanh MLP {sizes[0]}-...-{sizes[-1]} x{len(sizes) - 1} {loss}")
    a = g.input("x", (sizes[0],))
    y = g.input("y", (sizes[-1],), onehot=loss == "xent")
    layers = len(sizes) - 1
    for l, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), 1):
        W, b = g.param(f"W{l}", (n_out, n_in), init="glorot"), g.param(f"b{l}", (n_out,))
        z = g.node(f"z{l}", W @ a + b)
        if l == layers and loss == "xent":
            p = g.node("p", softmax(z))
            g.loss("L", -sum_(y * sp.log(p)))
            return g
        a = g.node(f"a{l}", sp.tanh(z))
    g.loss("L", sum_((a - y) ** 2) / 2)
    return g


def scalar_chain(depth: int) -> Graph:
    """x -> tanh(w1 x + b1) -> ... -> tanh(w_d h + b_d), quadratic loss: one scalar neuron per layer."""
    g = Graph(f"scalar chain {depth}")
    x, y = g.inputs("x y")
    h = x
    for i in range(1, depth + 1):
        w, b = g.param(f"w{i}"), g.param(f"b{i}")
        h = g.node(f"h{i}", sp.tanh(w * h + b))
    g.loss("L", (h - y) ** 2 / 2)
    return g


def mlp_params(sizes: list[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Glorot-uniform weights and small random biases."""
    params = {}
    for l, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), 1):
        limit = np.sqrt(6 / (n_in + n_out))
        params[f"W{l}"] = rng.uniform(-limit, limit, (n_out, n_in))
        params[f"b{l}"] = rng.normal(0, 0.1, n_out)
    return params


@contextlib.contextmanager
def limit_threads(threads: int | None):
    """Run with ``threads`` BLAS threads (needs threadpoolctl; None keeps the current setting)."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=threads, user_api="blas"):
        yield


def check_same_results(candidates: dict[str, Callable[[], tuple]]) -> None:
    """Every candidate computes the same loss and gradients as the first (a benchmark of wrong code
    measures nothing)."""
    ref_loss, ref_grads = next(iter(candidates.values()))()
    for name, f in candidates.items():
        loss, grads = f()
        assert np.isclose(loss, ref_loss, rtol=1e-9), (name, loss, ref_loss)
        for k, v in ref_grads.items():
            assert np.allclose(grads[k], v, rtol=1e-7, atol=1e-12), (name, k, grads[k], v)
