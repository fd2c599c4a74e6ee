"""Initial parameter values from the ``init`` spec of each parameter.

A spec is one of

* a number: the value of a scalar, or the fill value of a vector or matrix;
* a (nested) list: the value itself; it must have exactly the parameter's shape;
* a name: ``"zeros"``, ``"ones"``, ``"normal"`` (N(0, 1)), ``"uniform"`` (U(-1, 1)), ``"glorot"`` or ``"he"``;
* a table with ``kind`` and that kind's options:
  ``{kind = "normal", mean = 0, scale = 0.1}``, ``{kind = "uniform", low = -0.5, high = 0.5}``,
  ``{kind = "glorot", distribution = "uniform" | "normal"}``, ``{kind = "he", distribution = "normal" | "uniform"}``,
  ``{kind = "constant", value = 0.3}``, ``{kind = "zeros"}``, ``{kind = "ones"}``.

Glorot (Xavier) keeps the variance 2 / (fan_in + fan_out) (uniform by default, as Keras and PyTorch's
``xavier_uniform_``); He (Kaiming) keeps 2 / fan_in (normal by default, as ``kaiming_normal_``).
A matrix of shape [m, n] maps n inputs to m outputs: fan_in = n, fan_out = m. A vector of n entries is
usually dotted with an input of the same length, so it takes fan_in = fan_out = n; a scalar takes 1.

Random draws are seeded per parameter from ``(seed, crc32(name))``, so adding or reordering parameters
never changes the values of the others. Everything is float64.
"""
from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from .graph import Graph, ModelError, Quantity
from .tensor import Shape

#: kind -> the options its table may hold (besides ``kind``), with their defaults.
KINDS: dict[str, dict[str, Any]] = {
    "zeros": {},
    "ones": {},
    "constant": {"value": 0.0},
    "normal": {"mean": 0.0, "scale": 1.0},
    "uniform": {"low": -1.0, "high": 1.0},
    "glorot": {"distribution": "uniform"},
    "he": {"distribution": "normal"},
}
DISTRIBUTIONS = ("uniform", "normal")
#: names other libraries use for the same initialisers, for a hint in the error message
OTHER_NAMES = {"xavier": "glorot", "xavier_uniform": "glorot", "xavier_normal": "glorot", "kaiming": "he",
               "kaiming_normal": "he", "kaiming_uniform": "he", "zero": "zeros", "one": "ones"}


def fans(shape: Shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a parameter: [m, n] -> (n, m); a vector of n -> (n, n); a scalar -> (1, 1)."""
    if len(shape) == 2:
        return shape[1], shape[0]
    if len(shape) == 1:
        return shape[0], shape[0]
    return 1, 1


def param_rng(seed: int, name: str) -> np.random.Generator:
    """The generator for one parameter: independent of the other parameters' names and order."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def _number(value: Any, where: str, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelError(where, f"'{option}' must be a finite number, got {value!r}")
    return float(value)


def _scaled(distribution: str, variance: float, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean draws with the given variance: U(-a, a) with a = sqrt(3 var), or N(0, var)."""
    if distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        return rng.uniform(-limit, limit, size=shape)
    return rng.normal(0.0, math.sqrt(variance), size=shape)


def _from_kind(kind: str, options: dict[str, Any], shape: Shape, rng: np.random.Generator,
               where: str) -> np.ndarray:
    if kind not in KINDS:
        other = OTHER_NAMES.get(kind.lower())
        hint = f"; '{kind}' is called \"{other}\" here" if other else ""
        raise ModelError(where, f"unknown init '{kind}' (known: {', '.join(KINDS)}, a number or a list{hint})")
    unknown = sorted(set(options) - set(KINDS[kind]))
    if unknown:
        allowed = ", ".join(["kind", *KINDS[kind]])
        raise ModelError(where, f"unknown init option '{unknown[0]}' for kind '{kind}' (allowed: {allowed})")
    opts = {**KINDS[kind], **options}
    if kind in ("zeros", "ones", "constant"):
        fill = {"zeros": 0.0, "ones": 1.0}.get(kind)
        return np.full(shape, fill if fill is not None else _number(opts["value"], where, "value"))
    if kind == "normal":
        scale = _number(opts["scale"], where, "scale")
        if scale < 0:
            raise ModelError(where, f"'scale' must not be negative, got {scale}")
        return rng.normal(_number(opts["mean"], where, "mean"), scale, size=shape)
    if kind == "uniform":
        low, high = _number(opts["low"], where, "low"), _number(opts["high"], where, "high")
        if low > high:
            raise ModelError(where, f"'low' ({low}) must not exceed 'high' ({high})")
        return rng.uniform(low, high, size=shape)
    distribution = opts["distribution"]
    if distribution not in DISTRIBUTIONS:
        raise ModelError(where, f"'distribution' must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
    fan_in, fan_out = fans(shape)
    variance = 2.0 / (fan_in + fan_out) if kind == "glorot" else 2.0 / fan_in
    return _scaled(distribution, variance, shape, rng)


def _from_list(spec: list, shape: Shape, where: str) -> np.ndarray:
    try:
        value = np.array(spec, dtype=np.float64)
    except (ValueError, TypeError):
        raise ModelError(where, "init list must be a rectangular list of numbers") from None
    if value.shape != tuple(shape):
        raise ModelError(where, f"init list has shape {list(value.shape)}, but the parameter has shape {list(shape)}")
    if not np.all(np.isfinite(value)):
        raise ModelError(where, "init list must hold finite numbers only")
    return value


def initial_value(spec: Any, shape: Shape, rng: np.random.Generator, where: str) -> np.ndarray:
    """The value one ``init`` spec gives for a parameter of ``shape`` (float64, in that shape)."""
    if isinstance(spec, bool):
        raise ModelError(where, "init must be a number, a list, a name or a table, not true/false")
    if isinstance(spec, (int, float)):
        return np.full(shape, _number(spec, where, "init"))
    if isinstance(spec, (list, tuple)):
        return _from_list(list(spec), shape, where)
    if isinstance(spec, np.ndarray):
        return _from_list(spec.tolist(), shape, where)
    if isinstance(spec, str):
        return _from_kind(spec, {}, shape, rng, where)
    if isinstance(spec, dict):
        if "kind" not in spec:
            raise ModelError(where, "an init table needs 'kind', as in { kind = \"normal\", scale = 0.1 }")
        options = {k: v for k, v in spec.items() if k != "kind"}
        if not isinstance(spec["kind"], str):
            raise ModelError(where, f"init 'kind' must be a name, got {spec['kind']!r}")
        return _from_kind(spec["kind"], options, shape, rng, where)
    raise ModelError(where, f"init must be a number, a list, a name or a table, got {type(spec).__name__}")


def check_init(spec: Any, shape: Shape, where: str) -> None:
    """Raise now the ModelError :func:`initial_value` would raise later for ``spec`` (an unknown name, a
    list of the wrong shape, a bad option), so every command reading a model file reports it."""
    initial_value(spec, shape, np.random.default_rng(0), where)


def param_where(q: Quantity, source: str | None = None) -> str:
    return f"{source}: [params] {q.name}" if source else f"[params] {q.name}"


def initial_params(graph: Graph, seed: int = 0, source: str | None = None) -> dict[str, np.ndarray]:
    """Every parameter's initial value from its ``init`` spec; ``source`` names the model file in errors."""
    return {q.name: initial_value(q.init, q.shape, param_rng(seed, q.name), param_where(q, source))
            for q in graph.params}
