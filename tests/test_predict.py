"""Parameters in and out (train --save-params/--init-params), predict, evaluate, and a generated module that
trains without symbackprop."""
import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from symbackprop.cli import main
from symbackprop.data import model_data
from symbackprop.graph import UserError
from symbackprop.initializers import initial_params
from symbackprop.modelfile import load_model
from symbackprop.paramfile import load_params, save_params
from symbackprop.predict import needed_inputs

NEURON = ROOT / "examples" / "neuron.toml"
MLP = ROOT / "examples" / "mlp_sigmoid.toml"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def summary_number(output: str, prefix: str, index: int) -> str:
    return next(line for line in output.splitlines() if line.startswith(prefix)).split()[index]


# ---- parameter files ------------------------------------------------------------------------------------------
def test_epochs_0_saves_the_initial_values_in_their_declared_shapes(tmp_path):
    path = tmp_path / "p0.npz"
    assert run("train", MLP, "--epochs", "0", "--save-params", path, "--quiet").exit_code == 0
    graph = load_model(MLP).graph
    with np.load(path) as f:
        saved = {k: f[k] for k in f.files}
    expected = initial_params(graph, 0)
    assert sorted(saved) == sorted(expected) == ["W1", "W2", "b1", "b2"]
    assert all(saved[k].shape == graph[k].shape and np.array_equal(saved[k], expected[k]) for k in saved)


def test_save_then_init_round_trip_continues_exactly(tmp_path):
    first, second, straight = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    assert run("train", MLP, "--epochs", "3", "--save-params", first, "--quiet").exit_code == 0
    assert run("train", MLP, "--epochs", "2", "--init-params", first, "--save-params", second, "--quiet").exit_code == 0
    assert run("train", MLP, "--epochs", "5", "--save-params", straight, "--quiet").exit_code == 0
    graph = load_model(MLP).graph
    b, c = load_params(second, graph), load_params(straight, graph)
    assert all(np.array_equal(b[k], c[k]) for k in b)  # full batch, plain SGD: 3 + 2 epochs = 5 epochs


def test_init_params_set_the_starting_point(tmp_path):
    graph = load_model(NEURON).graph
    path = tmp_path / "start.npz"
    save_params(path, {"w": np.float64(2.0), "b": np.float64(-1.0)}, graph)  # the teacher: loss 0
    result = run("train", NEURON, "--epochs", "1", "--init-params", path)
    assert result.exit_code == 0 and summary_number(result.output, "loss ", 1) == "0"


@pytest.mark.parametrize("arrays, message", [
    ({"w": 1.0}, "no array for parameter 'b' (the file has w)"),
    ({"w": 1.0, "b": 0.0, "c": 2.0}, "'c' is not a parameter of 'single sigmoid neuron' (its parameters: w, b)"),
    ({"w": [1.0], "b": 0.0}, "parameter 'w' has shape [1], the model declares []"),
    ({"w": np.nan, "b": 0.0}, "parameter 'w' holds nan (parameters must be finite numbers)"),
    ({"w": "one", "b": 0.0}, "parameter 'w' is not numeric (dtype <U3)"),
])
def test_a_parameter_file_is_checked_name_by_name(tmp_path, arrays, message):
    path = tmp_path / "p.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(UserError) as e:
        load_params(path, load_model(NEURON).graph)
    assert str(e.value) == f"{path}: {message}"
    result = run("train", NEURON, "--init-params", path)
    assert result.exit_code == 1 and result.output == f"Error: {path}: {message}\n"


def test_a_missing_or_unreadable_parameter_file_is_one_line(tmp_path):
    graph = load_model(NEURON).graph
    with pytest.raises(UserError, match="no such parameter file"):
        load_params(tmp_path / "none.npz", graph)
    bad = tmp_path / "bad.npz"
    bad.write_text("not an archive")
    with pytest.raises(UserError, match=r"bad.npz: not a readable .npz parameter file"):
        load_params(bad, graph)


def test_save_params_is_not_overwritten_without_force(tmp_path):
    path = tmp_path / "p.npz"
    path.write_bytes(b"mine")
    result = run("train", NEURON, "--epochs", "1", "--save-params", path)
    assert result.exit_code == 1 and "use --force to overwrite it" in result.output and path.read_bytes() == b"mine"


