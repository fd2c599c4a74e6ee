"""Gradients of tanh MLPs: the generated module against hand-written NumPy backprop and PyTorch.

Two networks, each at its own batch size:

* 784-128-10, tanh hidden layer, softmax output with cross-entropy, batch 256;
* 32 layers of width 32 (input 32, every layer tanh), quadratic loss L = sum((a - y)^2) / 2, batch 128
  (``--layers 8``: issue 13's 8-layer network).

Side by side in one process: the generated module (written to a temporary directory and imported;
codegen's default, blocked in place, which at these batch sizes is one block), the same in whole-array
form (``codegen --no-block``), a hand-written NumPy backprop (the textbook four equations, the 1/N folded
into the output error), and PyTorch autograd in float64 on the CPU with ``torch.set_num_threads`` equal
to NumPy's BLAS threads, when installed, and JAX-jit (float64) when installed. NumPy candidates are
interleaved; PyTorch and JAX are each timed in a block of their own right after, beside the NumPy
reference again (interleaving PyTorch's OpenMP pool with OpenBLAS's threads slows both by up to 5x on 2
cores). The ratio column is to the hand-written NumPy; issue 13's target is <= 1.0.

    python benchmarks/bench_mlp.py [--repeats 9] [--threads 1] [--layers 32]
"""
from __future__ import annotations

import argparse

from _common import (Timing, check_same_results, environment, import_generated, jax_candidate, jax_line,
                     jax_mlp_xent, limit_threads, load_source, mlp_params, np, optional_jax, optional_torch, table,
                     tanh_backward, tanh_mlp, time_in_blocks, timing_rows)
from symbackprop.codegen import generate_module
from symbackprop.derive import derive


def reference_xent(params: dict, data: dict) -> tuple[float, dict]:
    """Hand-written backprop of a one-hidden-layer tanh network with softmax cross-entropy."""
    x, y = data["x"], data["y"]
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    N = x.shape[0]
    a1 = np.tanh(x @ W1.T + b1)
    z2 = a1 @ W2.T + b2
    z2 = z2 - z2.max(axis=1, keepdims=True)
    e = np.exp(z2)
    s = e.sum(axis=1, keepdims=True)
    p = e / s
    loss = -float(np.sum(y * (z2 - np.log(s)))) / N
    d2 = (p - y) / N                     # output error, already divided by the batch size
    d1 = (d2 @ W2) * (1 - a1 ** 2)
    return loss, {"W1": d1.T @ x, "b1": d1.sum(axis=0), "W2": d2.T @ a1, "b2": d2.sum(axis=0)}


def reference_deep(params: dict, data: dict, layers: int) -> tuple[float, dict]:
    """Hand-written backprop of a deep tanh network with the quadratic loss."""
    x, y = data["x"], data["y"]
    N = x.shape[0]
    acts = [x]
    for l in range(1, layers + 1):
        acts.append(np.tanh(acts[-1] @ params[f"W{l}"].T + params[f"b{l}"]))
    r = acts[-1] - y
    loss = float(np.sum(r ** 2)) / (2 * N)
    d = r * (1 - acts[-1] ** 2) / N
    return loss, tanh_backward(d, acts, params, layers)


def torch_candidate(torch, params: dict, data: dict, forward):
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    leaves = {k: torch.from_numpy(v).requires_grad_() for k, v in params.items()}

    def run():
        for t in leaves.values():
            t.grad = None
        loss = forward(torch, leaves, x, y)
        loss.backward()
        return loss.item(), {k: t.grad.numpy() for k, t in leaves.items()}
    return run


def torch_xent(torch, p, x, y):
    a1 = torch.tanh(x @ p["W1"].T + p["b1"])
    logp = torch.log_softmax(a1 @ p["W2"].T + p["b2"], dim=1)
    return -(y * logp).sum() / x.shape[0]


def torch_deep(layers: int):
    def forward(torch, p, x, y):
        a = x
        for l in range(1, layers + 1):
            a = torch.tanh(a @ p[f"W{l}"].T + p[f"b{l}"])
        return ((a - y) ** 2).sum() / (2 * x.shape[0])
    return forward


def jax_deep(layers: int):
    def loss(jnp, p, x, y):
        a = x
        for l in range(1, layers + 1):
            a = jnp.tanh(a @ p[f"W{l}"].T + p[f"b{l}"])
        return jnp.sum((a - y) ** 2) / (2 * x.shape[0])
    return loss


def measure(sizes: list[int], loss: str, batch: int, reference, torch_forward, repeats: int,
            jax_loss=None) -> dict[str, Timing]:
    """Per-call timings of the generated module, the hand-written reference, PyTorch and JAX (if any)."""
    rng = np.random.default_rng(0)
    params = mlp_params(sizes, rng)
    x = rng.normal(size=(batch, sizes[0]))
    if loss == "xent":
        y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch)]
    else:
        y = rng.uniform(-0.9, 0.9, (batch, sizes[-1]))
    data = {"x": x, "y": y}
    graph = tanh_mlp(sizes, loss)
    module = import_generated(graph)
    whole = load_source(generate_module(derive(graph).program(), check_shapes=False, blocked=False), "whole")
    candidates = {
        "hand-written NumPy": lambda: reference(params, data),
        "generated module": lambda: module.loss_and_grad(params, data),
        "generated module, whole-array (--no-block)": lambda: whole.loss_and_grad(params, data),
    }
    blocks = {"NumPy": candidates}
    torch, jax = optional_torch(), optional_jax()
    if torch is not None:
        blocks["PyTorch"] = {"PyTorch autograd (float64)": torch_candidate(torch, params, data, torch_forward)}
    if jax is not None and jax_loss is not None:
        blocks["JAX"] = {"JAX jit (float64)": jax_candidate(jax, jax_loss, params, data)}
    check_same_results({name: f for block in blocks.values() for name, f in block.items()})
    # PyTorch and JAX after, each with the NumPy reference again: two thread pools interleaved slow both
    return time_in_blocks(blocks, "hand-written NumPy", repeats)


def ratio(timings: dict[str, Timing]) -> float:
    """generated module / hand-written NumPy (issue 13: <= 1.0)."""
    return timings["generated module"].median / timings["hand-written NumPy"].median


def bench(title: str, sizes: list[int], loss: str, batch: int, reference, torch_forward, repeats: int,
          jax_loss=None) -> str:
    timings = measure(sizes, loss, batch, reference, torch_forward, repeats, jax_loss)
    headers, rows = timing_rows(timings, "hand-written NumPy")
    return f"#### {title}\n\n" + table(headers, rows) + "\n"


def run(repeats: int = 9, deep: int = 32) -> str:
    parts = [f"### MLP gradients\n\n{environment()}; {jax_line()}; {repeats} repeats, median.\n",
             bench("784-128-10 tanh + softmax cross-entropy, batch 256", [784, 128, 10], "xent", 256,
                   reference_xent, torch_xent, repeats, jax_mlp_xent(2)),
             bench(f"{deep} tanh layers of width 32, quadratic loss, batch 128", [32] * (deep + 1), "quadratic",
                   128, lambda p, d: reference_deep(p, d, deep), torch_deep(deep), repeats, jax_deep(deep))]
    return "\n".join(parts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS (and PyTorch) threads; 0 keeps the libraries' default (default 1, see README)")
    parser.add_argument("--layers", type=int, default=32, help="tanh layers of the deep width-32 network")
    args = parser.parse_args()
    with limit_threads(args.threads or None):
        print(run(args.repeats, args.layers))
