"""Time each statement of a generated ``loss_and_grad``: where the time of the generated code goes.

A development aid for the printer, not a benchmark: it runs the function body one statement at a time
(each statement repeated, in a namespace that already holds every earlier result) and prints the median
time of each line. It profiles the whole-array form (``codegen --no-block``): the blocked form's loop
runs the same formulas block by block, in place, where repeating one statement alone would not measure
what the loop does (benchmarks/bench_seed.py times the two forms side by side).

    python benchmarks/profile_lines.py seed|xent|deep [--repeats 9]
"""
from __future__ import annotations

import argparse
import ast
import statistics
import textwrap
import time

from _common import mlp_params, np, seed_graph, tanh_mlp
from symbackprop.compile import compile_gradient


def problem(name: str):
    rng = np.random.default_rng(0)
    if name == "seed":
        n = 1_000_000
        return seed_graph(), {"w": 0.7, "b": -0.2}, {"x": rng.normal(size=n), "y": rng.uniform(size=n)}
    if name == "xent":
        sizes, batch = [784, 128, 10], 256
        y = np.eye(10)[rng.integers(0, 10, batch)]
    else:
        sizes, batch = [32] * 33, 128
        y = rng.uniform(-0.9, 0.9, (batch, 32))
    params = mlp_params(sizes, rng)
    return tanh_mlp(sizes, "xent" if name == "xent" else "quadratic"), params, {
        "x": rng.normal(size=(batch, sizes[0])), "y": y}


def profile(source: str, params: dict, data: dict, repeats: int) -> list[tuple[float, str]]:
    module_ns: dict = {}
    exec(compile(source, "<generated>", "exec"), module_ns)
    func = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "loss_and_grad")
    ns = dict(module_ns, params=params, data=data)
    rows = []
    for stmt in func.body[1:]:  # skip the docstring
        if isinstance(stmt, ast.Return):
            break
        code = compile(ast.Module([stmt], []), "<line>", "exec")
        exec(code, ns)
        if isinstance(stmt, ast.Delete):  # del z: once (a second time would fail), and it costs nothing
            continue
        number = 20
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(number):
                exec(code, ns)
            times.append((time.perf_counter() - start) / number)
        rows.append((statistics.median(times), ast.unparse(stmt)))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", choices=["seed", "xent", "deep"])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    graph, params, data = problem(args.problem)
    rows = profile(compile_gradient(graph, check_shapes=False, blocked=False).source, params, data, args.repeats)
    total = sum(t for t, _ in rows)
    for t, line in rows:
        print(f"{t * 1e6:9.1f} us {100 * t / total:5.1f}%  {textwrap.shorten(line, 100)}")
    print(f"{total * 1e6:9.1f} us total")
