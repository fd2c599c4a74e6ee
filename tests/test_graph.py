"""Declaring a network in Python: names, order, shapes and the functions allowed, with clear errors."""
import pytest
import sympy as sp

from symbackprop import Graph, ModelError, sigmoid, softmax, sum_


def test_nodes_use_the_graph_symbols_even_when_built_from_plain_sympy_symbols():
    g = Graph()
    g.inputs("x y")
    g.param("w")
    x, w = sp.symbols("x w")  # no assumptions: different SymPy objects with the same names
    z = g.node("z", w * x)
    assert g["z"].expr == g.symbol("w") * g.symbol("x")
    assert z == g.symbol("z")


def test_an_undefined_name_is_named():
    g = Graph()
    x = g.input("x")
    with pytest.raises(ModelError, match=r"^node 'z': undefined name 'q'$"):
        g.node("z", x * sp.Symbol("q"))


def test_a_name_defined_twice_is_refused():
    g = Graph()
    g.input("x")
    with pytest.raises(ModelError, match=r"param 'x': 'x' is defined twice \(already an input\)"):
        g.param("x")


def test_a_node_cannot_use_itself_or_a_later_node():
    g = Graph()
    x = g.input("x")
    with pytest.raises(ModelError, match="undefined name 'z'"):
        g.node("z", sp.Symbol("z") + x)


def test_an_unknown_function_is_named():
    g = Graph()
    x = g.input("x")
    with pytest.raises(ModelError, match="unknown function or operation 'sinh'"):
        g.node("z", sp.sinh(x))


def test_the_loss_must_be_a_scalar_per_sample():
    g = Graph()
    v = g.input("v", shape=(3,))
    with pytest.raises(ModelError, match=r"loss 'L': the loss must be a scalar per sample, but 'L' has shape \(3,\)"):
        g.loss("L", v * 2)
    assert "L" not in g.quantities


def test_a_shape_mismatch_names_both_shapes():
    g = Graph()
    W, x = g.param("W", shape=(3, 4)), g.input("x", shape=(3,))
    with pytest.raises(ModelError, match=r"node 'z': matrix product .*\(3, 4\) and \(3,\) do not fit"):
        g.node("z", W @ x)
    b = g.param("b", shape=(4,))
    with pytest.raises(ModelError, match=r"shape mismatch in .*: \(3,\) and \(4,\)"):
        g.node("s", x + b)


def test_softmax_needs_a_vector():
    g = Graph()
    M = g.param("M", shape=(2, 2))
    with pytest.raises(ModelError, match=r"softmax\(M\) needs a vector, got shape \(2, 2\)"):
        g.node("p", softmax(M))


@pytest.mark.parametrize("name", ["1x", "__class__", "a b", "x.y", "sum", "lambda", "np", "é", "", "a" * 65])
def test_invalid_or_reserved_names_are_refused(name):
    with pytest.raises(ModelError):
        Graph().input(name)


@pytest.mark.parametrize("name", ["arrays", "DTYPE", "BLOCK"])
def test_names_the_generated_loss_and_grad_reads_are_reserved(name):
    """An input named arrays, DTYPE or BLOCK became a local of loss_and_grad and broke it (IndexError,
    UnboundLocalError); the names are refused instead."""
    with pytest.raises(ModelError, match=rf"'{name}' is reserved"):
        Graph().input(name)


def test_nothing_can_follow_the_loss():
    g = Graph()
    x = g.input("x")
    g.loss("L", x ** 2)
    with pytest.raises(ModelError, match="nothing can be declared after the loss"):
        g.param("w")


def test_log_of_softmax_is_rewritten_to_the_stable_form():
    g = Graph()
    z, y = g.input("z", shape=(3,)), g.input("y", shape=(3,), onehot=True)
    p = g.node("p", softmax(z))
    L = g.loss("L", -sum_(y * sp.log(p)))
    from symbackprop.tensor import logsumexp
    assert g["L"].expr == -sum_(y * (z - logsumexp(z)))


def test_shapes_are_inferred_for_every_node():
    g = Graph()
    x = g.input("x", shape=(4,))
    W, b = g.param("W", shape=(3, 4)), g.param("b", shape=(3,))
    g.node("z", W @ x + b)
    g.node("a", sigmoid(g.symbol("z")))
    g.node("outer", g.symbol("a") @ x.T)
    g.node("s", sum_(g.symbol("a")))
    assert {n: g[n].shape for n in ("z", "a", "outer", "s")} == {"z": (3,), "a": (3,), "outer": (3, 4), "s": ()}
