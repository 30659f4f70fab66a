"""Isolation and the runner through a fake driver child: crashes, aborts, hangs, garbage
output and parallel trials are classified and never take the run down."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from _procs import alive

from harness._isolate import STDERR_TAIL_BYTES, run_child
from harness.loader import load_plan
from harness.runner import driver_args, run_plan, run_trial, trial_key

SMOKE_LIKE = """
schema_version = 1
timeout_s = {timeout}
[workload]
threads = 2
ops = 1000
[[faults]]
kind = "double_free"
count = 2
[[faults]]
kind = "overflow"
bytes = 4
"""


@pytest.fixture
def plan(write_plan):
    return load_plan(write_plan(SMOKE_LIKE.format(timeout=20)))


def test_driver_args_follow_the_protocol(plan):
    args = driver_args(plan, 7)
    assert args[:5] == ["run", "--target", "nmm", "--nmm-options",
                        "level=standard:policy=record"]
    assert args[args.index("--seed") + 1] == "7"
    assert args[args.index("--threads") + 1] == "2"
    assert args[args.index("--ops") + 1] == "1000"
    faults = [args[i + 1] for i, a in enumerate(args) if a == "--fault"]
    assert faults == ["double_free:count=2", "overflow:count=1:bytes=4"]


def test_detected_trial(plan, fake_driver):
    record = run_trial(plan, 3, fake_driver("detect"))
    assert record.verdict.outcome == "detected"
    assert record.verdict.passed
    assert len(record.observation.faults) == 3
    assert record.observation.result is not None
    assert record.key == trial_key(plan, 3)
    # psutil sampling of a live child is covered by the series test below; a
    # child this short may exit before the first sample, which then is absent
    assert all(s.rss > 0 for s in record.observation.samples)


def test_crash_is_classified_crashed_and_keeps_streamed_lines(plan, fake_driver):
    record = run_trial(plan, 3, fake_driver("crash"))
    assert record.verdict.outcome == "crashed"
    assert record.observation.signal == 11
    assert record.observation.start is not None  # lines before the crash are kept
    assert len(record.observation.faults) == 1
    assert not record.verdict.passed


def test_abort_with_diagnostic_is_detected_abort(plan, fake_driver):
    record = run_trial(plan, 3, fake_driver("abort"))
    assert record.verdict.outcome == "detected-abort"
    assert record.observation.signal == 6
    assert "nmm: double_free at" in record.observation.stderr_tail


def test_hang_is_killed_and_classified(write_plan, fake_driver):
    plan = load_plan(write_plan(SMOKE_LIKE.format(timeout=1)))
    record = run_trial(plan, 3, fake_driver("hang"))
    assert record.verdict.outcome == "hang"
    assert record.observation.timed_out
    assert record.observation.signal == 9


@pytest.mark.parametrize(("mode", "phase"), [("stall", "ops"), ("stall_final", "validate")])
def test_a_trial_that_stops_making_progress_is_a_hang_long_before_its_timeout(
        write_plan, fake_driver, mode, phase):
    """Beats keep coming but nothing moves: after hang_s it is a hang, named with its
    phase and every thread's stack, not at timeout_s."""
    plan = load_plan(write_plan(SMOKE_LIKE.format(timeout="300\nhang_s = 1")))
    t0 = time.monotonic()
    record = run_trial(plan, 3, fake_driver(mode))
    assert time.monotonic() - t0 < 120  # the stall, not the 300 s timeout, ended it
    obs = record.observation
    assert obs.timed_out and obs.signal == 9
    assert obs.hang is not None and obs.hang["phase"] == phase and obs.hang["ops"] == 400
    assert obs.hang["stalled_s"] >= 1
    assert obs.stacks  # gdb's backtraces, or the threads' states from /proc
    assert record.verdict.outcome == "hang" and not record.verdict.passed
    assert f"no progress for {obs.hang['stalled_s']}s in phase {phase}" in \
        " ".join(record.verdict.reasons)


def test_a_child_that_promised_no_heartbeat_is_left_to_its_timeout(write_plan, fake_driver):
    """The gated fake driver waits silently: no beat_ms, so no stall is called."""
    plan = load_plan(write_plan(SMOKE_LIKE.format(timeout="3\nhang_s = 0.5")))
    t0 = time.monotonic()
    record = run_trial(plan, 3, fake_driver("hang"))
    assert time.monotonic() - t0 >= 3
    assert record.observation.timed_out and record.observation.hang is None


def test_garbage_lines_are_counted_not_fatal(plan, fake_driver):
    record = run_trial(plan, 3, fake_driver("garbage"))
    assert record.observation.bad_lines == 3
    assert record.verdict.passed


def test_missing_executable_is_a_crashed_trial_not_an_exception(plan):
    record = run_trial(plan, 1, ["/nonexistent/nmm-driver"])
    assert record.verdict.outcome == "crashed"
    assert "cannot start" in record.observation.stderr_tail


