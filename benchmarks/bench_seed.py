"""The seed's gradient (z = w x + b, a = sigmoid(z), L = (a - y)^2 / 2) at N = 1,000,000 samples.

Side by side in one process: the compiled callable, the generated module (written to a temporary
directory and imported), both blocked and in place (codegen's default), the generated module in
whole-array form (``codegen --no-block``), a hand-written NumPy reference, the same reference with
in-place operations and the same blocked in place (for information), and PyTorch autograd and JAX-jit
(float64) when installed. The ratio column is to the hand-written reference; issue 13's target is <= 0.5
for the compiled callable and the generated module.

    python benchmarks/bench_seed.py [--n 1000000] [--repeats 9] [--blocks 1024,4096,65536] [--single-calls]

``--blocks`` adds the generated module with those numbers of samples per block (``codegen --block``), to
compare block sizes with the default (65,536 for the seed). ``--single-calls`` times one call of each
candidate per round instead of a run of calls lasting 50 ms: the candidates then alternate call by call,
so a candidate's temporaries of 8 MB come fresh from the kernel on each call (page faults) instead of
from the allocator's memory of its previous call, which is what a training loop doing other work between
two gradient calls sees.
"""
from __future__ import annotations

import argparse

from _common import (Timing, check_same_results, environment, import_generated, jax_candidate, jax_line,
                     load_source, np, optional_jax, optional_torch, seed_graph, table, time_side_by_side,
                     timing_rows)
from symbackprop.codegen import generate_module
from symbackprop.compile import compile_gradient
from symbackprop.derive import derive


def reference(params: dict, data: dict) -> tuple[float, dict]:
    """The seed's loss and gradient as a careful engineer writes them in NumPy (no in-place tricks)."""
    w, b, x, y = params["w"], params["b"], data["x"], data["y"]
    N = x.shape[0]
    z = w * x + b
    with np.errstate(over="ignore"):  # exp(-z) overflows to inf for z < -709: sigmoid is exactly 0
        a = 1.0 / (1.0 + np.exp(-z))
    r = a - y
    loss = float(np.mean(r ** 2)) / 2
    d = r * a * (1 - a)
    return loss, {"w": float(d @ x) / N, "b": float(d.sum()) / N}


def reference_in_place(params: dict, data: dict) -> tuple[float, dict]:
    """The same computation reusing buffers in place: the fastest plain NumPy we know how to write."""
    w, b, x, y = params["w"], params["b"], data["x"], data["y"]
    N = x.shape[0]
    t = np.multiply(x, -w)
    t -= b                       # t = -z
    with np.errstate(over="ignore"):
        np.exp(t, out=t)
    t += 1.0
    a = np.reciprocal(t, out=t)  # a = sigmoid(z)
    r = a - y
    loss = float(r @ r) / (2 * N)
    r *= a
    a -= 1.0
    r *= a                       # r = (a - y) a (a - 1) = -dL/dz
    return loss, {"w": -float(r @ x) / N, "b": -float(r.sum()) / N}


def reference_blocked(params: dict, data: dict, block: int = 16384) -> tuple[float, dict]:
    """The same in blocks of ``block`` samples, in place into buffers allocated once per call: the sketch of
    issue 13, as careful as hand-written NumPy gets (einsum for the dot product: never multithreaded)."""
    w, b, x, y = params["w"], params["b"], data["x"], data["y"]
    N = x.shape[0]
    rows = min(N, block)
    a, r, t = np.empty(rows), np.empty(rows), np.empty(rows)
    loss = gw = gb = 0.0
    for start in range(0, N, rows):
        stop = min(start + rows, N)
        if stop - start < rows:
            a, r, t = a[:stop - start], r[:stop - start], t[:stop - start]
        xb = x[start:stop]
        np.multiply(xb, -w, out=a)
        np.subtract(a, b, out=a)                 # -z
        with np.errstate(over="ignore"):
            np.exp(a, out=a)
        np.add(a, 1.0, out=a)
        np.divide(1.0, a, out=a)                 # a = sigmoid(z)
        np.subtract(a, y[start:stop], out=r)     # a - y
        loss += np.einsum("i,i->", r, r)
        np.subtract(1.0, a, out=t)
        np.multiply(t, a, out=t)
        np.multiply(t, r, out=t)                 # dL/dz
        gw += np.einsum("i,i->", t, xb)
        gb += np.add.reduce(t)
    return float(loss) / (2 * N), {"w": float(gw) / N, "b": float(gb) / N}


