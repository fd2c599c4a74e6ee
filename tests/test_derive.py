"""The derivation: the seed's five steps, sums over shared uses, and checks against SymPy and numbers."""
import random

import pytest
import sympy as sp

from symbackprop import Graph, ModelError, derive, sigmoid
from symbackprop.steps import Adjoint


def seed_graph():
    g = Graph("single sigmoid neuron")
    x, y = g.inputs("x y")
    w, b = g.param("w", init=0.5), g.param("b")
    z = g.node("z", w * x + b)
    a = g.node("a", sigmoid(z))
    g.loss("L", (a - y) ** 2 / 2)
    return g


def two_layer_graph():
    g = Graph("two layers")
    x, y = g.inputs("x y")
    w1, b1, w2, b2 = (g.param(n) for n in ("w1", "b1", "w2", "b2"))
    a1 = g.node("a1", sp.tanh(g.node("z1", w1 * x + b1)))
    a2 = g.node("a2", sigmoid(g.node("z2", w2 * a1 + b2)))
    g.loss("L", (a2 - y) ** 2 / 2)
    return g


def shared_weight_graph():
    g = Graph("shared weight")
    x, y = g.inputs("x y")
    w, b = g.param("w"), g.param("b")
    h = g.node("h", sp.tanh(w * x + b))
    out = g.node("out", w * h)
    g.loss("L", (out - y) ** 2 / 2)
    return g


def test_seed_steps_come_in_the_textbook_order():
    d = derive(seed_graph())
    assert [(s.kind, s.subject) for s in d.steps] == [
        ("loss", "a"), ("local", "a"), ("chain", "z"), ("param", "w"), ("param", "b"),
        ("update", "w"), ("update", "b")]


def test_seed_gradients_are_the_chain_rule_products():
    g = seed_graph()
    d = derive(g)
    x, y, a, z = (g.symbol(n) for n in "xyaz")
    dz = Adjoint("L", "z")
    assert sp.simplify(d.gradients["w"] - dz * x) == 0
    assert sp.simplify(d.gradients["b"] - dz) == 0
    assert sp.simplify(d.adjoint_value("a") - (a - y)) == 0
    assert sp.simplify(d.adjoint_value("z") - Adjoint("L", "a") * sigmoid(z) * (1 - sigmoid(z))) == 0


def test_a_weight_used_twice_gets_the_sum_of_both_paths():
    g = shared_weight_graph()
    d = derive(g)
    (step,) = [s for s in d.steps if s.subject == "w" and s.kind == "param"]
    assert len(step.forms[0].terms) == 2  # dL/dout * dout/dw + dL/dh * dh/dw
    x, h, w, b = (g.symbol(n) for n in "xhwb")
    expected = Adjoint("L", "out") * h + Adjoint("L", "h") * x * (1 - sp.tanh(w * x + b) ** 2)
    assert sp.simplify(d.gradients["w"] - expected) == 0


@pytest.mark.parametrize("make", [seed_graph, two_layer_graph, shared_weight_graph])
def test_expanded_gradient_equals_sympy_diff_of_the_flat_loss(make):
    g = make()
    d = derive(g)
    flat = g.flattened()[g.symbol(g.loss_name)]
    for p in g.params:
        assert sp.expand(d.expanded(p.name) - sp.diff(flat, p.symbol)) == 0, p.name


@pytest.mark.parametrize("make", [seed_graph, two_layer_graph, shared_weight_graph])
def test_symbolic_gradient_matches_central_differences(make):
    """Evaluated by SymPy in 50-digit arithmetic, independently of the generated code."""
    g = make()
    d = derive(g)
    flat = g.flattened()[g.symbol(g.loss_name)]
    rng = random.Random(7)
    for _ in range(3):
        point = {q.symbol: sp.Float(rng.uniform(-1.5, 1.5), 50) for q in g.params + g.input_list}
        for p in g.params:
            grad = d.expanded(p.name, simplify=False).evalf(50, subs=point)
            h = sp.Float("1e-12", 50)
            up = flat.evalf(50, subs={**point, p.symbol: point[p.symbol] + h})
            down = flat.evalf(50, subs={**point, p.symbol: point[p.symbol] - h})
            fd = (up - down) / (2 * h)
            assert abs(grad - fd) <= 1e-6 * max(1, abs(fd)), (p.name, grad, fd)


def chain(depth: int) -> Graph:
    """A scalar chain x -> tanh(w1 x + b1) -> ... of the given depth."""
    g = Graph(f"chain {depth}")
    x, y = g.inputs("x y")
    h = x
    for i in range(1, depth + 1):
        w, b = g.param(f"w{i}"), g.param(f"b{i}")
        h = g.node(f"h{i}", sp.tanh(w * h + b))
    g.loss("L", (h - y) ** 2 / 2)
    return g


def test_gradient_program_grows_linearly_with_depth():
    programs = {n: derive(chain(n)).program() for n in (4, 8, 16, 32, 64)}
    ops = {n: p.op_count("backward") + p.op_count("gradient") for n, p in programs.items()}
    per_layer = [ops[n] / n for n in ops]
    assert max(per_layer) / min(per_layer) < 1.3, ops
    assert 1.8 < ops[64] / ops[32] < 2.2


def test_flat_differentiation_would_explode_where_reverse_mode_does_not():
    g = chain(5)
    flat = g.flattened()[g.symbol("L")]
    flat_ops = sum(sp.count_ops(sp.diff(flat, p.symbol)) for p in g.params)
    reverse_ops = derive(g).program().op_count()
    assert flat_ops > 3 * reverse_ops


def test_wrt_restricts_the_derivation_to_the_named_parameter():
    d = derive(seed_graph(), wrt=["w"])
    assert list(d.gradients) == ["w"]
    assert [s.subject for s in d.steps if s.kind in ("param", "update")] == ["w", "w"]


def test_wrt_can_ask_for_the_gradient_of_an_input():
    g = seed_graph()
    d = derive(g, wrt=["x"])
    w = g.symbol("w")
    assert sp.simplify(d.gradients["x"] - Adjoint("L", "z") * w) == 0
    assert [s.kind for s in d.steps][-1] == "gradient"


def test_wrt_rejects_a_name_that_is_not_a_parameter_or_input():
    with pytest.raises(ModelError, match="'z' is not a parameter or input"):
        derive(seed_graph(), wrt=["z"])


def test_a_parameter_the_loss_does_not_use_has_a_zero_gradient():
    g = Graph("unused")
    x, y = g.inputs("x y")
    w, unused = g.param("w"), g.param("v")
    g.loss("L", (w * x - y) ** 2)
    d = derive(g)
    assert d.gradients["v"] == 0
    assert any(s.subject == "v" and s.kind == "param" for s in d.steps)


def test_the_expanded_gradient_of_abs_keeps_sign_and_is_defined_at_the_kink():
    """simplify would write sign(u) as u/|u|, which is 0/0 at u = 0, where the convention gives 0."""
    g = Graph("abs")
    x, y = g.inputs("x y")
    w = g.param("w")
    g.loss("L", (sp.Abs(w * x) - y) ** 2 / 2)
    expanded = derive(g).expanded("w")
    assert expanded.has(sp.sign)
    assert expanded.subs({x: 0, y: 1, w: 2}) == 0
