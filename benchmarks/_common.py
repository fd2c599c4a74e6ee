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
import subprocess
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


def time_in_blocks(blocks: dict[str, dict[str, Callable[[], object]]], reference: str, repeats: int = 9
                   ) -> dict[str, Timing]:
    """The first block's candidates interleaved (it holds ``reference``), then each further block
    (PyTorch's, JAX's) interleaved with ``reference`` again, as "reference (again, beside NAME)": two
    libraries' thread pools interleaved slow each other, and the row shows the drift between blocks."""
    (first, *rest) = blocks.values()
    timings = time_side_by_side(first, repeats=repeats)
    for label, block in list(blocks.items())[1:]:
        timings.update(time_side_by_side({**block, f"{reference} (again, beside {label})": first[reference]},
                                         repeats=repeats))
    return timings


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


#: XLA's flags for one CPU thread (XLA reads them once, when JAX first starts its CPU backend)
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def optional_jax():
    """JAX with float64 enabled (``jax_enable_x64``), or None when it is not installed
    (``pip install 'symbackprop[bench]'``). With one BLAS thread (and no XLA_FLAGS of the user's), XLA is
    asked for one thread too; that holds for the rest of the process, whatever is set later."""
    if blas_threads() == 1 and "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = XLA_ONE_THREAD
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    return jax


def jax_line() -> str:
    """What the tables say about JAX: its version and threads, or that it was skipped."""
    jax = optional_jax()
    if jax is None:
        return "JAX not installed: its rows are skipped (pip install 'symbackprop[bench]')"
    one = os.environ.get("XLA_FLAGS") == XLA_ONE_THREAD
    return f"jax {jax.__version__} (jit, XLA CPU, {'one thread' if one else 'its own threads'})"


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
def module_source(graph: Graph, dtype: str = "float64") -> str:
    """The module as a user gets it (never the shape-checked mode the test suite turns on)."""
    return generate_module(derive(graph).program(), check_shapes=False, dtype=dtype)


def import_generated(graph: Graph, directory: str | None = None, dtype: str = "float64"):
    """Generate the standalone module of ``graph`` (computing in ``dtype``) into a temporary directory and
    import it from there."""
    source = module_source(graph, dtype)
    directory = directory or tempfile.mkdtemp(prefix="symbackprop_bench_")
    path = Path(directory) / f"grad_{abs(hash(graph.name))}_{dtype}.py"
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


def jax_candidate(jax, loss, params: dict, data: dict):
    """``loss(jnp, params, x, y)``'s value and gradient through ``jax.jit(jax.value_and_grad(...))``, on
    arrays put on the device once, in their NumPy dtype; compiled by a first call here."""
    import jax.numpy as jnp
    leaves = {k: jnp.asarray(v) for k, v in params.items()}
    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"])
    step = jax.jit(jax.value_and_grad(lambda p, x, y: loss(jnp, p, x, y)))
    jax.block_until_ready(step(leaves, x, y))

    def run():
        value, grads = jax.block_until_ready(step(leaves, x, y))
        return float(value), {k: np.asarray(g) for k, g in grads.items()}
    return run


def jax_mlp_xent(layers: int):
    """The loss of :func:`tanh_mlp` with ``loss="xent"`` (tanh hidden layers, softmax cross-entropy) in JAX."""
    def loss(jnp, p, x, y):
        a = x
        for l in range(1, layers):
            a = jnp.tanh(a @ p[f"W{l}"].T + p[f"b{l}"])
        z = a @ p[f"W{layers}"].T + p[f"b{layers}"]
        logp = z - jnp.max(z, axis=1, keepdims=True)
        logp = logp - jnp.log(jnp.sum(jnp.exp(logp), axis=1, keepdims=True))
        return -jnp.sum(y * logp) / x.shape[0]
    return loss


