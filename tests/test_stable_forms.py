"""Stable forms: log of sigmoid, log of one minus sigmoid, log of softmax and softplus, however written.

A user writes binary cross-entropy as ``-(y*log(a) + (1-y)*log(1-a))`` with ``a = sigmoid(z)``, perhaps
through an alias node, perhaps as ``1/(1+exp(-z))``. Every such spelling must compute the same finite
numbers as a stable reference at logits of +-1000, without a single NumPy warning. The references are
written here with PyTorch's stable functions (``logsigmoid``, ``log_softmax``, ``softplus``; float64), never
with symbackprop's own rewrite.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp

from symbackprop import Graph, derive, sigmoid
from symbackprop.compile import compile_gradient
from symbackprop.functions import log1p, softplus
from symbackprop.modelfile import parse_model
from symbackprop.steps import Math
from symbackprop.tensor import logsumexp, softmax, sum_

torch = pytest.importorskip("torch")
F = torch.nn.functional


def model(nodes: str, loss: str, head: str) -> Graph:
    return parse_model(f"{head}\n[nodes]\n{nodes}\n[loss]\nL = \"{loss}\"\n", "m.toml").graph


def silent_loss_and_grad(graph: Graph, params: dict, data: dict):
    """The compiled gradient, run with every warning and floating-point error made an exception.

    Except underflow, which NumPy ignores by default: exp(-1000) is 0 in float64, exactly the rounded
    value, and every stable form meets it (logaddexp(0, -1000), the sigmoid and softmax of -1000).
    A node the model declares as ``exp(z)`` is inf at z = 1000 whatever the loss does with it: such a
    node (named ``e``, and its alias ``e2``) may overflow, and nothing else.
    """
    compiled = compile_gradient(graph)
    overflow = "ignore" if "e" in graph.quantities else "raise"
    exp_nodes = {"e", "e2"}
    with warnings.catch_warnings(), np.errstate(all="raise", under="ignore", over=overflow):
        warnings.simplefilter("error")
        loss, grads = compiled.loss_and_grad(params, data)
        values = compiled.forward(params, data)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
    assert all(np.all(np.isfinite(v)) for name, v in values.items() if name not in exp_nodes), values
    return loss, grads


def torch_reference(per_sample, params: dict, data: dict):
    """Mean over the batch of ``per_sample(p, d)`` (a tensor of N losses) and its gradient, by autograd."""
    p = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}
    d = {k: torch.tensor(v, dtype=torch.float64) for k, v in data.items()}
    loss = per_sample(p, d).mean()
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in p.items()}


def assert_matches_reference(graph, per_sample, params, data):
    loss, grads = silent_loss_and_grad(graph, params, data)
    ref_loss, ref_grads = torch_reference(per_sample, params, data)
    assert loss == pytest.approx(ref_loss, rel=1e-12, abs=1e-300)
    for name, ref in ref_grads.items():
        np.testing.assert_allclose(grads[name], ref, rtol=1e-12, atol=1e-15, err_msg=name)


# ---- binary cross-entropy ----------------------------------------------------------------------------
SCALAR = '[inputs]\nx = {}\ny = {}\n[params]\nw = {}\nb = {}'
#: z = w x + b at w = 1, b = 0: logits of +-1000 with both labels, and ordinary ones
SCALAR_POINT = ({"w": 1.0, "b": 0.0},
                {"x": np.array([1000.0, 1000.0, -1000.0, -1000.0, 0.7, -2.5, 0.0]),
                 "y": np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])})

BCE = {  # name -> (nodes, loss): every spelling is -(y log sigma(z) + (1 - y) log(1 - sigma(z)))
    "inline": ('z = "w*x + b"', "-(y*log(sigmoid(z)) + (1-y)*log(1-sigmoid(z)))"),
    "through a node": ('z = "w*x + b"\na = "sigmoid(z)"', "-(y*log(a) + (1 - y)*log(1 - a))"),
    "through aliases": ('z = "w*x + b"\na = "sigmoid(z)"\nq = "a"\nr = "1*q"\ns = "r + 0"',
                        "-(y*log(s) + (1 - y)*log(1 - s))"),
    "minus a plus one": ('z = "w*x + b"\na = "sigmoid(z)"', "-y*log(a) - (1 - y)*log(-a + 1)"),
    "sigmoid of minus z": ('z = "w*x + b"', "-(y*log(sigmoid(z)) + (1 - y)*log(sigmoid(-z)))"),
    "one minus a in a node": ('z = "w*x + b"\na = "sigmoid(z)"\nc = "1 - a"', "-(y*log(a) + (1 - y)*log(c))"),
    "alias of one minus an alias": ('z = "w*x + b"\na = "sigmoid(z)"\nq = "a"\nc = "-q + 1"\nd = "c"',
                                    "-(y*log(q) + (1 - y)*log(d))"),
    "written out": ('z = "w*x + b"', "-(y*log(1/(1 + exp(-z))) + (1 - y)*log(1 - 1/(1 + exp(-z))))"),
    "written with exp(z)": ('z = "w*x + b"', "-(y*log(exp(z)/(1 + exp(z))) + (1 - y)*log(1/(exp(z) + 1)))"),
    "sigmoid written out in a node": ('z = "w*x + b"\na = "1/(1 + exp(-z))"', "-(y*log(a) + (1 - y)*log(1 - a))"),
    "exp in a node": ('z = "w*x + b"\ne = "exp(z)"\na = "e/(1 + e)"', "-(y*log(a) + (1 - y)*log(1 - a))"),
}


def bce_reference(p, d):
    z = p["w"] * d["x"] + p["b"]
    return -(d["y"] * F.logsigmoid(z) + (1 - d["y"]) * F.logsigmoid(-z))


@pytest.mark.parametrize("spelling", BCE)
@pytest.mark.parametrize("batch", [1, 7])
def test_binary_cross_entropy_is_stable_and_exact_however_it_is_written(spelling, batch):
    graph = model(*BCE[spelling], head=SCALAR)
    assert not graph["L"].expr.has(sp.log), graph["L"].expr
    assert_matches_reference(graph, bce_reference, *first_rows(SCALAR_POINT, batch))


def test_binary_cross_entropy_becomes_softplus_of_the_logit():
    graph = model(*BCE["through aliases"], head=SCALAR)
    y, z = graph.symbol("y"), graph.symbol("z")
    assert sp.expand(graph["L"].expr - (y * softplus(-z) + (1 - y) * softplus(z))) == 0


VECTOR = '[inputs]\nx = { shape = [3] }\ny = { shape = [2] }\n[params]\nW = { shape = [2, 3] }\nb = { shape = [2] }'
#: z = W x + b: the rows hold logits of +1000 and -1000 with every label, then ordinary ones
VECTOR_POINT = ({"W": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "b": np.array([0.0, 0.5])},
                {"x": np.array([[1000.0, -1000.0, 0.3], [-1000.0, 1000.0, 0.3], [1000.0, -1000.0, 2.0],
                                [0.4, -1.2, 2.0], [-0.7, 0.1, 1.0]]),
                 "y": np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])})
#: batch sizes 1, a side of the model (2 and 3), and a prime larger than every side
BATCHES = [1, 2, 3, 5]


def first_rows(point, n):
    params, data = point
    return params, {k: v[:n] for k, v in data.items()}


@pytest.mark.parametrize("nodes, loss", [
    ('z = "W @ x + b"\na = "sigmoid(z)"\nq = "a"', "-sum(y*log(q) + (1 - y)*log(1 - q))"),
    ('z = "W @ x + b"', "-mean(y*log(sigmoid(z)) + (1 - y)*log(1 - sigmoid(z)))"),
], ids=["sum through an alias", "mean inline"])
@pytest.mark.parametrize("batch", BATCHES)
def test_binary_cross_entropy_of_vectors_is_stable_and_exact(nodes, loss, batch):
    graph = model(nodes, loss, head=VECTOR)

    def reference(p, d):
        z = d["x"] @ p["W"].T + p["b"]
        terms = d["y"] * F.logsigmoid(z) + (1 - d["y"]) * F.logsigmoid(-z)
        return -(terms.sum(-1) if loss.startswith("-sum") else terms.mean(-1))

    assert_matches_reference(graph, reference, *first_rows(VECTOR_POINT, batch))


# ---- softmax cross-entropy ---------------------------------------------------------------------------
CLASSES = '[inputs]\nx = { shape = [3] }\ny = { shape = [3], onehot = true }\n[params]\nb = { shape = [3] }'
CLASSES_POINT = ({"b": np.array([0.0, 0.0, 0.25])},
                 {"x": np.array([[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0],
                                 [0.3, -0.2, 1.1], [-1000.0, 0.5, 1000.0]]),
                  "y": np.eye(3)[[0, 1, 2, 2, 1]]})

SOFTMAX_CE = {
    "through an alias": ('z = "x + b"\np = "softmax(z)"\nq = "p"', "-sum(y*log(q))"),
    "through a chain of aliases": ('z = "x + b"\np = "softmax(z)"\nq = "p"\nr = "1*q"', "-sum(y*log(r))"),
    "softmax written out": ('z = "x + b"', "-sum(y*log(exp(z)/sum(exp(z))))"),
    "softmax written out in nodes": ('z = "x + b"\ne = "exp(z)"\np = "e/sum(e)"', "-sum(y*log(p))"),
    "logsumexp written out": ('z = "x + b"', "log(sum(exp(z))) - sum(y*z)"),
}


@pytest.mark.parametrize("spelling", SOFTMAX_CE)
@pytest.mark.parametrize("batch", BATCHES)
def test_softmax_cross_entropy_is_stable_and_exact_however_it_is_written(spelling, batch):
    graph = model(*SOFTMAX_CE[spelling], head=CLASSES)
    assert not graph["L"].expr.has(sp.log, sp.exp), graph["L"].expr

    def reference(p, d):
        return -(d["y"] * F.log_softmax(d["x"] + p["b"], dim=-1)).sum(-1)

    assert_matches_reference(graph, reference, *first_rows(CLASSES_POINT, batch))


def test_log_softmax_through_an_alias_is_z_minus_logsumexp():
    graph = model(*SOFTMAX_CE["through a chain of aliases"], head=CLASSES)
    y, z = graph.symbol("y"), graph.symbol("z")
    assert graph["L"].expr == -sum_(y * (z - logsumexp(z)))


def test_softmax_cross_entropy_through_an_alias_still_derives_p_minus_y():
    d = derive(model(*SOFTMAX_CE["through an alias"], head=CLASSES))
    assert "dL/dz = p - y" in d.to("text")


# ---- softplus ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("nodes, loss, sign", [
    ('z = "w*x + b"', "log(1 + exp(z)) - y*z", 1),
    ('z = "w*x + b"', "log(exp(z) + 1) - y*z", 1),
    ('z = "w*x + b"\ne = "exp(z)"\ne2 = "e"', "log(1 + e2) - y*z", 1),
    ('z = "w*x + b"\ne = "exp(-z)"', "log(e + 1) + (1 - y)*z", -1),
    ('z = "w*x + b"', "log1p(exp(z)) - y*z", 1),
    ('z = "w*x + b"\ne = "exp(-z)"', "log1p(e) + (1 - y)*z", -1),
], ids=["1 + exp(z)", "exp(z) + 1", "through a node and an alias", "of minus z", "log1p(exp(z))",
        "log1p of a node"])
def test_softplus_written_as_a_log_is_stable_and_exact(nodes, loss, sign):
    graph = model(nodes, loss, head=SCALAR)
    assert not graph["L"].expr.has(sp.log, sp.exp, log1p), graph["L"].expr

    def reference(p, d):
        z = p["w"] * d["x"] + p["b"]
        return F.softplus(sign * z) - d["y"] * z + (sign < 0) * z

    assert_matches_reference(graph, reference, *SCALAR_POINT)


def test_a_sigmoid_written_out_is_computed_stably_outside_a_log_too():
    graph = model('z = "w*x + b"\na = "1/(1 + exp(-z))"', "(a - y)**2/2", head=SCALAR)
    assert graph["a"].expr == sigmoid(graph.symbol("z"))
    assert_matches_reference(graph, lambda p, d: (torch.sigmoid(p["w"] * d["x"] + p["b"]) - d["y"]) ** 2 / 2,
                             *SCALAR_POINT)


# ---- the Python API is rewritten the same way ---------------------------------------------------------
def test_the_python_api_rewrites_through_aliases_too():
    g = Graph("bce")
    x, y = g.inputs("x y")
    w, b = g.param("w", init=1.0), g.param("b")
    z = g.node("z", w * x + b)
    a = g.node("a", sigmoid(z))
    q = g.node("q", 1 * a)
    g.loss("L", -(y * sp.log(q) + (1 - y) * sp.log(1 - q)))
    assert sp.expand(g["L"].expr - (y * softplus(-z) + (1 - y) * softplus(z))) == 0
    assert_matches_reference(g, bce_reference, *SCALAR_POINT)


# ---- what is left alone --------------------------------------------------------------------------------
@pytest.mark.parametrize("nodes, loss", [
    ('z = "w*x + b"', "log(2 - sigmoid(z))"),
    ('z = "w*x + b"', "log(1 + 2*exp(z))"),
    ('z = "w*x + b"', "log(1 + exp(z) + x)"),
    ('z = "w*x + b"\na = "tanh(z)"', "log(2 + a)"),
    ('z = "w*x + b"', "log(sigmoid(z) + sigmoid(w))"),
    ('z = "w*x + b"', "-y*log(x) - (1 - y)*log(1 - x)"),  # x is an input, not a sigmoid
])
def test_forms_without_a_stable_rewrite_are_left_as_written(nodes, loss):
    graph = model(nodes, loss, head=SCALAR)
    assert graph["L"].expr.has(sp.log)
    assert not graph["L"].expr.has(softplus)


def test_a_node_used_under_log_keeps_its_name_when_no_rule_applies():
    graph = model('z = "w*x + b"\na = "tanh(z)"', "log(2 + a)", head=SCALAR)
    assert graph["L"].expr == sp.log(2 + graph.symbol("a"))


def test_softmax_and_logsumexp_are_not_formed_from_a_matrix():
    """softmax and logsumexp take vectors: exp(M)/sum(exp(M)) over a matrix stays as written (no error)."""
    graph = parse_model('[params]\nM = { shape = [2, 2] }\n[loss]\nL = "sum(log(exp(M)/sum(exp(M))))"\n').graph
    assert not graph["L"].expr.has(softmax, logsumexp)


# ---- the derivation shows the rewritten form ----------------------------------------------------------
@pytest.mark.parametrize("spelling", ["through a node", "written out", "through aliases"])
def test_the_derivation_of_binary_cross_entropy_is_the_textbook_sigmoid_minus_y(spelling):
    graph = model(*BCE[spelling], head=SCALAR)
    d = derive(graph)
    (loss_step,) = [s for s in d.steps if s.kind == "loss"]
    assert loss_step.subject == "z"
    assert loss_step.forms == (Math(sigmoid(graph.symbol("z")) - graph.symbol("y")),)
    assert "dL/dz = sigmoid(z) - y" in d.to("text")


def test_the_derivation_of_log_sigmoid_is_sigmoid_minus_one():
    d = derive(model('z = "w*x + b"', "-log(sigmoid(z))", head=SCALAR))
    assert "dL/dz = sigmoid(z) - 1" in d.to("text")


def test_the_derivation_says_which_stable_forms_it_computes():
    text = derive(model(*BCE["written out"], head=SCALAR)).to("text")
    notes = [line for line in text.splitlines() if line.startswith("convention: ")]
    assert notes == ["convention: 1/(exp(u) + 1) is computed as sigmoid(-u)",
                     "convention: log(sigmoid(u)) is computed as -softplus(-u)",
                     "convention: log(1 - sigmoid(u)) is computed as -softplus(u)"]
    latex = derive(model(*BCE["through a node"], head=SCALAR)).to("latex")
    assert r"\log{\left(\sigma(u) \right)} \text{ is computed as } - \operatorname{softplus}\left(- u\right)" in latex


def test_a_model_without_unstable_forms_has_no_stable_form_note():
    graph = model('z = "w*x + b"\na = "sigmoid(z)"', "(a - y)**2/2", head=SCALAR)
    assert graph.stable_rules == set()
    assert "computed as" not in derive(graph).to("text")
