"""Engines as strategy objects, and the one child runner's plain-program front end."""

from __future__ import annotations

import sys
import time

import psutil
import pytest
from _procs import alive

from harness._isolate import run_program
from harness.engine import (
    NativeEngine,
    PythonEngine,
    engine_from_spec,
    engine_names,
    get_engine,
    register_engine,
)
from harness.errors import UnsupportedFeature
from harness.journal import Journal
from harness.loader import load_plan
from harness.runner import run_plan

PLAN = """
schema_version = 1
seeds = 3
timeout_s = 20
[workload]
ops = 100
[[faults]]
kind = "double_free"
"""


class _Replaying(NativeEngine):
    """A stand-in for a later engine (the chaos build): the native path, its own name."""

    name = "replaying"


def test_an_engine_of_its_own_runs_through_run_plan_and_keys_its_trials(
        tmp_path, write_plan, fake_driver):
    plan = load_plan(write_plan(PLAN))
    engine = _Replaying(fake_driver("detect"))
    with Journal(tmp_path / "journal.jsonl") as journal:
        result = run_plan(plan, jobs=2, journal=journal, engine=engine)
    assert result.passed and len(result.records) == 3
    assert {r.driver for r in result.records} == {"replaying"}
    assert all(r.key.endswith(":nmm:standard:replaying") for r in result.records)
    # the same plan under the native engine is other trials, not a resume of these
    with Journal(tmp_path / "journal.jsonl") as journal:
        again = run_plan(plan, jobs=2, journal=journal,
                         engine=NativeEngine(fake_driver("detect")))
    assert again.skipped == 0 and len(again.records) == 3


def test_registered_engines_are_named_built_and_rebuilt_from_their_spec(fake_driver,
                                                                        monkeypatch):
    import harness.engine

    monkeypatch.setattr(harness.engine, "_ENGINES", dict(harness.engine._ENGINES))
    register_engine("replaying", _Replaying)
    assert engine_names()[:2] == ("native", "python") and "replaying" in engine_names()
    engine = get_engine("replaying", command=fake_driver("detect"))
    assert isinstance(engine, _Replaying) and engine.command == fake_driver("detect")
    rebuilt = engine_from_spec(engine.spec())
    assert isinstance(rebuilt, _Replaying) and rebuilt.command == engine.command
    assert engine.options() == ["--driver", " ".join(fake_driver("detect"))]
    assert isinstance(engine_from_spec(PythonEngine().spec()), PythonEngine)
    # a worker elsewhere finds its own driver when none was named
    assert NativeEngine().spec() == {"name": "native", "command": None}


def test_an_unknown_engine_and_a_driver_for_the_python_engine_are_refused(fake_driver):
    with pytest.raises(UnsupportedFeature, match="engine 'warp': expected one of native"):
        get_engine("warp")
    with pytest.raises(UnsupportedFeature, match="--driver: the python engine runs no driver"):
        get_engine("python", command=fake_driver("detect"))


def test_in_process_engines_run_one_trial_at_a_time(write_plan):
    plan = load_plan(write_plan(PLAN))
    running: list[int] = []
    overlap: list[int] = []

    class Counting(PythonEngine):
        def run(self, plan, seed, *, on_line=None, stop=None):
            running.append(seed)
            overlap.append(len(running))
            time.sleep(0.02)
            try:
                return super().run(plan, seed)
            finally:
                running.remove(seed)

    result = run_plan(plan, jobs=4, engine=Counting())
    assert len(result.records) == 3 and max(overlap) == 1


def test_run_program_feeds_stdin_and_keeps_all_output():
    code = ("import sys\ndata = sys.stdin.read()\n"
            "sys.stdout.write(data.upper() * 3000)\nsys.stderr.write('said\\n')\nsys.exit(3)")
    proc = run_program([sys.executable, "-c", code], 30, input="abc\n")
    assert proc.returncode == 3 and not proc.timed_out
    assert proc.stdout == "ABC\n" * 3000 and proc.stderr == "said\n"
    assert proc.failure() == "exit 3: said"


def test_run_program_kills_the_whole_group_on_timeout(tmp_path):
    pidfile = tmp_path / "pid"
    code = ("import os, time\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    null = os.open(os.devnull, os.O_RDWR); os.dup2(null, 1); os.dup2(null, 2)\n"
            "    time.sleep(120); os._exit(0)\n"
            f"open({str(pidfile)!r}, 'w').write(str(pid))\n"
            "time.sleep(120)\n")
    for timeout_s in (1.0, 4.0, 16.0):
        proc = run_program([sys.executable, "-c", code], timeout_s)
        assert proc.timed_out and proc.returncode == -9 and proc.failure() == "timeout"
        if pidfile.exists() and pidfile.read_text():
            break
    try:
        grandchild = psutil.Process(int(pidfile.read_text()))
    except psutil.NoSuchProcess:
        return  # killed and already reaped
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(grandchild):
        time.sleep(0.02)
    assert not alive(grandchild)
