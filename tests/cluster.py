"""Test utilities for the Dask engine's tests: bounded waits, and a worker process killed in the middle of
a step (a gradient held at a gate until the kill, so the step is certainly running when it happens)."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import distributed

from conftest import CLUSTER_TIMEOUT


def wait_until(condition, timeout=CLUSTER_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting after {timeout} s")
        time.sleep(0.05)


class Gated:
    """A gradient that waits for the event "go" first, so the test can kill a worker during the step."""

    def __init__(self, loss_and_grad):
        self.loss_and_grad = loss_and_grad

    def __call__(self, params, data):
        distributed.Event("go").wait(timeout=CLUSTER_TIMEOUT)
        return self.loss_and_grad(params, data)


def gate(client, is_open: bool) -> None:
    """Let Gated gradients run (open) or hold them (closed)."""
    go = distributed.Event("go", client=client)
    go.set() if is_open else go.clear()


def workers(client) -> list[str]:
    return client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.workers))


@contextlib.contextmanager
def worker_killed_in_next_step(client):
    """Close the gate; in the background, wait until a worker runs a (gated) task of the next step, kill
    (SIGKILL) that worker's process, then open the gate. On leaving, wait until the nanny's new worker
    has replaced it, so later tests have their 2 workers again."""
    gate(client, False)
    killed = []

    def running() -> dict[str, int]:  # the step's tasks (not those holding its parameters) each worker runs
        return client.run(lambda dask_worker: sum(str(t.key).startswith("_partial") for t in dask_worker.state.executing))

    def kill():
        try:
            seen: dict[str, int] = {}

            def some_running() -> bool:
                seen.update(running())
                return any(seen.values())
            wait_until(some_running)
            victim = next(address for address, tasks in seen.items() if tasks)
            os.kill(client.run(os.getpid)[victim], signal.SIGKILL)
            killed.append(victim)
        finally:
            gate(client, True)
    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        thread.join(CLUSTER_TIMEOUT)
        gate(client, True)
        if killed:
            wait_until(lambda: killed[0] not in workers(client) and len(workers(client)) == 2)
