"""Partitioned Parquet/CSV sources: which files a source names, columns named as in CSV, and one-line
errors naming the file, the column and the row. Needs pyarrow (the `dask` extra), not a cluster."""
import re

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="partitioned Parquet/CSV sources need pyarrow: "
                                           "pip install 'symbackprop[dask]'")
import pyarrow.parquet as pq  # noqa: E402

from symbackprop.data import DataError, DataWarning, load_data, table_layout  # noqa: E402
from symbackprop.modelfile import parse_model  # noqa: E402
from symbackprop.partitions import find_files, list_partitions, read_partition, write_partitions  # noqa: E402

VECTOR_MATRIX = parse_model('[inputs]\nx = { shape = [3] }\nM = { shape = [2, 3] }\ny = { shape = [2] }\n'
                            '[params]\nW = { shape = [2, 3], init = 0.1 }\n'
                            '[loss]\nL = "sum((W @ x + M @ x - y)**2) / 2"\n', "vm.toml").graph
VECTOR_MATRIX_LAYOUT = table_layout(VECTOR_MATRIX)
NEURON = table_layout({"x": (), "y": ()})


def vm_arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 3)), "M": rng.normal(size=(n, 2, 3)), "y": rng.normal(size=(n, 2))}


def read_all(source, layout) -> dict[str, np.ndarray]:
    blocks = [read_partition(p, layout) for p in list_partitions(source, layout)]
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


def test_parquet_columns_are_named_as_csv_columns(tmp_path):
    table = pa.table({"y[1]": [4.0], "x[0]": [1.0], "x[1]": [2.0], "x[2]": [3.0], "y[0]": [5.0],
                      **{f"M[{i},{j}]": [10.0 * i + j] for i in range(2) for j in range(3)}})
    pq.write_table(table, tmp_path / "one.parquet")
    data = read_all(tmp_path / "one.parquet", VECTOR_MATRIX_LAYOUT)
    assert data["x"].tolist() == [[1, 2, 3]] and data["y"].tolist() == [[5, 4]]
    assert data["M"].tolist() == [[[0, 1, 2], [10, 11, 12]]]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_written_partitions_read_back_bit_for_bit_in_order(tmp_path, fmt):
    arrays = vm_arrays(40)
    write_partitions(arrays, tmp_path, [1, 2, 30, 7], fmt, row_group_rows=8)
    data = read_all(tmp_path / f"*.{fmt}", VECTOR_MATRIX_LAYOUT)
    for name, a in arrays.items():
        assert np.array_equal(data[name], a), name


def test_csv_partitions_read_like_the_reference_csv_reader(tmp_path):
    write_partitions(vm_arrays(25), tmp_path, 1, "csv")
    fast = read_partition(list_partitions(tmp_path, VECTOR_MATRIX_LAYOUT)[0], VECTOR_MATRIX_LAYOUT)
    reference = load_data(tmp_path / "part-00000.csv", VECTOR_MATRIX)
    for name in reference:
        assert np.array_equal(fast[name], reference[name])


def test_each_parquet_row_group_is_a_partition_and_rows_are_counted_per_file(tmp_path):
    write_partitions({"x": np.arange(10.0), "y": np.zeros(10)}, tmp_path, [10], row_group_rows=4)
    parts = list_partitions(tmp_path, NEURON)
    assert [(p.row_group, p.first_row, p.rows) for p in parts] == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]
    assert str(parts[1]).endswith("part-00000.parquet (row group 1)")


def test_files_are_taken_in_natural_order_skipping_metadata_files(tmp_path):
    for i in (10, 2, 1):
        pq.write_table(pa.table({"x": [float(i)], "y": [0.0]}), tmp_path / f"p{i}.parquet")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".p1.parquet.crc").write_text("")
    assert [p.name for p in find_files(tmp_path)] == ["p1.parquet", "p2.parquet", "p10.parquet"]
    assert read_all(tmp_path, NEURON)["x"].tolist() == [1, 2, 10]


def test_columns_no_input_uses_are_named_once_for_the_whole_source(tmp_path):
    for i in range(3):
        pq.write_table(pa.table({"x": [1.0], "y": [2.0], "note": [3.0]}), tmp_path / f"p{i}.parquet")
    with pytest.warns(DataWarning, match=r"\*\.parquet: ignoring column 'note'") as record:
        list_partitions(tmp_path / "*.parquet", NEURON)
    assert len(record) == 1


