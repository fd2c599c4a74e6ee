"""Initial parameter values from the ``init`` of each parameter, seeded and in float64.

An ``init`` is a number (a scalar, or the fill value of a tensor), a nested list in the parameter's
shape, a name (``zeros``, ``ones``, ``normal``, ``glorot``, ``he``), or a table such as
``{ kind = "normal", scale = 0.1 }`` or ``{ kind = "uniform", low = -0.5, high = 0.5 }``.

Fans: a matrix of shape (m, n) maps n inputs to m outputs (fan_in = n, fan_out = m); a vector of
length n counts as fan_in = n, fan_out = 1 (a bias or a single output unit); a scalar as 1 and 1.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .graph import Graph, ModelError
from .tensor import Shape


def fans(shape: Shape) -> tuple[int, int]:
    if len(shape) == 2:
        return shape[1], shape[0]
    if len(shape) == 1:
        return shape[0], 1
    return 1, 1


def _named(kind: str, shape: Shape, rng: np.random.Generator, options: dict, where: str) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ones":
        return np.ones(shape)
    if kind == "normal":
        return rng.normal(0.0, float(options.get("scale", 0.1)), size=shape)
    if kind == "uniform":
        return rng.uniform(float(options.get("low", -0.1)), float(options.get("high", 0.1)), size=shape)
    if kind == "glorot":  # Glorot & Bengio (2010), normal form: variance 2 / (fan_in + fan_out)
        return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
    if kind == "he":  # He et al. (2015), for relu layers: variance 2 / fan_in
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    raise ModelError(where, f"unknown initialiser '{kind}' (use zeros, ones, normal, uniform, glorot or he)")


def initial_value(init: Any, shape: Shape, rng: np.random.Generator, where: str) -> np.ndarray:
    """The initial value of one parameter."""
    if isinstance(init, (int, float)) and not isinstance(init, bool):
        return np.full(shape, float(init))
    if isinstance(init, str):
        return _named(init, shape, rng, {}, where)
    if isinstance(init, dict):
        kind = init.get("kind")
        unknown = sorted(set(init) - {"kind", "scale", "low", "high"})
        if not isinstance(kind, str) or unknown:
            raise ModelError(where, "an init table needs kind = \"...\" and only scale, low or high"
                             + (f" (unknown key '{unknown[0]}')" if unknown else ""))
        return _named(kind, shape, rng, init, where)
    if isinstance(init, (list, tuple, np.ndarray)):
        try:
            value = np.array(init, dtype=np.float64)
        except (ValueError, TypeError):
            raise ModelError(where, "init list must be a rectangular list of numbers") from None
        if value.shape != shape:
            raise ModelError(where, f"init has shape {value.shape}, but the parameter has shape {shape}")
        return value
    raise ModelError(where, f"init must be a number, a list, a name or a table, got {type(init).__name__}")


def initial_params(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Initial values of every parameter of ``graph``, reproducible for a given seed."""
    rng = np.random.default_rng(seed)
    return {p.name: initial_value(p.init, p.shape, rng, f"[params] {p.name}") for p in graph.params}
