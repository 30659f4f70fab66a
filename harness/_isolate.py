"""Start, watch and kill child processes: the one way the harness runs anything.

Owns spawning each child in its own session (process group), waiting for it under a
watchdog without reaping it early, killing the whole group (grandchildren of a fork
storm included) on timeout, on an abandoned run and at exit, and reaping it. Two front
ends share that core: ``run_child`` reads a trial's JSON lines as they arrive (so a
crash keeps everything written before it), keeps the stderr tail and samples the child
with psutil; ``run_program`` runs a plain program to completion and keeps its output.
Must not judge anything (that is the oracle's job). Called from any thread; each call
supervises one child and shares nothing with other calls but the registry of running
groups that ``kill_running_children`` ends.
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
from dataclasses import dataclass
from typing import IO, Any

import psutil

from harness._stall import StallWatch, thread_stacks
from harness.records import (
    DETAIL_TYPES,
    DetailLine,
    EventLine,
    FaultLine,
    Observation,
    ResultLine,
    Sample,
    merge_fault_done,
)

#: longest the supervisor sleeps between looks at a watched child's progress
STALL_POLL_S = 0.2
#: bytes of stderr kept for crash classification (an NMM report with its three stacks
#: of symbolized frames can take several KiB after its summary line)
STDERR_TAIL_BYTES = 32768
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


def _start(argv: Sequence[str], *, env: Mapping[str, str] | None, cwd: str | None,
           stdin: bool, stop: threading.Event | None) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session, registered for
    ``kill_running_children``; raises ``OSError`` if it cannot be started. ``stop``
    already set kills it at once: a caller sets it before ``kill_running_children``,
    which closes the window where a child is started but not registered yet."""
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, cwd=cwd,
                            env=dict(env) if env is not None else None)
    with _RUNNING_LOCK:
        _RUNNING.add(proc.pid)
    if stop is not None and stop.is_set():
        _kill_group(proc.pid)
    return proc


class _Stall:
    """The stall watch of one child and what was found when it stalled."""

    def __init__(self, stall_s: float) -> None:
        self.watch = StallWatch(stall_s)
        self.hang: dict[str, Any] | None = None
        self.stacks = ""

    def check(self, pid: int) -> bool:
        """Whether the child stalled; if so, record where and every thread's stack
        (taken before the kill: the child is still there to ask)."""
        if not self.watch.stalled():
            return False
        self.hang = self.watch.info()
        self.stacks = thread_stacks(pid)
        return True


def _supervise(proc: subprocess.Popen[bytes], deadline: float,
               tick: Callable[[], float] | None = None,
               stall: _Stall | None = None) -> bool:
    """Wait until ``proc`` exits or ``deadline`` (monotonic) passes, then end its whole
    group, deregister and reap it. ``tick`` is called at once and then whenever the
    time it returned (monotonic) comes. Returns whether the watchdog killed it.

    Grandchildren (fork storms) may outlive the leader and hold the pipes, so the group
    is killed even after a clean exit, while the leader is an unreaped zombie (its pid,
    and so the group id, cannot be reused yet). Any exception in the caller's thread
    (a Ctrl-C in the main thread) ends the group the same way before it propagates.
    ``stall``: a child that stops making progress is killed as on the deadline, after
    its threads' stacks are taken (``_Stall.hang``).
    """
    watch = _ExitWatch(proc.pid)
    timed_out = False
    try:
        next_tick = time.monotonic()
        while True:
            if tick is not None and time.monotonic() >= next_tick:
                next_tick = tick()
            remaining = deadline - time.monotonic()
            stalled = stall is not None and stall.check(proc.pid)
            if remaining <= 0 or stalled:
                timed_out = True
                _kill_group(proc.pid)
                watch.exited(60.0)  # SIGKILL cannot be ignored; this returns at once
                break
            wait = remaining if tick is None else min(next_tick - time.monotonic(), remaining)
            if stall is not None:
                wait = min(wait, STALL_POLL_S)
            if watch.exited(max(0.001, wait)):
                break
    finally:
        _kill_group(proc.pid)
        with _RUNNING_LOCK:
            _RUNNING.discard(proc.pid)
        proc.wait()
        watch.close()
    return timed_out


