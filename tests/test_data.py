"""Training data: CSV and .npz files, the synthetic teacher set, scikit-learn data sets, and the
one-line errors that refuse bad data before any training starts."""
import re

import numpy as np
import pytest

from conftest import ROOT
from symbackprop import ModelError
from symbackprop.data import DataError, DataWarning, load_data, model_data
from symbackprop.graph import UserError
from symbackprop.modelfile import load_model, parse_model

NEURON = load_model(ROOT / "examples" / "neuron.toml")
CLASSIFIER = parse_model('[inputs]\nx = { shape = [2] }\ny = { shape = [3], onehot = true }\n'
                         '[params]\nW = { shape = [3, 2] }\n[nodes]\np = "softmax(W @ x)"\n'
                         '[loss]\nL = "-sum(y*log(p))"\n', "classifier.toml")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- CSV ------------------------------------------------------------------------------------------------
def test_csv_scalar_columns_are_named_like_the_inputs(tmp_path):
    data = load_data(write(tmp_path, "d.csv", "x,y\n1,0.5\n-2, 0.25\n"), NEURON.graph)
    assert data["x"].tolist() == [1.0, -2.0] and data["y"].tolist() == [0.5, 0.25]
    assert data["x"].dtype == np.float64


def test_csv_vector_columns_use_brackets_and_matrix_columns_row_and_column(tmp_path):
    m = parse_model('[inputs]\nv = { shape = [2] }\nM = { shape = [2, 2] }\n[params]\nw = {}\n'
                    '[loss]\nL = "w*sum(v) + sum(M @ v)"\n', "vm.toml")
    path = write(tmp_path, "d.csv", 'v[1],v[0],"M[0,0]","M[0,1]","M[1,0]","M[1,1]"\n2,1,1,2,3,4\n')
    data = load_data(path, m.graph)
    assert data["v"].tolist() == [[1, 2]] and data["M"].tolist() == [[[1, 2], [3, 4]]]


def test_csv_columns_no_input_uses_are_ignored_with_a_warning(tmp_path):
    with pytest.warns(DataWarning, match=r"d\.csv: ignoring column 'note'"):
        data = load_data(write(tmp_path, "d.csv", "x,note,y\n1,7,2\n"), NEURON.graph)
    assert set(data) == {"x", "y"}


@pytest.mark.parametrize("content, message", [
    ("", "d.csv: empty file (expected a header row naming the inputs)"),
    ("x,y\n", "d.csv: no data rows after the header"),
    ("x\n1\n", "d.csv: missing column 'y' for input 'y' (expected y)"),
    ("x,y\n1,2\n3,abc\n", "d.csv: line 3, column 'y': 'abc' is not a number"),
    ("x,y\n1,2\n3,\n", "d.csv: line 3, column 'y': '' is not a number"),
    ("x,y\n1,2\nnan,1\n", "d.csv: line 3, column 'x': nan is not a finite number"),
    ("x,y\n1,inf\n", "d.csv: line 2, column 'y': inf is not a finite number"),
    ("x,y\n1,2\n3\n", "d.csv: line 3 has 1 cells, but the header has 2"),
    ("x,y,x\n1,2,3\n", "d.csv: column 'x' appears twice in the header"),
])
def test_bad_csv_is_refused_naming_file_line_and_column(tmp_path, content, message):
    with pytest.raises(DataError) as e:
        load_data(write(tmp_path, "d.csv", content), NEURON.graph)
    assert str(e.value) == f"{tmp_path / message}"


def test_csv_of_a_vector_input_lists_the_columns_it_expects(tmp_path):
    with pytest.raises(DataError, match=re.escape("missing column 'x[1]' for input 'x' (expected x[0] ... x[1])")):
        load_data(write(tmp_path, "d.csv", "x[0],y[0],y[1],y[2]\n1,1,0,0\n"), CLASSIFIER.graph)


def test_one_hot_rows_must_sum_to_one(tmp_path):
    path = write(tmp_path, "d.csv", "x[0],x[1],y[0],y[1],y[2]\n1,2,0,1,0\n1,2,0.5,0.2,0\n")
    with pytest.raises(DataError, match=re.escape("d.csv: one-hot input 'y' line 3 sums to 0.7, not 1")):
        load_data(path, CLASSIFIER.graph)


