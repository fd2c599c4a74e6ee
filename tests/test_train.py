"""Training: the update rule, the seed's run, resuming exactly, stopping on NaN with a diagnosis, accuracy,
history files, and the `train` command."""
import csv

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from symbackprop import ModelError
from symbackprop.cli import main
from symbackprop.data import model_data
from symbackprop.graph import UserError
from symbackprop.initializers import initial_params
from symbackprop.modelfile import load_model, parse_model
from symbackprop.train import TrainingDiverged, load_checkpoint, train, train_settings

NEURON_PATH = ROOT / "examples" / "neuron.toml"
NEURON = load_model(NEURON_PATH)


def seed_data():
    return model_data(NEURON.graph, NEURON.data).train


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ---- the update rule and the seed ----------------------------------------------------------------------------
def test_the_seed_trains_from_its_initial_values_towards_the_teacher():
    assert initial_params(NEURON.graph) == {"w": 0.5, "b": 0.0}
    result = train(NEURON.graph, seed_data(), lr=2.0, epochs=200)
    assert result.initial_loss == pytest.approx(0.0287, abs=1e-4)
    assert result.final_loss < result.initial_loss / 1000
    assert all(later <= earlier for earlier, later in zip(result.losses, result.losses[1:]))
    assert abs(result.params["w"] - 2.0) < 0.1 and abs(result.params["b"] + 1.0) < 0.05  # the teacher: 2, -1


def test_one_step_is_w_minus_eta_times_the_mean_gradient():
    data = seed_data()
    x, y = data["x"], data["y"]
    a = 1 / (1 + np.exp(-(0.5 * x)))
    delta = (a - y) * a * (1 - a)  # dL/dz for each sample
    result = train(NEURON.graph, data, lr=0.3, epochs=1)
    assert result.params["w"] == pytest.approx(0.5 - 0.3 * np.mean(delta * x), rel=1e-12)
    assert result.params["b"] == pytest.approx(0.0 - 0.3 * np.mean(delta), abs=1e-15)
    assert result.initial_loss == pytest.approx(np.mean((a - y) ** 2 / 2), rel=1e-12)


def test_a_mini_batch_step_uses_the_mean_over_that_batch_only():
    data = {"x": np.array([1.0, 2.0, 3.0]), "y": np.array([0.0, 1.0, 0.0])}
    result = train(NEURON.graph, data, lr=1.0, epochs=1, batch_size=3)  # one batch of all three, shuffled
    whole = train(NEURON.graph, data, lr=1.0, epochs=1)
    assert result.params["w"] == pytest.approx(whole.params["w"], rel=1e-12)
    two = train(NEURON.graph, data, lr=1.0, epochs=1, batch_size=2)  # two updates: differs
    assert two.params["w"] != pytest.approx(whole.params["w"], rel=1e-6)


def test_history_rows_hold_the_full_data_loss_after_each_epoch():
    data = seed_data()
    result = train(NEURON.graph, data, lr=2.0, epochs=3, batch_size=64, seed=1)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    w, b = result.params["w"], result.params["b"]
    a = 1 / (1 + np.exp(-(w * data["x"] + b)))
    assert result.final_loss == pytest.approx(np.mean((a - data["y"]) ** 2 / 2), rel=1e-12)


def test_the_same_seed_gives_the_same_run_and_another_seed_another_shuffle():
    data = seed_data()
    one, again = (train(NEURON.graph, data, lr=1.0, epochs=3, batch_size=16, seed=5) for _ in range(2))
    other = train(NEURON.graph, data, lr=1.0, epochs=3, batch_size=16, seed=6)
    assert one.params == again.params and one.params["w"] != other.params["w"]