class _Collector:
    """Parses protocol lines as they arrive; shared by the reader thread and the caller."""

    def __init__(self, on_line: LineCallback | None, t0: float | None = None,
                 watch: StallWatch | None = None) -> None:
        self.on_line = on_line
        self.watch = watch
        self.t0 = time.monotonic() if t0 is None else t0
        #: (seconds since start, ops over all workers) of each progress line, thinned
        self.progress_series: list[tuple[float, int]] = []
        self.start: dict[str, Any] | None = None
        self.sched_stop: dict[str, Any] | None = None
        self.faults: list[FaultLine] = []
        self.events: list[EventLine] = []
        self.events_truncated = 0
        self.details: list[DetailLine] = []
        self.progress: dict[str, Any] | None = None
        self.result: ResultLine | None = None
        self.exit_report: dict[str, Any] | None = None
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
            elif kind == "beat":
                pass  # the heartbeat: only the stall watch reads it
            elif kind == "fault_done":
                if not merge_fault_done(self.faults, line):
                    raise ValueError("fault_done for no fault")
            elif kind in DETAIL_TYPES:
                self.details.append(DetailLine.model_validate({**line, "line": self.index}))
            elif kind == "progress":
                self.progress = line
                ops = line.get("ops")
                if isinstance(ops, int):
                    self.progress_series.append((round(time.monotonic() - self.t0, 4), ops))
                    if len(self.progress_series) > MAX_SAMPLES:
                        self.progress_series = self.progress_series[::2]
            elif kind == "result":
                self.result = ResultLine.model_validate(line)
            elif kind == "start":
                self.start = line
            elif kind == "sched_stop":
                self.sched_stop = line
            elif kind == "exit_report":  # after the result: the default heap's at exit
                self.exit_report = line
            elif kind != "bench":  # a bench kernel's one line: for on_line only
                raise ValueError(f"unknown type {kind!r}")
        except ValueError:  # JSONDecodeError and pydantic's ValidationError are ValueErrors
            self.bad_lines += 1
            return
        if self.watch is not None:
            self.watch.saw(kind, line)
        if kind == "beat":
            return
        if self.on_line is not None:
            try:
                self.on_line(line)
            except Exception:  # a failing progress hook must not stop the draining of stdout
                self.callback_errors += 1


def _read_lines(stream: IO[bytes], collector: _Collector) -> None:
    for raw in stream:
        if raw.strip():
            collector.feed(raw)


def _read_tail(stream: IO[bytes], tail: deque[bytes], limit: int | None) -> None:
    """Keep what ``stream`` says: its last ``limit`` bytes (whole lines), or all of it."""
    size = 0
    for raw in stream:
        tail.append(raw)
        size += len(raw)
        while limit is not None and size > limit and len(tail) > 1:
            size -= len(tail.popleft())


def _feed_stdin(stream: IO[bytes], data: bytes) -> None:
    try:
        stream.write(data)
    except BrokenPipeError:  # the child stopped reading: what it said is what counts
        pass
    finally:
        try:
            stream.close()
        except BrokenPipeError:
            pass


def _join_readers(proc: subprocess.Popen[bytes], readers: Sequence[threading.Thread]) -> None:
    """The group is dead, so the pipes reach EOF once drained; the bound is only for a
    grandchild that left the group (setsid) and still holds them. A short one here cut
    off a reader still parsing a long stream on a loaded machine: lost events."""
    for reader in readers:
        reader.join(timeout=READER_DRAIN_S)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


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


class _Sampler:
    """The psutil series of one child: a sample per interval, thinned (every other one
    dropped, interval doubled) each time it passes ``MAX_SAMPLES``."""

    def __init__(self, pid: int, t0: float, interval_s: float) -> None:
        self.t0 = t0
        self.interval = interval_s
        self.samples: list[Sample] = []
        try:
            self.proc: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self.proc = None

    def __call__(self) -> float:
        sample = _sample(self.proc, self.t0) if self.proc is not None else None
        if sample is not None:
            self.samples.append(sample)
            if len(self.samples) > MAX_SAMPLES:
                self.samples = self.samples[::2]
                self.interval *= 2
        return time.monotonic() + self.interval


