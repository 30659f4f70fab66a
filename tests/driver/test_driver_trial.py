"""Clean trials: the JSON-lines protocol, pattern checks, stats, churn, forks, cross frees."""

from __future__ import annotations

from typing import Any

import pytest

TARGETS = [
    ("malloc", ""),
    ("nmm", "level=off"),
    ("nmm", "level=standard"),
    ("nmm", "level=paranoid"),
]


def target_args(target: str, options: str) -> list[str]:
    return ["--target", target] + (["--nmm-options", options] if target == "nmm" else [])


@pytest.mark.parametrize(("target", "options"), TARGETS, ids=[o or t for t, o in TARGETS])
def test_clean_trial_finds_nothing_and_adds_up(run: Any, target: str, options: str) -> None:
    trial = run("run", *target_args(target, options), "--seed", "11", "--threads", "2",
                "--ops", "20000", "--cross", "0.3", "--sizes", "16-1024:4,1025-70000:1",
                "--progress-every", "5000")
    assert trial.returncode == 0, trial.stderr
    # Beats of the destroy phase may follow the result line (PROTOCOL.md); nothing else.
    tail = [line for line in trial.lines[trial.lines.index(trial.result):]
            if line["type"] != "beat" or line["phase"] != "destroy"]
    assert trial.lines[0]["type"] == "start" and tail == [trial.result]
    assert trial.lines[0]["seed"] == 11 and trial.lines[0]["pid"] > 0
    assert trial.of("event") == [] and trial.of("fault") == []
    assert len(trial.of("progress")) == 2 * 20000 // 5000
    r = trial.result
    assert r["exit"] == "ok" and r["ops"] == 40000 and r["cpu_ns"] > 0
    assert r["pattern_errors"] == 0 and r["events"] == 0 and r["faults"] == 0
    assert r["unexpected_status"] == 0 and r["alloc_failures"] == 0
    assert r["latency_ns"]["samples"] > 0
    assert r["latency_ns"]["p50"] <= r["latency_ns"]["p99"] <= r["latency_ns"]["max"]
    if target == "nmm":
        stats = r["stats"]
        assert stats["allocs"] - stats["frees"] == stats["live_blocks"]
        assert stats["allocs"] > 0 and stats["events"] == 0
        assert r["leaked_blocks"] == 0 and r["validate_problems"] == 0
    else:
        assert "stats" not in r
        assert r["validate_problems"] is None and r["leaked_blocks"] is None


@pytest.mark.parametrize(("target", "options"), [TARGETS[0], TARGETS[2]], ids=["malloc", "nmm"])
def test_thread_churn_fork_storm_and_cross_frees(run: Any, target: str, options: str) -> None:
    trial = run("run", *target_args(target, options), "--seed", "5", "--threads", "3",
                "--ops", "6000", "--thread-churn", "1000", "--fork-every", "1500",
                "--cross", "0.5", "--progress-every", "0")
    assert trial.returncode == 0, trial.stderr
    r = trial.result
    assert r["threads_spawned"] == 3 * 6  # every worker replaced every 1000 ops
    assert r["fork_children"] == 4 and r["fork_failures"] == 0
    assert r["cross_frees"] > 0
    assert r["pattern_errors"] == 0 and r["unexpected_status"] == 0
    if target == "nmm":
        assert r["leaked_blocks"] == 0 and r["validate_problems"] == 0
        assert r["stats"]["allocs"] - r["stats"]["frees"] == r["stats"]["live_blocks"]


def test_no_check_runs_the_same_workload(run: Any) -> None:
    checked = run("run", "--target", "malloc", "--seed", "3", "--ops", "5000",
                  "--progress-every", "0")
    bare = run("run", "--target", "malloc", "--seed", "3", "--ops", "5000",
               "--progress-every", "0", "--no-check")
    assert checked.lines[0]["check"] is True and bare.lines[0]["check"] is False
    assert checked.result["ops"] == bare.result["ops"] == 10000


def test_every_line_is_one_json_object_with_a_type(run: Any) -> None:
    trial = run("run", "--target", "nmm", "--nmm-options", "level=standard", "--ops", "3000",
                "--progress-every", "1000", "--fault", "double_free:count=2")
    assert trial.returncode == 0, trial.stderr
    raw = trial.stdout.splitlines()
    assert len(raw) == len(trial.lines)
    assert all(isinstance(line, dict) and "type" in line for line in trial.lines)
    assert {line["type"] for line in trial.lines} <= {"start", "fault", "fault_done", "event",
                                                       "progress", "beat", "result"}


def test_single_worker_trial_reproduces_from_the_seed(run: Any) -> None:
    """With one worker nothing depends on timing: same seed, same faults and counts."""
    args = ("run", "--target", "nmm", "--nmm-options", "level=standard", "--seed", "77",
            "--threads", "1", "--ops", "5000", "--fault", "double_free:count=3",
            "--fault", "overflow:bytes=4", "--progress-every", "0")
    a, b = run(*args), run(*args)
    assert a.returncode == b.returncode == 0

    def shape(trial: Any) -> list[tuple[Any, ...]]:
        return [(f["id"], f["kind"], f["op"], f["size"]) for f in trial.of("fault")]

    assert shape(a) == shape(b) and len(shape(a)) == 4
    assert [e["kind"] for e in a.of("event")] == [e["kind"] for e in b.of("event")]
    for key in ("allocs", "frees", "large_allocs"):
        assert a.result["stats"][key] == b.result["stats"][key]
    other = run(*args[:6], "78", *args[7:])
    assert other.returncode == 0 and len(shape(other)) == 4
    assert shape(other) != shape(a)


def test_many_threads_with_churn(run: Any) -> None:
    trial = run("run", "--target", "nmm", "--nmm-options", "level=standard", "--threads", "64",
                "--ops", "600", "--thread-churn", "200", "--cross", "0.5", "--progress-every", "0")
    assert trial.returncode == 0, trial.stderr
    r = trial.result
    assert r["threads_spawned"] == 64 * 3
    assert r["pattern_errors"] == 0 and r["leaked_blocks"] == 0 and r["validate_problems"] == 0
