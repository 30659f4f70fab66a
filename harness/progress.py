"""Progress of a long run, for command-line front ends (run, campaign, replay, hunt...).

On a terminal: a live rich bar. Anywhere else (a CI log, a pipe, a file): one plain
line every ``interval_s`` seconds (10 by default) with done/total, failures, the rate
and the time left, so a nightly run in CI is never silent for minutes. The engine
itself never prints; it reports through callbacks that call ``advance``. Thread-safe:
``advance`` and ``detection`` may be called from worker threads.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.terminal import si

#: seconds between two progress lines when not on a terminal
INTERVAL_S = 10.0


def is_interactive(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that can redraw a live bar (a TTY, not TERM=dumb)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``2h07m``: short and unambiguous in a log line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class RunProgress:
    """The progress of ``total`` items (trials) of a run called ``label``.

    Use as a context manager around the run and call ``advance`` as each item ends.
    ``done`` items were finished before this process started (a resumed journal):
    they count towards done/total but not towards the rate. ``enabled=False`` shows
    nothing (``--quiet``). ``live`` defaults to whether ``stream`` is a terminal.
    """

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None,
                 live: bool | None = None, enabled: bool = True, done: int = 0,
                 unit: str = "trials", interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.live = is_interactive(self.stream) if live is None else live
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._resumed = done
        self._done = done
        self._failed = 0
        self._ops = 0
        self._detections = 0
        self._t0 = clock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    # -- counters -------------------------------------------------------------------

    def advance(self, *, failed: bool = False, ops: int = 0) -> None:
        """One item finished (``failed`` if it missed its expectations; ``ops`` it ran)."""
        with self._lock:
            self._done += 1
            self._failed += bool(failed)
            self._ops += ops
        self._refresh()

    def detection(self, count: int = 1) -> None:
        """The allocator reported ``count`` detections (shown on the live bar)."""
        with self._lock:
            self._detections += count
        self._refresh()

    @property
    def done(self) -> int:
        """Items finished, those of a resumed journal included."""
        with self._lock:
            return self._done

    @property
    def failed(self) -> int:
        """Items that missed their expectations in this process."""
        with self._lock:
            return self._failed

    def status_line(self) -> str:
        """``smoke: 37/200 trials (18%), 1 failed, 2.1 trials/s, 1m18s left, 17s elapsed``."""
        with self._lock:
            done, failed = self._done, self._failed
            ran = done - self._resumed
        elapsed = max(self._clock() - self._t0, 0.0)
        pct = f" ({100 * done // self.total}%)" if self.total else ""
        parts = [f"{self.label}: {done}/{self.total} {self.unit}{pct}", f"{failed} failed"]
        if ran and elapsed > 0:
            per_s = ran / elapsed
            parts.append(f"{per_s:.1f} {self.unit}/s" if per_s >= 1
                         else f"{elapsed / ran:.1f} s per {self.unit.rstrip('s')}")
            left = max(self.total - done, 0) / per_s
            parts.append(f"{format_duration(left)} left")
        else:
            parts.append("time left unknown")
        parts.append(f"{format_duration(elapsed)} elapsed")
        return ", ".join(parts)

    # -- display --------------------------------------------------------------------

    def __enter__(self) -> RunProgress:
        self._t0 = self._clock()
        if not self.enabled:
            return self
        if self.live:
            console = Console(file=self.stream, force_terminal=True, soft_wrap=True)
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[extra]}"), TimeElapsedColumn(),
                TextColumn("left"), TimeRemainingColumn(), console=console)
            self._task = self._bar.add_task(self.label, total=self.total,
                                            completed=self._done, extra="")
            self._bar.start()
        else:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self._refresh()
            self._bar.stop()

    def _tick(self) -> None:
        """Not a terminal: a status line every ``interval_s`` until the run ends."""
        while not self._stop.wait(self.interval_s):
            try:
                self.stream.write(self.status_line() + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or a broken pipe: stay quiet
                return

    def _refresh(self) -> None:
        bar, task = self._bar, self._task
        if bar is None or task is None:
            return
        with self._lock:
            done, failed, ops, det = self._done, self._failed, self._ops, self._detections
        elapsed = max(self._clock() - self._t0, 1e-6)
        extra = f"{failed} failed, {det} detections"
        if ops:
            extra += f", {si(ops / elapsed)} ops/s"
        bar.update(task, completed=done, extra=extra)