def run_child(argv: Sequence[str], timeout_s: float, *,
              env: Mapping[str, str] | None = None,
              on_line: LineCallback | None = None,
              sample_interval_s: float | None = SAMPLE_INTERVAL_S,
              stop: threading.Event | None = None,
              stall_s: float | None = None) -> Observation:
    """Run ``argv`` as an isolated child and return what it streamed and how it ended.

    The child gets its own session (process group); on timeout the whole group is
    killed with SIGKILL and the observation says ``timed_out``. Never raises for
    anything the child does; raises ``OSError`` only if it cannot be started.
    ``sample_interval_s`` None takes no psutil samples (a benchmark's parent stays idle).
    ``stop``, once set, kills the child as ``kill_running_children`` does: a caller
    sets it before calling that, which closes the window where a child is started
    but not registered yet and would run on to its end or its timeout.
    ``stall_s``: a child that promised a heartbeat and shows no progress for that long
    is a hang at once (``timed_out``, with ``hang`` saying where it stopped and
    ``stacks`` every thread's backtrace), not at the timeout.
    """
    t0 = time.monotonic()
    proc = _start(argv, env=env, cwd=None, stdin=False, stop=stop)
    stall = _Stall(stall_s) if stall_s is not None else None
    collector = _Collector(on_line, t0, stall.watch if stall is not None else None)
    tail: deque[bytes] = deque()
    assert proc.stdout is not None and proc.stderr is not None
    readers = [threading.Thread(target=_read_lines, args=(proc.stdout, collector),
                                daemon=True),
               threading.Thread(target=_read_tail, args=(proc.stderr, tail, STDERR_TAIL_BYTES),
                                daemon=True)]
    for reader in readers:
        reader.start()
    sampler = (_Sampler(proc.pid, t0, sample_interval_s) if sample_interval_s is not None
               else None)
    timed_out = _supervise(proc, t0 + timeout_s, sampler, stall)
    _join_readers(proc, readers)
    code = proc.returncode
    return Observation(
        argv=tuple(argv), start=collector.start, faults=tuple(collector.faults),
        events=tuple(collector.events), events_truncated=collector.events_truncated,
        details=tuple(collector.details),
        last_progress=collector.progress, progress_series=tuple(collector.progress_series),
        result=collector.result,
        exit_code=code if code is not None and code >= 0 else None,
        signal=-code if code is not None and code < 0 else None,
        timed_out=timed_out,
        hang=stall.hang if stall is not None else None,
        sched_stop=collector.sched_stop,
        exit_report=collector.exit_report,
        stacks=stall.stacks if stall is not None else "",
        stderr_tail=b"".join(tail).decode("utf-8", "replace")[-STDERR_TAIL_BYTES:],
        samples=tuple(sampler.samples) if sampler is not None else (),
        wall_s=round(time.monotonic() - t0, 4),
        bad_lines=collector.bad_lines)


@dataclass(frozen=True)
class ProgramRun:
    """A finished ``run_program``: exit status, output and whether the watchdog fired."""

    argv: tuple[str, ...]
    #: exit status, or minus the signal that killed it (as ``subprocess`` has it)
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    wall_s: float

    def failure(self) -> str:
        """One line saying why the program did not exit 0 ("" if it did)."""
        if self.timed_out:
            return "timeout"
        if self.returncode == 0:
            return ""
        how = (f"killed by signal {-self.returncode}" if self.returncode < 0
               else f"exit {self.returncode}")
        last = (self.stderr.strip().splitlines() or [""])[-1]
        return f"{how}: {last}" if last else how


def run_program(argv: Sequence[str], timeout_s: float, *,
                env: Mapping[str, str] | None = None, cwd: str | None = None,
                input: str | None = None) -> ProgramRun:
    """Run a plain program (not a protocol speaker) to completion under the same watchdog
    as a trial: its own session, the whole group killed on timeout or when the caller is
    interrupted. ``input`` is written to its stdin. Raises ``OSError`` only if it cannot
    be started."""
    t0 = time.monotonic()
    proc = _start(argv, env=env, cwd=cwd, stdin=input is not None, stop=None)
    out: deque[bytes] = deque()
    err: deque[bytes] = deque()
    assert proc.stdout is not None and proc.stderr is not None
    threads = [threading.Thread(target=_read_tail, args=(proc.stdout, out, None), daemon=True),
               threading.Thread(target=_read_tail, args=(proc.stderr, err, None), daemon=True)]
    if input is not None:
        assert proc.stdin is not None
        threads.append(threading.Thread(target=_feed_stdin,
                                        args=(proc.stdin, input.encode()), daemon=True))
    for thread in threads:
        thread.start()
    timed_out = _supervise(proc, t0 + timeout_s)
    _join_readers(proc, threads)
    return ProgramRun(tuple(argv), proc.returncode,
                      b"".join(out).decode("utf-8", "replace"),
                      b"".join(err).decode("utf-8", "replace"), timed_out,
                      round(time.monotonic() - t0, 4))
