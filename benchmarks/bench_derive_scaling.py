"""Derivation and code generation cost against depth: reverse mode over node symbols grows linearly.

Three tables:

1. tanh MLPs of width 8 (matrix layers, quadratic loss) at depth 8, 16, 32, 64;
2. scalar tanh chains (one neuron per layer) at depth 4 to 64;
   each with the time to derive and to generate the module (median of the repeats), the time per
   layer, the program's forward and backward operation counts (SymPy ``count_ops`` of the right-hand
   sides; backward includes the batch-mean gradients) and their ratio, and the growth from one
   doubling to the next (2.0 is linear); a least-squares fit ``ops = a * depth + b`` closes each table;
3. the contrast: SymPy ``diff`` of the flattened loss of a width-3 scalar tanh network (every weight a
   symbol) w.r.t. every parameter, against our program's operations for the same network, depth 1 to 4
   (stopped early when one depth takes more than ``--flat-budget`` seconds).

    python benchmarks/bench_derive_scaling.py [--repeats 7] [--flat-budget 20]
"""
from __future__ import annotations

import argparse
import statistics
import time

from sympy.core.cache import clear_cache

from _common import Graph, derive, environment, generate_module, np, scalar_chain, sp, table, tanh_mlp


def measure(graph_of, depths: list[int], repeats: int) -> str:
    rows, ops_by_depth = [], {}
    previous = None
    for depth in depths:
        times = []
        for _ in range(repeats):
            graph = graph_of(depth)
            # cold every time: SymPy's cache (1000 entries) would hold a whole small network from the
            # previous repeat but not a large one, which made time per layer look like it grows
            clear_cache()
            start = time.perf_counter()
            program = derive(graph).program()
            generate_module(program)
            times.append(time.perf_counter() - start)
        forward = program.op_count("forward")
        backward = program.op_count("backward") + program.op_count("gradient")
        t = statistics.median(times)
        growth = f"x{(forward + backward) / previous:.2f}" if previous else ""
        previous = forward + backward
        ops_by_depth[depth] = forward + backward
        rows.append([depth, f"{t * 1e3:.0f}", f"{min(times) * 1e3:.0f}-{max(times) * 1e3:.0f}",
                     f"{t / depth * 1e3:.1f}", forward, backward, f"{backward / forward:.2f}", growth])
    d = np.array(list(ops_by_depth), dtype=float)
    ops = np.array(list(ops_by_depth.values()), dtype=float)
    slope, intercept = np.polyfit(d, ops, 1)
    residual = np.max(np.abs(slope * d + intercept - ops) / ops)
    ms = np.array([float(r[1]) for r in rows])
    t_slope, t_intercept = np.polyfit(d, ms, 1)
    t_residual = np.max(np.abs(t_slope * d + t_intercept - ms) / ms)
    headers = ["depth", "derive+codegen (ms, median)", "range (ms)", "ms per layer", "forward ops",
               "backward ops", "backward/forward", "total ops vs previous depth"]
    return (table(headers, rows) + f"\n\nLeast squares: total ops = {slope:.1f} * depth + {intercept:.1f}"
            f" (largest relative residual {100 * residual:.1f}%); time = {t_slope:.1f} ms * depth "
            f"{t_intercept:+.0f} ms (largest relative residual {100 * t_residual:.0f}%).\n")


def scalar_mlp(depth: int, width: int = 3) -> Graph:
    """A width-3 tanh network with one scalar symbol per weight, so SymPy can flatten and diff its loss."""
    g = Graph(f"scalar tanh network {width}x{depth}")
    h = [g.input(f"x{i}") for i in range(width)]
    ys = [g.input(f"y{i}") for i in range(width)]
    for l in range(1, depth + 1):
        h = [g.node(f"a{l}_{i}", sp.tanh(sum(g.param(f"w{l}_{i}{j}", init=0.1) * h[j] for j in range(width))
                                         + g.param(f"b{l}_{i}")))
             for i in range(width)]
    g.loss("L", sum((a - y) ** 2 for a, y in zip(h, ys)) / 2)
    return g


def flat_contrast(budget: float) -> str:
    rows = []
    for depth in range(1, 5):
        g = scalar_mlp(depth)
        start = time.perf_counter()
        program = derive(g).program()
        ours = program.op_count("backward") + program.op_count("gradient")
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        flat = g.flattened()[g.symbol(g.loss_name)]
        flat_ops = sum(int(sp.count_ops(sp.diff(flat, p.symbol))) for p in g.params)
        t_flat = time.perf_counter() - start
        rows.append([depth, len(g.params), flat_ops, f"{t_flat:.2f}", ours, f"{t_ours:.2f}",
                     f"{flat_ops / ours:.0f}"])
        if t_flat > budget:
            rows.append([f"stopped: depth {depth} took over {budget:.0f} s", "", "", "", "", "", ""])
            break
    headers = ["depth", "parameters", "SymPy diff of flattened loss: ops", "time (s)",
               "reverse mode (ours): backward ops", "time (s)", "swell factor"]
    return table(headers, rows) + "\n"


def run(repeats: int = 7, flat_budget: float = 20.0) -> str:
    return "\n".join([
        f"### Derivation scaling\n\n{environment()}; {repeats} repeats, median.\n",
        "#### tanh MLP, width 8, quadratic loss (matrix layers)\n",
        measure(lambda depth: tanh_mlp([8] * (depth + 1), "quadratic"), [8, 16, 32, 64], repeats),
        "#### scalar tanh chain (one neuron per layer)\n",
        measure(scalar_chain, [4, 8, 16, 32, 64], repeats),
        "#### Expression swell avoided: width-3 scalar tanh network\n",
        flat_contrast(flat_budget),
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--flat-budget", type=float, default=20.0)
    args = parser.parse_args()
    print(run(args.repeats, args.flat_budget))
