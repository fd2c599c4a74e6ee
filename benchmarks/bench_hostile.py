"""Time and memory of every hostile model file of tests/hostile, each through the real command line.

Each file runs as ``python -m symbackprop derive FILE`` in its own process (as a user would meet it:
interpreter start and imports included), with a 10-second limit. Reported: the exit status and the
number of lines on stderr (both must be 1), whether a traceback appeared, wall time, and the process's
peak resident memory (``ru_maxrss`` from ``os.wait4``). The target is under 2 seconds per file. Unit tests
check the errors themselves (tests/test_modelfile.py) but never time them: the machines are shared.

    python benchmarks/bench_hostile.py [--slowest 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import environment, table

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "hostile"
LIMIT_S = 10.0


def run_one(path: Path, *options: str) -> dict:
    """Run ``symbackprop derive path [options]`` in a fresh interpreter: its exit status, output, time and
    peak memory (also used by bench_expanded.py)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "symbackprop", "derive", str(path), *options],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        watchdog = threading.Timer(LIMIT_S, proc.kill)
        watchdog.start()
        _, status, usage = os.wait4(proc.pid, 0)  # wait4, not wait: it also gives the child's peak memory
        seconds = time.perf_counter() - start
        watchdog.cancel()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {"file": path.name, "status": os.waitstatus_to_exitcode(status), "seconds": seconds,
            "lines": len(stderr.strip().splitlines()), "traceback": "Traceback" in stdout + stderr,
            "message": stderr.strip().splitlines()[0] if stderr.strip() else stdout.strip()[:80],
            "peak_mb": usage.ru_maxrss / 1024, "stdout": stdout}


def run(slowest: int = 5) -> str:
    rows = [run_one(path) for path in sorted(CORPUS.glob("*.toml"))]
    bad = [r for r in rows if r["status"] != 1 or r["lines"] != 1 or r["traceback"]]
    times = [r["seconds"] for r in rows]
    summary = [[len(rows), f"{statistics.median(times):.2f}", f"{max(times):.2f}",
                f"{max(r['peak_mb'] for r in rows):.0f}", "all" if not bad else f"{len(rows) - len(bad)}"]]
    text = [f"### Hostile model files ({CORPUS.relative_to(CORPUS.parent.parent)})\n",
            f"{environment()}; one process per file (interpreter start and imports included).\n",
            table(["files", "median (s)", "slowest (s)", "peak memory (MB)", "exit 1, one line, no traceback"],
                  summary), ""]
    slow = sorted(rows, key=lambda r: -r["seconds"])[:slowest]
    text += ["Slowest:\n", table(["file", "seconds", "peak MB", "message"],
                                 [[r["file"], f"{r['seconds']:.2f}", f"{r['peak_mb']:.0f}", r["message"][:90]]
                                  for r in slow]), ""]
    if bad:
        text += ["**Not a clean one-line error:**\n", table(["file", "status", "stderr lines", "traceback"],
                                                          [[r["file"], r["status"], r["lines"], r["traceback"]]
                                                           for r in bad]), ""]
    return "\n".join(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slowest", type=int, default=5, help="how many of the slowest files to list")
    print(run(parser.parse_args().slowest))
