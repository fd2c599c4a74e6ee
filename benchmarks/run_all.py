"""Run every benchmark and write one markdown summary to stdout: issue 13's targets first (one table, each
measured ratio with its target and pass or FAIL), then every benchmark's own table.

    python benchmarks/run_all.py [--repeats 9] [--threads 1] [--issue13-only] > results.md
"""
from __future__ import annotations

import argparse
import time

import bench_dask
import bench_derive_scaling
import bench_expanded
import bench_hostile
import issue13
from _common import limit_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS (and PyTorch) threads for the timed runs; 0 keeps the libraries' default")
    parser.add_argument("--issue13-only", action="store_true",
                        help="only the benchmarks of issue 13's targets (seed, MLPs, GEMMs, float32, memory, busy core)")
    args = parser.parse_args()
    start = time.perf_counter()
    parts = ["# symbackprop benchmarks\n",
             "Medians over interleaved repeats, after a warm-up; spread is min/max around the median.\n"]
    targets, details, env = issue13.measure(args.repeats, args.threads or None)
    parts.append(issue13.summary(targets, env, args.repeats))
    parts.extend(details)
    if args.issue13_only:
        parts.append(f"_Total benchmark time: {time.perf_counter() - start:.0f} s._\n")
        print("\n".join(parts))
        return
    parts.append(bench_derive_scaling.run(repeats=max(7, args.repeats // 2)))
    parts.append(bench_expanded.run(repeats=max(3, args.repeats // 3)))
    with limit_threads(args.threads or None):
        parts.append(bench_dask.run(repeats=max(5, args.repeats // 2)))
    parts.append(bench_hostile.run())
    parts.append(f"_Total benchmark time: {time.perf_counter() - start:.0f} s._\n")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
