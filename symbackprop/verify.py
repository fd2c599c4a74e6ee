"""Check symbolic gradients against numbers.

Three checks, per parameter:

* **finite differences**: central differences of the mean loss, step ``eps = 1e-6``, against the
  symbolic gradient, passing when ``|g - fd| <= atol + rtol |fd|`` elementwise with the tolerances of
  ``torch.autograd.gradcheck`` (atol 1e-5, rtol 1e-3). Large parameters are checked on up to
  ``max_elements`` elements chosen at random.
* **PyTorch**: autograd of an independent evaluation of the model (:mod:`symbackprop.torch_eval`),
  when torch is installed; same tolerances.
* **training**: ``steps`` steps of gradient descent with the symbolic gradient and with
  finite-difference gradients, from the same start; the trajectories must stay together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .compile import compile_gradient
from .graph import Graph

EPS, ATOL, RTOL = 1e-6, 1e-5, 1e-3

LossAndGrad = Callable[[dict, dict], tuple]


@dataclass
class Check:
    param: str
    check: str
    max_abs: float
    max_rel: float
    ok: bool


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def table(self) -> str:
        rows = [f"{'parameter':<12} {'check':<20} {'max abs err':>12} {'max rel err':>12}  result"]
        for c in self.checks:
            rows.append(f"{c.param:<12} {c.check:<20} {c.max_abs:>12.3e} {c.max_rel:>12.3e}  "
                        + ("ok" if c.ok else "FAILED"))
        return "\n".join(rows + [f"note: {n}" for n in self.notes])


def compare(param: str, check: str, got, expected, atol: float = ATOL, rtol: float = RTOL) -> Check:
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    err = np.abs(got - expected)
    rel = err / np.maximum(np.abs(expected), 1e-300)
    ok = bool(np.all(np.isfinite(got)) and np.all(err <= atol + rtol * np.abs(expected)))
    return Check(param, check, float(err.max(initial=0.0)), float(np.where(err == 0, 0, rel).max(initial=0.0)), ok)


def finite_differences(loss_and_grad: LossAndGrad, params: dict, data: dict, name: str,
                       indices: list[tuple], eps: float = EPS) -> np.ndarray:
    """Central differences of the mean loss by ``params[name]`` at the given element indices."""
    out = np.zeros(len(indices))
    for k, idx in enumerate(indices):
        losses = []
        for sign in (1, -1):
            shifted = np.array(params[name], dtype=np.float64)
            shifted[idx] += sign * eps
            losses.append(loss_and_grad({**params, name: shifted}, data)[0])
        out[k] = (losses[0] - losses[1]) / (2 * eps)
    return out


def chosen_indices(shape: tuple, rng: np.random.Generator, limit: int) -> list[tuple]:
    every = list(np.ndindex(shape)) if shape else [()]
    if len(every) <= limit:
        return every
    return [every[i] for i in sorted(rng.choice(len(every), size=limit, replace=False))]


def verify(graph: Graph, params: dict, data: dict, loss_and_grad: LossAndGrad | None = None,
           steps: int = 10, lr: float = 0.1, use_torch: bool = True, max_elements: int = 64,
           seed: int = 0) -> Report:
    """Check ``loss_and_grad`` (default: the compiled symbolic gradient) at ``params`` on ``data``."""
    reference = compile_gradient(graph).loss_and_grad
    loss_and_grad = loss_and_grad or reference
    rng = np.random.default_rng(seed)
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    report = Report()
    _, grads = loss_and_grad(params, data)
    for p in graph.params:
        idx = chosen_indices(p.shape, rng, max_elements)
        fd = finite_differences(reference, params, data, p.name, idx)
        got = np.asarray(grads[p.name], dtype=np.float64)
        report.checks.append(compare(p.name, "finite differences", [got[i] for i in idx], fd))
        if len(idx) < max(1, int(np.prod(p.shape))):
            report.notes.append(f"{p.name}: finite differences on {len(idx)} of {int(np.prod(p.shape))} elements")
    if use_torch:
        try:
            from .torch_eval import torch_gradients
            _, tgrads = torch_gradients(graph, params, data)
        except ImportError:
            report.notes.append("PyTorch is not installed: the autograd cross-check was skipped "
                                "(pip install 'symbackprop[torch]')")
        else:
            for p in graph.params:
                report.checks.append(compare(p.name, "pytorch autograd", grads[p.name], tgrads[p.name]))
    if steps:
        report.checks.extend(training_check(graph, loss_and_grad, reference, params, data, steps, lr, rng,
                                            max_elements))
    return report


def training_check(graph, loss_and_grad, reference, params, data, steps, lr, rng, max_elements) -> list[Check]:
    """Gradient descent with the symbolic gradient against descent with finite-difference gradients."""
    size = sum(int(np.prod(p.shape)) for p in graph.params)
    steps = steps if size <= 8 * max_elements else min(steps, 2)
    sym, num = dict(params), dict(params)
    drift = {p.name: 0.0 for p in graph.params}
    scale = {p.name: 0.0 for p in graph.params}
    for _ in range(steps):
        _, g = loss_and_grad(sym, data)
        sym = {k: sym[k] - lr * np.asarray(g[k]) for k in sym}
        fd = {p.name: finite_differences(reference, num, data, p.name, list(np.ndindex(p.shape)) if p.shape else [()])
              .reshape(p.shape) for p in graph.params}
        num = {k: num[k] - lr * fd[k] for k in num}
        for k in sym:
            drift[k] = max(drift[k], float(np.max(np.abs(sym[k] - num[k]))))
            scale[k] = max(scale[k], float(np.max(np.abs(num[k] - params[k]))))
    return [Check(k, f"training ({steps} steps)", drift[k], drift[k] / max(scale[k], 1e-300),
                  drift[k] <= ATOL + RTOL * scale[k]) for k in drift]


def check_point(graph: Graph, data_table: dict, samples: int = 16, seed: int = 0) -> tuple[dict, dict]:
    """Parameters and data to check at: the initial values nudged off symmetric points, and a sample of
    the model's own data (or N(0, 1) inputs, with one-hot rows for one-hot inputs, if it has none)."""
    from .data import DataError, model_data
    from .initializers import initial_params
    rng = np.random.default_rng(seed)
    params = {k: v + 0.1 * rng.normal(size=v.shape) for k, v in initial_params(graph, seed).items()}
    try:
        full = model_data(graph, data_table).train
    except DataError:
        full = {}
        for q in graph.input_list:
            if q.onehot:
                full[q.name] = np.eye(int(np.prod(q.shape)))[rng.integers(0, int(np.prod(q.shape)), samples)]
                full[q.name] = full[q.name].reshape((samples,) + q.shape)
            else:
                full[q.name] = rng.normal(size=(samples,) + q.shape)
    n = len(next(iter(full.values()))) if full else 0
    rows = rng.choice(n, size=min(samples, n), replace=False) if n else []
    return params, {k: v[rows] for k, v in full.items()}
