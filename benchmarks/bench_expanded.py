"""How long ``symbackprop derive --expanded`` takes where the expanded gradients are astronomically large.

The expanded form of a gradient (every node and adjoint substituted) grows exponentially with depth; it is
counted before it is built (``Derivation.expanded_size``, a dynamic program over the graph) and built only
within the operation budget (``--expand-limit``, default ``EXPAND_LIMIT``). Past it, the command prints the
node form and one line saying how large the expanded form would be. Before the budget, a 5-step GRU and a
chain of 8 reused nodes ran for minutes.

For each model: the largest counted size, whether the one-line notice came (and how many gradients were
expanded), the time in process (parse, derive and render with ``expanded=True``; median over ``--repeats``,
each from a cold SymPy cache) and the command in its own process (interpreter start and imports included).
Target: well under 5 s.

    python benchmarks/bench_expanded.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sympy.core.cache import clear_cache

from _common import ROOT, environment, table
from bench_hostile import run_one
from symbackprop.derive import EXPAND_LIMIT, about, derive
from symbackprop.modelfile import load_model


def gru_text(steps: int, hidden: int = 3, features: int = 2) -> str:
    """examples/gru.toml's network over any number of steps (without its data and training tables)."""
    lines = [f'name = "GRU, {steps} steps"', "[inputs]"]
    lines += [f"x{t} = {{ shape = [{features}] }}" for t in range(1, steps + 1)] + [f"y = {{ shape = [{hidden}] }}"]
    lines += ["[params]"]
    for gate in "zrh":
        lines += [f'W{gate} = {{ shape = [{hidden}, {features}], init = "glorot" }}',
                  f'U{gate} = {{ shape = [{hidden}, {hidden}], init = "glorot" }}', f"b{gate} = {{ shape = [{hidden}] }}"]
    lines += ["[nodes]", 'z1 = "sigmoid(Wz @ x1 + bz)"', 'c1 = "tanh(Wh @ x1 + bh)"', 'h1 = "z1 * c1"']
    for t in range(2, steps + 1):
        h = f"h{t - 1}"
        lines += [f'z{t} = "sigmoid(Wz @ x{t} + Uz @ {h} + bz)"', f'r{t} = "sigmoid(Wr @ x{t} + Ur @ {h} + br)"',
                  f'c{t} = "tanh(Wh @ x{t} + Uh @ (r{t} * {h}) + bh)"', f'h{t} = "(1 - z{t}) * {h} + z{t} * c{t}"']
    return "\n".join(lines + ["[loss]", f'L = "sum((h{steps} - y)**2) / 2"']) + "\n"


def reused_chain_text(length: int) -> str:
    """n_i = tanh(n_{i-1}) * n_{i-1} + n_{i-1}: every node used three times by the next."""
    nodes = ['n0 = "w*x"'] + [f'n{i} = "tanh(n{i - 1}) * n{i - 1} + n{i - 1}"' for i in range(1, length + 1)]
    return ("[inputs]\nx = {}\ny = {}\n[params]\nw = { init = 0.5 }\n[nodes]\n" + "\n".join(nodes)
            + f'\n[loss]\nL = "(n{length} - y)**2"\n')


def models(directory: Path) -> dict[str, Path]:
    written = {"GRU, 10 steps": gru_text(10), "GRU, 20 steps": gru_text(20),
               "chain of 8 reused nodes": reused_chain_text(8),
               "chain of 5 reused nodes (expanded: under the budget)": reused_chain_text(5)}
    paths = {"examples/gru.toml (GRU, 5 steps)": ROOT / "examples" / "gru.toml"}
    for i, (name, text) in enumerate(written.items()):
        paths[name] = directory / f"model{i}.toml"
        paths[name].write_text(text)
    return paths


def in_process(path: Path) -> tuple[float, str]:
    """Parse, derive and render with the expanded forms, from a cold SymPy cache (as a fresh command)."""
    clear_cache()
    start = time.perf_counter()
    text = derive(load_model(path).graph).to("text", expanded=True)
    return time.perf_counter() - start, text


def run(repeats: int = 5) -> str:
    rows = []
    with tempfile.TemporaryDirectory(prefix="symbackprop_expanded_") as directory:
        for name, path in models(Path(directory)).items():
            d = derive(load_model(path).graph)
            largest = max(d.expanded_size(t) for t in d.targets)
            times, text = zip(*(in_process(path) for _ in range(repeats)))
            expanded = sum(line.startswith("expanded gradient") for line in text[0].splitlines())
            notice = sum(line.startswith("note: expanded form") for line in text[0].splitlines())
            command = run_one(path, "--expanded", "--format", "text")
            assert command["status"] == 0 and command["stdout"] == text[0] + "\n", command["message"]
            rows.append([name, about(largest), f"{expanded} of {len(d.targets)}", "yes" if notice else "no",
                         f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})",
                         f"{command['seconds']:.2f}"])
    return "\n".join([
        "### derive --expanded on deep models\n",
        f"{environment()}; budget {EXPAND_LIMIT:,} operations per gradient; in-process median of {repeats}.\n",
        table(["model", "largest expanded form (operations, counted)", "gradients expanded", "one-line notice",
               "in process (s)", "command (s)"], rows), ""])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    print(run(parser.parse_args().repeats))
