"""Data-parallel gradients on a Dask LocalCluster of 2 worker processes started here: the same loss and
gradients as one process, every sample counted, data larger than a worker's memory, lost workers.

Every wait on the cluster has a timeout (TIMEOUT), so a broken cluster fails a test instead of hanging it.
The cluster (the fixture `client`) is conftest's, shared with tests/test_train_dask.py.
"""
import importlib
import linecache
import math
import os
import re
import shutil

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="the Dask engine's tests need dask, distributed and "
                                                        "pyarrow: pip install 'symbackprop[dask]'")
pytest.importorskip("pyarrow", reason="the Dask engine's tests need pyarrow: pip install 'symbackprop[dask]'")
dd = pytest.importorskip("dask.dataframe", reason="the Dask engine's tests need dask[dataframe] (pandas): "
                                                  "pip install 'symbackprop[dask]'")
import dask.array as da  # noqa: E402
import psutil  # noqa: E402

from cluster import Gated, gate, wait_until, worker_killed_in_next_step  # noqa: E402
from conftest import CLUSTER_TIMEOUT as TIMEOUT, EXAMPLES, WORKER_MEMORY  # noqa: E402
from helpers import generated_module, load_example  # noqa: E402
from symbackprop.compile import compile_gradient  # noqa: E402
from symbackprop.data import DataError, model_data  # noqa: E402
from symbackprop.distributed import (CompensatedSum, DaskData, DaskGradient, DistributedError,  # noqa: E402
                                     block_batches, block_order, connect, dask_loss_and_grad, remote_gradient)
from symbackprop.initializers import initial_params  # noqa: E402
from symbackprop.modelfile import parse_model  # noqa: E402
from symbackprop.partitions import write_partitions  # noqa: E402

VECTOR_MATRIX = parse_model(  # vector, matrix and size-1 sides: columns x[0], M[1,2], c[1,0], ...
    '[inputs]\nx = { shape = [3] }\nM = { shape = [2, 3] }\nc = { shape = [2, 1] }\ny = { shape = [2] }\n'
    '[params]\nW = { shape = [2, 3], init = "glorot" }\nb = { shape = [2], init = 0.1 }\n'
    'u = { shape = [1], init = 0.5 }\n'
    '[nodes]\nh = "tanh(W @ x + b) + M @ x + c * u"\n[loss]\nL = "sum((h - y)**2) / 2"\n', "vector_matrix.toml")


