"""Check symbolic gradients against numbers that do not come from the derivation.

Three checks, per parameter (see docs/verification.md):

* **finite differences**: central differences of the model's *forward* loss (the compiled mean loss,
  no backward code involved), step ``eps = 1e-6`` in float64, against the gradient under test. An
  element passes when ``|g - fd| <= atol + rtol * |fd|``, with the tolerances of
  ``torch.autograd.gradcheck`` (atol 1e-5, rtol 1e-3). A parameter with more than ``max_elements``
  elements is checked on that many elements chosen at random.
* **pytorch autograd**: the loss evaluated by PyTorch from the graph's SymPy expressions
  (:mod:`symbackprop.torch_eval`, forward only) and differentiated by ``.backward()``; same tolerances.
  Skipped, with a note, when torch is not installed. The forward losses are compared too.
* **training**: ``steps`` steps of gradient descent ``w <- w - lr * g`` with the gradient under test and
  with finite-difference gradients, from the same start. The trajectories must stay together: the
  largest parameter difference along the way must be within ``atol + rtol * (largest distance moved)``.

The gradient under test is the compiled symbolic gradient, or any ``loss_and_grad(params, data)`` with
the generated module's contract (for example a generated module edited by hand).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .compile import compile_gradient
from .graph import Graph, UserError

EPS, ATOL, RTOL = 1e-6, 1e-5, 1e-3
STEPS, MAX_ELEMENTS, SAMPLES = 20, 64, 16
LR = 0.1  # the training check's step when the model sets no [train] lr

LossAndGrad = Callable[[dict, dict], tuple]


@dataclass
class Check:
    """One check of one parameter (or of the loss value): its largest errors and whether it passed."""

    param: str
    check: str
    max_abs: float
    max_rel: float
    ok: bool
    detail: str = ""


@dataclass
class Report:
    """All checks of a model; ``str()`` is the table the CLI prints."""

    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def failed(self) -> dict[str, list[str]]:
        """Parameter -> the names of the checks it failed, in report order."""
        out: dict[str, list[str]] = {}
        for c in self.failures:
            out.setdefault(c.param, []).append(c.check)
        return out

    def summary(self) -> str:
        """One line: all passed, or which checks failed for which parameters."""
        if self.ok:
            return f"all gradient checks passed ({len(self.checks)} checks)"
        parts = [f"{p} ({', '.join(checks)})" for p, checks in self.failed().items()]
        return "gradient check failed for " + "; ".join(parts)

    def table(self) -> str:
        """Columns separated by at least two spaces, so no two header words run together."""
        width = max([len("parameter")] + [len(c.param) for c in self.checks])
        check = max([len("check")] + [len(c.check) for c in self.checks])
        rows = [f"{'parameter':<{width}}  {'check':<{check}}  {'max abs err':>11}  {'max rel err':>11}  result"]
        for c in self.checks:
            result = ("ok" if c.ok else "FAILED") + (f": {c.detail}" if c.detail else "")
            rows.append(f"{c.param:<{width}}  {c.check:<{check}}  {c.max_abs:>11.2e}  {c.max_rel:>11.2e}  {result}")
        return "\n".join(rows + [f"note: {n}" for n in self.notes])

    def __str__(self) -> str:
        return self.table()


def compare(param: str, check: str, got: Any, expected: Any, atol: float = ATOL, rtol: float = RTOL) -> Check:
    """Elementwise ``|got - expected| <= atol + rtol |expected|``; non-finite values always fail."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    err = np.abs(got - expected)
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(expected))):
        return Check(param, check, float("nan"), float("nan"), False, "not a finite number")
    rel = np.divide(err, np.abs(expected), out=np.where(err == 0, 0.0, np.inf), where=expected != 0)
    ok = bool(np.all(err <= atol + rtol * np.abs(expected)))
    return Check(param, check, float(err.max(initial=0.0)), float(rel.max(initial=0.0)), ok)


def central_differences(mean_loss: Callable[[dict], float], params: dict, name: str, indices: list[tuple],
                        eps: float = EPS) -> np.ndarray:
    """(L(w + eps e_i) - L(w - eps e_i)) / (2 eps) for each element index i of ``params[name]``."""
    out = np.zeros(len(indices))
    for k, idx in enumerate(indices):
        shifted = np.array(params[name], dtype=np.float64)
        shifted[idx] += eps
        up = mean_loss({**params, name: shifted.copy()})
        shifted[idx] -= 2 * eps
        down = mean_loss({**params, name: shifted})
        out[k] = (up - down) / (2 * eps)
    return out


def chosen_indices(shape: tuple, rng: np.random.Generator, limit: int) -> list[tuple]:
    """Every element index of ``shape``, or ``limit`` of them at random (sorted) when there are more."""
    every = list(np.ndindex(shape)) if shape else [()]
    if len(every) <= limit:
        return every
    return [every[i] for i in sorted(rng.choice(len(every), size=limit, replace=False))]


