"""`symbackprop train --engine dask`: the training loop over gradients computed on a Dask cluster gives the
single-machine run's numbers (full batches), trains on data larger than a worker's memory, survives or
cleanly reports lost workers, timeouts and bad data (keeping the last checkpoint), and resumes exactly.

Most tests use conftest's LocalCluster of 2 worker processes (`--scheduler` its address); two start
their own (`--workers 2`). Every wait on a cluster is bounded (CLUSTER_TIMEOUT).
"""
import contextlib
import csv
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="the Dask engine's tests need dask, distributed and "
                                                        "pyarrow: pip install 'symbackprop[dask]'")
pytest.importorskip("pyarrow", reason="the Dask engine's tests need pyarrow: pip install 'symbackprop[dask]'")
import psutil  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from cluster import Gated, gate, wait_until, worker_killed_in_next_step  # noqa: E402
from conftest import CLUSTER_TIMEOUT, ROOT, WORKER_MEMORY  # noqa: E402
from symbackprop.cli import main  # noqa: E402
from symbackprop.compile import compile_gradient  # noqa: E402
from symbackprop.dask_train import DaskGradients, dask_dataset  # noqa: E402
from symbackprop.data import model_data  # noqa: E402
from symbackprop.distributed import (DaskData, DaskGradient, DistributedError, block_order,  # noqa: E402
                                     sample_batches)
from symbackprop.initializers import initial_params  # noqa: E402
from symbackprop.modelfile import load_model  # noqa: E402
from symbackprop.optim import make_optimizer  # noqa: E402
from symbackprop.partitions import write_partitions  # noqa: E402
from symbackprop.train import checkpoint_epoch, load_checkpoint, train  # noqa: E402

MLP = ROOT / "examples" / "mlp_sigmoid.toml"
CUTS = [1, 2, 60, 90, 100, 70, 100, 89]  # 8 partitions of the 512 samples, one of a single row
ADAM = ["--optimizer", "adam", "--lr", "0.05"]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """The sigmoid MLP's 512 samples as one .npz file (for one machine) and as 8 Parquet and 8 CSV files."""
    root = tmp_path_factory.mktemp("mlp")
    model = load_model(MLP)
    data = model_data(model.graph, model.data).train
    np.savez(root / "data.npz", **data)
    write_partitions(data, root / "parquet", CUTS)
    write_partitions(data, root / "csv", CUTS, "csv")
    return {"graph": model.graph, "data": data, "dir": root}


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def params_of(path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def history_of(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def assert_close(got: dict, expected: dict, tol=1e-10):
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=tol, atol=tol, err_msg=k)


def assert_same_history(got: list[dict], expected: list[dict], tol=1e-12):
    assert [row.keys() for row in got] == [row.keys() for row in expected]
    for a, b in zip(got, expected):
        for k in b:
            np.testing.assert_allclose(a[k], b[k], rtol=tol, atol=tol, err_msg=f"epoch {b['epoch']}, {k}")


def one_machine(tmp_path, name, *args) -> dict:
    """Train with the default engine; its saved parameters and history."""
    cli("train", *args, "--quiet", "--save-params", tmp_path / f"{name}.npz", "--history", tmp_path / f"{name}.csv")
    return {"params": params_of(tmp_path / f"{name}.npz"), "history": history_of(tmp_path / f"{name}.csv")}


def on_dask(client, tmp_path, name, *args) -> dict:
    """Train with --engine dask on conftest's cluster; its saved parameters, history and output."""
    result = cli("train", *args, "--engine", "dask", "--scheduler", client.scheduler.address, "--timeout",
                 CLUSTER_TIMEOUT, "--save-params", tmp_path / f"{name}.npz", "--history", tmp_path / f"{name}.csv")
    return {"params": params_of(tmp_path / f"{name}.npz"), "history": history_of(tmp_path / f"{name}.csv"),
            "output": result.output}


# ---- the numbers of one machine ------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", [["--optimizer", "sgd", "--lr", "2.0"], ADAM], ids=["sgd", "adam"])
def test_five_full_batch_epochs_give_the_parameters_of_one_machine(client, mlp, tmp_path, optimizer):
    cli("train", MLP, "--epochs", 0, "--seed", 11, "--save-params", tmp_path / "start.npz")  # the same start
    options = [MLP, "--epochs", 5, *optimizer, "--init-params", tmp_path / "start.npz"]
    local = one_machine(tmp_path, "local", *options, "--data", mlp["dir"] / "data.npz")
    dask = on_dask(client, tmp_path, "dask", *options, "--data", mlp["dir"] / "parquet")
    assert_close(dask["params"], local["params"])
    assert_same_history(dask["history"], local["history"])
    start = params_of(tmp_path / "start.npz")
    assert all(np.max(np.abs(local["params"][k] - start[k])) > 1e-2 for k in start)  # the epochs moved them
    assert "8 blocks kept in the memory of 2 Dask workers" in dask["output"]


def test_train_starts_its_own_local_cluster_and_closes_it(mlp, tmp_path, capfd):
    options = [MLP, "--epochs", 4, *ADAM, "--schedule", "cosine", "--set", "T_max=3"]
    local = one_machine(tmp_path, "local", *options, "--data", mlp["dir"] / "data.npz")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = cli("train", *options, "--engine", "dask", "--workers", 2, "--data", mlp["dir"] / "csv",
                 "--save-params", tmp_path / "dask.npz", "--history", tmp_path / "dask.csv")
    assert "csv: 8 blocks kept in the memory of 2 Dask workers (a local cluster)" in result.output
    assert_close(params_of(tmp_path / "dask.npz"), local["params"])
    assert_same_history(history_of(tmp_path / "dask.csv"), local["history"])
    started = lambda: [p for p in psutil.Process().children(recursive=True)
                       if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline())]
    wait_until(lambda: not started())  # the worker processes are gone
    assert capfd.readouterr().err == ""  # nothing from Dask on the process's (and the workers') stderr


def test_the_models_own_data_and_held_out_part_are_scattered_to_the_workers(client, tmp_path):
    # [data] test_fraction = 0.25 holds out 128 samples; Adam with lr 0.3 stops early (best epoch 3 of 5)
    model = tmp_path / "mlp_held_out.toml"
    model.write_text(MLP.read_text().replace("[data.synthetic]", "[data]\ntest_fraction = 0.25\n\n[data.synthetic]"))
    options = [model, "--optimizer", "adam", "--lr", 0.3, "--epochs", 30, "--patience", 2]
    local = one_machine(tmp_path, "local", *options)
    dask = on_dask(client, tmp_path, "dask", *options)
    assert "on 384 samples (synthetic (teacher) data scattered from this process: 2 blocks" in dask["output"]
    assert "128 held out" in dask["output"]
    assert "stopped early after epoch 5" in dask["output"] and "kept the parameters of epoch 3" in dask["output"]
    assert_close(dask["params"], local["params"])
    assert_same_history(dask["history"], local["history"])
    assert len(local["history"]) == 5 and "held_out_loss" in local["history"][0]


def test_held_out_partitions_give_early_stopping_as_on_one_machine(client, mlp, tmp_path):
    rows = {k: v[:384] for k, v in mlp["data"].items()}
    held = {k: v[384:] for k, v in mlp["data"].items()}
    np.savez(tmp_path / "train.npz", **rows)
    np.savez(tmp_path / "held.npz", **held)
    write_partitions(rows, tmp_path / "train", 4)
    write_partitions(held, tmp_path / "held", 3)
    options = [MLP, "--optimizer", "adam", "--lr", 0.3, "--epochs", 30, "--patience", 2]
    local = one_machine(tmp_path, "local", *options, "--data", tmp_path / "train.npz", "--held-out",
                        tmp_path / "held.npz")
    dask = on_dask(client, tmp_path, "dask", *options, "--data", tmp_path / "train", "--held-out", tmp_path / "held")
    assert "on 384 samples" in dask["output"] and "128 held out" in dask["output"]
    assert "stopped early" in dask["output"]
    assert_close(dask["params"], local["params"])
    assert_same_history(dask["history"], local["history"])


