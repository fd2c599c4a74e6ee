"""Training: the update rule, resuming exactly, stopping on NaN, and refusing bad data before training."""
import numpy as np
import pytest

from conftest import ROOT
from symbackprop.compile import compile_gradient
from symbackprop.data import DataError, load_data, model_data
from symbackprop.initializers import initial_params
from symbackprop.modelfile import load_model, parse_model
from symbackprop.train import TrainingDiverged, load_checkpoint, train

NEURON = load_model(ROOT / "examples" / "neuron.toml")


def seed_data():
    return model_data(NEURON.graph, NEURON.data).train


def test_seed_trains_from_its_initial_values_towards_the_teacher():
    start = initial_params(NEURON.graph)
    assert start == {"w": 0.5, "b": 0.0}
    result = train(NEURON.graph, seed_data(), lr=2.0, epochs=200)
    assert result.losses[-1] < result.losses[0] / 100
    assert abs(result.params["w"] - 2.0) < 0.2 and abs(result.params["b"] + 1.0) < 0.1


def test_one_step_is_w_minus_eta_times_the_mean_gradient():
    data = seed_data()
    x, y = data["x"], data["y"]
    a = 1 / (1 + np.exp(-(0.5 * x)))
    delta = (a - y) * a * (1 - a)
    result = train(NEURON.graph, data, lr=0.3, epochs=1)
    assert result.params["w"] == pytest.approx(0.5 - 0.3 * np.mean(delta * x), rel=1e-12)
    assert result.params["b"] == pytest.approx(0.0 - 0.3 * np.mean(delta), abs=1e-15)


def test_an_interrupted_and_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path):
    data = seed_data()
    whole = train(NEURON.graph, data, lr=1.0, epochs=10, batch_size=32, seed=3)
    ckpt = tmp_path / "run.npz"
    train(NEURON.graph, data, lr=1.0, epochs=4, batch_size=32, seed=3, checkpoint=ckpt)
    resumed = train(NEURON.graph, data, lr=1.0, epochs=10, batch_size=32, seed=3, checkpoint=ckpt, resume=True)
    for k in whole.params:
        assert np.array_equal(whole.params[k], resumed.params[k])
    assert whole.history == resumed.history


EXPLODING = """
[inputs]
x = {}
y = {}
[params]
w = { init = 1.0 }
[nodes]
h = "exp(w*x)"
[loss]
L = "(h - y)**2"
"""


def test_a_run_that_overflows_stops_naming_the_epoch_and_keeps_its_last_good_checkpoint(tmp_path):
    m = parse_model(EXPLODING, "exploding.toml")
    data = {"x": np.linspace(1, 3, 20), "y": np.full(20, 100.0)}
    ckpt = tmp_path / "last.npz"
    with pytest.raises(TrainingDiverged, match=r"epoch \d+, batch 1: .*node 'h' = exp\(w\*x\) is not finite"):
        train(m.graph, data, lr=5.0, epochs=50, checkpoint=ckpt)
    params, epoch, _, history = load_checkpoint(ckpt, m.graph)
    assert np.isfinite(params["w"]) and epoch == len(history) >= 1


def test_log_of_negative_data_is_reported_with_the_node():
    m = parse_model('[inputs]\nx = {}\n[params]\nw = { init = 1.0 }\n[nodes]\nh = "log(w*x)"\n[loss]\nL = "h**2"\n',
                    "log.toml")
    with pytest.raises(TrainingDiverged, match=r"node 'h' = log\(w\*x\) is not finite \(log of a value <= 0\?\)"):
        train(m.graph, {"x": np.array([1.0, -2.0])}, lr=0.1, epochs=1)


@pytest.mark.parametrize("content, message", [
    ("", "empty file"),
    ("x,y\n", "no data rows"),
    ("x\n1\n", "missing column 'y'"),
    ("x,y\n1,2\n3,abc\n", "column 'y' row 2: 'abc' is not a number"),
    ("x,y\n1,2\nnan,1\n", "column 'x' row 2 holds nan"),
    ("x,y\n1,inf\n", "column 'y' row 1 holds inf"),
    ("x,y\n1,2\n3\n", "row 2 has 1 cells, the header has 2"),
])
def test_bad_csv_is_refused_before_training(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_data(path, NEURON.graph)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros(3)}, "no data for input 'y'"),
    ({"x": np.zeros(3), "y": np.zeros(4)}, "'y' has 4 rows, other inputs have 3"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(3)}, r"'x' has shape \(3, 2\), expected \(N\)"),
    ({"x": np.array([0.0, np.inf, 1]), "y": np.zeros(3)}, "'x' row 1 holds inf"),
])
def test_bad_npz_is_refused_naming_the_array_and_row(tmp_path, arrays, message):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_data(path, NEURON.graph)


def test_csv_columns_of_a_vector_input(tmp_path):
    m = parse_model('[inputs]\nv = { shape = [2] }\n[params]\nw = { shape = [2] }\n[loss]\nL = "sum(w*v)"\n', "v.toml")
    path = tmp_path / "v.csv"
    path.write_text("v[0],v[1]\n1,2\n3,4\n")
    assert load_data(path, m.graph)["v"].tolist() == [[1, 2], [3, 4]]


def test_initialisers_are_seeded_and_scaled():
    m = parse_model('[params]\nW = { shape = [200, 300], init = "glorot" }\nH = { shape = [200, 300], init = "he" }\n'
                    'c = { shape = [3], init = [1, 2, 3] }\n[loss]\nL = "sum(W)*0"\n', "init.toml")
    p, q = initial_params(m.graph, seed=1), initial_params(m.graph, seed=1)
    assert np.array_equal(p["W"], q["W"])
    assert p["W"].var() == pytest.approx(2 / 500, rel=0.05)
    assert p["H"].var() == pytest.approx(2 / 300, rel=0.05)
    assert p["c"].tolist() == [1, 2, 3]
