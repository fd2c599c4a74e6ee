"""A wide network: the generated gradient of 784-512-512-10 (tanh, softmax cross-entropy) at batch 1024
against the time of its matrix products alone.

On a network this wide the eight matrix products (three forward, five backward: two per layer, one fewer
for the first, whose input needs no adjoint) are nearly all of the work, so their time is the floor of
any implementation using them. They are timed here as a hand-written sequence of ``@`` calls, with the
shapes and memory layouts the generated module uses (``x @ W1.T``, ``d.T @ a``, ``d @ W``), in the same
run, interleaved with the module. The module's own products are recorded first (its source with every
``a @ b`` and ``np.matmul(a, b, out=...)`` turned into a call that notes both operands) and compared with the hand-written sequence, so
the floor cannot silently drift from what the module does. Also: the hand-written NumPy backprop, and
PyTorch and JAX-jit in blocks of their own when installed.

Issue 13's target: generated <= 1.1x the time of its GEMMs alone.

    python benchmarks/bench_gemm.py [--repeats 9] [--threads 1] [--batch 1024]
"""
from __future__ import annotations

import argparse
import ast

from _common import (Timing, check_same_results, environment, jax_candidate, jax_line, jax_mlp_xent,
                     limit_threads, load_source, module_source, np, optional_jax, optional_torch,
                     reference_mlp_xent, table, tanh_mlp, time_in_blocks, timing_rows, torch_mlp_xent,
                     xent_problem)
from bench_mlp import torch_candidate

SIZES, BATCH = [784, 512, 512, 10], 1024
TARGET = 1.1  # generated / GEMMs alone, at most
GEMMS = "its GEMMs alone (8 @ calls)"


def layout(a: np.ndarray) -> str:
    """"C" (row-major), "T" (the transpose of a row-major array: a free view) or "other"."""
    return "C" if a.flags.c_contiguous else "T" if a.T.flags.c_contiguous else "other"


def gemm_list(params: dict, data: dict) -> list[tuple]:
    """The matrix products of one backprop of the tanh MLP, as (left shape, left layout, right shape,
    right layout): forward ``a @ W.T`` per layer, backward ``d.T @ a`` per layer and ``d @ W`` for every
    layer but the first."""
    N, layers = data["x"].shape[0], len(SIZES) - 1
    sizes = [params[f"W{l}"].shape for l in range(1, layers + 1)]
    forward = [((N, n_in), "C", (n_in, n_out), "T") for n_out, n_in in sizes]
    backward = []
    for l in range(layers, 0, -1):
        n_out, n_in = sizes[l - 1]
        backward.append(((n_out, N), "T", (N, n_in), "C"))
        if l > 1:
            backward.append(((N, n_out), "C", (n_out, n_in), "C"))
    return forward + backward


def gemms_alone(params: dict, data: dict):
    """The products of :func:`gemm_list` as a hand-written sequence of ``@`` calls on arrays of the right
    shapes and layouts (the values are whatever the products give: their time does not depend on them)."""
    x, (W1, W2, W3) = data["x"], (params["W1"], params["W2"], params["W3"])

    def run():
        h1 = x @ W1.T
        h2 = h1 @ W2.T
        d3 = h2 @ W3.T
        gW3 = d3.T @ h2
        d2 = d3 @ W3
        gW2 = d2.T @ h1
        d1 = d2 @ W2
        gW1 = d1.T @ x
        return gW1, gW2, gW3
    return run


class RecordMatmul(ast.NodeTransformer):
    """``a @ b`` -> ``_record_matmul(a, b)``, and the blocked code's ``np.matmul(a, b, out=z)`` ->
    ``_record_matmul(a, b, out=z)``."""

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.MatMult):
            return ast.copy_location(ast.Call(ast.Name("_record_matmul", ast.Load()), [node.left, node.right], []),
                                     node)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "matmul" and isinstance(f.value, ast.Name) and f.value.id == "np":
            return ast.copy_location(ast.Call(ast.Name("_record_matmul", ast.Load()), node.args, node.keywords), node)
        return node


def recorded_gemms(graph, params: dict, data: dict) -> list[tuple]:
    """The matrix products (2-D by 2-D) one call of the generated module computes, as :func:`gemm_list`
    describes them."""
    tree = RecordMatmul().visit(ast.parse(module_source(graph)))
    module = load_source(ast.unparse(ast.fix_missing_locations(tree)), "recorded")
    seen = []

    def record(a, b, out=None):
        if np.ndim(a) == 2 and np.ndim(b) == 2:
            seen.append((a.shape, layout(a), b.shape, layout(b)))
        return np.matmul(a, b, out=out)
    module._record_matmul = record
    module.loss_and_grad(params, data)
    return seen


def measure(repeats: int = 9, batch: int = BATCH) -> tuple[dict[str, Timing], str]:
    """Timings of every candidate, and a line saying whether the module's products are the sequence's."""
    graph, layers = tanh_mlp(SIZES, "xent"), len(SIZES) - 1
    params, data = xent_problem(SIZES, batch)
    module = load_source(module_source(graph), graph.name)
    expected, recorded = gemm_list(params, data), recorded_gemms(graph, params, data)
    if sorted(recorded) == sorted(expected):
        products = f"the module's matrix products are the sequence's ({len(recorded)}, same shapes and layouts)"
    else:
        products = (f"**the module's matrix products differ from the sequence's**: module {recorded}, "
                    f"sequence {expected}")
    numpy_candidates = {"generated module": lambda: module.loss_and_grad(params, data),
                        GEMMS: gemms_alone(params, data),
                        "hand-written NumPy": lambda: reference_mlp_xent(params, data, layers)}
    blocks = {"NumPy": numpy_candidates}
    torch, jax = optional_torch(), optional_jax()
    if torch is not None:
        blocks["PyTorch"] = {"PyTorch autograd (float64)": torch_candidate(torch, params, data, torch_mlp_xent(layers))}
    if jax is not None:
        blocks["JAX"] = {"JAX jit (float64)": jax_candidate(jax, jax_mlp_xent(layers), params, data)}
    check_same_results({name: f for block in blocks.values() for name, f in block.items() if name != GEMMS})
    return time_in_blocks(blocks, "generated module", repeats), products


def ratio(timings: dict[str, Timing]) -> float:
    """generated / its GEMMs alone (issue 13: <= 1.1)."""
    return timings["generated module"].median / timings[GEMMS].median


def report(timings: dict[str, Timing], products: str, repeats: int, batch: int = BATCH) -> str:
    headers, rows = timing_rows(timings, GEMMS)
    r = ratio(timings)
    return (f"### 784-512-512-10 tanh + softmax CE, batch {batch}: against its GEMMs alone\n\n{environment()}; "
            f"{jax_line()}; {repeats} repeats, median; {products}.\n\n" + table(headers, rows) + "\n\n"
            f"Generated module / its GEMMs alone: {r:.3f} (target <= {TARGET}: {'pass' if r <= TARGET else 'FAIL'}).\n")


def run(repeats: int = 9, batch: int = BATCH) -> str:
    return report(*measure(repeats, batch), repeats, batch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS (and PyTorch) threads; 0 keeps the libraries' default (default 1, see README)")
    args = parser.parse_args()
    with limit_threads(args.threads or None):
        print(run(args.repeats, args.batch))
