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

Fixed cost: the time of a step on 64 samples, in 1, 8 or 64 blocks, on 1 and 2 workers: scattering
the parameters, one task per block, fetching and adding up the partial results.

Training overhead (``train --engine dask``): the time per epoch of a 5-epoch full-batch run of the
training loop (:func:`symbackprop.train.train` over :class:`~symbackprop.dask_train.DaskGradients`: Adam
steps and history rows, with and without a checkpoint written after every epoch) against bare engine
steps (one per epoch, and one for the row of epoch 0), on 2 workers and 64 samples in 8 blocks: the
loop's own cost per epoch; and the same loop when the history row and the next step's gradient are two
passes over the data instead of one.

Sending the gradient (once per run): the generated module's source text, compiled by each worker,
against the function pickled by value (cloudpickle); payload size, and the time from sending to the
first step's result, with each worker's cache of compiled sources cleared before every repeat.

    python benchmarks/bench_dask.py [--repeats 7] [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
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


def training_overhead(client, repeats: int, tmp: str) -> str:
    _, _, sd = dask_modules()
    from symbackprop.dask_train import DaskGradients
    from symbackprop.optim import make_optimizer
    from symbackprop.train import train
    graph = tanh_mlp([64, 32, 10], "xent")
    compiled = compile_gradient(graph)
    rng = np.random.default_rng(3)
    data = sd.DaskData.from_arrays({"x": rng.normal(size=(64, 64)), "y": np.eye(10)[rng.integers(0, 10, 64)]},
                                   client, blocks=8)
    epochs = 5
    with sd.DaskGradient(compiled, data) as engine:
        one_pass, two_passes = DaskGradients(engine, compiled, full_batch=True), DaskGradients(engine, compiled)
        params = mlp_params([64, 32, 10], rng)
        fit = lambda source, **files: train(graph, source, optimizer=make_optimizer("adam", lr=1e-3),
                                            epochs=epochs, **files)
        reference = "engine steps alone (one per epoch, one for epoch 0's row)"
        candidates = {reference: lambda: [engine.loss_and_grad(params) for _ in range(epochs + 1)],
                      "train epoch: step and history row in one pass": lambda: fit(one_pass),
                      "train epoch, with a checkpoint after it": lambda: fit(one_pass, checkpoint=f"{tmp}/c.npz"),
                      "train epoch, step and history row as two passes": lambda: fit(two_passes)}
        timings = time_side_by_side(candidates, repeats=repeats)
    data.close()
    step = timings[reference].median / epochs
    rows = [[t.name, f"{t.median / epochs * 1e3:.1f}", t.spread, f"{(t.median / epochs - step) * 1e3:+.1f}"]
            for t in timings.values()]
    return ("#### train --engine dask: a full-batch epoch (2 workers, 64 samples in 8 blocks, 64-32-10 MLP, "
            "Adam)\n\n" + table(["what", "median per epoch (ms)", "spread (min/max)",
                                  "more than the engine steps (ms)"], rows) + "\n")


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
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        parts = [f"### Dask engine: data-parallel gradients\n\n{environment()}; {repeats} repeats, median; "
                 "workers are processes of a LocalCluster on this machine, one thread each.\n",
                 throughput(clients, repeats, quick), fixed_cost(clients, repeats),
                 training_overhead(clients[2], repeats, tmp), shipping(clients[2], repeats)]
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