def test_params_override_the_initial_values():
    result = train(NEURON.graph, seed_data(), lr=0.1, epochs=0, params={"w": 2.0})
    assert result.params == {"w": 2.0, "b": 0.0} and result.history == []
    with pytest.raises(UserError, match="params: 'v' is not a parameter of the model"):
        train(NEURON.graph, seed_data(), epochs=1, params={"v": 1.0})


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": -1.0}, "train lr: must be a positive number, got -1.0"),
    ({"lr": float("nan")}, "train lr: must be a finite number, got nan"),
    ({"epochs": -2}, "train epochs: must be a whole number >= 0, got -2"),
    ({"batch_size": 0}, "train batch_size: must be a whole number >= 1, got 0"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ModelError) as e:
        train(NEURON.graph, seed_data(), **{"lr": 0.1, "epochs": 1, **kwargs})
    assert str(e.value).startswith(message)


def test_data_passed_from_python_is_checked_too():
    with pytest.raises(UserError, match=r"training data: 'y' has 2 rows, but 'x' has 3"):
        train(NEURON.graph, {"x": np.zeros(3), "y": np.zeros(2)}, epochs=1)


# ---- checkpoints and resume -------------------------------------------------------------------------------
def test_an_interrupted_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    data = seed_data()
    whole = train(NEURON.graph, data, lr=1.0, epochs=10, batch_size=32, seed=3)
    ckpt = tmp_path / "run.npz"
    first = train(NEURON.graph, data, lr=1.0, epochs=4, batch_size=32, seed=3, checkpoint=ckpt)
    assert first.params["w"] != whole.params["w"]
    resumed = train(NEURON.graph, data, lr=1.0, epochs=10, batch_size=32, seed=3, checkpoint=ckpt, resume=True)
    assert resumed.resumed_from == 4
    for k in whole.params:
        assert np.array_equal(whole.params[k], resumed.params[k])
    assert whole.history == resumed.history and whole.initial == resumed.initial
    assert load_checkpoint(ckpt, NEURON.graph)["epoch"] == 10


def test_a_checkpoint_holds_params_epoch_generator_state_and_history(tmp_path):
    ckpt = tmp_path / "run.npz"
    result = train(NEURON.graph, seed_data(), lr=1.0, epochs=2, batch_size=100, seed=9, checkpoint=ckpt)
    state = load_checkpoint(ckpt, NEURON.graph)
    assert state["epoch"] == 2 and state["params"]["w"] == result.params["w"]
    assert state["rng_state"]["bit_generator"] == "PCG64"
    assert [row["epoch"] for row in state["history"]] == [0, 1, 2]
    assert state["config"]["lr"] == 1.0 and state["config"]["batch_size"] == 100
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]  # no temporary file left behind


def test_resume_refuses_other_settings_or_data(tmp_path):
    ckpt = tmp_path / "run.npz"
    data = seed_data()
    train(NEURON.graph, data, lr=1.0, epochs=2, batch_size=32, checkpoint=ckpt)
    with pytest.raises(UserError, match=r"cannot resume: the checkpoint's batch size is 32, this run's is 16"):
        train(NEURON.graph, data, lr=1.0, epochs=4, batch_size=16, checkpoint=ckpt, resume=True)
    with pytest.raises(UserError, match=r"cannot resume: the checkpoint's data \(fingerprint\)"):
        train(NEURON.graph, {k: v * 2 for k, v in data.items()}, lr=1.0, epochs=4, batch_size=32,
              checkpoint=ckpt, resume=True)
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        train(NEURON.graph, data, lr=1.0, epochs=4, checkpoint=tmp_path / "none.npz", resume=True)


# ---- divergence ----------------------------------------------------------------------------------------------
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


def test_a_run_that_overflows_stops_naming_epoch_node_and_function_and_keeps_its_last_good_checkpoint(tmp_path):
    m = parse_model(EXPLODING, "exploding.toml")
    data = {"x": np.linspace(1, 3, 20), "y": np.full(20, 100.0)}
    ckpt = tmp_path / "last.npz"
    with pytest.raises(TrainingDiverged) as e:
        train(m.graph, data, lr=5.0, epochs=50, batch_size=5, checkpoint=ckpt)
    message = str(e.value)
    assert message.startswith("training diverged at epoch 1, batch 2: exp overflowed in node 'h', first at data row")
    assert f"the last good checkpoint (epoch 0) is {ckpt}" in message and "\n" not in message
    state = load_checkpoint(ckpt, m.graph)
    assert state["epoch"] == 0 and state["params"]["w"] == 1.0