def test_run_plan_survives_mixed_failures_in_parallel(write_plan, fake_driver):
    plan = load_plan(write_plan(SMOKE_LIKE.format(timeout=20)), ["seeds=6"])
    seen = []
    result = run_plan(plan, jobs=3, command=fake_driver("crash"), on_record=seen.append)
    assert len(result.records) == 6 == len(seen)
    assert [r.seed for r in result.records] == plan.trial_seeds()
    assert {r.verdict.outcome for r in result.records} == {"crashed"}
    assert not result.passed


def test_run_child_streams_lines_to_the_callback():
    lines = []
    code = ("import os\n"
            "os.write(1, b'{\"type\":\"start\",\"seed\":1}\\n')\n"
            "os.write(1, b'{\"type\":\"progress\",\"ops\":5}\\n')\n")
    obs = run_child([sys.executable, "-c", code], 10, on_line=lines.append)
    assert [line["type"] for line in lines] == ["start", "progress"]
    assert obs.last_progress == {"type": "progress", "ops": 5}
    assert obs.exit_code == 0 and obs.result is None


def test_run_child_kills_the_whole_process_group_on_timeout():
    code = ("import os, subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print('{\"type\": \"start\", \"pid\": %d}' % p.pid, flush=True)\n"
            "time.sleep(60)\n")
    # The watchdog must fire after the grandchild exists, so the timeout has to
    # outlast an interpreter start-up and a fork: on a loaded machine that can take
    # more than a second, and then the run is repeated with a longer timeout.
    started: list[psutil.Process] = []

    def on_line(line):
        # taken while the grandchild sleeps: alive() then tells it from a process that
        # gets its pid once it is killed and reaped
        if line.get("type") == "start":
            with contextlib.suppress(psutil.NoSuchProcess):
                started.append(psutil.Process(line["pid"]))

    for timeout_s in (1.0, 4.0, 16.0):
        obs = run_child([sys.executable, "-c", code], timeout_s, on_line=on_line)
        assert obs.timed_out
        if started:
            break
    assert started, "the child never started its grandchild"
    (grandchild,) = started
    deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously
    while time.monotonic() < deadline and alive(grandchild):
        time.sleep(0.02)
    assert not alive(grandchild)


def test_stderr_tail_is_bounded():
    code = "import sys\nfor i in range(20000): sys.stderr.write(f'line {i}\\n')\n"
    obs = run_child([sys.executable, "-c", code], 20)
    assert STDERR_TAIL_BYTES < 20000 * len("line 19999\n")  # the bound is hit
    assert len(obs.stderr_tail) <= STDERR_TAIL_BYTES
    assert obs.stderr_tail.endswith("line 19999\n")


@pytest.mark.parametrize("to_main", [True, False])
def test_an_abandoned_run_kills_its_children(write_plan, fake_driver, to_main):
    """Ctrl-C mid-run ends every trial child at once, with nothing recorded. Sent to
    another thread (as the kernel may deliver it, or landing just before the main
    thread blocks), the handler runs only once the main thread executes bytecode again:
    the runner used to block until a trial ended, here after its 30 s watchdog, which
    judged and reported it before the interrupt was seen."""
    # Python keeps SIGINT ignored if it started so (pytest run in the background by a
    # non-interactive shell, say): the Ctrl-C being tested needs its default handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _abandon_a_run_of_hung_trials(write_plan, fake_driver, to_main)
    finally:
        signal.signal(signal.SIGINT, previous)


def _abandon_a_run_of_hung_trials(write_plan, fake_driver, to_main: bool) -> None:
    plan = load_plan(write_plan(SMOKE_LIKE.format(timeout=30)), ["seeds=4"])
    seen: list[psutil.Process] = []
    recorded: list[int] = []
    lock = threading.Lock()

    def on_line(line):
        if line.get("type") == "start":
            # Each child's reader thread calls this: count and test under one lock,
            # or both can see two children up and press Ctrl-C twice (the second
            # KeyboardInterrupt can land outside pytest.raises and end the session).
            with lock:
                seen.append(psutil.Process(line["pid"]))  # hung: alive until the kill
                both_up = len(seen) == 2
            if both_up:  # the user presses Ctrl-C, once
                target = threading.main_thread().ident if to_main else threading.get_ident()
                signal.pthread_kill(target, signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, jobs=2, command=fake_driver("hang"), on_line=on_line,
                 on_record=lambda r: recorded.append(r.seed))
    assert recorded == [], "a trial ran to its watchdog before the interrupt was seen"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(alive(p) for p in seen):
        time.sleep(0.05)
    assert not any(alive(p) for p in seen)


