"""Each fault kind against NMM produces its fault line and a matching event line."""

from __future__ import annotations

from typing import Any

import pytest

# (fault spec, level, expected event kind, expected invalid-pointer reason or None)
CASES = [
    ("double_free", "standard", "double_free", None),
    ("invalid_free:variant=interior", "standard", "invalid_free", 3),
    ("invalid_free:variant=stack", "standard", "invalid_free", None),
    ("invalid_free:variant=wild", "standard", "invalid_free", 1),
    ("invalid_free:variant=foreign_heap", "standard", "invalid_free", 2),
    ("overflow:bytes=1", "standard", "overflow", None),
    ("overflow:bytes=16", "standard", "overflow", None),
    ("underflow:bytes=8", "standard", "underflow", None),
    ("realloc_freed", "standard", "realloc_freed", None),
    ("uaf_write:variant=first", "paranoid", "use_after_free", None),
    ("uaf_write:variant=middle", "paranoid", "use_after_free", None),
]


@pytest.mark.parametrize(("spec", "level", "kind", "reason"), CASES, ids=[c[0] for c in CASES])
def test_fault_has_a_matching_event(run: Any, spec: str, level: str, kind: str,
                                    reason: int | None) -> None:
    trial = run("run", "--target", "nmm", "--nmm-options", f"level={level}:policy=record",
                "--seed", "21", "--threads", "2", "--ops", "8000", "--progress-every", "2000",
                "--fault", spec)
    assert trial.returncode == 0, trial.stderr
    faults = trial.of("fault")
    assert len(faults) == 1
    fault = faults[0]
    assert fault["kind"] == spec.split(":")[0]
    assert int(fault["address"], 16) != 0
    # the fault line comes before anything it caused
    fault_at = trial.lines.index(fault)
    matching = [e for e in trial.of("event")
                if e["kind"] == kind and e["address"] == fault["address"]]
    assert matching, f"no {kind} event at {fault['address']}: {trial.of('event')}"
    assert trial.lines.index(matching[0]) > fault_at
    if reason is not None:
        assert matching[0]["detail"] == reason
    r = trial.result
    assert r["faults"] == 1 and r["events"] == len(trial.of("event"))
    assert r["exit"] == "ok"


def test_fault_lines_carry_worker_and_op(run: Any) -> None:
    trial = run("run", "--target", "nmm", "--nmm-options", "level=standard", "--seed", "4",
                "--threads", "3", "--ops", "4000", "--fault", "double_free:count=6",
                "--progress-every", "0")
    assert trial.returncode == 0, trial.stderr
    faults = trial.of("fault")
    assert sorted(f["id"] for f in faults) == list(range(6))
    for f in faults:
        assert 0 <= f["worker"] < 3 and 4000 // 8 <= f["op"] < 4000
    addresses = {f["address"] for f in faults}
    detected = {e["address"] for e in trial.of("event") if e["kind"] == "double_free"}
    assert addresses <= detected


def test_alloc_failure_is_survived(run: Any) -> None:
    trial = run("run", "--target", "nmm", "--nmm-options", "level=standard", "--seed", "8",
                "--ops", "6000", "--fault", "alloc_failure:fail=alloc@every3,max25",
                "--progress-every", "0")
    assert trial.returncode == 0, trial.stderr
    assert [f["kind"] for f in trial.of("fault")] == ["alloc_failure"]
    r = trial.result
    assert r["alloc_failures"] >= 1
    assert r["stats"]["injected_failures"] >= 1
    assert r["pattern_errors"] == 0 and r["validate_problems"] == 0
    assert r["leaked_blocks"] == 0 and trial.of("event") == []


def test_uaf_read_is_performed_and_survived(run: Any) -> None:
    """Reading a freed small block is not detectable; the trial goes on (oracle: missed)."""
    trial = run("run", "--target", "nmm", "--nmm-options", "level=paranoid", "--seed", "2",
                "--ops", "4000", "--fault", "uaf_read:variant=middle", "--progress-every", "0")
    assert trial.returncode == 0, trial.stderr
    (fault,) = trial.of("fault")
    assert fault["kind"] == "uaf_read" and fault["variant"] == "middle"
    assert trial.result["faults"] == 1 and trial.result["pattern_errors"] == 0


def test_fault_line_is_written_before_a_fault_that_kills(run: Any) -> None:
    """glibc aborts on (or soon after) a double free: the fault line is already out (and
    its fault_done line too when glibc lets the second free return and dies later)."""
    import signal

    trial = run("run", "--target", "malloc", "--seed", "3", "--threads", "1", "--ops", "4000",
                "--fault", "double_free", "--progress-every", "1000")
    assert trial.returncode == -signal.SIGABRT
    types = [line["type"] for line in trial.lines]
    assert types[-1] == "fault" or types[-2:] == ["fault", "fault_done"]
    assert trial.of("result") == [] and trial.lines[0]["type"] == "start"
    assert trial.stderr.strip()  # glibc's one-line diagnostic (which one depends on its bins)
