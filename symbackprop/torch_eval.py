"""The loss of a graph evaluated by PyTorch, independently of symbackprop's derivation and code printer.

Used only to cross-check gradients: PyTorch's autograd differentiates this forward evaluation, so its
gradients agree with the symbolic ones only if the derivation *and* the generated NumPy code are right.
Nothing here uses :mod:`symbackprop.derive`, the printers or the tensor operations' ``vjp`` rules: it
walks each node's SymPy expression (the forward pass only), one ``_eval_<Type>`` per node type.

Batched semantics, in one uniform layout: every value is a 3-D tensor ``(B, rows, cols)``, where ``B``
is the batch axis (1 for parameters and constants, which broadcast), a scalar is ``(B, 1, 1)``, a
column vector of shape ``(n,)`` is ``(B, n, 1)``, a row vector ``(1, n)`` is ``(B, 1, n)`` and a matrix
``(m, n)`` is ``(B, m, n)``. Then

* elementwise operations broadcast exactly as the model means them: equal shapes, or a per-sample
  scalar ``(B, 1, 1)`` against a tensor;
* ``matmul`` is ``@`` (batched), ``transpose`` swaps the last two axes;
* ``sum``/``mean`` reduce the last two axes (keeping them, so the result is again a scalar);
* ``softmax``/``logsumexp`` of a (column) vector work along axis -2;
* an index or slice selects along axis -2 (elements of a column, rows of a matrix), ``concat`` joins along it.

The loss is ``(B, 1, 1)``; its mean over the batch is what ``.backward()`` differentiates.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import sympy as sp

from .graph import Graph
from .tensor import matrix_shape


class TorchEvaluator:
    """Forward evaluation of a graph's node expressions with batched torch tensors."""

    def __init__(self, torch: Any, graph: Graph):
        self.torch = torch
        self.graph = graph
        self.functions = {sp.tanh: torch.tanh, sp.exp: torch.exp, sp.log: torch.log, sp.Abs: torch.abs,
                          sp.sign: torch.sign, sp.sin: torch.sin, sp.cos: torch.cos}

    def eval(self, expr: sp.Expr, env: dict):
        for cls in type(expr).__mro__:
            method = getattr(self, f"_eval_{cls.__name__}", None)
            if method is not None:
                return method(expr, env)
        raise TypeError(f"no PyTorch form for {type(expr).__name__} (in {expr})")

    def constant(self, value: float):
        return self.torch.tensor(value, dtype=self.torch.float64)

    # ---- elementwise ----------------------------------------------------------------------------
    def _eval_Symbol(self, expr, env):
        return env[expr.name]

    def _eval_Number(self, expr, env):  # a scalar in the layout, (1, 1, 1), so that matmul(0, W) works too
        return self.constant(float(expr)).reshape(1, 1, 1)

    def _eval_Add(self, expr, env):
        out = self.eval(expr.args[0], env)
        for a in expr.args[1:]:
            out = out + self.eval(a, env)
        return out

    def _eval_Mul(self, expr, env):
        out = self.eval(expr.args[0], env)
        for a in expr.args[1:]:
            out = out * self.eval(a, env)
        return out

    def _eval_Pow(self, expr, env):  # also sqrt(x) = x**(1/2) and 1/x = x**-1
        base = self.eval(expr.base, env)
        exponent = float(expr.exp) if expr.exp.is_Number else self.eval(expr.exp, env)
        return base ** exponent

    def _eval_Elementwise(self, expr, env):  # sigmoid, gelu, maximum, clip, ...: each class's own torch form
        return type(expr).torch(self.torch, *(self.eval(a, env) for a in expr.args))

    def _eval_Function(self, expr, env):  # SymPy's tanh, exp, log, Abs, sign, sin, cos
        function = self.functions.get(type(expr))
        if function is None:
            raise TypeError(f"no PyTorch form for the function {type(expr).__name__}")
        return function(self.eval(expr.args[0], env))

    # ---- tensor operations ----------------------------------------------------------------------
    def _eval_matmul(self, expr, env):
        a, b = (self.eval(x, env) for x in expr.args)
        return a @ b

    def _eval_transpose(self, expr, env):
        return self.eval(expr.args[0], env).transpose(-1, -2)

    def _eval_sum_(self, expr, env):
        return self.eval(expr.args[0], env).sum(dim=(-2, -1), keepdim=True)

    def _eval_mean(self, expr, env):
        return self.eval(expr.args[0], env).mean(dim=(-2, -1), keepdim=True)

    def _eval_softmax(self, expr, env):
        return self.torch.softmax(self.eval(expr.args[0], env), dim=-2)

    def _eval_logsumexp(self, expr, env):
        return self.torch.logsumexp(self.eval(expr.args[0], env), dim=-2, keepdim=True)

    def _eval_index(self, expr, env):  # element i of a vector (B, n, 1); row i of a matrix, as a column
        a, i = self.eval(expr.args[0], env), int(expr.args[1])
        return a[:, i:i + 1, :] if a.shape[-1] == 1 else a[:, i, :].unsqueeze(-1)

    def _eval_slice_(self, expr, env):  # elements of a vector or rows of a matrix: the middle axis either way
        return self.eval(expr.args[0], env)[:, int(expr.args[1]):int(expr.args[2]), :]

    def _eval_concat(self, expr, env):  # columns (B, k, 1) stacked along the middle axis, batch axes broadcast
        pieces = [self.eval(a, env) for a in expr.args]
        batch = max(p.shape[0] for p in pieces)
        return self.torch.cat([p.expand(batch, -1, -1) for p in pieces], dim=1)

    def _eval_ones(self, expr, env):
        shape = matrix_shape(tuple(int(n) for n in expr.args))
        return self.torch.ones((1, *shape), dtype=self.torch.float64)

    # ---- the graph ------------------------------------------------------------------------------
    def values(self, params: dict, data: dict) -> dict:
        """Every quantity in the uniform layout: parameters and inputs, then nodes in forward order."""
        env = {}
        for q in self.graph.params:
            env[q.name] = params[q.name].reshape((1, *matrix_shape(q.shape)))
        for q in self.graph.input_list:
            env[q.name] = data[q.name].reshape((-1, *matrix_shape(q.shape)))
        for q in self.graph.constants:
            env[q.name] = self.constant(q.value).reshape(1, 1, 1)
        for q in self.graph.computed:
            env[q.name] = self.eval(q.expr, env)
        return env

    def loss(self, params: dict, data: dict):
        """The mean over the batch of the per-sample loss, a 0-d tensor."""
        return self.values(params, data)[self.graph.loss_name].reshape(-1).mean()


def torch_loss_and_grad(graph: Graph, params: dict, data: dict) -> tuple[float, dict[str, np.ndarray]]:
    """Mean loss and its gradient by PyTorch autograd (float64), in the generated module's contract.

    Raises ImportError when torch is not installed.
    """
    import torch
    leaves = {q.name: torch.tensor(np.asarray(params[q.name], dtype=np.float64), requires_grad=True)
              for q in graph.params}
    inputs = {q.name: torch.tensor(np.asarray(data[q.name], dtype=np.float64)) for q in graph.input_list}
    loss = TorchEvaluator(torch, graph).loss(leaves, inputs)
    names = [q.name for q in graph.params]
    # allow_unused: a parameter the loss does not use has gradient 0 (and if none is used, the loss
    # does not require a gradient at all)
    found = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True) \
        if loss.requires_grad else [None] * len(names)
    grads = {}
    for q, g in zip(graph.params, found):
        grads[q.name] = np.zeros(q.shape) if g is None else g.numpy().reshape(q.shape)
    return loss.item(), grads