def test_divergence_after_some_good_epochs_keeps_the_latest_one(tmp_path):
    m = parse_model(EXPLODING.replace("exp(w*x)", "w*x"), "linear.toml")
    data = {"x": np.ones(4), "y": np.zeros(4)}  # each step maps w to -9 w: the loss 81**k overflows at k = 162
    ckpt = tmp_path / "last.npz"
    with pytest.raises(TrainingDiverged, match=r"^training diverged after epoch 162: a power overflowed in node 'L'") as e:
        train(m.graph, data, lr=5.0, epochs=500, checkpoint=ckpt)
    state = load_checkpoint(ckpt, m.graph)
    assert state["epoch"] == 161 and state["params"]["w"] == pytest.approx(-(9.0 ** 161), rel=1e-12)
    assert f"the last good checkpoint (epoch 161) is {ckpt} (try a smaller learning rate)" in str(e.value)


def test_log_of_negative_data_is_reported_with_the_node_and_row():
    m = parse_model('[inputs]\nx = {}\n[params]\nw = { init = 1.0 }\n[nodes]\nh = "log(w*x)"\n[loss]\nL = "h**2"\n',
                    "log.toml")
    with pytest.raises(TrainingDiverged) as e:
        train(m.graph, {"x": np.array([1.0, 3.0, -2.0])}, lr=0.1, epochs=1)
    assert str(e.value) == ("the loss is not finite before training starts: "
                            "log of a non-positive value in node 'h', first at data row 2")


def test_sqrt_of_a_negative_value_is_named_inside_a_larger_expression():
    m = parse_model('[inputs]\nx = {}\n[params]\nw = { init = 1.0 }\n[nodes]\nh = "3*sqrt(w - x) + 1"\n'
                    '[loss]\nL = "h**2"\n', "sqrt.toml")
    with pytest.raises(TrainingDiverged, match=r"sqrt of a negative value in node 'h', first at data row 1$"):
        train(m.graph, {"x": np.array([0.0, 4.0])}, lr=0.1, epochs=1)


# ---- accuracy and files -------------------------------------------------------------------------------------
IRIS_MODEL = """
name = "iris softmax regression"
[inputs]
x = { shape = [4] }
y = { shape = [3], onehot = true }
[params]
W = { shape = [3, 4], init = "glorot" }
b = { shape = [3], init = 0.0 }
[nodes]
p = "softmax(W @ x + b)"
[loss]
L = "-sum(y*log(p))"
[data]
sklearn = "iris"
features = "x"
labels = "y"
test_fraction = 0.2
seed = 0
[train]
lr = 0.5
epochs = 30
batch_size = 16
predict = "p"
target = "y"
"""


def test_classification_reports_training_and_held_out_accuracy():
    pytest.importorskip("sklearn")
    m = parse_model(IRIS_MODEL, "iris.toml")
    s = train_settings(m.train, m.graph)
    result = train(m.graph, model_data(m.graph, m.data), lr=s["lr"], epochs=s["epochs"], batch_size=s["batch_size"],
                   predict=s["predict"], target=s["target"])
    assert result.initial["accuracy"] < 0.8
    assert result.last["accuracy"] > 0.9 and result.last["held_out_accuracy"] > 0.85
    assert result.last["held_out_loss"] < result.initial["held_out_loss"]


def test_scalar_predictions_are_thresholded_at_one_half():
    from symbackprop.train import accuracy
    assert accuracy({"p": np.array([0.2, 0.7, 0.6])}, {"y": np.array([0.0, 1.0, 0.0])}, "p", "y") == pytest.approx(2 / 3)


