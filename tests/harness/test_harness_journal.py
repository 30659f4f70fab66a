"""The journal: fsynced lines, torn last line skipped with a warning, and a runner killed
with SIGKILL mid-run resumes without losing or repeating a trial; each trial's identity
is journaled before it starts, so the ones the kill cut short are known and replayable."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _procs import alive

from harness.journal import JOURNAL_NAME, Journal, read_journal
from harness.loader import load_plan
from harness.runner import run_plan

REPO = Path(__file__).resolve().parent.parent.parent
PLAN = """
schema_version = 1
seeds = {seeds}
[workload]
ops = 100
[[faults]]
kind = "double_free"
"""


def test_records_round_trip_and_resume_skips_them(tmp_path, write_plan, fake_driver):
    plan = load_plan(write_plan(PLAN.format(seeds=4)))
    path = tmp_path / "run" / JOURNAL_NAME
    with Journal(path) as journal:
        first = run_plan(plan, jobs=2, command=fake_driver("detect"), journal=journal)
    assert len(read_journal(path).records) == 4
    more = load_plan(write_plan(PLAN.format(seeds=6)))
    with Journal(path) as journal:
        second = run_plan(more, jobs=2, command=fake_driver("detect"), journal=journal)
    assert second.skipped == 4
    contents = read_journal(path)
    assert contents.warnings == []
    assert sorted(r.seed for r in contents.records) == more.trial_seeds()
    assert {r.key: r for r in first.records}.keys() <= {r.key for r in second.records}


def test_torn_last_line_is_skipped_with_a_warning_and_cut(tmp_path, write_plan, fake_driver):
    plan = load_plan(write_plan(PLAN.format(seeds=2)))
    path = tmp_path / JOURNAL_NAME
    with Journal(path) as journal:
        run_plan(plan, jobs=1, command=fake_driver("detect"), journal=journal)
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[0][:57])  # a torn third line
    contents = read_journal(path)
    assert len(contents.records) == 2
    assert len(contents.warnings) == 1 and "torn last line" in contents.warnings[0]
    with Journal(path) as journal:
        assert journal.warnings == contents.warnings
        run_plan(load_plan(write_plan(PLAN.format(seeds=3))), jobs=1,
                 command=fake_driver("detect"), journal=journal)
    again = read_journal(path)
    assert again.warnings == []
    assert len(again.records) == 3


def test_garbage_line_in_the_middle_is_a_warning(tmp_path, write_plan, fake_driver):
    plan = load_plan(write_plan(PLAN.format(seeds=2)))
    path = tmp_path / JOURNAL_NAME
    with Journal(path) as journal:
        run_plan(plan, jobs=1, command=fake_driver("detect"), journal=journal)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b'{"not": "a record"}\n' + b"".join(lines[1:]))
    contents = read_journal(path)
    assert len(contents.records) == 2
    assert "unreadable journal line" in contents.warnings[0]


def _journal_lines(run_dir: Path) -> int:
    """Trial records (not trial_start lines) in the run's journal."""
    try:
        lines = (run_dir / JOURNAL_NAME).read_bytes().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.strip() and b'"trial_start"' not in line)


