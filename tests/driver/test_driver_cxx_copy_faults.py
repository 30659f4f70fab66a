"""The fault kinds of NMM's C++ and bulk-copy surface (issue 11), run by the real driver
and judged by the oracle: a family mismatch (dealloc_mismatch), a wrong sized delete,
a memcpy/memmove/memset past a block through the checked copy, an overflow of a block
kept live past the final sweep (the only check that sees it), a write into a malloc(0) block.
Each at the level that promises to catch it, at off (which promises nothing: the trial
must then fail a plan that expects a detection), under the preload library (the
driver's operators and memcpy reach NMM's), and under glibc and a peer, which must not
take the harness down whatever they do with the misuse."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from harness._driver import driver_args
from harness._isolate import run_child
from harness._peers import Target, get_target
from harness.oracle import judge
from harness.plan import Plan

# (kind, variant or None, bytes or None, level that promises detection, event kinds)
CASES: list[tuple[str, str | None, int | None, str, set[str]]] = [
    ("dealloc_mismatch", "malloc_delete", None, "standard", {"alloc_dealloc_mismatch"}),
    ("dealloc_mismatch", "new_free", None, "standard", {"alloc_dealloc_mismatch"}),
    ("dealloc_mismatch", "new_array_delete", None, "standard", {"alloc_dealloc_mismatch"}),
    ("dealloc_mismatch", "new_delete_array", None, "standard", {"alloc_dealloc_mismatch"}),
    ("sized_delete", "size", 3, "standard", {"delete_size_mismatch"}),
    ("sized_delete", "alignment", None, "standard", {"delete_size_mismatch"}),
    ("memcpy_overflow", "memcpy", 1, "standard", {"overflow"}),
    ("memcpy_overflow", "memmove", 16, "standard", {"overflow"}),
    ("memcpy_overflow", "memset", 8, "paranoid", {"overflow"}),
    ("exit_only_overflow", None, 1, "standard", {"overflow"}),
    ("exit_only_overflow", None, 8, "paranoid", {"overflow"}),
    ("zero_size_write", None, None, "standard", {"overflow"}),
]
MISMATCH = 8  # NMM_E_MISMATCH
CORRUPTED = 3


def _plan(kind: str, variant: str | None, nbytes: int | None, level: str,
          count: int = 2) -> Plan:
    fault: dict[str, Any] = {"kind": kind, "count": count}
    if variant:
        fault["variant"] = variant
    if nbytes:
        fault["bytes"] = nbytes
    return Plan.model_validate({
        "schema_version": 1, "target": {"kind": "nmm", "level": level},
        "workload": {"threads": 2, "ops": 4000, "sizes": ["16-2048"], "live": 200,
                     "progress_every": 1000},
        "faults": [fault]})


def _run(driver: Path, plan: Plan, seed: int = 41, target: Target | None = None) -> Any:
    argv = [str(driver), *driver_args(plan, seed, target)]
    env = target.child_env() if target is not None else None
    return run_child(argv, 120.0, env=env)


def _ids(case: tuple[Any, ...]) -> str:
    return "-".join(str(x) for x in case[:3] if x is not None) + f"@{case[3]}"


@pytest.mark.parametrize(("kind", "variant", "nbytes", "level", "events"), CASES,
                         ids=[_ids(c) for c in CASES])
def test_each_kind_is_detected_at_the_level_that_promises_it(
        driver: Path, kind: str, variant: str | None, nbytes: int | None, level: str,
        events: set[str]) -> None:
    plan = _plan(kind, variant, nbytes, level)
    obs = _run(driver, plan)
    assert obs.exit_code == 0 and obs.result is not None, obs.stderr_tail
    assert len(obs.faults) == 2
    for f in obs.faults:
        assert f.kind == kind and f.address and f.done
        assert f.variant == (variant or "")
        caught = [e for e in obs.events if e.address == f.address
                  and (e.seq or 0) > (f.seq or 0) and e.kind in events]
        assert len(caught) == 1, (f, obs.events)
        if kind in ("dealloc_mismatch", "sized_delete"):
            assert f.status == MISMATCH  # the caller was told, and the block is gone
        if kind == "memcpy_overflow":
            # reported before the copy and clamped to the block (record), so the free
            # that follows finds an intact canary
            assert (f.offset, f.bytes, f.copied, f.status) == (f.size, nbytes, f.size, 0)
            assert caught[0].detail == f.size  # the first byte outside the block
        if kind == "exit_only_overflow":
            assert f.status == -1
            assert caught[0].worker == -1  # found by the final sweep, not by a free
        if kind == "zero_size_write":
            assert (f.size, f.bytes, f.status) == (0, 8, CORRUPTED)
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons
    assert [v.outcome for v in verdict.faults] == ["detected", "detected"]
    if kind == "exit_only_overflow":
        # live (and counted) until the sweep, then given back: reported once, no leak
        assert obs.result.validate_problems == 2
        assert obs.result.walk_after is not None
        assert obs.result.walk_after["blocks"] == 0 and obs.result.leaked_blocks == 0


@pytest.mark.parametrize(("kind", "variant", "nbytes"),
                         [("dealloc_mismatch", "new_free", None), ("sized_delete", None, None),
                          ("memcpy_overflow", None, 4), ("exit_only_overflow", None, None),
                          ("zero_size_write", None, None)])
def test_at_off_nothing_is_promised_and_a_plan_expecting_detection_fails(
        driver: Path, kind: str, variant: str | None, nbytes: int | None) -> None:
    plan = _plan(kind, variant, nbytes, "off")
    obs = _run(driver, plan)
    assert obs.exit_code == 0 and obs.result is not None, obs.stderr_tail
    verdict = judge(plan, obs)
    assert [v.outcome for v in verdict.faults] == ["missed", "missed"]
    assert not verdict.passed and "missed" in " ".join(verdict.reasons)
    relaxed = plan.model_copy(update={"expect": plan.expect.model_copy(
        update={"outcome": ("missed",)})})
    assert judge(relaxed, obs).passed, judge(relaxed, obs).reasons


@pytest.mark.parametrize("policy", ["record", "abort"])
def test_zero_size_write_at_paranoid_dies_with_one_line_naming_the_block(
        driver: Path, policy: str) -> None:
    plan = _plan("zero_size_write", None, None, "paranoid", count=1)
    plan = plan.model_copy(update={"target": plan.target.model_copy(
        update={"policy": policy})})
    obs = _run(driver, plan)
    assert obs.signal == 11 and obs.result is None
    (f,) = obs.faults
    last = obs.stderr_tail.strip().splitlines()[-1]
    assert last.startswith("nmm: write of a zero-size block allocated at "), last
    assert f"(block {f.address:#x})" in last
    verdict = judge(plan, obs)
    assert [v.outcome for v in verdict.faults] == ["detected-abort"]
    assert not verdict.passed  # the plan expects "detected": the level table says why
    paranoid = Plan.model_validate({**plan.model_dump(mode="json"), "expect": {
        "levels": {"paranoid": {"outcome": ["detected-abort"]}}}})
    assert judge(paranoid, obs).passed, judge(paranoid, obs).reasons


def test_the_preload_librarys_operators_and_memcpy_catch_the_drivers_misuse(
        driver: Path) -> None:
    """Through the malloc target under libnmm_preload.so: the driver's operator
    delete/new and memcpy are NMM's, and each misuse gets its one `nmm:` line."""
    target = get_target("nmm-preload-standard")
    if not target.installed:
        pytest.skip(target.missing)
    for kind, variant, word in (("dealloc_mismatch", "malloc_delete", "alloc_dealloc_mismatch"),
                                ("sized_delete", "alignment", "delete_size_mismatch"),
                                ("memcpy_overflow", "memcpy", "overflow")):
        plan = _plan(kind, variant, 4 if kind == "memcpy_overflow" else None, "standard",
                     count=1)
        obs = _run(driver, plan, target=target)
        assert obs.exit_code == 23 and obs.result is not None, obs.stderr_tail  # exitcode=
        (f,) = obs.faults
        lines = [ln for ln in obs.stderr_tail.splitlines() if ln.startswith("nmm: ")]
        assert len(lines) == 1 and lines[0].startswith(f"nmm: {word} at {f.address:#x}"), lines
        if kind == "memcpy_overflow":
            assert "by memcpy writing" in lines[0] and "clamped to" in lines[0]


