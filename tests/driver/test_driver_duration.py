"""Timed trials (`run --duration`): workers run past --ops until the deadline, the result
records each worker's op count, the seeded faults land where an --ops trial puts them,
and `--worker-ops` replays the recorded counts op for op. Nothing here bounds wall time:
the assertions are about what ran, not how fast."""

from __future__ import annotations

from typing import Any

FAULTS = ["--fault", "double_free:count=2", "--fault", "overflow:bytes=4",
          "--fault", "invalid_free:variant=interior"]
BASE = ["--target", "nmm", "--nmm-options", "level=standard", "--seed", "77",
        "--threads", "2", "--sizes", "16-2048:1", "--live", "300", "--progress-every", "0"]


def fault_sites(trial: Any) -> list[tuple[Any, ...]]:
    """Where each fault was performed, without the (run-dependent) address."""
    return sorted((f["id"], f["kind"], f["variant"], f["worker"], f["op"], f["size"])
                  for f in trial.of("fault"))


def test_timed_trial_runs_past_ops_until_the_deadline_and_records_each_worker(run: Any) -> None:
    # 1 s, not less: the floor of 2000 ops takes well under a millisecond, but a loaded
    # machine can leave a just-started thread off the CPU for a good part of a second
    trial = run("run", *BASE, "--ops", "2000", "--duration", "1", *FAULTS)
    assert trial.returncode == 0, trial.stderr
    start, r = trial.lines[0], trial.result
    assert start["duration_s"] == 1 and start["ops"] == 2000
    counts = r["worker_ops"]
    assert len(counts) == 2 and sum(counts) == r["ops"]
    # each worker reaches the floor, then stops only at a clock check (every 1024 ops)
    assert all(n == 2000 or (n > 2000 and n % 1024 == 0) for n in counts), counts
    assert max(counts) > 2000  # 1 s is far more than 2000 ops take
    assert r["elapsed_ns"] >= 1_000_000_000  # no worker stops before the deadline
    # every planned fault was performed, and detected, inside the floor
    assert r["faults"] == start["faults_planned"] == 4
    assert all(f["op"] < 2000 for f in trial.of("fault"))
    assert r["events"] == len(trial.of("event")) >= 4
    assert r["pattern_errors"] == 0 and r["unexpected_status"] == 0
    stats = r["stats"]
    assert stats["allocs"] - stats["frees"] == stats["live_blocks"]


def test_faults_land_where_an_ops_trial_puts_them(run: Any) -> None:
    timed = run("run", *BASE, "--ops", "3000", "--duration", "0.2", *FAULTS)
    fixed = run("run", *BASE, "--ops", "3000", *FAULTS)
    assert timed.returncode == fixed.returncode == 0, timed.stderr + fixed.stderr
    assert fault_sites(timed) == fault_sites(fixed)
    assert fixed.result["worker_ops"] == [3000, 3000]


def test_worker_ops_replays_a_timed_trial(run: Any) -> None:
    churn = ["--thread-churn", "700", "--cross", "0"]
    timed = run("run", *BASE, *churn, "--ops", "1500", "--duration", "0.3", *FAULTS)
    assert timed.returncode == 0, timed.stderr
    counts = timed.result["worker_ops"]
    replay = run("run", *BASE, *churn, "--ops", "1500",
                 "--worker-ops", ",".join(map(str, counts)), *FAULTS)
    assert replay.returncode == 0, replay.stderr
    assert replay.lines[0]["worker_ops"] == counts and "duration_s" not in replay.lines[0]
    a, b = timed.result, replay.result
    assert b["worker_ops"] == counts and b["ops"] == a["ops"]
    assert fault_sites(replay) == fault_sites(timed)
    # the same streams: the same allocations and frees, the same thread replacements
    for key in ("allocs", "frees", "large_allocs"):
        assert b["stats"][key] == a["stats"][key], key
    assert b["threads_spawned"] == a["threads_spawned"] == sum(
        -(-n // 700) for n in counts)
    # workers interleave freely, so events are compared as a multiset
    assert sorted(e["kind"] for e in replay.of("event")) == sorted(
        e["kind"] for e in timed.of("event"))
    assert a["pattern_errors"] == b["pattern_errors"] == 0


def test_timed_trial_on_the_malloc_target(run: Any) -> None:
    trial = run("run", "--target", "malloc", "--seed", "3", "--threads", "3", "--ops", "500",
                "--duration", "0.1", "--cross", "0.4", "--progress-every", "0")
    assert trial.returncode == 0, trial.stderr
    r = trial.result
    assert len(r["worker_ops"]) == 3 and sum(r["worker_ops"]) == r["ops"]
    assert min(r["worker_ops"]) >= 500 and r["pattern_errors"] == 0
