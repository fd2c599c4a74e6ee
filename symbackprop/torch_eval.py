"""The loss of a graph evaluated by PyTorch, independently of symbackprop's derivation and printer.

Used only to cross-check gradients: PyTorch's autograd differentiates this evaluation, so it agrees
with the symbolic gradient only if the derivation and the generated code are right. It walks each
node's SymPy expression one sample at a time (clear rather than fast), one ``_eval_<Type>`` per node type.
"""
from __future__ import annotations

import sympy as sp

from .functions import Elementwise
from .graph import Graph
from .tensor import Shape, infer_shape


class TorchEvaluator:
    """Per-sample evaluation of node expressions with torch tensors."""

    def __init__(self, torch, graph: Graph):
        self.torch = torch
        self.graph = graph
        self.shapes = graph.shapes
        self.memo: dict = {}

    def shape(self, expr) -> Shape:
        return infer_shape(expr, self.shapes, self.memo)

    def eval(self, expr, env):
        for cls in type(expr).__mro__:
            method = getattr(self, f"_eval_{cls.__name__}", None)
            if method is not None:
                return method(expr, env)
        raise TypeError(f"no PyTorch form for {type(expr).__name__}")

    def _eval_Symbol(self, expr, env):
        return env[expr.name]

    def _eval_Number(self, expr, env):
        return self.torch.tensor(float(expr), dtype=self.torch.float64)

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

    def _eval_Pow(self, expr, env):
        return self.eval(expr.base, env) ** self.eval(expr.exp, env)

    def _eval_Elementwise(self, expr, env):
        return type(expr).torch(self.torch, self.eval(expr.args[0], env))

    def _eval_Function(self, expr, env):
        t = self.torch
        funcs = {sp.tanh: t.tanh, sp.exp: t.exp, sp.log: t.log, sp.Abs: t.abs, sp.sign: t.sign}
        return funcs[type(expr)](self.eval(expr.args[0], env))

    def _eval_matmul(self, expr, env):
        a, b = (self.eval(x, env) for x in expr.args)
        a = a.unsqueeze(-1) if a.ndim == 1 else a
        b = b.unsqueeze(-1) if b.ndim == 1 else b
        return (a @ b).reshape(self.shape(expr))

    def _eval_transpose(self, expr, env):
        x = self.eval(expr.args[0], env)
        out = self.shape(expr)
        return x.T if x.ndim == 2 and len(out) == 2 else x.reshape(out)  # vector <-> row vector

    def _eval_sum_(self, expr, env):
        return self.eval(expr.args[0], env).sum()

    def _eval_mean(self, expr, env):
        return self.eval(expr.args[0], env).mean()

    def _eval_softmax(self, expr, env):
        return self.torch.softmax(self.eval(expr.args[0], env), dim=-1)

    def _eval_logsumexp(self, expr, env):
        return self.torch.logsumexp(self.eval(expr.args[0], env), dim=-1)

    def _eval_ones(self, expr, env):
        return self.torch.ones(self.shape(expr), dtype=self.torch.float64)

    def loss(self, params: dict, data: dict):
        """Mean over the batch of the per-sample loss."""
        n = len(next(iter(data.values()))) if data else 1
        total = 0
        for i in range(n):
            env = dict(params)
            env.update({k: v[i] for k, v in data.items()})
            for q in self.graph.computed:
                env[q.name] = self.eval(q.expr, env)
            total = total + env[self.graph.loss_name]
        return total / n


def torch_gradients(graph: Graph, params: dict, data: dict) -> tuple[float, dict]:
    """Loss and gradients by PyTorch autograd (float64); raises ImportError without torch."""
    import torch
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    td = {k: torch.tensor(v, dtype=torch.float64) for k, v in data.items()}
    loss = TorchEvaluator(torch, graph).loss(tp, td)
    loss.backward()
    return loss.item(), {k: (t.grad.numpy() if t.grad is not None else 0 * t.detach().numpy()) for k, t in tp.items()}
