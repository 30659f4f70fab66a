"""Run one trial's child process under a watchdog and record everything it streams.

Owns: spawning the child in its own process group, reading its JSON lines as they
arrive (so a crash keeps everything written before it), keeping the stderr tail,
sampling it with psutil, killing the whole group on timeout and reaping it.
Must not judge anything (that is the oracle's job). Called from runner worker
threads; each call supervises one child and shares nothing with other calls.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import psutil

from harness.records import EventLine, FaultLine, Observation, ResultLine, Sample

#: bytes of stderr kept for crash classification
STDERR_TAIL_BYTES = 8192
#: events kept in the record; more are counted in ``events_truncated``
MAX_EVENTS_KEPT = 4096
#: seconds between psutil samples of the child (doubled each time the series is thinned)
SAMPLE_INTERVAL_S = 0.05
#: longest wait, after a trial's group is killed, for its output to be read to the end
READER_DRAIN_S = 60.0
#: samples kept per trial: past this, every other one is dropped and the interval doubles
MAX_SAMPLES = 1024

LineCallback = Callable[[dict[str, Any]], None]

#: process groups of children being supervised right now (for kill_running_children)
_RUNNING: set[int] = set()
_RUNNING_LOCK = threading.Lock()


def kill_running_children() -> int:
    """SIGKILL every child group this process is supervising (the run is being abandoned);
    their supervisors then reap them. Returns how many groups were signalled.

    The kill happens under the lock a supervisor takes to deregister its child before
    reaping it, so every group signalled here still has its unreaped leader, whose pid
    the kernel cannot hand to another process (and so to another process group).
    """
    with _RUNNING_LOCK:
        for pgid in _RUNNING:
            _kill_group(pgid)
        return len(_RUNNING)


class _Collector:
    """Parses protocol lines as they arrive; shared by the reader thread and the caller."""

    def __init__(self, on_line: LineCallback | None) -> None:
        self.on_line = on_line
        self.start: dict[str, Any] | None = None
        self.faults: list[FaultLine] = []
        self.events: list[EventLine] = []
        self.events_truncated = 0
        self.progress: dict[str, Any] | None = None
        self.result: ResultLine | None = None
        self.bad_lines = 0
        self.callback_errors = 0
        self.index = 0

    def feed(self, raw: bytes) -> None:
        self.index += 1
        try:
            line = json.loads(raw)
            if not isinstance(line, dict):
                raise ValueError("not an object")
            kind = line.get("type")
            if kind == "fault":
                self.faults.append(FaultLine.model_validate({**line, "line": self.index}))
            elif kind == "event":
                if len(self.events) < MAX_EVENTS_KEPT:
                    self.events.append(EventLine.model_validate({**line, "line": self.index}))
                else:
                    self.events_truncated += 1
            elif kind == "progress":
                self.progress = line
            elif kind == "result":
                self.result = ResultLine.model_validate(line)
            elif kind == "start":
                self.start = line
            else:
                raise ValueError(f"unknown type {kind!r}")
        except ValueError:  # JSONDecodeError and pydantic's ValidationError are ValueErrors
            self.bad_lines += 1
            return
        if self.on_line is not None:
            try:
                self.on_line(line)
            except Exception:  # a failing progress hook must not stop the draining of stdout
                self.callback_errors += 1


def _read_stdout(stream: IO[bytes], collector: _Collector) -> None:
    for raw in stream:
        if raw.strip():
            collector.feed(raw)


def _read_stderr(stream: IO[bytes], tail: deque[bytes]) -> None:
    size = 0
    for raw in stream:
        tail.append(raw)
        size += len(raw)
        while size > STDERR_TAIL_BYTES and len(tail) > 1:
            size -= len(tail.popleft())


def _sample(proc: psutil.Process, t0: float) -> Sample | None:
    """One resource sample of a live child, or None once it has exited.

    A child that has exited but is not reaped yet (a zombie) has no memory map
    left, so /proc reports rss 0 for it (a live process always has some); that is
    not a measurement of the run and would put a false zero at the end of the series.
    """
    try:
        with proc.oneshot():
            mem = proc.memory_info().rss
            threads = proc.num_threads()
            cpu = proc.cpu_times()
        if mem == 0:
            return None
        return Sample(t_s=round(time.monotonic() - t0, 4), rss=mem, threads=threads,
                      cpu_s=round(cpu.user + cpu.system, 4))
    except (psutil.Error, OSError):
        return None


def _kill_group(pgid: int) -> None:
    """SIGKILL a child's process group. Only call it while that child is unreaped: once
    reaped, its pid can be reused, and a new session leader's group (another trial, in
    this run or in another runner on the machine) would be killed in its place."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _ExitWatch:
    """Waits for a child to exit *without reaping it*, so its group can still be killed
    safely after it exits (grandchildren of a fork storm may hold the pipes). Uses a
    pidfd where the kernel has them (woken at once), else polls ``waitid(WNOWAIT)``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None
        self.poller = select.poll()  # not select(): a busy runner's fds can pass 1024
        try:
            self.fd = os.pidfd_open(pid)
            self.poller.register(self.fd, select.POLLIN)
        except (AttributeError, OSError):
            self.fd = None

    def exited(self, timeout: float) -> bool:
        """Whether the child has exited, waiting up to ``timeout`` seconds for it."""
        if self.fd is not None:
            return bool(self.poller.poll(max(0.0, timeout) * 1000.0))
        end = time.monotonic() + max(0.0, timeout)
        delay = 0.0005
        while True:
            try:
                if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return True
            except ChildProcessError:
                return True  # already reaped (cannot happen here, but never spin on it)
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.02)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def run_child(argv: Sequence[str], timeout_s: float, *,
              env: Mapping[str, str] | None = None,
              on_line: LineCallback | None = None,
              sample_interval_s: float = SAMPLE_INTERVAL_S,
              stop: threading.Event | None = None) -> Observation:
    """Run ``argv`` as an isolated child and return what it streamed and how it ended.

    The child gets its own session (process group); on timeout the whole group is
    killed with SIGKILL and the observation says ``timed_out``. Never raises for
    anything the child does; raises ``OSError`` only if it cannot be started.
    ``stop``, once set, kills the child as ``kill_running_children`` does: a caller
    sets it before calling that, which closes the window where a child is started
    but not registered yet and would run on to its end or its timeout.
    """
    t0 = time.monotonic()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            env=dict(env) if env is not None else None)
    with _RUNNING_LOCK:
        _RUNNING.add(proc.pid)
    if stop is not None and stop.is_set():
        _kill_group(proc.pid)
    collector = _Collector(on_line)
    tail: deque[bytes] = deque()
    assert proc.stdout is not None and proc.stderr is not None
    readers = [threading.Thread(target=_read_stdout, args=(proc.stdout, collector),
                                daemon=True),
               threading.Thread(target=_read_stderr, args=(proc.stderr, tail), daemon=True)]
    for reader in readers:
        reader.start()
    samples: list[Sample] = []
    try:
        ps: psutil.Process | None = psutil.Process(proc.pid)
    except psutil.Error:
        ps = None
    timed_out = False
    deadline = t0 + timeout_s
    interval = sample_interval_s
    next_sample = t0
    watch = _ExitWatch(proc.pid)
    try:
        while True:
            if time.monotonic() >= next_sample:
                sample = _sample(ps, t0) if ps is not None else None
                if sample is not None:
                    samples.append(sample)
                    if len(samples) > MAX_SAMPLES:
                        samples = samples[::2]
                        interval *= 2
                next_sample = time.monotonic() + interval
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                _kill_group(proc.pid)
                watch.exited(60.0)  # SIGKILL cannot be ignored; this returns at once
                break
            if watch.exited(max(0.001, min(next_sample - time.monotonic(), remaining))):
                break
        # grandchildren (fork storms) may still hold the pipes: end the group while its
        # leader is an unreaped zombie (its pid, and so the group id, cannot be reused
        # yet), deregister it, and only then reap it
        _kill_group(proc.pid)
        with _RUNNING_LOCK:
            _RUNNING.discard(proc.pid)
        proc.wait()
    finally:
        watch.close()
    # the group is dead, so the pipes reach EOF once drained; the bound is only for a
    # grandchild that left the group (setsid) and still holds them. A short one here
    # cut off a reader still parsing a long stream on a loaded machine: lost events.
    for reader in readers:
        reader.join(timeout=READER_DRAIN_S)
    proc.stdout.close()
    proc.stderr.close()
    code = proc.returncode
    return Observation(
        argv=tuple(argv), start=collector.start, faults=tuple(collector.faults),
        events=tuple(collector.events), events_truncated=collector.events_truncated,
        last_progress=collector.progress, result=collector.result,
        exit_code=code if code is not None and code >= 0 else None,
        signal=-code if code is not None and code < 0 else None,
        timed_out=timed_out,
        stderr_tail=b"".join(tail).decode("utf-8", "replace")[-STDERR_TAIL_BYTES:],
        samples=tuple(samples), wall_s=round(time.monotonic() - t0, 4),
        bad_lines=collector.bad_lines)
