"""Timed workloads (``workload.duration_s``): the schema and loader, the driver command
line, replay overrides, and end to end through the real native driver and the CLI
(run, record, replay the recorded per-worker op counts; exit codes). No wall-clock
bounds: the assertions are about what ran and what was recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from _nmm_c import require_driver
from _procs import alive

from harness.cli import main
from harness.errors import PlanError, UnsupportedFeature
from harness.journal import JOURNAL_NAME, Journal
from harness.loader import load_plan
from harness.oracle import judge
from harness.plan import Plan
from harness.records import FaultLine, Observation, ResultLine, TrialRecord
from harness.robustness import build_report, replay_command, run_of_records
from harness.runner import driver_args, replay_overrides, run_plan

PLANS = Path(__file__).resolve().parent.parent.parent / "chaos_plans"
TIMED = """
schema_version = 1
timeout_s = 30
[workload]
threads = 2
ops = 4000
duration_s = 0.25
[[faults]]
kind = "double_free"
count = 2
"""


def plan(**workload: Any) -> Plan:
    return Plan.model_validate({"schema_version": 1, "timeout_s": 30,
                                "workload": {"threads": 2, **workload}})


# ---------------------------------------------------------------- schema and loader

def test_ops_and_duration_combine(write_plan):
    p = load_plan(write_plan(TIMED))
    assert p.workload.duration_s == 0.25 and p.workload.ops_per_worker == 4000
    assert p.workload.timed and p.total_ops == 8000  # the floor: rates apply to it


def test_duration_alone_keeps_the_default_floor():
    p = plan(duration_s=2)
    assert p.workload.ops is None and p.workload.ops_per_worker == 100_000
    assert p.workload.timed


def test_duration_on_a_plan_that_includes_an_ops_base(write_plan):
    write_plan("schema_version = 1\n[workload]\nops = 20000\n", "base.toml")
    p = load_plan(write_plan('include = "base.toml"\n[workload]\nduration_s = 3\n'))
    assert p.workload.ops == 20000 and p.workload.duration_s == 3


def test_shipped_soak_plan_is_timed():
    p = load_plan(PLANS / "soak.toml")
    assert p.workload.timed and p.faults
    assert p.timeout_s > p.workload.duration_s  # type: ignore[operator]


@pytest.mark.parametrize(("doc", "message"), [
    ("[workload]\nduration_s = 0\n", "workload.duration_s: given 0; expected greater than 0"),
    ("[workload]\nduration_s = -2.5\n", "workload.duration_s: given -2.5; expected greater"),
    ("[workload]\nduration_s = 100000\n",
     "workload.duration_s: given 100000; expected less than or equal to 86400"),
    ('[workload]\nduration_s = "long"\n', "workload.duration_s: given 'long'; expected"),
    ("timeout_s = 10\n[workload]\nduration_s = 10\n",
     "timeout_s: given 10.0; expected more than workload.duration_s (10): the watchdog"),
    ("[workload]\nthreads = 3\nworker_ops = [5, 6]\nops = 5\n",
     "workload.worker_ops: given [5, 6]; expected one op count per worker: 3 (threads)"),
    ("[workload]\nthreads = 2\nops = 100\nworker_ops = [100, 99]\n",
     "workload.worker_ops: given [100, 99]; expected counts of at least ops (100: the "
     "fault window)"),
    ("[workload]\nworker_ops = 7\n", "workload.worker_ops: given 7; expected"),
])
def test_bad_timed_workloads_name_file_key_and_expectation(write_plan, doc, message):
    path = write_plan("schema_version = 1\n" + doc)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert f"{path}: {message}" in str(info.value)


def test_override_that_outlasts_the_watchdog_names_the_key(write_plan):
    path = write_plan(TIMED)
    with pytest.raises(PlanError, match=r"timeout_s: given 30.0; expected more than "
                                        r"workload.duration_s \(45\)"):
        load_plan(path, ["workload.duration_s=45"])


def test_worker_ops_pin_the_counts_and_replace_the_clock():
    p = plan(ops=10, duration_s=5, worker_ops=[10, 4096])
    assert not p.workload.timed
    args = driver_args(p, 3)
    assert args[args.index("--worker-ops") + 1] == "10,4096"
    assert "--duration" not in args


def test_driver_args_of_a_timed_plan():
    args = driver_args(plan(ops=4000, duration_s=0.25), 9)
    assert args[args.index("--duration") + 1] == "0.25"
    assert args[args.index("--ops") + 1] == "4000"
    assert "--worker-ops" not in args
    assert "--duration" not in driver_args(plan(ops=4000), 9)


def test_python_engine_refuses_a_timed_plan():
    with pytest.raises(UnsupportedFeature, match=r"duration_s and workload\.worker_ops need "
                                                 r"the native driver"):
        run_plan(plan(ops=100, duration_s=1), engine="python")


@pytest.mark.parametrize("timing", [{"duration_s": 1}, {"worker_ops": [100, 100]}])
def test_python_driver_itself_refuses_timed_and_pinned_plans(timing):
    from harness.pydriver import PyDriver

    with pytest.raises(UnsupportedFeature, match="need the native driver"):
        PyDriver(plan(ops=100, **timing), 1)


# ---------------------------------------------------------------- replay overrides

def record_of(p: Plan, worker_ops: tuple[int, ...], *, detected: bool) -> TrialRecord:
    from harness.records import EventLine

    fault = FaultLine(id=0, kind="double_free", address=0x7F0000001000, op=300, line=1)
    events = (EventLine(kind="double_free", address=0x7F0000001000, line=2, driver_op=301),
              ) if detected else ()
    obs = Observation(faults=(fault,), events=events, exit_code=0, result=ResultLine(
        ops=sum(worker_ops), worker_ops=worker_ops, faults=1,
        stats={"allocs": 10, "frees": 10, "live_blocks": 0}))
    return TrialRecord(key="k", plan="p", plan_hash=p.plan_hash(), seed=5,
                       target="nmm:standard", observation=obs, verdict=judge(p, obs))


def test_replay_overrides_pin_a_timed_trials_counts():
    timed = plan(ops=1000, duration_s=2)
    assert replay_overrides(timed, record_of(timed, (4096, 3072), detected=True)) == [
        "workload.worker_ops=[4096,3072]"]
    fixed = plan(ops=1000)
    assert replay_overrides(fixed, record_of(fixed, (1000, 1000), detected=True)) == []


def test_failed_timed_trial_replay_command_pins_worker_ops():
    timed = plan(ops=1000, duration_s=2)
    record = record_of(timed, (4096, 3072), detected=False)
    assert not record.verdict.passed
    run = run_of_records(timed, [record], run_id="r", plan_path="chaos_plans/soak.toml",
                         overrides=["workload.duration_s=2"])
    doc = build_report([run])
    assert replay_command(record, run.info[record.key], ["nmm-chaos"]) == (
        "nmm-chaos run chaos_plans/soak.toml --set workload.duration_s=2 --seed 5 --seeds 1 "
        "--set 'workload.worker_ops=[4096,3072]'")
    assert doc["trials"][0]["worker_ops"] == [4096, 3072]
    replayed = Plan.model_validate({**timed.model_dump(mode="json"),
                                    "workload": {**timed.workload.model_dump(mode="json"),
                                                 "worker_ops": [4096, 3072]}})
    assert not replayed.workload.timed


# ---------------------------------------------------------------- end to end

def _journal(out: Path) -> list[TrialRecord]:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return Journal(run_dir / JOURNAL_NAME).records


def _sites(record: TrialRecord) -> list[tuple[Any, ...]]:
    return sorted((f.id, f.kind, f.variant, f.worker, f.op, f.size)
                  for f in record.observation.faults)


REPLAYABLE = """
schema_version = 1
seed = 61
timeout_s = 60
[target]
level = "paranoid"
[workload]
threads = 2
ops = 6000
live = 400
thread_churn = 2500
sizes = ["16-512:4", "513-8192:1"]
[[faults]]
kind = "double_free"
count = 2
[[faults]]
kind = "overflow"
bytes = 2
[[faults]]
kind = "invalid_free"
variant = "wild"
[[faults]]
kind = "uaf_write"
"""


def test_cli_timed_run_and_its_replay_reproduce_the_streams(tmp_path, write_plan, capsys):
    # no cross frees and no fail points: each worker's allocations are then a pure
    # function of its stream, so the heap's counters must come out equal too
    require_driver()
    path = str(write_plan(REPLAYABLE))
    code = main(["run", path, "--set", "workload.duration_s=0.3", "--out",
                 str(tmp_path / "a"), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = json.loads(out[out.index("{"):])
    (timed,) = _journal(tmp_path / "a")
    result = timed.observation.result
    assert result is not None and timed.verdict.passed, timed.verdict.reasons
    assert timed.observation.start is not None
    assert timed.observation.start["duration_s"] == 0.3
    counts = result.worker_ops
    assert len(counts) == 2 and sum(counts) == result.ops and min(counts) >= 6000
    assert doc["trials"][0]["worker_ops"] == list(counts)
    assert len(timed.observation.faults) == 5
    assert all(f.op < 6000 for f in timed.observation.faults)  # the fault window

    pin = replay_overrides(load_plan(path, ["workload.duration_s=0.3"]), timed)
    assert pin == ["workload.worker_ops=[" + ",".join(map(str, counts)) + "]"]
    code = main(["run", path, "--set", "workload.duration_s=0.3", "--set", pin[0],
                 "--out", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert code == 0, out
    (replay,) = _journal(tmp_path / "b")
    again = replay.observation.result
    assert again is not None and replay.verdict.passed, replay.verdict.reasons
    assert replay.observation.start is not None
    assert "duration_s" not in replay.observation.start
    assert again.worker_ops == counts and again.ops == result.ops
    assert _sites(replay) == _sites(timed)
    for key in ("allocs", "frees", "large_allocs"):
        assert again.stats[key] == result.stats[key], key


def test_cli_runs_the_shipped_soak_plan_shortened(tmp_path, capsys):
    require_driver()
    code = main(["run", str(PLANS / "soak.toml"), "--set", "workload.duration_s=0.3",
                 "--set", "workload.ops=8000", "--set", "workload.threads=2",
                 "--seeds", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    (record,) = _journal(tmp_path)
    result = record.observation.result
    assert result is not None and len(result.worker_ops) == 2
    assert min(result.worker_ops) >= 8000
    assert len(record.verdict.faults) == len(record.observation.faults) >= 10


@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "workload.duration_s=0"], "workload.duration_s: given 0; expected greater"),
    (["--set", "workload.duration_s=500"], "timeout_s: given 180.0; expected more than "
                                            "workload.duration_s (500)"),
    (["--set", "workload.worker_ops=[1,2]"], "workload.worker_ops: given [1, 2]; expected "
                                             "one op count per worker: 4"),
    (["--set", "workload.duration_s=1", "--engine", "python"], "need the native driver"),
])
def test_cli_rejects_bad_timed_runs_with_exit_2(tmp_path, capsys, extra, message):
    code = main(["run", str(PLANS / "soak.toml"), "--seeds", "1", "--out", str(tmp_path),
                 *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err


def test_plans_list_shows_a_timed_workload(capsys):
    code = main(["plans", "list", str(PLANS / "soak.toml")])
    out = capsys.readouterr().out
    assert code == 0
    assert "1000000 + 60 s" in out


def test_driver_dies_with_a_runner_killed_by_sigkill(write_plan):
    """A SIGKILLed runner cannot kill its trials' process groups; the driver's
    parent-death signal must end them instead of leaving them to run on."""
    driver = require_driver()
    path = write_plan(TIMED.replace("duration_s = 0.25", "duration_s = 600")
                      .replace("timeout_s = 30", "timeout_s = 900"))
    code = ("from harness.loader import load_plan; "
            "from harness.runner import run_plan; "
            f"run_plan(load_plan({str(path)!r}), command={driver!r}, jobs=1)")
    runner = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[2])
    drivers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while not drivers and time.monotonic() < deadline:
            drivers = [p for p in psutil.Process(runner.pid).children()
                       if "nmm-driver" in " ".join(p.cmdline())]
            time.sleep(0.05)
        assert drivers, "the runner never started the driver"
        # The driver arms its parent-death signal before it starts its workers. Found by
        # its command line it may still be the runner's fork before exec, or in ld.so: a
        # process stopped there never arms it and outlives the runner for that reason.
        while time.monotonic() < deadline and any(p.num_threads() < 2 for p in drivers):
            time.sleep(0.01)
        assert all(p.num_threads() >= 2 for p in drivers), "the driver's workers never ran"
        # a stopped driver stands for a hung one: it writes nothing, so it is not
        # ended by SIGPIPE on its progress lines once the runner's pipe is gone
        for proc in drivers:
            proc.suspend()
        while time.monotonic() < deadline and any(
                p.status() != psutil.STATUS_STOPPED for p in drivers):
            time.sleep(0.01)  # SIGSTOP lands asynchronously
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(alive(p) for p in drivers):
            time.sleep(0.05)
        assert not any(alive(p) for p in drivers), "the driver outlived its runner"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        for proc in drivers:  # if the test failed, do not leave a 600 s trial behind
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass

