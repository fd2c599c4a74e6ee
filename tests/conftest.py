"""Shared test set-up: shape-checked generated code, the `slow` marker, hypothesis profiles, the examples
directory, and the Dask cluster the engine's tests share (started once, by the first test that asks for it).

Every test runs generated code in the shape-checked mode (docs/testing.md): each assignment checks that its
array has the shape the derivation inferred, so a wrong broadcast fails where it happens instead of
producing numbers that a batch size happens to hide.
"""
import os
import sys
from pathlib import Path

import pytest

os.environ["SYMBACKPROP_CHECK_SHAPES"] = "1"  # read by symbackprop.codegen.shape_checks_default

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
sys.path.insert(0, str(Path(__file__).parent))

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("default", max_examples=40, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("long", max_examples=1200, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("SYMBACKPROP_PROFILE", "default"))
except ImportError:  # pragma: no cover
    pass


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SYMBACKPROP_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set SYMBACKPROP_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


CLUSTER_TIMEOUT = 60  # seconds, for every wait on the test cluster: a broken cluster fails a test, never hangs it
WORKER_MEMORY = 400e6  # bytes: each test worker's memory limit; low, for the larger-than-memory tests (a worker
# process with NumPy, SymPy, pyarrow and pandas loaded holds about 230 MB; Dask pauses one at 80 % of its limit)


@pytest.fixture(scope="session")
def client(tmp_path_factory):
    """A Client of a LocalCluster of 2 worker processes (one thread each), shared by every Dask test."""
    distributed = pytest.importorskip("distributed", reason="the Dask engine's tests need dask, distributed and "
                                                            "pyarrow: pip install 'symbackprop[dask]'")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       memory_limit=WORKER_MEMORY, dashboard_address=":0",
                                       local_directory=str(tmp_path_factory.mktemp("dask-workers")))
    with cluster, distributed.Client(cluster, timeout=CLUSTER_TIMEOUT) as c:
        c.wait_for_workers(2, timeout=CLUSTER_TIMEOUT)
        yield c