def torch_mlp_xent(layers: int):
    """The same loss in PyTorch (``forward(torch, params, x, y)``, as bench_mlp.torch_candidate takes it)."""
    def forward(torch, p, x, y):
        a = x
        for l in range(1, layers):
            a = torch.tanh(a @ p[f"W{l}"].T + p[f"b{l}"])
        logp = torch.log_softmax(a @ p[f"W{layers}"].T + p[f"b{layers}"], dim=1)
        return -(y * logp).sum() / x.shape[0]
    return forward


def reference_mlp_xent(params: dict, data: dict, layers: int) -> tuple[float, dict]:
    """Hand-written backprop of :func:`tanh_mlp`'s xent network of any depth (the textbook four equations,
    the 1/N folded into the output error); computes in the dtype of its arrays."""
    x, y = data["x"], data["y"]
    N = x.shape[0]
    acts = [x]
    for l in range(1, layers):
        acts.append(np.tanh(acts[-1] @ params[f"W{l}"].T + params[f"b{l}"]))
    z = acts[-1] @ params[f"W{layers}"].T + params[f"b{layers}"]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = -float(np.sum(y * (z - np.log(s)))) / N
    d = (e / s - y) / N
    return loss, tanh_backward(d, acts, params, layers)


def tanh_backward(d: np.ndarray, acts: list, params: dict, layers: int) -> dict:
    """The gradients of tanh layers 1..layers from the output error ``d`` (already divided by N) and the
    layers' inputs ``acts[0..layers-1]``: the textbook backward pass, as a careful hand-written backprop does."""
    grads = {}
    for l in range(layers, 0, -1):
        grads[f"W{l}"] = d.T @ acts[l - 1]
        grads[f"b{l}"] = d.sum(axis=0)
        if l > 1:
            d = (d @ params[f"W{l}"]) * (1 - acts[l - 1] ** 2)
    return grads


def xent_problem(sizes: list[int], batch: int, dtype=np.float64, seed: int = 0) -> tuple[dict, dict]:
    """Glorot parameters, N(0, 1) inputs and one-hot targets for :func:`tanh_mlp` (xent), in ``dtype``."""
    rng = np.random.default_rng(seed)
    params = mlp_params(sizes, rng)
    data = {"x": rng.normal(size=(batch, sizes[0])), "y": np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch)]}
    cast = lambda arrays: {k: np.asarray(v, dtype=dtype) for k, v in arrays.items()}  # noqa: E731
    return cast(params), cast(data)


def check_close(candidates: dict[str, Callable[[], tuple]], tol: float) -> None:
    """Every candidate's loss and gradients agree with the first's within ``tol`` of their scale (for
    float32 candidates against a float64 reference: |g - ref| <= tol * max|ref| per parameter)."""
    ref_loss, ref_grads = next(iter(candidates.values()))()
    for name, f in candidates.items():
        loss, grads = f()
        assert abs(float(loss) - ref_loss) <= tol * abs(ref_loss), (name, loss, ref_loss)
        for k, v in ref_grads.items():
            error = np.max(np.abs(np.asarray(grads[k], dtype=np.float64) - v))
            assert error <= tol * np.max(np.abs(v)), (name, k, error)


@contextlib.contextmanager
def busy_core():
    """A competing process spinning on the last CPU core (pinned there) while the block runs: the other
    core of a 2-core machine stays ours, so single-threaded code should not notice it, and code that
    splits its work over both cores waits for the slower half."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(spinner.pid, {(os.cpu_count() or 1) - 1})
        time.sleep(0.2)  # let it start spinning
        yield
    finally:
        spinner.kill()
        spinner.wait()


def check_same_results(candidates: dict[str, Callable[[], tuple]]) -> None:
    """Every candidate computes the same loss and gradients as the first (a benchmark of wrong code
    measures nothing)."""
    ref_loss, ref_grads = next(iter(candidates.values()))()
    for name, f in candidates.items():
        loss, grads = f()
        assert np.isclose(loss, ref_loss, rtol=1e-9), (name, loss, ref_loss)
        for k, v in ref_grads.items():
            assert np.allclose(grads[k], v, rtol=1e-7, atol=1e-12), (name, k, grads[k], v)