# ---- data larger than a worker's memory ----------------------------------------------------------------------
def test_eight_parquet_partitions_larger_than_a_workers_memory_train(client, tmp_path):
    # 8 files of 8 row groups, each file a 1000-row base block repeated 410 times (420 MB as float64: more
    # than a worker's 400 MB, and more than half of the two workers' memory, so the files are read at
    # every step): the mean over all rows is the mean over the base block, on which one machine trains.
    path = tmp_path / "linear.toml"
    path.write_text('name = "linear"\n[inputs]\nx = { shape = [15] }\ny = {}\n'
                    '[params]\nw = { shape = [15], init = 0.1 }\nb = {}\n[loss]\nL = "(w.T @ x + b - y)**2 / 2"\n')
    rng = np.random.default_rng(0)
    base = {"x": rng.integers(-2, 2, size=(1000, 15)) / 2.0, "y": rng.integers(0, 4, size=1000) / 4.0}
    np.savez(tmp_path / "base.npz", **base)
    rows = 410 * 1000
    first, = write_partitions({k: np.tile(v, (410,) + (1,) * (v.ndim - 1)) for k, v in base.items()},
                              tmp_path / "write", 1, row_group_rows=rows // 8)
    (tmp_path / "parts").mkdir()
    for i in range(8):
        shutil.copy(first, tmp_path / "parts" / f"p{i}.parquet")
    assert 8 * rows * 16 * 8 > WORKER_MEMORY
    pids = client.run(os.getpid)
    options = [path, "--optimizer", "sgd", "--lr", 0.1, "--epochs", 1]
    local = one_machine(tmp_path, "local", *options, "--data", tmp_path / "base.npz")
    dask = on_dask(client, tmp_path, "dask", *options, "--data", tmp_path / "parts")
    assert f"on {8 * rows} samples" in dask["output"]
    assert "64 blocks read from the files at every step by 2 Dask workers" in dask["output"]
    assert_close(dask["params"], local["params"])
    assert client.run(os.getpid) == pids  # no worker was restarted for using too much memory


# ---- faults: lost workers, timeouts, bad data ------------------------------------------------------------------
def test_a_worker_killed_mid_run_does_not_change_the_result(client, mlp):
    graph, compiled = mlp["graph"], compile_gradient(mlp["graph"])
    adam = lambda: make_optimizer("adam", lr=0.05)
    expected = train(graph, mlp["data"], optimizer=adam(), epochs=5).params
    victims = []

    def kill_after_epoch_2(row):
        if row["epoch"] == 2:
            victim = next(iter(client.run(os.getpid).items()))
            os.kill(victim[1], signal.SIGKILL)  # with the blocks it holds in memory (read again from the files)
            victims.append(victim[0])
    with dask_dataset(compiled, mlp["dir"] / "parquet", scheduler=client.scheduler.address,
                      timeout=CLUSTER_TIMEOUT) as data:
        result = train(graph, data.train, optimizer=adam(), epochs=5, on_epoch=kill_after_epoch_2)
    workers = lambda: client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.workers))
    wait_until(lambda: victims[0] not in workers() and len(workers()) == 2)
    assert result.epochs == 5
    assert_close(result.params, expected)


@contextlib.contextmanager
def gated_source(client, mlp, timeout=CLUSTER_TIMEOUT):
    """A full-batch source on the Parquet files whose gradient waits at the gate (cluster.Gated)."""
    compiled = compile_gradient(mlp["graph"])
    data = DaskData.from_files(mlp["dir"] / "parquet", compiled, client, timeout=CLUSTER_TIMEOUT)
    gate(client, True)
    with DaskGradient(Gated(compiled.loss_and_grad), data, timeout=timeout) as engine:
        yield DaskGradients(engine, compiled, full_batch=True)
    data.close()


def test_a_worker_lost_for_good_stops_the_run_with_its_checkpoint_which_resumes_to_the_same_end(client, mlp, tmp_path):
    graph = mlp["graph"]
    adam = lambda: make_optimizer("adam", lr=0.05)
    checkpoint = tmp_path / "run.npz"
    def set_failures(n):  # how often the scheduler retries a task whose worker died
        return client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", n))
    before = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
    set_failures(0)  # a task whose worker dies is not retried: Dask gives up
    try:
        with gated_source(client, mlp) as source, contextlib.ExitStack() as kill:
            def kill_in_epoch_3(row):
                if row["epoch"] == 2:
                    kill.enter_context(worker_killed_in_next_step(client))
            with pytest.raises(DistributedError) as e:
                train(graph, source, optimizer=adam(), epochs=5, checkpoint=checkpoint, on_epoch=kill_in_epoch_3)
    finally:
        set_failures(before)
    assert str(e.value).startswith("the cluster lost the work: KilledWorker: ") and "\n" not in str(e.value)
    assert checkpoint_epoch(checkpoint) == 2
    assert_close(load_checkpoint(checkpoint, graph)["params"],
                 train(graph, mlp["data"], optimizer=adam(), epochs=2).params)
    # the command line resumes it (same files, same blocks, same settings) to where one machine gets
    cli("train", MLP, "--engine", "dask", "--scheduler", client.scheduler.address, "--data", mlp["dir"] / "parquet",
        "--epochs", 5, *ADAM, "--checkpoint", checkpoint, "--resume", "--save-params", tmp_path / "end.npz")
    assert_close(params_of(tmp_path / "end.npz"), train(graph, mlp["data"], optimizer=adam(), epochs=5).params)