def test_sample_series_is_thinned_not_unbounded(monkeypatch):
    import harness._isolate as iso

    monkeypatch.setattr(iso, "MAX_SAMPLES", 8)
    code = "import time\nfor _ in range(60): time.sleep(0.01)\n"
    obs = run_child([sys.executable, "-c", code], 30, sample_interval_s=0.005)
    assert 1 <= len(obs.samples) <= 8
    times = [s.t_s for s in obs.samples]
    assert times == sorted(times)
    assert all(s.rss > 0 for s in obs.samples)


def test_exited_unreaped_child_gives_no_sample():
    """A zombie reads as rss 0 in /proc; sampling it must not record that zero."""
    from harness._isolate import _sample

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        ps = psutil.Process(child.pid)
        deadline = time.monotonic() + 30
        while ps.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ps.status() == psutil.STATUS_ZOMBIE
        assert _sample(ps, time.monotonic()) is None
    finally:
        child.wait()


def test_child_started_after_stop_is_killed_not_run_to_its_end():
    """The interrupt race: a trial thread may start its child just after the run
    was stopped and kill_running_children took its snapshot; that child must not
    run on to its timeout."""
    stop = threading.Event()
    stop.set()
    obs = run_child([sys.executable, "-c", "import time; time.sleep(60)"], 50, stop=stop)
    assert obs.signal == signal.SIGKILL
    assert not obs.timed_out


def _is_unreaped(pid: int) -> bool:
    """Whether ``pid`` is still our unreaped child (running or a zombie): only then is
    its pid, and so its process group id, safe from reuse by another process."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


@pytest.mark.parametrize("script, timeout", [
    ("pass", 30),                                    # exits by itself
    ("import os, time\nif os.fork() == 0: time.sleep(60)", 30),  # leaves a grandchild
    ("import time; time.sleep(60)", 0.5),            # the watchdog kills it
])
def test_a_group_is_only_killed_while_its_leader_is_unreaped(monkeypatch, script, timeout):
    """A reaped child's pid can be reused at once on a busy machine (pid_max is often
    32768 and thread storms go through it in seconds); a SIGKILL to its process group
    would then end an unrelated session leader, such as another runner's trial. That
    was how a hung fake trial in a parallel test came to be recorded as crashed."""
    import harness._isolate as isolate

    killed: list[tuple[int, bool]] = []
    real = isolate._kill_group

    def checked(pgid: int) -> None:
        killed.append((pgid, _is_unreaped(pgid)))
        real(pgid)

    monkeypatch.setattr(isolate, "_kill_group", checked)
    obs = run_child([sys.executable, "-c", script], timeout)
    assert killed, "the group was never killed (grandchildren would outlive the trial)"
    assert all(safe for _, safe in killed), killed
    assert obs.timed_out == (timeout < 1)


def test_kill_running_children_only_signals_unreaped_leaders(monkeypatch):
    """An interrupt's kill races trials that end on their own: every group it signals
    must still have its unreaped leader."""
    import harness._isolate as isolate

    bad: list[int] = []
    real = isolate._kill_group

    def checked(pgid: int) -> None:
        if not _is_unreaped(pgid):
            bad.append(pgid)
        real(pgid)

    monkeypatch.setattr(isolate, "_kill_group", checked)
    done = threading.Event()

    def trials() -> None:
        while not done.is_set():
            run_child([sys.executable, "-c", "pass"], 30)

    workers = [threading.Thread(target=trials) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            isolate.kill_running_children()
            time.sleep(0.0005)  # leave the lock to the trials now and then
    finally:
        done.set()
        for w in workers:
            w.join()
    assert not bad, f"killed the groups of reaped children: {bad}"


def test_a_fork_failing_for_a_moment_is_retried_not_recorded(plan, monkeypatch):
    """EAGAIN from fork (the machine out of processes for a moment, say during another
    job's thread storm) says nothing about the allocator: the trial is started again
    instead of being recorded as a driver that could not start."""
    import errno

    import harness.engine as engine

    real = engine.run_child
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "run_child", flaky)
    record = run_trial(plan, 1, [sys.executable, "-c", "pass"])
    assert calls["n"] == 3
    assert record.observation.exit_code == 0


def test_a_driver_that_cannot_start_is_recorded_at_once(plan):
    record = run_trial(plan, 1, ["/nonexistent/nmm-driver"])
    assert record.observation.exit_code == 127
    assert "cannot start the driver" in record.observation.stderr_tail
    assert not record.verdict.passed


def test_thread_states_from_proc_when_gdb_cannot_attach():
    from harness._stall import _proc_threads

    text = _proc_threads(os.getpid())
    lines = text.splitlines()
    assert lines[0].startswith("(gdb could not attach")
    assert len(lines) - 1 == len(os.listdir(f"/proc/{os.getpid()}/task"))
    assert all("comm=" in ln and "state=" in ln for ln in lines[1:])
