"""Peak memory of one call of the seed's gradient at N = 1,000,000: generated module against hand-written NumPy.

Measured with tracemalloc, which sees NumPy's array allocations (NumPy reports its data buffers to it):
the peak of the traced memory during the call, less what was allocated before it (the data and the
parameters, which every candidate shares). So the figure is the memory the call itself needs at its
busiest: temporaries, buffers and results. Each candidate is measured in a fresh trace, after a warm-up
call, and the measurement is repeated (it is deterministic up to NumPy's small-allocation cache; the
largest of the repeats is reported). For scale, one float64 array of N samples is 8 MB.

Issue 13's target: the generated module's peak no larger than the hand-written version's.

    python benchmarks/bench_memory.py [--n 1000000]
"""
from __future__ import annotations

import argparse
import tracemalloc
from functools import partial

from _common import import_generated, np, seed_graph, table
from symbackprop.compile import compile_gradient
from bench_seed import reference, reference_in_place

TARGET = 1.0  # generated peak / hand-written peak, at most
#: bytes of Python objects (the dicts returned, floats, frames) that differ between two implementations of
#: the same arrays: a few hundred; the comparison allows 4 kB, far below one array of N samples (8 MB)
SLACK = 4096
REFERENCE = "hand-written NumPy"


def peak_bytes(f, repeats: int = 3) -> int:
    """The largest peak of traced memory above the level at the start of one call of ``f``."""
    f()  # warm-up
    peaks = []
    for _ in range(repeats):
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            f()
            peaks.append(tracemalloc.get_traced_memory()[1] - start)
        finally:
            tracemalloc.stop()
    return max(peaks)


def measure(n: int = 1_000_000) -> dict[str, int]:
    """Peak bytes of one call, per candidate."""
    rng = np.random.default_rng(0)
    params = {"w": 0.7, "b": -0.2}
    data = {"x": rng.normal(size=n), "y": rng.uniform(size=n)}
    graph = seed_graph()
    module = import_generated(graph)
    module32 = import_generated(graph, dtype="float32")
    data32 = {k: v.astype(np.float32) for k, v in data.items()}
    candidates = {
        REFERENCE: lambda: reference(params, data),
        "generated module": lambda: module.loss_and_grad(params, data),
        "compiled callable": partial(compile_gradient(graph, check_shapes=False).loss_and_grad, params, data),
        "hand-written NumPy, in place": lambda: reference_in_place(params, data),
        "generated module, float32 (float32 data)": lambda: module32.loss_and_grad(params, data32),
    }
    return {name: peak_bytes(f) for name, f in candidates.items()}


def ratio(peaks: dict[str, int]) -> float:
    """generated peak / hand-written peak (issue 13: <= 1.0)."""
    return peaks["generated module"] / peaks[REFERENCE]


def passes(peaks: dict[str, int]) -> bool:
    """The generated module's peak is no larger than the hand-written one's (up to SLACK bytes)."""
    return peaks["generated module"] <= peaks[REFERENCE] + SLACK


def report(peaks: dict[str, int], n: int = 1_000_000) -> str:
    ref = peaks[REFERENCE]
    rows = [[name, f"{b:,}", f"{b / (8 * n):.2f}", f"{b / ref:.4f}"] for name, b in peaks.items()]
    r = ratio(peaks)
    return (f"### Peak memory of one seed gradient call, N = {n:,} (tracemalloc)\n\n"
            + table(["implementation", "peak above the data (bytes)", "in float64 arrays of N", f"ratio to {REFERENCE}"],
                    rows)
            + f"\n\nGenerated module / hand-written: {r:.4f} (target <= {TARGET}, up to {SLACK} bytes of Python "
              f"objects: {'pass' if passes(peaks) else 'FAIL'}).\n")


def run(n: int = 1_000_000) -> str:
    return report(measure(n), n)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    print(run(args.n))