def test_a_step_over_the_timeout_stops_the_run_with_its_checkpoint(client, mlp, tmp_path):
    checkpoint = tmp_path / "run.npz"

    def hold_epoch_3(row):
        if row["epoch"] == 2:
            gate(client, False)
    try:
        with gated_source(client, mlp, timeout=1) as source:
            with pytest.raises(DistributedError, match=r"^the cluster did not finish within 1 s$"):
                train(mlp["graph"], source, lr=2.0, epochs=5, checkpoint=checkpoint, on_epoch=hold_epoch_3)
    finally:
        gate(client, True)  # the cancelled tasks still wait on the workers: let them end
    assert checkpoint_epoch(checkpoint) == 2
    assert_close(load_checkpoint(checkpoint, mlp["graph"])["params"],
                 train(mlp["graph"], mlp["data"], lr=2.0, epochs=2).params)


def test_bad_data_met_mid_run_is_one_line_naming_the_file_and_the_checkpoint_left(client, mlp, tmp_path):
    parts = tmp_path / "csv"
    shutil.copytree(mlp["dir"] / "csv", parts)
    checkpoint = tmp_path / "run.npz"
    victim = parts / "part-00003.csv"

    def spoil_after_epoch_2():  # the workers read the files at every step (--stream): one goes bad
        wait_until(lambda: (checkpoint_epoch(checkpoint) or 0) >= 2)
        lines = victim.read_text().splitlines(keepends=True)
        lines[7] = "nan," + lines[7].split(",", 1)[1]
        (tmp_path / "spoilt").write_text("".join(lines))
        os.replace(tmp_path / "spoilt", victim)
    spoiler = threading.Thread(target=spoil_after_epoch_2, daemon=True)
    spoiler.start()
    result = CliRunner().invoke(main, [str(a) for a in (
        "train", MLP, "--engine", "dask", "--scheduler", client.scheduler.address, "--data", parts, "--stream",
        "--epochs", 10000, "--lr", 2.0, "--checkpoint", checkpoint, "--quiet")])
    spoiler.join(CLUSTER_TIMEOUT)
    saved = checkpoint_epoch(checkpoint)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    column = victim.read_text().splitlines()[0].split(",")[0]
    assert result.output.startswith(f"Error: {victim}: line 8, column '{column}': nan is not a finite number; "
                                    f"the last checkpoint (epoch {saved}) is {checkpoint}; resume with: ")
    assert 2 <= saved < 10000
    assert_close(load_checkpoint(checkpoint, mlp["graph"])["params"],
                 train(mlp["graph"], mlp["data"], lr=2.0, epochs=saved).params)


def test_bad_data_read_by_a_worker_is_one_line_with_nothing_from_dask(mlp, tmp_path, capfd):
    parts = tmp_path / "csv"
    shutil.copytree(mlp["dir"] / "csv", parts)
    victim = parts / "part-00005.csv"
    lines = victim.read_text().splitlines(keepends=True)
    victim.write_text("".join(lines[:3] + ["1,2,oops," + lines[3].split(",", 3)[3]] + lines[4:]))
    result = CliRunner().invoke(main, ["train", str(MLP), "--engine", "dask", "--workers", "1", "--data", str(parts)])
    assert result.exit_code == 1
    assert result.output == f"Error: {victim}: line 4, column 'x[2]': 'oops' is not a number\n"
    assert capfd.readouterr().err == ""  # the worker's failed task is not logged: the line above says it all