# ---- npz ------------------------------------------------------------------------------------------------
def test_npz_arrays_named_like_the_inputs(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(3.0), y=np.ones(3, dtype=np.int64))
    data = load_data(tmp_path / "d.npz", NEURON.graph)
    assert data["x"].tolist() == [0, 1, 2] and data["y"].dtype == np.float64


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros(3)}, "no data for input 'y'"),
    ({"x": np.zeros(3), "y": np.zeros(4)}, "'y' has 4 rows, but 'x' has 3"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(3)}, "'x' has shape (3, 2), expected (N)"),
    ({"x": np.array([0.0, np.inf, 1]), "y": np.zeros(3)}, "'x' row index 1 holds inf (data must be finite numbers)"),
    ({"x": np.zeros(3), "y": np.array([0.0, 1.0, np.nan])}, "'y' row index 2 holds nan"),
    ({"x": np.array(["a", "b"]), "y": np.zeros(2)}, "'x' is not numeric (dtype <U1)"),
    ({"x": np.zeros(0), "y": np.zeros(0)}, "'x' has no rows"),
    ({}, "empty file (no arrays)"),
])
def test_bad_npz_is_refused_naming_the_array_and_row(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError) as e:
        load_data(tmp_path / "d.npz", NEURON.graph)
    assert str(e.value).startswith(f"{tmp_path / 'd.npz'}: {message}")


def test_npz_with_a_vector_input_checks_its_shape(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 3)), y=np.eye(3)[[0, 1, 2, 0, 1]])
    with pytest.raises(DataError, match=re.escape("'x' has shape (5, 3), expected (N, 2)")):
        load_data(tmp_path / "d.npz", CLASSIFIER.graph)


@pytest.mark.parametrize("name, content, message", [
    ("d.txt", "x,y\n", "unknown data format '.txt' (use .csv or .npz)"),
    ("d.npz", "not a zip", "not a readable .npz file"),
])
def test_unreadable_files(tmp_path, name, content, message):
    with pytest.raises(DataError, match=re.escape(message)):
        load_data(write(tmp_path, name, content), NEURON.graph)


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_data(tmp_path / "gone.csv", NEURON.graph)


# ---- synthetic teacher data ------------------------------------------------------------------------------
def test_synthetic_targets_are_the_teachers_outputs():
    data = model_data(NEURON.graph, NEURON.data).train
    x, y = data["x"], data["y"]
    assert x.shape == (256,) and abs(x.mean()) < 0.2 and x.std() == pytest.approx(1.0, abs=0.1)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-(2.0 * x - 1.0))), rtol=1e-12)
    again = model_data(NEURON.graph, NEURON.data).train
    assert np.array_equal(again["x"], x)


def test_synthetic_one_hot_inputs_get_random_classes():
    table = {"synthetic": {"samples": 50, "seed": 1}}
    data = model_data(CLASSIFIER.graph, table).train
    assert data["y"].shape == (50, 3) and np.all(data["y"].sum(axis=1) == 1) and set(data["y"].ravel()) == {0, 1}


@pytest.mark.parametrize("synthetic, message", [
    ({"samples": 0}, "[data.synthetic] samples: must be a whole number from 1 to 10000000, got 0"),
    ({"teacher": {"q": 1}}, "[data.synthetic] teacher: 'q' is not a parameter"),
    ({"targets": {"y": "nothing"}}, "[data.synthetic] targets y: 'nothing' is not a node of the model"),
    ({"targets": {"w": "a"}}, "[data.synthetic] targets: 'w' is not an input"),
    ({"noise": 0.1}, "[data.synthetic] noise: unknown key"),
    ({"teacher": {"w": "xavier"}}, "[data.synthetic] teacher w: unknown init 'xavier'"),
])
def test_bad_synthetic_tables_name_the_key(synthetic, message):
    with pytest.raises(ModelError) as e:
        model_data(NEURON.graph, {"synthetic": synthetic})
    assert str(e.value).startswith(message)