# ---- predict ---------------------------------------------------------------------------------------------------
def trained(tmp_path, model, *options):
    params = tmp_path / "params.npz"
    result = run("train", model, "--save-params", params, *options)
    assert result.exit_code == 0, result.output
    return params, result.output


def test_predict_prints_the_nodes_value_for_every_sample_as_csv_and_needs_no_labels(tmp_path):
    params, _ = trained(tmp_path, MLP, "--epochs", "2", "--quiet")
    data = tmp_path / "x.csv"
    data.write_text("x[0],x[1],x[2]\n0.1,0.2,0.3\n-1,0,2\n")  # no y: a2 does not depend on it
    result = run("predict", MLP, "--params", params, "--data", data, "--node", "a2")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.output)))
    graph = load_model(MLP).graph
    p = load_params(params, graph)
    x = np.array([[0.1, 0.2, 0.3], [-1, 0, 2]])
    sig = lambda z: 1 / (1 + np.exp(-z))
    expected = sig(sig(x @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"])
    assert rows[0] == ["a2[0]", "a2[1]"]
    np.testing.assert_allclose(np.array(rows[1:], dtype=float), expected, rtol=1e-14)
    assert needed_inputs(graph, "a2") == ["x"] and needed_inputs(graph, "L") == ["x", "y"]


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_predict_writes_a_csv_or_npz_file(tmp_path, suffix):
    params, _ = trained(tmp_path, NEURON, "--epochs", "2", "--quiet")
    data = tmp_path / "d.npz"
    np.savez(data, x=np.array([0.0, 1.0, 2.0]))
    out = tmp_path / f"a{suffix}"
    result = run("predict", NEURON, "--params", params, "--data", data, "--node", "a", "-o", out)
    assert result.exit_code == 0 and f"wrote 3 predictions of 'a' to {out}" in result.output
    if suffix == ".npz":
        with np.load(out) as f:
            values = f["a"]
    else:
        values = np.loadtxt(out, delimiter=",", skiprows=1)
    assert out.read_bytes()[:2] in (b"a\n", b"PK") and values.shape == (3,)
    p = load_params(params, load_model(NEURON).graph)
    np.testing.assert_allclose(values, 1 / (1 + np.exp(-(p["w"] * np.array([0.0, 1.0, 2.0]) + p["b"]))), rtol=1e-14)


def test_predict_errors_are_one_line(tmp_path):
    params, _ = trained(tmp_path, NEURON, "--epochs", "1", "--quiet")
    data = tmp_path / "d.csv"
    data.write_text("x\n1\n")
    assert run("predict", NEURON, "--params", params, "--data", data).output == (
        f"Error: {NEURON}: no node to predict: give --node NAME (one of z, a, L), or set predict in the model's "
        "[train] table\n")
    assert run("predict", NEURON, "--params", params, "--data", data, "--node", "q").output == (
        f"Error: {NEURON}: 'q' is not a node of the model (nodes: z, a, L)\n")
    assert run("predict", NEURON, "--params", params, "--data", data, "--node", "a", "-o", tmp_path / "a.txt").output \
        == f"Error: -o {tmp_path / 'a.txt'}: unknown output format '.txt' (use .csv or .npz)\n"
    assert run("predict", NEURON, "--params", params, "--data", data, "--node", "L").output == (
        f"Error: {data}: missing column 'y' for input 'y' (expected y)\n")


# ---- predict and evaluate agree with the training summary ------------------------------------------------
@pytest.mark.parametrize("example, options", [("iris", ["--epochs", "30"]), ("digits", ["--epochs", "3"])])
def test_evaluate_and_predict_agree_with_the_training_summary(tmp_path, example, options):
    pytest.importorskip("sklearn")
    model = ROOT / "examples" / f"{example}.toml"
    params, summary = trained(tmp_path, model, *options)
    evaluated = run("evaluate", model, "--params", params)
    assert evaluated.exit_code == 0, evaluated.output
    lines = evaluated.output.splitlines()
    training = next(line for line in lines if line.startswith("training data: "))
    assert f"loss {summary_number(summary, 'loss ', 5)}," in training
    assert training.endswith(f"accuracy {summary_number(summary, 'training accuracy', 2)}")
    m = load_model(model)
    data = model_data(m.graph, m.data, source=str(model))
    if data.held_out:
        held = next(line for line in lines if line.startswith("held-out data: "))
        assert held == (f"held-out data: {data.held_out_size} samples, loss {summary_number(summary, 'held-out', 5)}, "
                        f"accuracy {summary_number(summary, 'held-out', 2).rstrip(',')}")
    part = data.held_out or data.train
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=part["x"])  # features only
    predicted = run("predict", model, "--params", params, "--data", inputs)
    assert predicted.exit_code == 0
    p = np.loadtxt(io.StringIO(predicted.output), delimiter=",", skiprows=1)
    accuracy = np.mean(p.argmax(axis=1) == part["y"].argmax(axis=1))
    label = "held-out" if data.held_out else "training accuracy"
    assert f"{accuracy:.2%}" == summary_number(summary, label, 2).rstrip(",")
    own = tmp_path / "own.npz"
    np.savez(own, **part)
    on_file = run("evaluate", model, "--params", params, "--data", own)
    assert on_file.output.splitlines()[1].startswith(f"{own}: {len(part['x'])} samples, loss ")
    assert on_file.output.splitlines()[1].endswith(f"accuracy {accuracy:.2%}")


# ---- a generated module that trains without symbackprop ----------------------------------------------------
STANDALONE = """
import importlib.util, sys
sys.modules["symbackprop"] = None  # importing symbackprop now fails: the module must not need it
import numpy as np
spec = importlib.util.spec_from_file_location("grad", sys.argv[1])
grad = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grad)
with np.load(sys.argv[2]) as f:
    params = {k: f[k] for k in f.files}
with np.load(sys.argv[3]) as f:
    data = {k: f[k] for k in f.files}
params = grad.train(params, data, epochs=int(sys.argv[5]), batch_size=int(sys.argv[6]), seed=int(sys.argv[7]))
np.savez(sys.argv[4], **params)
"""


@pytest.mark.parametrize("optimizer, settings", [("adam", ["--schedule", "cosine", "--set", "T_max=4"]),
                                                 ("sgd", ["--set", "momentum=0.9", "--set", "nesterov=true"]),
                                                 ("rmsprop", ["--set", "centered=true"]), ("adamw", [])])
def test_a_module_written_with_an_optimizer_trains_without_symbackprop_as_train_does(tmp_path, optimizer, settings):
    model = tmp_path / "mlp.toml"
    table = {"adam": 'optimizer = "adam"\nschedule = "cosine"\nT_max = 4\nlr = 0.05',
             "sgd": 'optimizer = "sgd"\nmomentum = 0.9\nnesterov = true\nlr = 0.5',
             "rmsprop": 'optimizer = "rmsprop"\ncentered = true', "adamw": 'optimizer = "adamw"\nlr = 0.01'}[optimizer]
    model.write_text(MLP.read_text().replace("lr = 2.0", table))
    module = tmp_path / "grad.py"
    assert run("codegen", model, "-o", module, "--optimizer", optimizer).exit_code == 0
    assert "def step(params, grads, state" in module.read_text()
    start, ours = tmp_path / "start.npz", tmp_path / "ours.npz"
    assert run("train", model, "--epochs", "0", "--seed", "3", "--save-params", start, "--quiet").exit_code == 0
    assert run("train", model, "--epochs", "6", "--batch-size", "100", "--seed", "3", "--save-params", ours,
               "--quiet").exit_code == 0
    m = load_model(model)
    data = tmp_path / "data.npz"
    np.savez(data, **model_data(m.graph, m.data, source=str(model)).train)
    theirs = tmp_path / "theirs.npz"
    done = subprocess.run([sys.executable, "-c", STANDALONE, str(module), str(start), str(data), str(theirs), "6",
                           "100", "3"], capture_output=True, text=True, cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    a, b = load_params(ours, m.graph), load_params(theirs, m.graph)
    assert all(np.array_equal(a[k], b[k]) for k in a)  # the same functions, the same batches: the same bits
    assert not all(np.array_equal(a[k], load_params(start, m.graph)[k]) for k in a)
