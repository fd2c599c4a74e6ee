"""The generated loss_and_grad of this checkout beside another checkout's (main), interleaved in one process.

For issue 13's four speed targets (the seed at N = 1e6, 784-128-10 at batch 256, 8 tanh layers of width
32 at batch 128, 784-512-512-10 at batch 1024 against its GEMMs alone), each problem times, interleaved
round by round: the reference of its target (the hand-written NumPy, or the GEMMs alone), the module this
checkout generates ("this") and the module the other checkout generates ("other": written by a
subprocess that imports symbackprop from ``--other``). Ratios to the reference, of the medians over the
repeats and of the fastest rounds (on a loaded machine the fastest round is the one least disturbed),
and this / other; a change to the code generator is measured against the same references in the same run.

    python benchmarks/compare_main.py --other /work/main [--repeats 15] [--rounds 3] [--only seed,xent,deep,gemm]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import bench_gemm
import bench_mlp
import bench_seed
from _common import (limit_threads, load_source, mlp_params, module_source, np, seed_graph,
                     tanh_mlp, time_side_by_side, xent_problem)

WRITE = ("import sys; sys.path.insert(0, {bench!r}); from _common import *; import bench_gemm; "
         "print(module_source({graph}), end='')")


def other_source(other: str, graph_expr: str) -> str:
    """The module the checkout at ``other`` generates for the graph ``graph_expr`` (Python, in the names of
    that checkout's benchmarks/_common.py, which puts that checkout first on the path)."""
    code = WRITE.format(bench=os.path.join(os.path.abspath(other), "benchmarks"), graph=graph_expr)
    env = {**os.environ, "PYTHONPATH": other, "SYMBACKPROP_CHECK_SHAPES": "0"}
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True,
                          cwd=other).stdout


def problems(only: list[str]):
    rng = np.random.default_rng(0)
    if "seed" in only:
        n = 1_000_000
        params, data = {"w": 0.7, "b": -0.2}, {"x": rng.normal(size=n), "y": rng.uniform(size=n)}
        yield "seed, N = 1e6", "seed_graph()", seed_graph(), params, data, "hand-written NumPy", \
            lambda: bench_seed.reference(params, data)
    if "xent" in only:
        sizes, batch = [784, 128, 10], 256
        params, data = mlp_params(sizes, rng), {"x": rng.normal(size=(batch, 784)),
                                                "y": np.eye(10)[rng.integers(0, 10, batch)]}
        yield "784-128-10, batch 256", "tanh_mlp([784, 128, 10], 'xent')", tanh_mlp(sizes, "xent"), params, data, \
            "hand-written NumPy", lambda: bench_mlp.reference_xent(params, data)
    if "deep" in only:
        sizes, batch = [32] * 9, 128
        params, data = mlp_params(sizes, rng), {"x": rng.normal(size=(batch, 32)),
                                                "y": rng.uniform(-0.9, 0.9, (batch, 32))}
        yield "8 x 32 tanh, batch 128", "tanh_mlp([32] * 9, 'quadratic')", tanh_mlp(sizes, "quadratic"), params, \
            data, "hand-written NumPy", lambda: bench_mlp.reference_deep(params, data, 8)
    if "gemm" in only:
        params, data = xent_problem(bench_gemm.SIZES, bench_gemm.BATCH)
        yield "784-512-512-10, batch 1024", "tanh_mlp(bench_gemm.SIZES, 'xent')", \
            tanh_mlp(bench_gemm.SIZES, "xent"), params, data, bench_gemm.GEMMS, bench_gemm.gemms_alone(params, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", required=True, help="the other checkout (its repository root)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3, help="independent measurements per problem")
    parser.add_argument("--only", default="seed,xent,deep,gemm")
    args = parser.parse_args()
    with limit_threads(1):
        for title, graph_expr, graph, params, data, reference, ref in problems(args.only.split(",")):
            this = load_source(module_source(graph), "this")
            other = load_source(other_source(args.other, graph_expr), "other")
            l0, g0 = this.loss_and_grad(params, data)
            l1, g1 = other.loss_and_grad(params, data)
            assert abs(l0 - l1) <= 1e-12 * max(1, abs(l1)) and all(
                np.allclose(g0[k], g1[k], rtol=1e-10, atol=1e-14) for k in g1), title
            candidates = {reference: ref, "this": lambda: this.loss_and_grad(params, data),
                          "other": lambda: other.loss_and_grad(params, data)}
            for r in range(args.rounds):
                t = time_side_by_side(candidates, repeats=args.repeats)
                base, best = t[reference].median, min(t[reference].times)
                print(f"{title}: {reference} {base * 1e3:.3f} ms; medians: this {t['this'].median / base:.3f}x, "
                      f"other {t['other'].median / base:.3f}x, this/other {t['this'].median / t['other'].median:.3f}; "
                      f"fastest rounds: this {min(t['this'].times) / best:.3f}x, other {min(t['other'].times) / best:.3f}x",
                      flush=True)


if __name__ == "__main__":
    main()