@pytest.mark.parametrize("table, message", [
    ({"lr": 0}, "m.toml: [train] lr: must be a positive number, got 0"),
    ({"rate": 1}, "m.toml: [train] rate: unknown key"),
    ({"predict": "a"}, "m.toml: [train]: give both predict (a node) and target (an input)"),
    ({"predict": "x", "target": "y"}, "m.toml: [train] predict: must name a node, got 'x'"),
    ({"epochs": 1.5}, "m.toml: [train] epochs: must be a whole number >= 0, got 1.5"),
])
def test_bad_train_tables_name_the_key(table, message):
    with pytest.raises(ModelError) as e:
        train_settings(table, NEURON.graph, "m.toml")
    assert str(e.value).startswith(message)


def test_options_win_over_the_train_table_which_wins_over_defaults():
    s = train_settings({"lr": 2.0, "epochs": 200}, NEURON.graph, epochs=5)
    assert (s["lr"], s["epochs"], s["batch_size"], s["seed"]) == (2.0, 5, None, 0)


def test_history_csv_and_plot_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    history, plot = tmp_path / "h.csv", tmp_path / "loss.png"
    result = train(NEURON.graph, seed_data(), lr=2.0, epochs=5, history_csv=history, plot=plot)
    rows = list(csv.DictReader(history.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [float(r["loss"]) for r in rows] == result.losses
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the command ------------------------------------------------------------------------------------------
def test_train_command_prints_header_and_summary_for_the_seed(tmp_path):
    result = run("train", NEURON_PATH, "--epochs", "100")
    assert result.exit_code == 0, result.output
    assert "training 'single sigmoid neuron' on 256 samples" in result.output
    assert "2 parameter tensors (2 values), sgd (lr 2, momentum 0, dampening 0, weight_decay 0, nesterov false), " \
           "100 epochs, batch full, seed 0" in result.output
    summary = [line for line in result.output.splitlines() if line.startswith("loss ")][0]
    start, end = float(summary.split()[1]), float(summary.split()[5])
    assert start == pytest.approx(0.0287, abs=1e-4) and end < start / 100
    w = float([line for line in result.output.splitlines() if line.strip().startswith("w = ")][0].split("=")[1])
    assert 1.5 < w < 2.1


def test_train_command_resumes_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "c.npz"
    assert run("train", NEURON_PATH, "--epochs", "3", "--batch-size", "64", "--checkpoint", ckpt, "--quiet").exit_code == 0
    refused = run("train", NEURON_PATH, "--epochs", "6", "--batch-size", "64", "--checkpoint", ckpt)
    assert refused.exit_code == 1 and "use --force to overwrite it, or --resume" in refused.output
    resumed = run("train", NEURON_PATH, "--epochs", "6", "--batch-size", "64", "--checkpoint", ckpt, "--resume", "--quiet")
    whole = run("train", NEURON_PATH, "--epochs", "6", "--batch-size", "64", "--quiet")
    assert resumed.exit_code == 0 and resumed.output == whole.output


def test_train_command_never_overwrites_a_users_file_without_force(tmp_path):
    mine = tmp_path / "notes.csv"
    mine.write_text("precious\n")
    result = run("train", NEURON_PATH, "--epochs", "2", "--history", mine)
    assert result.exit_code == 1 and result.output.startswith(f"Error: {mine} exists; use --force")
    assert mine.read_text() == "precious\n"
    assert run("train", NEURON_PATH, "--epochs", "2", "--history", mine, "--force").exit_code == 0
    assert mine.read_text().startswith("epoch,loss\n1,")


def test_train_command_reports_bad_data_in_one_line(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("x,y\n1,2\n3,oops\n")
    result = run("train", NEURON_PATH, "--data", data)
    assert result.exit_code == 1
    assert result.output == f"Error: {data}: line 3, column 'y': 'oops' is not a number\n"


def test_train_command_exits_nonzero_with_the_divergence_message(tmp_path):
    model = tmp_path / "exploding.toml"
    model.write_text(EXPLODING + '[data.synthetic]\nsamples = 32\nteacher = { w = 2.0 }\ntargets = { y = "h" }\n')
    result = run("train", model, "--lr", "1000", "--epochs", "5", "--quiet")
    assert result.exit_code == 1
    assert result.output.startswith("Error: training diverged after epoch 1: exp overflowed in node 'h', first at data row")
    assert "Traceback" not in result.output