@pytest.mark.parametrize("files, source, message", [
    ({}, "*.parquet", "*.parquet: no files match"),
    ({"a.parquet": None, "b.csv": "x,y\n1,2\n"}, "*", "*: mixes Parquet and CSV files"),
    ({"a.txt": "x,y\n"}, "*", "a.txt: unknown data format '.txt' (use .parquet or .csv)"),
    ({"_SUCCESS": ""}, "", "no data files in this directory"),
    ({"a.csv": "x\n1\n"}, "*.csv", "a.csv: missing column 'y' for input 'y' (expected y)"),
    ({"a.csv": "x,y,x\n1,2,3\n"}, "*.csv", "a.csv: column 'x' appears twice in the header"),
    ({"a.csv": ""}, "*.csv", "a.csv: empty file (expected a header row naming the inputs)"),
    ({"gone": None}, "gone.parquet", "gone.parquet: no such file or directory"),
])
def test_bad_sources_are_one_line_errors_naming_the_file(tmp_path, files, source, message):
    for name, text in files.items():
        if name.endswith(".parquet"):
            pq.write_table(pa.table({"x": [1.0], "y": [2.0]}), tmp_path / name)
        elif text is not None:
            (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as e:
        list_partitions(str(tmp_path / source) if source else tmp_path, NEURON)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_subdirectory_is_refused_rather_than_silently_skipped(tmp_path):
    (tmp_path / "year=2024").mkdir()
    pq.write_table(pa.table({"x": [1.0], "y": [2.0]}), tmp_path / "year=2024" / "a.parquet")
    with pytest.raises(DataError, match=re.escape("year=2024: subdirectories are not read")):
        list_partitions(tmp_path, NEURON)
    assert len(list_partitions(f"{tmp_path}/**/*.parquet", NEURON)) == 1


@pytest.mark.parametrize("columns, message", [
    ({"x": [1.0, 2.0, 3.0], "y": [0.0, np.nan, 1.0]}, "row index 5, column 'y': nan is not a finite number"),
    ({"x": [1.0, -np.inf, 3.0], "y": [0.0, 1.0, 1.0]}, "row index 5, column 'x': -inf is not a finite number"),
    ({"x": pa.array([1.0, None, 3.0]), "y": [0.0, 1.0, 1.0]}, "row index 5, column 'x': empty (null) cell"),
])
def test_non_finite_cells_name_the_file_row_and_column(tmp_path, columns, message):
    pq.write_table(pa.table({"x": [0.0] * 4, "y": [0.0] * 4}), tmp_path / "p0.parquet")
    pq.write_table(pa.concat_tables([pa.table({"x": [0.0] * 4, "y": [0.0] * 4}),
                                     pa.table({"x": pa.array(columns["x"], pa.float64()),
                                               "y": pa.array(columns["y"], pa.float64())})]),
                   tmp_path / "p1.parquet", row_group_size=4)
    parts = list_partitions(tmp_path, NEURON)
    read_partition(parts[0], NEURON)
    with pytest.raises(DataError) as e:
        read_partition(parts[-1], NEURON)
    assert str(e.value) == f"{tmp_path / 'p1.parquet'}: {message}"


def test_a_text_column_is_refused_before_reading_any_rows(tmp_path):
    pq.write_table(pa.table({"x": [1.0], "y": ["a"]}), tmp_path / "p.parquet")
    with pytest.raises(DataError, match=re.escape("p.parquet: column 'y' is not numeric (type string)")):
        list_partitions(tmp_path, NEURON)


@pytest.mark.parametrize("text, message", [
    ("x,y\n1,2\n3,abc\n", "line 3, column 'y': 'abc' is not a number"),
    ("x,y\n1,2\n3,NA\n", "line 3, column 'y': 'NA' is not a number"),
    ("x,y\n1,2\nnan,1\n", "line 3, column 'x': nan is not a finite number"),
    ("x,y\n1,2\n3\n", "line 3 has 1 cells, but the header has 2"),
    ("x,y\n", "no data rows after the header"),
])
def test_bad_csv_cells_get_the_reference_readers_line_numbers(tmp_path, text, message):
    (tmp_path / "a.csv").write_text(text)
    with pytest.raises(DataError) as e:
        read_partition(list_partitions(tmp_path, NEURON)[0], NEURON)
    assert str(e.value) == f"{tmp_path / 'a.csv'}: {message}"


def test_csv_cells_only_the_reference_reader_accepts_are_read_by_it(tmp_path):
    (tmp_path / "a.csv").write_text(" x , y \n1_000,2\n")  # Python's float() reads 1_000; pyarrow does not
    data = read_partition(list_partitions(tmp_path, NEURON)[0], NEURON)
    assert data["x"].tolist() == [1000.0] and data["y"].tolist() == [2.0]
