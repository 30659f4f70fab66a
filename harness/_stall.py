"""Hangs named in seconds: the progress a trial's child shows in its lines, and the
stacks of every thread of a child that stopped making it.

A driver that promises a heartbeat (``beat_ms`` in its start line) writes a ``beat``
line that often, with its phase and its progress (ops over all workers, the phase's own
step count). ``StallWatch`` calls the child stalled once ``stall_s`` seconds pass with
no progress: no beat that moved and no other line (a hung workload, a final phase that
overruns, or a process stopped whole). A child that promised nothing is left to the
timeout. ``thread_stacks`` asks gdb for every thread's backtrace (``/proc`` when gdb
is missing or cannot attach). Called from the isolation layer; nothing here kills.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from typing import Any

#: most bytes of stack text kept in an observation
MAX_STACK_BYTES = 32_768
#: longest gdb may take to attach and print every backtrace
GDB_TIMEOUT_S = 20.0


class StallWatch:
    """Progress seen in one child's lines (fed from its reader thread), and whether it
    has stopped for ``stall_s`` seconds. Thread-safe."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._lock = threading.Lock()
        self._armed = False
        self._last = time.monotonic()
        self._key: tuple[Any, ...] | None = None
        self.phase = ""
        self.ops = 0
        self.step = 0

    def saw(self, kind: str | None, line: dict[str, Any]) -> None:
        """Account one protocol line: a start line that promises beats arms the watch;
        a beat that moved, or any line that is not a beat, is progress."""
        now = time.monotonic()
        with self._lock:
            if kind == "start" and line.get("beat_ms"):
                self._armed = True
            if kind != "beat":
                self._last = now
                return
            key = (line.get("phase"), line.get("ops"), line.get("step"))
            self.phase = str(line.get("phase", ""))
            self.ops = int(line.get("ops", 0) or 0)
            self.step = int(line.get("step", 0) or 0)
            if key != self._key:
                self._key = key
                self._last = now

    def stalled(self) -> bool:
        """Whether the child promised beats and has shown no progress for ``stall_s``."""
        with self._lock:
            return self._armed and time.monotonic() - self._last > self.stall_s

    def info(self) -> dict[str, Any]:
        """Where the child stopped: phase, ops, step and how long it showed nothing."""
        with self._lock:
            return {"phase": self.phase or "unknown", "ops": self.ops, "step": self.step,
                    "stalled_s": round(time.monotonic() - self._last, 1)}


def thread_stacks(pid: int) -> str:
    """Every thread's stack of process ``pid``, by gdb when it can attach, else what
    ``/proc`` says of each thread (name, state, wait channel, system call)."""
    gdb = shutil.which("gdb")
    if gdb:
        try:
            out = subprocess.run(
                [gdb, "-p", str(pid), "-batch", "-nx", "-q",
                 "-ex", "set pagination off", "-ex", "set print thread-events off",
                 "-ex", "thread apply all bt"],
                capture_output=True, text=True, timeout=GDB_TIMEOUT_S, check=False,
                stdin=subprocess.DEVNULL)
            text = "\n".join(ln for ln in out.stdout.splitlines()
                             if ln.startswith(("Thread ", "#")) or not ln.strip())
            if "#0" in text:
                return _bounded(text.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
    return _bounded(_proc_threads(pid))


def _proc_threads(pid: int) -> str:
    lines = ["(gdb could not attach: thread states from /proc)"]
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as exc:
        return f"(no stacks: {exc})"
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        fields = []
        for name in ("comm", "wchan", "syscall"):
            try:
                with open(f"{base}/{name}") as f:
                    fields.append(f"{name}={f.read().strip()}")
            except OSError:
                continue
        try:
            with open(f"{base}/stat") as f:
                fields.append(f"state={f.read().rsplit(')', 1)[1].split()[0]}")
        except (OSError, IndexError):
            pass
        lines.append(f"thread {tid}: " + " ".join(fields))
    return "\n".join(lines)


def _bounded(text: str) -> str:
    if len(text) <= MAX_STACK_BYTES:
        return text
    return text[:MAX_STACK_BYTES] + "\n... (stacks cut)"