# ---- the [data] table --------------------------------------------------------------------------------------
def test_data_file_is_read_relative_to_the_model_and_split_with_a_seed(tmp_path):
    write(tmp_path, "points.csv", "x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    table = {"file": "points.csv", "test_fraction": 0.25, "seed": 4}
    d = model_data(NEURON.graph, table, source=str(tmp_path / "model.toml"))
    assert len(d.train["x"]) == 15 and len(d.held_out["x"]) == 5
    assert sorted(d.train["x"].tolist() + d.held_out["x"].tolist()) == list(range(20))
    again = model_data(NEURON.graph, table, source=str(tmp_path / "model.toml"))
    assert np.array_equal(again.held_out["x"], d.held_out["x"])


def test_a_data_file_given_directly_replaces_the_models_source(tmp_path):
    path = write(tmp_path, "d.csv", "x,y\n1,0\n2,1\n")
    d = model_data(NEURON.graph, NEURON.data, path)
    assert d.train["x"].tolist() == [1, 2] and d.held_out is None


@pytest.mark.parametrize("table, message", [
    ({"sklearn": "iris", "synthetic": {}}, "[data] sklearn: give one data source, not both 'synthetic' and 'sklearn'"),
    ({"source": "x.csv"}, "[data] source: unknown key (allowed: features, file, labels, seed, sklearn, synthetic, "
                          "test_fraction)"),
    ({"synthetic": {}, "test_fraction": 1.0}, "[data] test_fraction: must be a number from 0 up to (not including) 1"),
    ({"synthetic": {}, "features": "x"}, "[data] features: only used with sklearn"),
    ({"sklearn": "mnist"}, "[data] sklearn: unknown data set 'mnist'"),
    ({"file": 3}, "[data] file: must be a file name in quotes"),
])
def test_bad_data_tables_name_the_key(table, message):
    with pytest.raises(ModelError) as e:
        model_data(NEURON.graph, table)
    assert str(e.value).startswith(message)


def test_no_data_at_all_is_a_clear_error():
    with pytest.raises(DataError, match=r"no data: give --data FILE \(\.csv or \.npz\), or a \[data\] table"):
        model_data(NEURON.graph, {})


# ---- scikit-learn ---------------------------------------------------------------------------------------------
IRIS = parse_model('[inputs]\nx = { shape = [4] }\ny = { shape = [3], onehot = true }\n[params]\n'
                   'W = { shape = [3, 4] }\n[nodes]\np = "softmax(W @ x)"\n[loss]\nL = "-sum(y*log(p))"\n', "iris.toml")


def test_iris_is_standardised_one_hot_and_split():
    pytest.importorskip("sklearn")
    d = model_data(IRIS.graph, {"sklearn": "iris", "features": "x", "labels": "y", "test_fraction": 0.2, "seed": 0})
    assert d.train["x"].shape == (120, 4) and d.held_out["x"].shape == (30, 4)
    np.testing.assert_allclose(d.train["x"].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(d.train["x"].std(axis=0), 1, rtol=1e-12)
    assert np.all(d.train["y"].sum(axis=1) == 1) and d.train["y"].sum() + d.held_out["y"].sum() == 150


def test_breast_cancer_labels_can_be_a_scalar():
    pytest.importorskip("sklearn")
    g = parse_model('[inputs]\nx = { shape = [30] }\ny = {}\n[params]\nw = { shape = [30] }\n[nodes]\n'
                    'p = "sigmoid(sum(w*x))"\n[loss]\nL = "(p - y)**2"\n', "bc.toml").graph
    d = model_data(g, {"sklearn": "breast_cancer"})
    assert d.train["y"].shape == (569,) and set(d.train["y"]) == {0.0, 1.0} and d.held_out is None


@pytest.mark.parametrize("model, message", [
    ('x = { shape = [3] }\ny = { shape = [3] }', "[data] features: 'iris' has 4 features, so input 'x' needs shape [4], not [3]"),
    ('x = { shape = [4] }\ny = {}', "[data] labels: 'iris' has 3 classes, so input 'y' needs shape [3] (one-hot), not []"),
])
def test_sklearn_shapes_must_fit_the_inputs(model, message):
    pytest.importorskip("sklearn")
    g = parse_model(f'[inputs]\n{model}\n[params]\nw = {{}}\n[loss]\nL = "w*sum(x)"\n', "m.toml").graph
    with pytest.raises(ModelError) as e:
        model_data(g, {"sklearn": "iris"})
    assert str(e.value) == message


def test_sklearn_missing_is_a_user_error_with_an_install_hint_for_a_package_and_a_checkout(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(UserError) as e:
        model_data(IRIS.graph, {"sklearn": "iris"})
    assert str(e.value) == ("[data] sklearn = \"iris\" needs scikit-learn: pip install 'symbackprop[data]' "
                            "(or, in a checkout, pip install -e '.[data]')")