def test_a_non_finite_loss_names_the_node_and_the_block(client, tmp_path):
    model = tmp_path / "log.toml"
    model.write_text('[inputs]\nx = {}\n[params]\nw = { init = 1.0 }\n[nodes]\nh = "log(w*x)"\n[loss]\nL = "h**2"\n')
    write_partitions({"x": np.array([1.0, 3.0, 2.0, -2.0, 5.0])}, tmp_path / "parts", [2, 3], "csv")
    result = CliRunner().invoke(main, ["train", str(model), "--engine", "dask", "--scheduler", client.scheduler.address,
                                       "--data", str(tmp_path / "parts"), "--quiet"])
    assert result.exit_code == 1
    assert result.output == ("Error: the loss is not finite before training starts: log of a non-positive value in "
                             f"node 'h', first at data row 1, in block {tmp_path / 'parts' / 'part-00001.csv'}\n")


# ---- mini-batches: whole blocks in a seeded order -----------------------------------------------------------------
def test_sample_batches_group_whole_blocks_in_the_seeded_order_up_to_the_batch_size():
    counts = [30, 30, 30, 25, 10, 5, 30]
    for epoch in (1, 2):
        batches = sample_batches(counts, seed=7, epoch=epoch, batch_size=60)
        assert np.array_equal(np.concatenate(batches), block_order(len(counts), 7, epoch))
        sizes = [sum(counts[i] for i in b) for b in batches]
        assert max(sizes) <= 60
        for b, nxt in zip(batches, batches[1:]):  # a batch closes only when the next block would not fit
            assert sum(counts[i] for i in b) + counts[nxt[0]] > 60
    assert [len(b) for b in sample_batches([100, 100], 0, 1, 10)] == [1, 1]  # a block never splits


def test_a_mini_batch_step_is_the_mean_over_the_whole_blocks_of_the_batch(client, mlp):
    graph, compiled = mlp["graph"], compile_gradient(mlp["graph"])
    data = DaskData.from_files(mlp["dir"] / "parquet", compiled, client, block_rows=64, timeout=CLUSTER_TIMEOUT)
    assert max(data.counts) <= 64 and data.total == 512
    starts = np.cumsum([0] + data.counts)
    params = initial_params(graph, 5)  # train's start: the init values drawn with its seed
    for epoch in (1, 2, 3):  # by hand: each batch's blocks' rows, averaged on one machine
        for batch in sample_batches(data.counts, 5, epoch, 100):
            rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in batch])
            grads = compiled.loss_and_grad(params, {k: v[rows] for k, v in mlp["data"].items()})[1]
            params = {k: params[k] - 2.0 * grads[k] for k in params}
    with DaskGradient(compiled, data, timeout=CLUSTER_TIMEOUT) as engine:
        result = train(graph, DaskGradients(engine, compiled, seed=5), lr=2.0, epochs=3, batch_size=100, seed=5)
    assert_close(result.params, params, tol=1e-12)
    data.close()


def test_mini_batch_training_resumes_exactly(client, mlp, tmp_path):
    options = [MLP, "--data", mlp["dir"] / "parquet", "--batch-size", 100, *ADAM, "--seed", 3]
    straight = on_dask(client, tmp_path, "straight", *options, "--epochs", 6)
    on_dask(client, tmp_path, "first", *options, "--epochs", 3, "--checkpoint", tmp_path / "run.npz")
    resumed = on_dask(client, tmp_path, "resumed", *options, "--epochs", 6, "--checkpoint", tmp_path / "run.npz",
                      "--resume")
    assert "8 blocks" in straight["output"]  # partitions of at most 100 rows stay whole
    for k, v in straight["params"].items():
        np.testing.assert_array_equal(resumed["params"][k], v, err_msg=k)
    assert resumed["history"] == straight["history"]


# ---- Ctrl-C ---------------------------------------------------------------------------------------------------------
def test_ctrl_c_stops_the_run_and_its_local_cluster_with_one_message(mlp, tmp_path):
    checkpoint = tmp_path / "run.npz"
    command = [sys.executable, "-m", "symbackprop", "train", str(MLP), "--engine", "dask", "--workers", "2", "--data",
               str(mlp["dir"] / "parquet"), "--epochs", "100000", "--lr", "2", "--checkpoint", str(checkpoint)]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_until(lambda: (checkpoint_epoch(checkpoint) or 0) >= 2 or run.poll() is not None, timeout=120)
        os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the command and its worker processes
        out, err = run.communicate(timeout=CLUSTER_TIMEOUT)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    last = err.rstrip("\n").splitlines()[-1]
    assert run.returncode == 130, err
    assert last.startswith("Interrupted during epoch ") and f"is {checkpoint}; resume with: " in last
    assert "Traceback" not in err and "distributed" not in err and out == ""
