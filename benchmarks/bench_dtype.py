"""float32 against float64: the gradient of the 784-128-10 tanh + softmax cross-entropy MLP at batch 256.

Side by side in one process: the generated module written with ``dtype="float32"`` and with the default
float64 (each on data and parameters of its own dtype), and the hand-written NumPy backprop on float32 and
on float64 arrays (for reference: what float32 buys hand-written code). PyTorch and JAX-jit, in both
dtypes, when installed, each in a block of its own after the NumPy block, beside the float64 generated
module again (interleaving their thread pools with OpenBLAS's slows both). Every float32 candidate is
first checked against the float64 reference to 1e-3 of the gradient's scale.

Issue 13's target: the float32 module >= 1.7x faster than the float64 module.

    python benchmarks/bench_dtype.py [--repeats 9] [--threads 1]
"""
from __future__ import annotations

import argparse
from functools import partial

from _common import (Timing, check_close, environment, import_generated, jax_candidate, jax_line, jax_mlp_xent,
                     limit_threads, np, optional_jax, optional_torch, reference_mlp_xent, table, tanh_mlp,
                     time_in_blocks, timing_rows, torch_mlp_xent, xent_problem)
from bench_mlp import torch_candidate

SIZES, BATCH = [784, 128, 10], 256
TARGET = 1.7  # float64 time / float32 time of the generated module, at least
REFERENCE = "generated module, float64"


def measure(repeats: int = 9) -> dict[str, Timing]:
    """Per-call timings of every candidate (names as in the table)."""
    graph, layers = tanh_mlp(SIZES, "xent"), len(SIZES) - 1
    problems = {dtype: xent_problem(SIZES, BATCH, np.dtype(dtype).type) for dtype in ("float64", "float32")}
    modules = {dtype: import_generated(graph, dtype=dtype) for dtype in problems}
    numpy_candidates = {f"generated module, {dtype}": partial(modules[dtype].loss_and_grad, *problems[dtype])
                        for dtype in problems}
    numpy_candidates.update({f"hand-written NumPy, {dtype}": partial(reference_mlp_xent, *problems[dtype], layers)
                             for dtype in problems})
    blocks = {"NumPy": numpy_candidates}
    torch, jax = optional_torch(), optional_jax()
    if torch is not None:
        blocks["PyTorch"] = {f"PyTorch autograd, {dtype}": torch_candidate(torch, *problems[dtype],
                                                                           torch_mlp_xent(layers))
                             for dtype in problems}
    if jax is not None:
        blocks["JAX"] = {f"JAX jit, {dtype}": jax_candidate(jax, jax_mlp_xent(layers), *problems[dtype])
                         for dtype in problems}
    check_close({name: f for block in blocks.values() for name, f in block.items()}, 1e-3)
    return time_in_blocks(blocks, REFERENCE, repeats)


def speedup(timings: dict[str, Timing]) -> float:
    """float64 time / float32 time of the generated module (issue 13: >= 1.7)."""
    return timings[REFERENCE].median / timings["generated module, float32"].median


def report(timings: dict[str, Timing], repeats: int) -> str:
    headers, rows = timing_rows(timings, REFERENCE)
    s = speedup(timings)
    return (f"### float32 against float64: 784-128-10 tanh + softmax CE, batch {BATCH}\n\n{environment()}; "
            f"{jax_line()}; {repeats} repeats, median.\n\n" + table(headers, rows) + "\n\n"
            f"Generated module: float32 is {s:.2f}x faster than float64 (target >= {TARGET}: "
            f"{'pass' if s >= TARGET else 'FAIL'}); hand-written NumPy: "
            f"{timings['hand-written NumPy, float64'].median / timings['hand-written NumPy, float32'].median:.2f}x.\n")


def run(repeats: int = 9) -> str:
    return report(measure(repeats), repeats)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS (and PyTorch) threads; 0 keeps the libraries' default (default 1, see README)")
    args = parser.parse_args()
    with limit_threads(args.threads or None):
        print(run(args.repeats))
