"""The journal: fsynced lines, torn last line skipped with a warning, and a runner killed
with SIGKILL mid-run resumes without losing or repeating a trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    path.write_bytes(lines[0] + b'{"not": "a record"}\n' + lines[1])
    contents = read_journal(path)
    assert len(contents.records) == 2
    assert "unreadable journal line" in contents.warnings[0]


def _journal_lines(run_dir: Path) -> int:
    try:
        return (run_dir / JOURNAL_NAME).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


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
            "--driver", driver]
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
    recorded = read_journal(run_dir / JOURNAL_NAME).records
    assert sorted(r.seed for r in recorded) == list(range(1, recorded_before_kill + 1))
    resumed = subprocess.run([*base, "--resume", str(run_dir)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    contents = read_journal(run_dir / JOURNAL_NAME)
    keys = [r.key for r in contents.records]
    assert len(keys) == len(set(keys)) == seeds
    raw_lines = [line for line in (run_dir / JOURNAL_NAME).read_bytes().splitlines()
                 if line.strip()]
    assert len(raw_lines) == seeds  # every trial written exactly once
    assert sorted(r.seed for r in contents.records) == list(range(1, seeds + 1))
    assert (run_dir / "result.json").exists()
