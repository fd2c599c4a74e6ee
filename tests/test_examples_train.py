"""The layer examples train to the accuracy docs/layers.md reports, with the settings in their own files.

Each test runs what ``symbackprop train examples/<name>.toml`` runs: the model's [data] and [train]
tables, through the library. The real data sets are scikit-learn's bundled copies (no download).
"""
from __future__ import annotations

import pytest

from conftest import ROOT
from symbackprop.data import model_data
from symbackprop.modelfile import load_model
from symbackprop.train import TrainResult, train, train_settings


def train_example(name: str) -> TrainResult:
    path = ROOT / "examples" / f"{name}.toml"
    model = load_model(path)
    settings = train_settings(model.train, model.graph, str(path))
    data = model_data(model.graph, model.data, source=str(path))
    return train(model.graph, data, lr=settings["lr"], epochs=settings["epochs"],
                 batch_size=settings["batch_size"], seed=settings["seed"],
                 predict=settings["predict"], target=settings["target"])


@pytest.fixture(scope="module")
def sklearn():
    return pytest.importorskip("sklearn")


def test_iris_reaches_95_percent_training_accuracy(sklearn):
    result = train_example("iris")
    assert result.initial["accuracy"] < 0.9
    assert result.last["accuracy"] >= 0.95
    assert result.final_loss < 0.1 * result.initial_loss


def test_digits_reaches_95_percent_held_out_accuracy(sklearn):
    result = train_example("digits")
    assert result.initial["held_out_accuracy"] < 0.5
    assert result.last["held_out_accuracy"] >= 0.95
    assert result.last["held_out_loss"] < 0.1 * result.initial["held_out_loss"]


def test_breast_cancer_logistic_regression_classifies_held_out_samples(sklearn):
    result = train_example("breast_cancer")
    assert result.initial_loss == pytest.approx(0.6931471805599453)  # log 2: w = 0, b = 0
    assert result.last["accuracy"] >= 0.95
    assert result.last["held_out_accuracy"] >= 0.95


@pytest.mark.parametrize("name, factor", [("mlp_sigmoid", 0.05), ("skip_connection", 0.05),
                                          ("tied_autoencoder", 0.7), ("layer_norm", 0.05), ("rms_norm", 0.01),
                                          ("cosine_similarity", 0.01)])
def test_synthetic_layer_examples_reduce_their_loss(name, factor):
    """The teacher-generated sets are fitted closely; the autoencoder (6 -> 3 -> 6 on N(0, 1) data) can
    keep only about half the variance, so its loss goes from about 2.6 towards 1.5."""
    result = train_example(name)
    assert result.final_loss < factor * result.initial_loss
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in zip(result.losses, result.losses[1:]))
