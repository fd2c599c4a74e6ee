"""Progress of a training run on stderr: a bar on a terminal, a line every few seconds in a log.

On a terminal the bar is redrawn in place after every epoch::

    epochs [##########----------]  50/100  loss 0.0123  elapsed 0:05  remaining 0:05

When stderr is a file or a pipe (``symbackprop train ... 2>&1 | tee log``) redrawing would fill the log
with carriage returns, so a plain line is written at most every ``interval`` seconds, and once at the end::

    epoch 50/100  loss 0.0123  elapsed 0:05  remaining 0:05

The remaining time is the mean time per epoch so far (since this run started; a resumed run counts
from the resume) times the epochs left.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

#: seconds between two progress lines when stderr is not a terminal
LINE_INTERVAL = 5.0
BAR_WIDTH = 20


def clock_text(seconds: float) -> str:
    """``0:05``, ``12:34``, ``1:02:03``."""
    s = int(round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Reports epochs ``first + 1`` to ``total`` as they complete (see the module docstring)."""

    def __init__(self, total: int, first: int = 0, stream: TextIO | None = None, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.total, self.first, self.done = total, first, first
        self.clock = clock
        self.interval = LINE_INTERVAL if interval is None else interval
        self.started = clock()
        self.last_line, self.reported = self.started, first
        self.loss: float | None = None

    def times(self) -> tuple[float, float | None]:
        """Seconds elapsed, and the estimate of seconds remaining (None before the first epoch)."""
        elapsed = self.clock() - self.started
        run = self.done - self.first
        return elapsed, (elapsed / run * (self.total - self.done) if run else None)

    def text(self) -> str:
        elapsed, remaining = self.times()
        parts = [f"loss {self.loss:.6g}"] if self.loss is not None else []
        parts.append(f"elapsed {clock_text(elapsed)}")
        parts.append(f"remaining {clock_text(remaining) if remaining is not None else '?'}")
        return "  ".join(parts)

    def bar(self) -> str:
        filled = BAR_WIDTH * self.done // self.total if self.total else BAR_WIDTH
        width = len(str(self.total))
        return f"epochs [{'#' * filled}{'-' * (BAR_WIDTH - filled)}]  {self.done:>{width}}/{self.total}  {self.text()}"

    def update(self, epoch: int, loss: float) -> None:
        """Epoch ``epoch`` is complete, with training loss ``loss``."""
        self.done, self.loss = epoch, loss
        if self.terminal:
            self.stream.write("\r" + self.bar())
            self.stream.flush()
        elif self.clock() - self.last_line >= self.interval or epoch >= self.total:
            self.line()

    def line(self) -> None:
        self.last_line, self.reported = self.clock(), self.done
        self.stream.write(f"epoch {self.done}/{self.total}  {self.text()}\n")
        self.stream.flush()

    def start(self) -> None:
        """Show the bar at its start (a terminal only: a log gets its first line after ``interval``)."""
        if self.terminal:
            self.stream.write(self.bar())
            self.stream.flush()

    def finish(self) -> None:
        """End the bar's line; a log gets a last line if the last epoch was not reported yet."""
        if self.terminal:
            self.stream.write("\n")
            self.stream.flush()
        elif self.done > self.reported:
            self.line()