# ---- the point to check at -------------------------------------------------------------------------
def check_params(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """The initial values, nudged by N(0, 0.1^2) so zero-initialised weights are not a symmetric point."""
    from .initializers import initial_params
    rng = np.random.default_rng(seed)
    return {k: v + 0.1 * rng.normal(size=np.shape(v)) for k, v in initial_params(graph, seed).items()}


def random_inputs(graph: Graph, samples: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """N(0, 1) values for every input, and one-hot rows for one-hot inputs."""
    out = {}
    for q in graph.input_list:
        if q.onehot and q.shape:
            size = int(np.prod(q.shape))
            out[q.name] = np.eye(size)[rng.integers(0, size, samples)].reshape((samples, *q.shape))
        elif q.onehot:
            out[q.name] = np.ones(samples)
        else:
            out[q.name] = rng.normal(size=(samples, *q.shape))
    return out


def check_data(graph: Graph, data_table: dict | None = None, samples: int = SAMPLES, seed: int = 0,
               path: str | None = None, source: str | None = None) -> tuple[dict[str, np.ndarray], str]:
    """Up to ``samples`` rows of the model's data (``path``, else its ``[data]`` table), and where they came
    from; random inputs (:func:`random_inputs`) when the model names no data."""
    from .data import model_data
    rng = np.random.default_rng(seed)
    table = data_table or {}
    names_data = (path is not None or not isinstance(table, dict)
                  or any(k in table for k in ("file", "synthetic", "sklearn")))
    if graph.input_list and not names_data:
        return random_inputs(graph, samples, rng), f"{samples} samples of random N(0, 1) inputs (the model names no data)"
    dataset = model_data(graph, data_table, path, source)
    full, n = dataset.train, dataset.size
    if not full:
        return {}, "no inputs"
    rows = np.sort(rng.choice(n, size=min(samples, n), replace=False))
    return {k: v[rows] for k, v in full.items()}, f"{len(rows)} samples of {dataset.description}"


def check_point(graph: Graph, data_table: dict | None = None, samples: int = SAMPLES,
                seed: int = 0) -> tuple[dict, dict]:
    """Parameters (:func:`check_params`) and data (:func:`check_data`) to check the gradients at."""
    return check_params(graph, seed), check_data(graph, data_table, samples, seed)[0]


# ---- a gradient from a file -------------------------------------------------------------------------
def load_module_gradient(path: str | Path) -> LossAndGrad:
    """``loss_and_grad`` of a Python module on disk (one written by codegen, maybe edited by hand).

    Errors while importing or calling it become one-line :class:`UserError`\\ s naming the file.
    """
    spec = importlib.util.spec_from_file_location("symbackprop_checked_module", path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: report it, never a traceback
        raise UserError(f"{path}: cannot be imported: {type(e).__name__}: {e}") from None
    function = getattr(module, "loss_and_grad", None)
    if not callable(function):
        raise UserError(f"{path}: defines no loss_and_grad(params, data)")

    def loss_and_grad(params: dict, data: dict):
        try:
            return function(params, data)
        except Exception as e:
            raise UserError(f"{path}: loss_and_grad raised {type(e).__name__}: {e}") from None
    return loss_and_grad


# ---- the checks -------------------------------------------------------------------------------------
def gradient_shape_problem(graph: Graph, grads: Any) -> dict[str, str]:
    """Parameter -> what is wrong with its entry in ``grads`` (missing, wrong shape), for each bad one."""
    if not isinstance(grads, dict):
        return {q.name: f"grads is a {type(grads).__name__}, not a dict" for q in graph.params}
    problems = {}
    for q in graph.params:
        if q.name not in grads:
            problems[q.name] = "no gradient returned"
        elif np.shape(grads[q.name]) != q.shape:
            problems[q.name] = f"gradient has shape {np.shape(grads[q.name])}, expected {q.shape}"
    return problems


def verify_gradients(graph: Graph, params: dict | None = None, data: dict | None = None, seed: int = 0, *,
                     loss_and_grad: LossAndGrad | None = None, data_table: dict | None = None,
                     samples: int = SAMPLES, steps: int = STEPS, lr: float = LR, use_torch: bool = True,
                     max_elements: int = MAX_ELEMENTS, eps: float = EPS, atol: float = ATOL,
                     rtol: float = RTOL) -> Report:
    """Check ``loss_and_grad`` (default: the compiled symbolic gradient) of ``graph`` against numbers.

    ``params`` defaults to :func:`check_params`; ``data`` to :func:`check_data` (``samples`` rows of
    the model's ``data_table``, or random inputs). ``seed`` fixes both, and the elements sampled.
    """
    report = Report()
    if params is None:
        params = check_params(graph, seed)
    if data is None:
        data, described = check_data(graph, data_table, samples, seed)
        report.notes.append(f"data: {described}")
    params = {q.name: np.array(params[q.name], dtype=np.float64) for q in graph.params}
    reference = compile_gradient(graph)

    def mean_loss(p: dict) -> float:
        return float(np.mean(reference.forward(p, data)[graph.loss_name]))

    with np.errstate(all="ignore"):  # a non-finite loss is reported just below, in words
        start_loss = mean_loss(params)
    if not np.isfinite(start_loss):
        raise UserError(f"the loss of '{graph.name}' is {start_loss} at the check point, so its gradient "
                        "cannot be checked there (give data the model is defined on)")
    tested = loss_and_grad or reference.loss_and_grad
    loss, grads = tested(params, data)
    if loss_and_grad is not None:
        report.checks.append(compare(graph.loss_name, "loss value", loss, start_loss, atol, rtol))
    bad = gradient_shape_problem(graph, grads)
    for name, problem in bad.items():
        report.checks.append(Check(name, "gradient shape", float("nan"), float("nan"), False, problem))
    good = [q for q in graph.params if q.name not in bad]

    rng = np.random.default_rng(seed)
    indices = {q.name: chosen_indices(q.shape, rng, max_elements) for q in good}
    for q in good:
        idx = indices[q.name]
        fd = central_differences(mean_loss, params, q.name, idx, eps)
        got = np.asarray(grads[q.name], dtype=np.float64)
        report.checks.append(compare(q.name, "finite differences", [got[i] for i in idx], fd, atol, rtol))
        if len(idx) < size_of(q.shape):
            report.notes.append(f"{q.name}: finite differences and training on {len(idx)} of "
                                f"{size_of(q.shape)} elements, chosen at random (seed {seed})")
    if use_torch:
        report.checks.extend(torch_checks(graph, params, data, start_loss, grads, good, report, atol, rtol))
    else:
        report.notes.append("the PyTorch cross-check was not asked for")
    if steps and good:
        report.checks.extend(training_checks(tested, mean_loss, params, data, indices, steps, lr, eps, atol, rtol))
    return report


def size_of(shape: tuple) -> int:
    return int(np.prod(shape)) if shape else 1


def torch_checks(graph: Graph, params: dict, data: dict, loss: float, grads: dict, good: list, report: Report,
                 atol: float, rtol: float) -> list[Check]:
    """The forward loss and the gradients against PyTorch autograd; a note instead when it cannot run."""
    try:
        from .torch_eval import torch_loss_and_grad
        torch_loss, torch_grads = torch_loss_and_grad(graph, params, data)
    except ImportError:
        from .extras import install_hint
        report.notes.append(f"PyTorch is not installed, so the autograd cross-check was skipped ({install_hint('torch')})")
        return []
    except TypeError as e:
        report.notes.append(f"the PyTorch cross-check was skipped: {e}")
        return []
    checks = [compare(graph.loss_name, "pytorch loss", loss, torch_loss, atol, rtol)]
    checks += [compare(q.name, "pytorch autograd", grads[q.name], torch_grads[q.name], atol, rtol) for q in good]
    return checks


def training_checks(loss_and_grad: LossAndGrad, mean_loss: Callable[[dict], float], params: dict, data: dict,
                    indices: dict[str, list[tuple]], steps: int, lr: float, eps: float, atol: float,
                    rtol: float) -> list[Check]:
    """``steps`` of ``w <- w - lr g`` with the tested gradient and with central differences, same start.

    Only the checked elements (``indices``) move in both runs, so a large parameter costs
    ``max_elements`` differences per step, not one per element; the others stay at their start.

    Once one parameter's trajectories separate, every other gradient is evaluated at different points
    in the two runs, so the others drift apart later as well. The check fails the parameters that
    separated first; one that separated only afterwards passes, with a note saying whose error it follows.
    """
    sym = {k: v.copy() for k, v in params.items()}
    num = {k: v.copy() for k, v in params.items()}
    drift = dict.fromkeys(indices, 0.0)
    moved = dict.fromkeys(indices, 0.0)
    apart: dict[str, int] = {}  # parameter -> first step after which its runs differ beyond tolerance
    for step in range(1, steps + 1):
        _, g = loss_and_grad(sym, data)
        fd = {k: central_differences(mean_loss, num, k, idx, eps) for k, idx in indices.items()}
        for k, idx in indices.items():
            gk = np.asarray(g[k], dtype=np.float64)
            for j, i in enumerate(idx):
                sym[k][i] -= lr * gk[i]
                num[k][i] -= lr * fd[k][j]
            gap = float(np.max(np.abs(sym[k] - num[k])))
            drift[k] = gap if not np.isfinite(gap) else max(drift[k], gap)
            moved[k] = max(moved[k], float(np.max(np.abs(num[k] - params[k]))))
            if k not in apart and not drift[k] <= atol + rtol * moved[k]:
                apart[k] = step
    first = min(apart.values(), default=None)
    culprits = [k for k, s in apart.items() if s == first]
    checks = []
    for k in indices:
        ok, detail = k not in culprits, ""
        if k in culprits:
            detail = f"trajectories apart by {drift[k]:.3g} after moving {moved[k]:.3g} (from step {apart[k]})"
        elif k in apart:
            detail = f"apart from step {apart[k]}, after {', '.join(culprits)} (step {first}): not its own error"
        rel = drift[k] / moved[k] if moved[k] else (0.0 if drift[k] == 0 else float("inf"))
        checks.append(Check(k, f"training ({steps} steps)", drift[k], rel, ok, detail))
    return checks