def torch_candidate(torch, params: dict, data: dict):
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])

    def run():
        w = torch.tensor(params["w"], dtype=torch.float64, requires_grad=True)
        b = torch.tensor(params["b"], dtype=torch.float64, requires_grad=True)
        a = torch.sigmoid(w * x + b)
        loss = ((a - y) ** 2).mean() / 2
        loss.backward()
        return loss.item(), {"w": w.grad.item(), "b": b.grad.item()}
    return run


def jax_seed(jnp, p, x, y):
    a = 1 / (1 + jnp.exp(-(p["w"] * x + p["b"])))
    return jnp.mean((a - y) ** 2) / 2


def measure(n: int = 1_000_000, repeats: int = 9, blocks: tuple[int, ...] = (),
            single_calls: bool = False) -> dict[str, Timing]:
    """Per-call timings of every candidate (names as in the table)."""
    rng = np.random.default_rng(0)
    params = {"w": 0.7, "b": -0.2}
    data = {"x": rng.normal(size=n), "y": rng.uniform(size=n)}
    graph = seed_graph()
    compiled = compile_gradient(graph, check_shapes=False)
    module = import_generated(graph)
    whole = load_source(generate_module(derive(graph).program(), check_shapes=False, blocked=False), "whole")
    candidates = {
        "hand-written NumPy": lambda: reference(params, data),
        "compiled callable": lambda: compiled.loss_and_grad(params, data),
        "generated module": lambda: module.loss_and_grad(params, data),
        "generated module, whole-array (--no-block)": lambda: whole.loss_and_grad(params, data),
        "hand-written NumPy, in place": lambda: reference_in_place(params, data),
        "hand-written NumPy, blocked in place": lambda: reference_blocked(params, data),
    }
    for block in blocks:
        other = load_source(generate_module(derive(graph).program(), check_shapes=False, block=block), f"{block}")
        candidates[f"generated module, blocks of {block:,}"] = (lambda m: lambda: m.loss_and_grad(params, data))(other)
    torch = optional_torch()
    if torch is not None:
        candidates["PyTorch autograd (float64)"] = torch_candidate(torch, params, data)
    jax = optional_jax()
    if jax is not None:
        candidates["JAX jit (float64)"] = jax_candidate(jax, jax_seed, {k: np.float64(v) for k, v in params.items()},
                                                        data)
    check_same_results(candidates)
    return time_side_by_side(candidates, repeats=repeats, min_time=0.0 if single_calls else 0.05)


def ratio(timings: dict[str, Timing]) -> float:
    """generated module / hand-written NumPy (issue 13: <= 0.5)."""
    return timings["generated module"].median / timings["hand-written NumPy"].median


def report(timings: dict[str, Timing], n: int, repeats: int, single_calls: bool = False) -> str:
    headers, rows = timing_rows(timings, "hand-written NumPy")
    how = "one call of each candidate per round" if single_calls else "runs of calls lasting 50 ms"
    return (f"### Seed gradient, N = {n:,}\n\n{environment()}; {jax_line()}; {repeats} repeats of {how}, "
            "median.\n\n"
            + table(headers, rows) + "\n")


def run(n: int = 1_000_000, repeats: int = 9, blocks: tuple[int, ...] = (), single_calls: bool = False) -> str:
    return report(measure(n, repeats, blocks, single_calls), n, repeats, single_calls)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--blocks", default="", help="comma-separated samples per block to compare (e.g. 4096,65536)")
    parser.add_argument("--single-calls", action="store_true", help="one call of each candidate per round")
    args = parser.parse_args()
    print(run(args.n, args.repeats, tuple(int(b) for b in args.blocks.split(",") if b), args.single_calls))