@pytest.mark.parametrize("peer", ["glibc", "jemalloc", "efence"])
def test_peers_take_every_new_kind_without_taking_the_harness_down(
        driver: Path, peer: str) -> None:
    """Whatever a peer does (miss it, abort, crash on the zero-size write), the trial is
    a recorded outcome: a result line, or a death the oracle classifies."""
    target = get_target(peer)
    if not target.installed:
        if os.environ.get("CI"):
            pytest.fail(target.missing)
        pytest.skip(target.missing)
    for kind in ("dealloc_mismatch", "sized_delete", "memcpy_overflow", "exit_only_overflow",
                 "zero_size_write"):
        plan = Plan.model_validate({**_plan(kind, None, None, "standard", count=1)
                                    .model_dump(mode="json"),
                                    "target": {"kind": "malloc", "peer": peer},
                                    "workload": {"threads": 1, "ops": 2000, "live": 100,
                                                 "sizes": ["16-512"], "progress_every": 1000}})
        obs = _run(driver, plan, target=target)
        assert not obs.timed_out, (peer, kind)
        assert [f.kind for f in obs.faults] == [kind], (peer, kind, obs.stderr_tail)
        verdict = judge(plan, obs)
        (v,) = verdict.faults
        assert v.outcome in ("detected-abort", "crashed", "missed"), (peer, kind, v)


NEW_KINDS = ("dealloc_mismatch", "sized_delete", "memcpy_overflow", "exit_only_overflow",
             "zero_size_write")


def test_the_abort_plan_ends_each_new_kind_at_its_level(driver: Path) -> None:
    """chaos_plans/abort.toml as the campaigns run it (one fault entry per trial, each
    level +abort): each of issue 11's kinds ends the process with its diagnostic where
    the level checks it (the zero-size write: its canary at standard, the fault at
    paranoid), and off, which checks none of them, runs the trial to its end."""
    import harness.campaign as cp

    path = Path(__file__).resolve().parents[2] / "chaos_plans" / "abort.toml"
    defn = cp.define([path], seeds=1, targets=["plan"],
                     levels=["off+abort", "standard+abort", "paranoid+abort"],
                     split_faults=True)
    trials = [t for t in cp.expand(defn) if t.plan.faults[0].kind in NEW_KINDS]
    assert {(t.plan.faults[0].kind, t.plan.target.label) for t in trials} == {
        (k, f"nmm:{lv}+abort") for k in NEW_KINDS for lv in ("off", "standard", "paranoid")}
    for t in trials:
        obs = _run(driver, t.plan, t.seed)
        verdict = judge(t.plan, obs)
        kind, level = t.plan.faults[0].kind, t.plan.target.level
        want = "missed" if level == "off" else "detected-abort"
        assert [v.outcome for v in verdict.faults] == [want], (kind, level, verdict.reasons)
        assert verdict.passed, (kind, level, verdict.reasons)
        if level == "off":
            assert obs.exit_code == 0 and obs.result is not None, (kind, obs.stderr_tail)
        else:
            assert obs.signal in (6, 11) and verdict.diagnostic, (kind, level, obs.stderr_tail)
