"""Data-parallel gradients on Dask: samples per second on 1 and 2 workers against one process, the fixed
cost of a step, and what sending the gradient to the workers costs.

Throughput, side by side in one process (interleaved repeats, medians): the generated gradient on all
the data in this process ("one process", the reference), the same on the 8 blocks one after another
in this process (what the engine computes, without Dask), and full-batch :class:`DaskGradient` steps on
``LocalCluster``\\ s of 1 and 2 worker processes (one thread each; Dask gives workers one BLAS thread)
holding the same data in memory in 8 blocks. Every candidate is first checked to give the same loss
and gradients. Two workloads:

* the seed (2 columns, a few operations per sample: memory-bound), N = 2,000,000;
* a 64-32-10 tanh + softmax cross-entropy MLP (digits-sized), N = 200,000.

Fixed cost: the time of a step on 16 samples, in 1, 8 or 64 blocks, on 1 and 2 workers: scattering
the parameters, one task per block, fetching and adding up the partial results.

Sending the gradient (once per run): the generated module's source text, compiled by each worker,
against the function pickled by value (cloudpickle); payload size, and the time from sending to the
first step's result, with each worker's cache of compiled sources cleared before every repeat.

    python benchmarks/bench_dask.py [--repeats 7] [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import time

from _common import (check_same_results, environment, limit_threads, mlp_params, np, seed_graph, table,
                     tanh_mlp, time_side_by_side, Timing)
from symbackprop.compile import compile_gradient


def dask_modules():
    import cloudpickle
    import distributed

    import symbackprop.distributed as sd
    return cloudpickle, distributed, sd


def workloads(quick: bool) -> list[tuple[str, object, dict, dict]]:
    rng = np.random.default_rng(0)
    n_seed, n_mlp = (200_000, 20_000) if quick else (2_000_000, 200_000)
    seed = compile_gradient(seed_graph())
    seed_data = {"x": rng.normal(size=n_seed), "y": rng.uniform(0, 1, n_seed)}
    mlp = compile_gradient(tanh_mlp([64, 32, 10], "xent"))
    mlp_data = {"x": rng.normal(size=(n_mlp, 64)), "y": np.eye(10)[rng.integers(0, 10, n_mlp)]}
    return [(f"seed, N = {n_seed:,}", seed, {"w": 0.5, "b": 0.1}, seed_data),
            (f"64-32-10 tanh + softmax CE, N = {n_mlp:,}", mlp, mlp_params([64, 32, 10], rng), mlp_data)]


def in_blocks(compiled, params: dict, blocks: list[dict]) -> tuple[float, dict]:
    """The engine's arithmetic without Dask: n_i times each block's means, summed, over N."""
    _, _, sd = dask_modules()
    sums: dict = {}
    for block in blocks:
        n = len(block["x"])
        loss, grads = compiled.loss_and_grad(params, block)
        for k, v in [("loss", loss), *grads.items()]:
            sums.setdefault(k, sd.CompensatedSum()).add(np.asarray(v) * n)
    means = {k: s.value() / sum(len(b["x"]) for b in blocks) for k, s in sums.items()}
    return float(means.pop("loss")), means


def throughput(clients: dict[int, object], repeats: int, quick: bool) -> str:
    _, _, sd = dask_modules()
    parts = []
    for title, compiled, params, data in workloads(quick):
        n = len(data["x"])
        engines = {w: sd.DaskGradient(compiled, sd.DaskData.from_arrays(data, c, blocks=8)) for w, c in clients.items()}
        bounds = np.linspace(0, n, 9).astype(int)
        blocks = [{k: v[a:b] for k, v in data.items()} for a, b in zip(bounds, bounds[1:])]
        candidates = {"one process (generated module)": lambda: compiled.loss_and_grad(params, data),
                      "one process, the 8 blocks one after another": lambda: in_blocks(compiled, params, blocks)}
        for w, engine in engines.items():
            candidates[f"Dask, {w} worker{'s' * (w > 1)}, 8 blocks"] = lambda e=engine: e.loss_and_grad(params)
        check_same_results(candidates)
        timings = time_side_by_side(candidates, repeats=repeats)
        reference = timings["one process (generated module)"].median
        rows = [[t.name, f"{t.median * 1e3:.1f}", t.spread, f"{n / t.median / 1e6:.2f}", f"{reference / t.median:.2f}"]
                for t in timings.values()]
        parts.append(f"#### {title}\n\n" + table(
            ["implementation", "median (ms)", "spread (min/max)", "M samples/s", "speed-up vs one process"], rows))
        for engine in engines.values():
            engine.close()
            engine.data.close()
    return "\n\n".join(parts) + "\n"


def fixed_cost(clients: dict[int, object], repeats: int) -> str:
    _, _, sd = dask_modules()
    compiled = compile_gradient(seed_graph())
    rng = np.random.default_rng(1)
    data = {"x": rng.normal(size=64), "y": rng.uniform(0, 1, 64)}
    params = {"w": 0.5, "b": 0.1}
    rows = []
    for w, client in clients.items():
        for blocks in (1, 8, 64):
            with sd.DaskGradient(compiled, sd.DaskData.from_arrays(data, client, blocks=blocks)) as engine:
                t = time_side_by_side({"step": lambda: engine.loss_and_grad(params)}, repeats=repeats)["step"]
                engine.data.close()
            rows.append([w, blocks, f"{t.median * 1e3:.1f}", t.spread, f"{t.median / blocks * 1e3:.2f}"])
    return "#### Fixed cost of a step (64 samples)\n\n" + table(
        ["workers", "blocks", "median per step (ms)", "spread (min/max)", "per block (ms)"], rows) + "\n"


def shipping(client, repeats: int) -> str:
    cloudpickle, _, sd = dask_modules()
    compiled = compile_gradient(tanh_mlp([64, 32, 10], "xent"))
    rng = np.random.default_rng(2)
    params = mlp_params([64, 32, 10], rng)
    data = sd.DaskData.from_arrays({"x": rng.normal(size=(16, 64)), "y": np.eye(10)[rng.integers(0, 10, 16)]},
                                   client, blocks=len(client.scheduler_info()["workers"]))
    ways = {"source text, compiled on each worker": sd.RemoteGradient(compiled.source),
            "function pickled by value (cloudpickle)": sd.RemoteGradient(function=compiled.loss_and_grad)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(repeats + 1):  # the first round is a warm-up
        for name, remote in (list(ways.items())[::1 if r % 2 else -1]):
            client.run(lambda: sd._COMPILED.clear())
            start = time.perf_counter()
            with sd.DaskGradient(remote, data) as engine:
                engine.loss_and_grad(params)
            if r:
                times[name].append(time.perf_counter() - start)
    rows = []
    for name, remote in ways.items():
        t = Timing(name, times[name])
        rows.append([name, f"{len(cloudpickle.dumps(remote)) / 1e3:.1f}", f"{t.median * 1e3:.1f}", t.spread])
    data.close()
    return ("#### Sending the gradient (64-32-10 MLP), once per run\n\n" + table(
        ["what is sent", "payload (kB)", "send + first step (ms)", "spread (min/max)"], rows) + "\n")


def run(repeats: int = 7, quick: bool = False) -> str:
    try:
        _, _, sd = dask_modules()
    except ImportError:
        return "### Dask engine\n\nSkipped: needs dask, distributed and pyarrow (pip install 'symbackprop[dask]').\n"
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        clients = {w: stack.enter_context(sd.connect(workers=w, silence_logs=logging.ERROR)) for w in (1, 2)}
        parts = [f"### Dask engine: data-parallel gradients\n\n{environment()}; {repeats} repeats, median; "
                 "workers are processes of a LocalCluster on this machine, one thread each.\n",
                 throughput(clients, repeats, quick), fixed_cost(clients, repeats), shipping(clients[2], repeats)]
    parts.append(f"_Dask benchmark time: {time.perf_counter() - start:.0f} s._\n")
    return "\n".join(parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads in this process (workers: 1)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the data (a smoke test)")
    args = parser.parse_args()
    with limit_threads(args.threads or None):
        print(run(args.repeats, args.quick))
