"""Initial parameter values: every form of `init`, their statistics, seeding, and clear errors."""
import numpy as np
import pytest

from symbackprop import Graph, ModelError
from symbackprop.initializers import fans, initial_params
from symbackprop.modelfile import parse_model


def graph_with(**params) -> Graph:
    """A graph whose parameters are given as name=(shape, init); the loss uses none of them."""
    g = Graph("init")
    x = g.input("x")
    for name, (shape, init) in params.items():
        g.param(name, shape, init=init)
    g.loss("L", x * 0)
    return g


def test_numbers_fill_and_lists_are_taken_as_they_are():
    p = initial_params(graph_with(w=((), 0.5), v=((3,), 2), M=((2, 2), [[1, 2], [3, 4.5]])))
    assert p["w"].shape == () and p["w"] == 0.5
    assert p["v"].tolist() == [2.0, 2.0, 2.0]
    assert p["M"].tolist() == [[1.0, 2.0], [3.0, 4.5]]
    assert all(v.dtype == np.float64 for v in p.values())


def test_zeros_ones_and_constant():
    p = initial_params(graph_with(a=((2,), "zeros"), b=((2, 3), "ones"), c=((2,), {"kind": "constant", "value": -1.5})))
    assert p["a"].tolist() == [0, 0] and p["b"].tolist() == [[1, 1, 1]] * 2 and p["c"].tolist() == [-1.5, -1.5]


def test_glorot_keeps_variance_two_over_fan_in_plus_fan_out():
    p = initial_params(graph_with(W=((200, 300), "glorot"), V=((200, 300), {"kind": "glorot", "distribution": "normal"})),
                       seed=1)
    for name in "WV":
        assert p[name].mean() == pytest.approx(0.0, abs=0.002)
        assert p[name].var() == pytest.approx(2 / (300 + 200), rel=0.03)
    assert np.abs(p["W"]).max() <= np.sqrt(6 / 500)  # the uniform form's bound


def test_he_keeps_variance_two_over_fan_in():
    p = initial_params(graph_with(W=((200, 300), "he"), U=((200, 300), {"kind": "he", "distribution": "uniform"})),
                       seed=2)
    for name in "WU":
        assert p[name].var() == pytest.approx(2 / 300, rel=0.03)


def test_normal_and_uniform_tables_use_their_options():
    p = initial_params(graph_with(n=((100, 100), {"kind": "normal", "mean": 1.0, "scale": 0.1}),
                                  u=((100, 100), {"kind": "uniform", "low": 2.0, "high": 3.0})), seed=0)
    assert p["n"].mean() == pytest.approx(1.0, abs=0.005) and p["n"].std() == pytest.approx(0.1, rel=0.03)
    assert 2.0 <= p["u"].min() and p["u"].max() < 3.0 and p["u"].mean() == pytest.approx(2.5, abs=0.01)


def test_fans_of_matrices_vectors_and_scalars():
    assert fans((16, 4)) == (4, 16)
    assert fans((5,)) == (5, 5)
    assert fans(()) == (1, 1)


def test_the_same_seed_gives_the_same_values_and_another_seed_others():
    g = graph_with(W=((4, 3), "normal"), b=((4,), "glorot"))
    first, again, other = initial_params(g, seed=7), initial_params(g, seed=7), initial_params(g, seed=8)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["W"], other["W"])


def test_adding_a_parameter_does_not_change_the_others():
    before = initial_params(graph_with(W=((4, 3), "normal")), seed=3)
    after = initial_params(graph_with(A=((2, 2), "normal"), W=((4, 3), "normal")), seed=3)
    assert np.array_equal(before["W"], after["W"])


def test_the_model_file_init_forms_work_end_to_end():
    m = parse_model('[inputs]\nx = { shape = [3] }\n[params]\nW = { shape = [2, 3], init = "glorot" }\n'
                    'b = { shape = [2], init = { kind = "normal", scale = 0.01 } }\n[loss]\nL = "sum(W @ x + b)"\n',
                    "m.toml")
    p = initial_params(m.graph, seed=0)
    assert p["W"].shape == (2, 3) and p["b"].shape == (2,) and np.abs(p["b"]).max() < 0.05


@pytest.mark.parametrize("shape, init, message", [
    ((2,), "xavier", "[params] w: unknown init 'xavier'"),
    ((2,), {"scale": 0.1}, "[params] w: an init table needs 'kind'"),
    ((2,), {"kind": "normal", "sigma": 1}, "[params] w: unknown init option 'sigma' for kind 'normal'"),
    ((2,), {"kind": "uniform", "low": 1, "high": 0}, "[params] w: 'low' (1.0) must not exceed 'high' (0.0)"),
    ((2,), {"kind": "normal", "scale": "big"}, "[params] w: 'scale' must be a finite number, got 'big'"),
    ((2,), {"kind": "glorot", "distribution": "cauchy"}, "[params] w: 'distribution' must be one of uniform, normal"),
    ((2,), [1, 2, 3], "[params] w: init list has shape [3], but the parameter has shape [2]"),
    ((2, 2), [[1, 2], [3]], "[params] w: init list must be a rectangular list of numbers"),
    ((), True, "[params] w: init must be a number, a list, a name or a table, not true/false"),
])
def test_bad_init_specs_name_the_parameter(shape, init, message):
    with pytest.raises(ModelError) as e:
        initial_params(graph_with(w=(shape, init)))
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_errors_name_the_model_file_when_given():
    with pytest.raises(ModelError, match=r"^net\.toml: \[params\] w: unknown init 'huge'"):
        initial_params(graph_with(w=((), "huge")), source="net.toml")
