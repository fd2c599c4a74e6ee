"""Issue 13's targets in one table: each measured ratio beside its target, pass or FAIL.

``run_all.py`` prints it first; ``python benchmarks/issue13.py`` measures only what it needs. Each row
comes from the benchmark script named in it, measured in this run (medians over interleaved repeats,
ratios within one process); the detailed tables follow in run_all.py's output.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import bench_busy
import bench_dtype
import bench_gemm
import bench_memory
import bench_mlp
import bench_seed
from _common import environment, jax_line, limit_threads, table

DEEP_LAYERS, DEEP_WIDTH, DEEP_BATCH = 8, 32, 128  # issue 13: "32 x 32 tanh, 8 layers, batch 128"


@dataclass
class Target:
    what: str  # the benchmark, as issue 13 states it
    measure: str  # the ratio measured, in words
    value: float
    bound: str  # "<= 0.5", ">= 1.7"
    script: str
    met: bool | None = None  # when the bound alone does not decide (bench_memory's allowance of 4 kB)

    @property
    def passed(self) -> bool:
        if self.met is not None:
            return self.met
        op, limit = self.bound.split()
        return self.value <= float(limit) if op == "<=" else self.value >= float(limit)

    def row(self) -> list[str]:
        return [self.what, self.measure, f"{self.value:.3f}", self.bound, "pass" if self.passed else "**FAIL**",
                self.script]


def mlp_ratios(repeats: int) -> tuple[float, float, str]:
    """generated / hand-written for the 784-128-10 net and for 8 tanh layers of width 32; and the tables
    (with bench_mlp.py's 32 layers of width 32 too, for information)."""
    xent = bench_mlp.measure([784, 128, 10], "xent", 256, bench_mlp.reference_xent, bench_mlp.torch_xent,
                             repeats, bench_dtype.jax_mlp_xent(2))
    deep = bench_mlp.measure([DEEP_WIDTH] * (DEEP_LAYERS + 1), "quadratic", DEEP_BATCH,
                             lambda p, d: bench_mlp.reference_deep(p, d, DEEP_LAYERS), bench_mlp.torch_deep(DEEP_LAYERS),
                             repeats, bench_mlp.jax_deep(DEEP_LAYERS))
    deeper = bench_mlp.measure([32] * 33, "quadratic", 128, lambda p, d: bench_mlp.reference_deep(p, d, 32),
                               bench_mlp.torch_deep(32), repeats, bench_mlp.jax_deep(32))
    tables = []
    for title, timings in (("784-128-10 tanh + softmax CE, batch 256", xent),
                           (f"{DEEP_WIDTH} x {DEEP_WIDTH} tanh, {DEEP_LAYERS} layers, quadratic loss, batch {DEEP_BATCH}", deep),
                           ("32 tanh layers of width 32, quadratic loss, batch 128 (no target)", deeper)):
        headers, rows = bench_mlp.timing_rows(timings, "hand-written NumPy")
        tables.append(f"#### {title}\n\n" + table(headers, rows) + "\n")
    return bench_mlp.ratio(xent), bench_mlp.ratio(deep), "\n".join(tables)


def measure(repeats: int = 9, threads: int | None = 1) -> tuple[list[Target], list[str], str]:
    """Every target of issue 13, the detailed tables they come from (in that order), and the environment
    line of the timed runs."""
    details = []
    with limit_threads(threads):
        env = f"{environment()}; {jax_line()}"
        seed = bench_seed.measure(repeats=repeats)
        details.append(bench_seed.report(seed, 1_000_000, repeats))
        xent, deep, mlp_tables = mlp_ratios(repeats)
        details.append(f"### MLP gradients\n\n{environment()}; {jax_line()}; {repeats} repeats, median.\n\n{mlp_tables}")
        gemm, products = bench_gemm.measure(repeats)
        details.append(bench_gemm.report(gemm, products, repeats))
        dtype = bench_dtype.measure(repeats)
        details.append(bench_dtype.report(dtype, repeats))
    peaks = bench_memory.measure()
    details.append(bench_memory.report(peaks))
    busy = bench_busy.measure(repeats)  # at the default thread settings, whatever --threads says
    details.append(bench_busy.report(busy))
    targets = [
        Target("seed, N = 1e6", "generated / hand-written NumPy", bench_seed.ratio(seed), "<= 0.5", "bench_seed.py"),
        Target("784-128-10 tanh + softmax CE, batch 256", "generated / hand-written NumPy", xent, "<= 1.0",
               "bench_mlp.py"),
        Target(f"{DEEP_WIDTH} x {DEEP_WIDTH} tanh, {DEEP_LAYERS} layers, batch {DEEP_BATCH}",
               "generated / hand-written NumPy", deep, "<= 1.0", "bench_mlp.py"),
        Target("784-512-512-10, batch 1024", "generated / its GEMMs alone", bench_gemm.ratio(gemm),
               f"<= {bench_gemm.TARGET}", "bench_gemm.py"),
        Target("784-128-10 in float32", "float64 time / float32 time (generated)", bench_dtype.speedup(dtype),
               f">= {bench_dtype.TARGET}", "bench_dtype.py"),
        Target("peak memory, seed gradient, N = 1e6", "generated / hand-written NumPy (tracemalloc)",
               bench_memory.ratio(peaks), f"<= {bench_memory.TARGET}", "bench_memory.py", bench_memory.passes(peaks)),
        Target("seed with a busy second core", "generated busy/quiet over a no-BLAS control's busy/quiet",
               bench_busy.relative_slowdown(busy), f"<= {bench_busy.TARGET}", "bench_busy.py"),
    ]
    return targets, details, env


def summary(targets: list[Target], env: str, repeats: int) -> str:
    rows = [t.row() for t in targets]
    passed = sum(t.passed for t in targets)
    return (f"## Issue 13 targets: {passed} of {len(targets)} met\n\n{env}; {repeats} repeats, median "
            "(the busy-core row at the default thread settings).\n\n"
            + table(["benchmark", "ratio", "measured", "target", "result", "script"], rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS (and PyTorch, JAX) threads for the timed runs; 0 keeps the libraries' default")
    args = parser.parse_args()
    targets, details, env = measure(args.repeats, args.threads or None)
    print(summary(targets, env, args.repeats))
    print("\n".join(details))


if __name__ == "__main__":
    main()