def uneven_cuts(n: int) -> list[int]:
    """The sizes of 5 partitions of n >= 10 rows, from a single row up to about half of them."""
    small = [1, 2, n // 7, n // 3]
    return small + [n - sum(small)]


def vm_data(n: int, seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": scale * rng.normal(size=(n, 3)), "M": rng.normal(size=(n, 2, 3)), "c": rng.normal(size=(n, 2, 1)),
            "y": rng.normal(size=(n, 2))}


def assert_same(got, expected, tol=1e-12):
    loss, grads = got
    ref_loss, ref_grads = expected
    np.testing.assert_allclose(loss, ref_loss, rtol=tol, atol=tol)
    assert set(grads) == set(ref_grads)
    for k in ref_grads:
        assert np.shape(grads[k]) == np.shape(ref_grads[k]), k
        np.testing.assert_allclose(grads[k], ref_grads[k], rtol=tol, atol=tol, err_msg=k)


# ---- the cluster ----------------------------------------------------------------------------------------------
def test_connect_reaches_a_running_scheduler_by_its_address(client):
    compiled = compile_gradient(VECTOR_MATRIX.graph)
    data, params = vm_data(20), initial_params(VECTOR_MATRIX.graph, 0)
    with connect(scheduler=client.scheduler.address) as other:
        assert other is not client
        assert_same(dask_loss_and_grad(compiled, params, data, other, timeout=TIMEOUT),
                    compiled.loss_and_grad(params, data))
    assert other.status == "closed" and client.status == "running"  # the cluster was not ours to close


def test_an_unreachable_scheduler_is_a_one_line_error():
    with pytest.raises(DistributedError) as e:
        with connect(scheduler="tcp://127.0.0.1:9", timeout=2):
            pass
    assert str(e.value).startswith("cannot connect to the Dask scheduler at tcp://127.0.0.1:9 (")
    assert "\n" not in str(e.value)


def test_connect_starts_a_local_cluster_of_worker_processes_and_closes_it():
    with connect(workers=1, memory_limit=WORKER_MEMORY) as c:
        pids = list(c.run(os.getpid).values())
        assert len(pids) == 1 and pids[0] != os.getpid()
    assert c.status == "closed"
    wait_until(lambda: not psutil.pid_exists(pids[0]))


# ---- the same numbers as one process -----------------------------------------------------------------------
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_full_batch_equals_one_process_on_every_example_read_from_parquet(client, tmp_path, example):
    model = load_example(example)
    compiled = compile_gradient(model.graph)
    data = model_data(model.graph, model.data).train
    params = initial_params(model.graph, 3)
    write_partitions(data, tmp_path, uneven_cuts(len(next(iter(data.values())))), row_group_rows=100)
    dask_data = DaskData.from_files(tmp_path / "*.parquet", compiled, client, timeout=TIMEOUT)
    assert dask_data.total == len(next(iter(data.values()))) and len(dask_data) >= 5
    with DaskGradient(compiled, dask_data, timeout=TIMEOUT) as engine:
        assert_same(engine.loss_and_grad(params), compiled.loss_and_grad(params, data))
    dask_data.close()


@pytest.mark.parametrize("source", ["csv", "parquet-stream", "dataframe", "dask-arrays", "numpy-blocks"])
def test_vector_and_matrix_inputs_from_every_kind_of_source(client, tmp_path, source):
    compiled = compile_gradient(VECTOR_MATRIX.graph)
    data = vm_data(301, scale=1000.0)  # +-1000 inputs saturate tanh: still finite and equal
    params = initial_params(VECTOR_MATRIX.graph, 1)
    cuts = uneven_cuts(301)
    if source == "csv":
        write_partitions(data, tmp_path, cuts, "csv")
        dask_data = DaskData.from_files(tmp_path, compiled, client, timeout=TIMEOUT)
    elif source == "parquet-stream":
        write_partitions(data, tmp_path, cuts)
        dask_data = DaskData.from_files(tmp_path, compiled, client, persist=False, block_rows=40, timeout=TIMEOUT)
    elif source == "dataframe":
        write_partitions(data, tmp_path, cuts)
        dask_data = DaskData.from_dataframe(dd.read_parquet(str(tmp_path)), compiled, client, timeout=TIMEOUT)
    elif source == "dask-arrays":
        arrays = {k: da.from_array(v, chunks=(tuple(cuts),) + v.shape[1:]) for k, v in data.items()}
        dask_data = DaskData.from_arrays(arrays, client, model=compiled, timeout=TIMEOUT)
    else:
        dask_data = DaskData.from_arrays(data, client, blocks=7, model=compiled)
    assert dask_data.total == 301
    with DaskGradient(compiled, dask_data, timeout=TIMEOUT) as engine:
        assert_same(engine.loss_and_grad(params), compiled.loss_and_grad(params, data))
    dask_data.close()


def test_a_generated_module_the_workers_cannot_import_is_sent_as_source(client, tmp_path, monkeypatch):
    model = load_example(EXAMPLES[0].parent / "mlp_sigmoid.toml")
    path = generated_module(EXAMPLES[0].parent / "mlp_sigmoid.toml", tmp_path, "grad_mlp_here_only.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("grad_mlp_here_only")
    assert not any(client.run(lambda: importlib.util.find_spec("grad_mlp_here_only") is not None).values())
    remote, layout = remote_gradient(module.loss_and_grad)
    assert remote.source == path.read_text() and remote.function is None
    assert [(q.name, q.shape) for q in layout] == [("x", (3,)), ("y", (2,))]  # from the module's INPUTS
    data = model_data(model.graph, model.data).train
    params = initial_params(model.graph, 0)
    got = dask_loss_and_grad(module, params, {k: da.from_array(v, chunks=100) for k, v in data.items()},
                             client, timeout=TIMEOUT)
    assert_same(got, module.loss_and_grad(params, data))
    path.write_text(path.read_text().replace("loss = float(", "loss = 2 * float("))  # edited since imported
    linecache.checkcache(str(path))
    assert remote_gradient(module)[0].source is None  # so the function as imported is pickled instead


def test_any_callable_with_the_contract_is_pickled_to_the_workers(client):
    def least_squares(params, data):  # a closure: not importable on the workers
        r = data["x"] @ params["w"] - data["y"]
        return float(np.mean(r ** 2) / 2), {"w": data["x"].T @ r / len(r)}
    rng = np.random.default_rng(5)
    data = {"x": rng.normal(size=(97, 4)), "y": rng.normal(size=97)}
    params = {"w": rng.normal(size=4)}
    parts = [{k: v[a:b] for k, v in data.items()} for a, b in [(0, 1), (1, 50), (50, 97)]]
    assert_same(dask_loss_and_grad(least_squares, params, parts, client, timeout=TIMEOUT),
                least_squares(params, data))


def test_five_full_batch_descent_steps_equal_one_process(client, tmp_path):
    model = load_example(EXAMPLES[0].parent / "mlp_sigmoid.toml")
    compiled = compile_gradient(model.graph)
    data = model_data(model.graph, model.data).train
    write_partitions(data, tmp_path, uneven_cuts(512))
    dask_data = DaskData.from_files(tmp_path, compiled, client, timeout=TIMEOUT)
    local = distributed_ = initial_params(model.graph, 0)
    with DaskGradient(compiled, dask_data, timeout=TIMEOUT) as engine:
        for _ in range(5):
            local = {k: v - 2.0 * compiled.loss_and_grad(local, data)[1][k] for k, v in local.items()}
            grads = engine.loss_and_grad(distributed_)[1]
            distributed_ = {k: v - 2.0 * grads[k] for k, v in distributed_.items()}
    for k in local:
        np.testing.assert_allclose(distributed_[k], local[k], rtol=1e-10, atol=1e-10, err_msg=k)
        assert np.max(np.abs(local[k] - initial_params(model.graph, 0)[k])) > 1e-3  # the steps moved
    dask_data.close()


def test_evaluate_gives_the_mean_loss_and_accuracy_over_all_blocks(client):
    model = load_example(EXAMPLES[0].parent / "iris.toml")
    compiled = compile_gradient(model.graph)
    data = model_data(model.graph, model.data).train
    params = initial_params(model.graph, 0)
    values = compiled.forward(params, data)
    truth = np.mean(values["p"].argmax(axis=1) == data["y"].argmax(axis=1))
    dask_data = DaskData.from_arrays(data, client, blocks=5)
    with DaskGradient(compiled, dask_data, timeout=TIMEOUT) as engine:
        row = engine.evaluate(params, predict="p", target="y")
    assert row["accuracy"] == truth
    np.testing.assert_allclose(row["loss"], np.mean(values["L"]), rtol=1e-12)


def test_compensated_sums_are_exact_whatever_the_order_and_infinite_like_a_plain_sum():
    rng = np.random.default_rng(0)
    terms = rng.normal(size=(1000, 3)) * 10.0 ** rng.integers(-8, 9, size=(1000, 1))
    exact = [math.fsum(terms[:, j]) for j in range(3)]
    for order in (np.arange(1000), rng.permutation(1000)):
        total = CompensatedSum()
        for t in terms[order]:
            total.add(t)
        np.testing.assert_array_equal(total.value(), exact)
    infinite = CompensatedSum()
    for t in (1.0, np.inf, 2.0):
        infinite.add(t)
    assert infinite.value() == np.inf


def test_closing_one_data_set_leaves_another_on_the_same_files_intact(client, tmp_path):
    compiled = compile_gradient(VECTOR_MATRIX.graph)
    data = vm_data(40)
    write_partitions(data, tmp_path, 4)
    first = DaskData.from_files(tmp_path, compiled, client, timeout=TIMEOUT)
    second = DaskData.from_files(tmp_path, compiled, client, timeout=TIMEOUT)
    first.close()
    params = initial_params(VECTOR_MATRIX.graph, 0)
    with DaskGradient(compiled, second, timeout=TIMEOUT) as engine:
        assert_same(engine.loss_and_grad(params), compiled.loss_and_grad(params, data))
    second.close()


# ---- mini-batches of blocks --------------------------------------------------------------------------------
def test_block_order_depends_on_seed_and_epoch_only():
    first = block_order(10, seed=3, epoch=1)
    assert sorted(first.tolist()) == list(range(10))
    assert np.array_equal(first, block_order(10, seed=3, epoch=1))
    assert not np.array_equal(first, block_order(10, seed=3, epoch=2))
    assert not np.array_equal(first, block_order(10, seed=4, epoch=1))
    batches = block_batches(10, seed=3, epoch=1, blocks_per_batch=4)
    assert [len(b) for b in batches] == [4, 4, 2] and np.array_equal(np.concatenate(batches), first)


def test_a_batch_of_blocks_gives_the_mean_over_its_samples(client):
    compiled = compile_gradient(VECTOR_MATRIX.graph)
    data = vm_data(120, seed=2)
    params = initial_params(VECTOR_MATRIX.graph, 0)
    dask_data = DaskData.from_arrays(data, client, block_rows=25)  # blocks of 24 rows
    assert dask_data.counts == [24] * 5
    with DaskGradient(compiled, dask_data, timeout=TIMEOUT) as engine:
        for batch in engine.batches(seed=0, epoch=0, blocks_per_batch=2):
            rows = np.concatenate([np.arange(24 * i, 24 * (i + 1)) for i in batch])
            assert_same(engine.loss_and_grad(params, batch),
                        compiled.loss_and_grad(params, {k: v[rows] for k, v in data.items()}))
    dask_data.close()


# ---- bad data, and never a partial sum -----------------------------------------------------------------------
def test_bad_data_on_a_worker_is_a_one_line_error_naming_file_row_and_column(client, tmp_path):
    data = vm_data(50)
    data["M"][33, 1, 2] = np.nan
    write_partitions(data, tmp_path, [30, 20])
    with pytest.raises(DataError) as e:
        DaskData.from_files(tmp_path, VECTOR_MATRIX.graph, client, timeout=TIMEOUT)
    where = tmp_path / "part-00001.parquet"
    assert str(e.value) == f"{where}: row index 3, column 'M[1,2]': nan is not a finite number"


def test_arrays_from_this_process_are_checked_against_the_gradients_inputs(client):
    compiled = compile_gradient(VECTOR_MATRIX.graph)
    data = vm_data(10)
    data["y"][7, 1] = np.inf
    with pytest.raises(DataError, match=re.escape("arrays: 'y' row index 7 holds inf (data must be finite numbers)")):
        dask_loss_and_grad(compiled, initial_params(VECTOR_MATRIX.graph, 0), data, client, timeout=TIMEOUT)


def test_a_block_that_shrank_since_loading_refuses_the_step(client, tmp_path):
    data = vm_data(30)
    paths = write_partitions(data, tmp_path, [10, 20], "csv")
    compiled = compile_gradient(VECTOR_MATRIX.graph)
    dask_data = DaskData.from_files(tmp_path, compiled, client, persist=False, timeout=TIMEOUT)
    lines = paths[1].read_text().splitlines(keepends=True)
    paths[1].write_text("".join(lines[:-5]))  # the file loses 5 rows between loading and the step
    with DaskGradient(compiled, dask_data, timeout=TIMEOUT) as engine:
        with pytest.raises(DistributedError, match=r"part-00001\.csv gave 15 samples, expected 20: the step is refu"):
            engine.loss_and_grad(initial_params(VECTOR_MATRIX.graph, 0))


def test_data_larger_than_a_workers_memory_limit_streams_from_parquet(client, tmp_path):
    # 8 files of 8 row groups each, every file a 1000-row base block repeated 410 times: the mean over
    # all rows is the mean over the base block, computed here. On disk a few MB (dictionary encoding).
    model = parse_model('[inputs]\nx = { shape = [15] }\ny = {}\n[params]\nw = { shape = [15], init = 0.1 }\n'
                        'b = {}\n[loss]\nL = "(w.T @ x + b - y)**2 / 2"\n', "linear.toml")
    compiled = compile_gradient(model.graph)
    rng = np.random.default_rng(0)
    base = {"x": rng.integers(-2, 2, size=(1000, 15)) / 2.0, "y": rng.integers(0, 4, size=1000) / 4.0}
    rows = 410 * 1000
    first, = write_partitions({name: np.tile(v, (410,) + (1,) * (v.ndim - 1)) for name, v in base.items()},
                              tmp_path / "write", 1, row_group_rows=rows // 8)
    for i in range(8):
        shutil.copy(first, tmp_path / f"p{i}.parquet")
    assert 8 * rows * 16 * 8 > WORKER_MEMORY and 8 * first.stat().st_size < 20e6  # 420 MB as float64
    pids = client.run(os.getpid)
    dask_data = DaskData.from_files(tmp_path / "*.parquet", compiled, client, persist=False, timeout=TIMEOUT)
    assert dask_data.total == 8 * rows and len(dask_data) == 64
    params = initial_params(model.graph, 0)
    with DaskGradient(compiled, dask_data, timeout=TIMEOUT) as engine:
        assert_same(engine.loss_and_grad(params), compiled.loss_and_grad(params, base))
    assert client.run(os.getpid) == pids  # no worker was restarted for using too much memory


# ---- timeouts and lost workers ---------------------------------------------------------------------------------
def kill_a_worker_during_a_step(client, engine, params):
    """Submit a step, kill (SIGKILL) a worker process while it runs one of the step's tasks, then let the
    step go on."""
    with worker_killed_in_next_step(client) as killed:
        result = engine.submit(params).result(TIMEOUT)
    assert killed, "no worker was killed"
    return result


def test_a_step_over_its_timeout_ends_with_a_one_line_error(client):
    compiled = compile_gradient(VECTOR_MATRIX.graph)
    dask_data = DaskData.from_arrays(vm_data(20), client, blocks=2)
    gate(client, False)
    try:
        with DaskGradient(Gated(compiled.loss_and_grad), dask_data, timeout=1) as engine:
            with pytest.raises(DistributedError, match=r"^the cluster did not finish within 1 s$"):
                engine.loss_and_grad(initial_params(VECTOR_MATRIX.graph, 0))
    finally:
        gate(client, True)  # the cancelled tasks still wait on the workers: let them end
    dask_data.close()


@pytest.mark.parametrize("source", ["parquet", "numpy-blocks"])
def test_a_worker_killed_during_a_step_does_not_change_the_result(client, tmp_path, source):
    compiled = compile_gradient(VECTOR_MATRIX.graph)
    data = vm_data(200, seed=4)
    params = initial_params(VECTOR_MATRIX.graph, 0)
    if source == "parquet":  # Dask reads the lost blocks again from their files
        write_partitions(data, tmp_path, 8)
        dask_data = DaskData.from_files(tmp_path, compiled, client, timeout=TIMEOUT)
    else:  # blocks scattered from this process are scattered again from it
        dask_data = DaskData.from_arrays(data, client, blocks=8)
    with DaskGradient(Gated(compiled.loss_and_grad), dask_data, timeout=TIMEOUT) as engine:
        assert_same(kill_a_worker_during_a_step(client, engine, params), compiled.loss_and_grad(params, data))
    dask_data.close()


def test_a_step_dask_gives_up_on_ends_with_a_one_line_error(client, tmp_path):
    compiled = compile_gradient(VECTOR_MATRIX.graph)
    data = vm_data(200, seed=4)
    write_partitions(data, tmp_path, 8)
    dask_data = DaskData.from_files(tmp_path, compiled, client, timeout=TIMEOUT)
    def set_failures(n):  # how often the scheduler retries a task whose worker died
        return client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", n))
    before = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
    set_failures(0)  # a task whose worker dies is not retried
    try:
        with DaskGradient(Gated(compiled.loss_and_grad), dask_data, timeout=TIMEOUT) as engine:
            with pytest.raises(DistributedError) as e:
                kill_a_worker_during_a_step(client, engine, initial_params(VECTOR_MATRIX.graph, 0))
    finally:
        set_failures(before)
    assert str(e.value).startswith("the cluster lost the work: KilledWorker: ") and "\n" not in str(e.value)
    dask_data.close()