def test_sigkill_mid_run_then_resume_loses_nothing(tmp_path, write_plan, fake_driver):
    # Seeds 1-3 finish; seeds 4 and up wait at a gate the test opens only after the
    # kill, so the runner dies at a known point (3 trials recorded, 2 in flight)
    # however slowly the machine runs it.
    seeds, recorded_before_kill = 16, 3
    plan_path = write_plan(PLAN.format(seeds=seeds))
    out = tmp_path / "reports"
    gate = tmp_path / "gate-open"
    driver = " ".join(fake_driver("gated"))
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "FAKE_DRIVER_GATE": f"{recorded_before_kill}:{gate}"}
    base = [sys.executable, "-m", "harness.cli", "run", str(plan_path), "--jobs", "2",
            "--driver", driver, "--set", "workload.ops=100"]
    runner = subprocess.Popen([*base, "--out", str(out)], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        run_dir = None
        while time.monotonic() < deadline and runner.poll() is None:
            dirs = list(out.glob("*")) if out.exists() else []
            if dirs and _journal_lines(dirs[0]) >= recorded_before_kill:
                run_dir = dirs[0]
                break
            time.sleep(0.02)
        assert run_dir is not None, f"runner never recorded 3 trials (exit {runner.poll()})"
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        gate.touch()  # the killed runner's gated children finish and exit
    before = read_journal(run_dir / JOURNAL_NAME)
    assert sorted(r.seed for r in before.records) == list(range(1, recorded_before_kill + 1))
    # the trials in flight at the kill (seed 4 for sure: the gate holds it) were journaled
    # with their identity before they started, and are known as unfinished
    cut = before.unfinished
    assert 4 in {ident["seed"] for ident in cut.values()}
    assert {ident["seed"] for ident in cut.values()} <= {4, 5, 6}
    plan = load_plan(plan_path)
    for key, ident in cut.items():
        assert key == f"{plan.plan_hash()}:{ident['seed']}:{plan.target.label}"
        assert ident["plan_hash"] == plan.plan_hash() and ident["plan"] == plan.name
        assert ident["overrides"] == ["workload.ops=100"]
        assert ident["target"] == plan.target.label and ident["engine"] == "native"
        assert ident["build"] == "release" and ident["build_id"]
        assert ident["scheduler"]["kind"] == "free" and "nmm_options" in ident
    resumed = subprocess.run([*base, "--resume", str(run_dir)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    contents = read_journal(run_dir / JOURNAL_NAME)
    keys = [r.key for r in contents.records]
    assert len(keys) == len(set(keys)) == seeds
    raw_lines = [line for line in (run_dir / JOURNAL_NAME).read_bytes().splitlines()
                 if line.strip()]
    starts = [line for line in raw_lines if b'"trial_start"' in line]
    assert len(raw_lines) - len(starts) == seeds  # every trial recorded exactly once
    assert sorted(r.seed for r in contents.records) == list(range(1, seeds + 1))
    assert contents.unfinished == {}
    # each trial started once, except those the kill cut short: once more on the resume
    # (run once to its end, never twice)
    started = [json.loads(line)["key"] for line in starts]
    assert sorted(started) == sorted([*keys, *cut])
    assert (run_dir / "result.json").exists()


@pytest.mark.parametrize(("signum", "code", "said", "again"), [
    (signal.SIGINT, 130, "interrupted", False),
    (signal.SIGTERM, 143, "terminated (SIGTERM)", False),
    (signal.SIGINT, 130, "interrupted", True),  # Ctrl-C held down while the run stops
])
def test_ctrl_c_keeps_the_journal_and_does_not_record_the_trials_it_cut_short(
        tmp_path, write_plan, fake_driver, signum, code, said, again):
    """SIGINT (Ctrl-C) or SIGTERM mid-run: exit 130/143 with a one-line resume command and
    no traceback; the trials in flight were killed by the runner, not crashed, so they are
    not journaled (a resume would otherwise keep them as crashes) and the resume runs them.
    Under SIGTERM the trial children used to be left running, without their watchdog."""
    import psutil

    # timeout_s bounds the wait should a child started just as the signal came escape
    # the kill (run_child's stop event is there so that it does not)
    plan_path = write_plan("timeout_s = 20\n" + PLAN.format(seeds=4))
    out = tmp_path / "a-long-directory-name-so-that-the-resume-command-passes-80-columns"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "harness.cli", "run", str(plan_path), "--jobs", "2"]
    runner = subprocess.Popen(
        [*base, "--driver", " ".join(fake_driver("hang")), "--out", str(out)], env=env,
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        drivers = [c for c in psutil.Process(runner.pid).children(recursive=True)
                   if "fake_driver.py" in " ".join(c.cmdline())]
        if len(drivers) == 2:
            break
        time.sleep(0.02)
    else:
        runner.kill()
        raise AssertionError("the runner never started two trials")
    runner.send_signal(signum)
    give_up = time.monotonic() + 60
    while again and runner.poll() is None and time.monotonic() < give_up:
        runner.send_signal(signum)  # a second Ctrl-C printed a traceback or killed it
        time.sleep(0.002)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == code, err
    # (after any progress line: not on a terminal, one comes every 10 s)
    assert f"\n{said}: 0 trial(s) kept" in f"\n{err}" and "Traceback" not in err
    psutil.wait_procs(drivers, timeout=10)
    assert not [d for d in drivers if alive(d)]
    (run_dir,) = out.iterdir()
    assert read_journal(run_dir / JOURNAL_NAME).records == []
    resume_lines = [ln.strip() for ln in err.splitlines() if "--resume" in ln]
    assert resume_lines and resume_lines[0].endswith(f"--resume {run_dir}")
    # the printed command runs as pasted (python -m harness: how this runner was started),
    # with the hanging driver swapped for one that detects
    hang = " ".join(fake_driver("hang"))
    assert resume_lines[0].startswith(shlex.join([sys.executable, "-m", "harness", "run"]))
    resumed = subprocess.run(shlex.split(resume_lines[0].replace(
                                 shlex.quote(hang), shlex.quote(" ".join(fake_driver("detect"))))),
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    records = read_journal(run_dir / JOURNAL_NAME).records
    assert sorted(r.seed for r in records) == [1, 2, 3, 4]
    assert all(r.verdict.passed for r in records)
