"""Zero-size blocks in the driver's workload (``--sizes`` ranges from 0): malloc(0),
calloc(0, n) and calloc(n, 0), aligned_alloc(a, 0), realloc to and from 0, and pointer
misuse of zero-size blocks, judged by the oracle at each NMM level; against glibc, whose
realloc(p, 0) frees p and returns NULL, which the driver must not take for a failure
(nor free p again)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness._isolate import run_child
from harness.oracle import judge
from harness.plan import Plan
from harness.records import DetailLine

LEVELS = ["off", "standard", "paranoid"]
# three zero-byte requests in four, the rest 1..64 bytes, every call that makes blocks
WORKLOAD = {"threads": 2, "ops": 4000, "sizes": ["0-0:3", "1-64:1"], "live": 200,
            "realloc": 0.3, "calloc": 0.2, "aligned": 0.1, "calloc_count": 8}


def _args(workload: dict[str, Any]) -> list[str]:
    return ["--threads", str(workload["threads"]), "--ops", str(workload["ops"]),
            "--sizes", ",".join(workload["sizes"]), "--live", str(workload.get("live", 1000)),
            "--realloc", str(workload.get("realloc", 0.05)),
            "--calloc", str(workload.get("calloc", 0.04)),
            "--aligned", str(workload.get("aligned", 0.04)),
            "--calloc-count", str(workload.get("calloc_count", 1)), "--progress-every", "0"]


def _plan(target: Any, workload: dict[str, Any], faults: list[dict[str, Any]] | None = None
          ) -> Plan:
    return Plan.model_validate({"schema_version": 1, "target": target, "workload": workload,
                                "faults": faults or []})


def _stream(driver: Path, *args: str) -> list[dict[str, str]]:
    proc = subprocess.run([str(driver), "stream", *args], capture_output=True, text=True,
                          check=True, timeout=60)
    return [{"kind": ln.split()[1], **dict(w.split("=") for w in ln.split()[2:])}
            for ln in proc.stdout.splitlines() if ln[0].isdigit()]


def test_a_range_from_zero_draws_zero_sizes_and_every_zero_byte_call(driver: Path) -> None:
    ops = _stream(driver, "--seed", "5", *_args(WORKLOAD), "--worker", "0", "--count", "3000")
    sizes = [int(op["size"]) for op in ops if "size" in op]
    zero = sum(1 for n in sizes if n == 0)
    assert 0.65 < zero / len(sizes) < 0.85 and max(sizes) <= 64
    allocs = [op for op in ops if op["kind"] == "alloc" and op["size"] == "0"]
    flavors = {op["flavor"] for op in allocs}
    assert flavors == {"malloc", "calloc", "aligned"}
    callocs = [op for op in allocs if op["flavor"] == "calloc"]
    # calloc(0, count) and calloc(count, 0), counts 1..8
    assert {op.get("zero_count", "0") for op in callocs} == {"0", "1"}
    assert any(int(op.get("count", 1)) > 1 for op in callocs)
    assert any(op["kind"] == "realloc" and op["size"] == "0" for op in ops)
    only = _stream(driver, "--seed", "5", "--sizes", "0-0", "--worker", "0", "--count", "200")
    assert {op.get("size") for op in only} <= {"0", None}


@pytest.mark.parametrize("level", LEVELS)
def test_zero_size_blocks_are_judged_as_any_block(driver: Path, level: str) -> None:
    argv = [str(driver), "run", "--target", "nmm", "--nmm-options",
            f"level={level}:policy=record", "--seed", "11", *_args(WORKLOAD)]
    obs = run_child(argv, 120.0)
    r = obs.result
    assert obs.exit_code == 0 and r is not None, obs.stderr_tail
    assert r.alloc_failures == 0 and r.zero_nulls == 0 and r.pattern_errors == 0
    assert r.counts and r.walk and r.counts["live_blocks"] == r.walk["blocks"] > 0
    plan = _plan({"kind": "nmm", "level": level}, WORKLOAD)
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons
    # a heap that took a zero-size block for the smallest class's 16 bytes in its size
    # queries (or lost one from its walk) fails the same trial
    wrong = DetailLine(type="walk_mismatch", what="requested_size", address=0x7F0000001000,
                       size=0, walk_size=16, line=10**6)
    walk = {**r.walk, "size_mismatch": r.walk["size_mismatch"] + 1}
    bad = obs.model_copy(update={"details": (*obs.details, wrong),
                                 "result": r.model_copy(update={"walk": walk})})
    v = judge(plan, bad)
    assert not v.passed and "0 != 16 (requested_size)" in " | ".join(v.reasons)


@pytest.mark.parametrize("level", LEVELS)
def test_pointer_misuse_of_zero_size_blocks_is_caught(driver: Path, level: str) -> None:
    """Only zero-size blocks live: each double free, freed-block realloc, interior
    pointer and malloc'd block deleted hits one (at paranoid: a slot of the reserved
    area, its freed state and its family)."""
    workload = {"threads": 2, "ops": 3000, "sizes": ["0-0"], "live": 100}
    faults = [{"kind": "double_free", "count": 2}, {"kind": "realloc_freed", "count": 2},
              {"kind": "invalid_free", "variant": "interior", "count": 2},
              {"kind": "dealloc_mismatch", "variant": "malloc_delete", "count": 2}]
    argv = [str(driver), "run", "--target", "nmm", "--nmm-options",
            f"level={level}:policy=record", "--seed", "3", *_args(workload),
            "--fault", "double_free:count=2", "--fault", "realloc_freed:count=2",
            "--fault", "invalid_free:variant=interior:count=2",
            "--fault", "dealloc_mismatch:variant=malloc_delete:count=2"]
    obs = run_child(argv, 120.0)
    assert obs.exit_code == 0 and obs.result is not None, obs.stderr_tail
    assert len(obs.faults) == 8 and all(f.size == 0 for f in obs.faults)
    expect: dict[str, Any] = {"outcome": ["detected"]}
    if level == "off":  # no family below standard: the delete goes through
        expect["faults"] = {"dealloc_mismatch": {"outcome": ["missed"]}}
    plan = Plan.model_validate({"schema_version": 1, "target": {"kind": "nmm", "level": level},
                                "workload": workload, "faults": faults, "expect": expect})
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons
    caught = {f.kind for f in verdict.faults if f.outcome == "detected"}
    assert caught == ({"double_free", "realloc_freed", "invalid_free"}
                      | (set() if level == "off" else {"dealloc_mismatch"}))
    # the same trial without the double frees' detections: missed, and the trial fails
    ids = {f.line for f in obs.faults if f.kind == "double_free"}
    blind = obs.model_copy(update={"events": tuple(
        e for e in obs.events if not (e.kind == "double_free" and any(
            f.address == e.address for f in obs.faults if f.line in ids)))})
    assert not judge(plan, blind).passed


def test_glibc_realloc_to_zero_frees_and_returns_null(driver: Path) -> None:
    """glibc's realloc(p, 0) frees p and returns NULL: counted apart (zero_nulls), the
    slot emptied. Taken for a failed realloc that left p, the driver would free p again
    later (glibc aborts: 'free(): double free detected')."""
    argv = [str(driver), "run", "--target", "malloc", "--seed", "11", *_args(WORKLOAD)]
    obs = run_child(argv, 120.0, env={"PATH": "/usr/bin:/bin"})
    r = obs.result
    assert obs.exit_code == 0 and r is not None, obs.stderr_tail
    assert r.zero_nulls > 100 and r.alloc_failures == 0 and r.pattern_errors == 0
    plan = _plan("malloc:glibc", WORKLOAD)
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons
    # the same NULLs counted as failed allocations: no fail point, no limit, a failure
    failed = obs.model_copy(update={"result": r.model_copy(
        update={"alloc_failures": r.zero_nulls, "zero_nulls": 0})})
    assert not judge(plan, failed).passed
