"""The oracle on synthetic observations: matching, false positives, deaths, checks,
expectations. No processes: judge() is a pure function.

Each check the oracle makes has a test here that feeds it evidence that disagrees and
shows the trial fail (a check that cannot fail is a defect). ``trial()`` builds a
protocol-2 observation of a consistent, passing trial; tests then break one thing.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.chaos import Artifact
from harness.oracle import find_diagnostic, judge
from harness.plan import Plan
from harness.records import DetailLine, EventLine, FaultLine, Observation, ResultLine

A = 0x7F00_0000_1000
B = 0x7F00_0000_2000
CORRUPTED = 3
MISMATCH = 8


def plan(**kw: Any) -> Plan:
    doc: dict[str, Any] = {"schema_version": 1, "workload": {"threads": 2, "ops": 1000}}
    doc.update(kw)
    return Plan.model_validate(doc)


def plan_for(faults: list[FaultLine], **kw: Any) -> Plan:
    """A plan asking for exactly the kinds and counts of ``faults``."""
    kinds = Counter(f.kind for f in faults)
    specs = [{"kind": k, "count": n} for k, n in kinds.items()]
    return plan(faults=specs, **kw)


def fault(kind: str, address: int = A, line: int = 1, op: int = 100, fid: int = 0,
          size: int = 48, seq: int | None = 0, **kw: Any) -> FaultLine:
    """A performed fault line with its fault_done (status: caught, for a misused call)."""
    defaults: dict[str, Any] = {"done": True}
    if kind in ("double_free", "invalid_free", "realloc_freed"):
        defaults["status"] = {"double_free": 1, "invalid_free": 2, "realloc_freed": 6}[kind]
    elif kind in ("overflow", "underflow"):
        defaults["status"] = CORRUPTED
        defaults["bytes"] = kw.get("bytes", 1)
        defaults["offset"] = size if kind == "overflow" else -defaults["bytes"]
    elif kind == "uaf_write":
        defaults["bytes"] = kw.get("bytes", 1)
        defaults["offset"] = 0
    elif kind == "uaf_read":
        defaults.update(read=0xDB, was=0x5A, bytes=1, offset=0)
    elif kind == "alloc_failure":
        defaults.update(armed=True, injected_before=0, address=0)
    elif kind in ("dealloc_mismatch", "sized_delete"):
        defaults["status"] = MISMATCH
    elif kind == "memcpy_overflow":  # clamped by the check: the free that follows is ok
        defaults.update(status=0, bytes=kw.get("bytes", 1), offset=size, copied=size)
    elif kind == "exit_only_overflow":  # no call; the block is kept live past the sweep
        defaults.update(status=-1, bytes=kw.get("bytes", 1), offset=size)
    elif kind == "zero_size_write":
        defaults.update(status=CORRUPTED, bytes=kw.get("bytes", 8), offset=0)
    defaults.update(kw)
    if kind == "alloc_failure":
        address = defaults.pop("address")
    return FaultLine(id=fid, kind=kind, address=address, line=line, op=op, size=size,
                     seq=seq, **defaults)


def event(kind: str, address: int = A, line: int = 2, driver_op: int | None = 105,
          size: int = 48, seq: int = 1, detail: int | None = None, worker: int | None = None
          ) -> EventLine:
    """An event; an overflow's detail (where it found the damage) defaults to the
    block's end, where fault() puts its damage."""
    if detail is None:
        detail = size if kind == "overflow" else 0
    return EventLine(kind=kind, address=address, line=line, driver_op=driver_op, size=size,
                     seq=seq, detail=detail, worker=worker)


def result(n_events: int = 0, **kw: Any) -> ResultLine:
    """The result line of a consistent trial: 100 allocs, 10 live at the end of the
    workload, all freed by teardown; counters, the driver's books and walks agree."""
    base: dict[str, Any] = {
        "ops": 2000, "worker_ops": [1000, 1000], "elapsed_ns": 10**6, "events": n_events,
        "stats": {"allocs": 100, "frees": 100, "live_blocks": 0, "live_bytes": 0,
                  "events": n_events, "events_dropped": 0, "alloc_failures": 0,
                  "injected_failures": 0},
        "stats_before": {"allocs": 100, "frees": 90, "live_blocks": 10},
        "counts": {"allocs": 100, "frees": 100, "reallocs": 0, "reallocs_moved": 0,
                   "dropped": 0, "live_blocks": 10, "live_bytes": 480},
        "walk": {"blocks": 10, "bytes": 480, "unknown": 0, "missing": 0, "size_mismatch": 0},
        "walk_after": {"blocks": 0, "bytes": 0},
        "validate_problems": 0, "leaked_blocks": 0}
    for key, value in kw.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return ResultLine(**base)


def obs(faults=(), events=(), res: ResultLine | None = None, details=(), **kw: Any
        ) -> Observation:
    faults, events = tuple(faults), tuple(events)
    dead = "signal" in kw or kw.get("timed_out") or "exit_code" in kw
    if res is None and not dead:
        res = result(len(events))
    start = kw.pop("start", {"type": "start", "protocol": 2, "faults_planned": len(faults)})
    return Observation(start=start, faults=faults, events=events, result=res,
                       details=tuple(details),
                       exit_code=kw.pop("exit_code", 0 if res else None), **kw)


def verdict(faults=(), events=(), p: Plan | None = None, **kw: Any):
    faults = list(faults)
    return judge(p if p is not None else plan_for(faults), obs(faults, events, **kw))


def reasons(v) -> str:
    return " | ".join(v.reasons)


# ---------------------------------------------------------------- matching


@pytest.mark.parametrize(("kind", "event_kind"), [
    ("double_free", "double_free"), ("invalid_free", "invalid_free"),
    ("overflow", "overflow"), ("overflow", "guard_page"), ("underflow", "underflow"),
    ("underflow", "header_corrupt"), ("uaf_write", "use_after_free"),
    ("realloc_freed", "realloc_freed"),
])
def test_fault_matched_by_an_acceptable_event_is_detected(kind, event_kind):
    v = verdict([fault(kind)], [event(event_kind)])
    assert v.outcome == "detected", reasons(v)
    assert v.passed
    assert v.faults[0].latency_ops == 5
    assert v.faults[0].event_kind == event_kind


@pytest.mark.parametrize(("kind", "event_kind"), [
    ("double_free", "invalid_free"), ("overflow", "double_free"), ("overflow", "header_corrupt"),
    ("uaf_write", "overflow"), ("invalid_free", "double_free"),
])
def test_wrong_kind_is_a_miss_and_a_false_positive(kind, event_kind):
    v = verdict([fault(kind)], [event(event_kind, address=B)])
    assert v.faults[0].outcome == "missed"
    assert len(v.false_positives) == 1
    assert v.outcome == "false-positive"
    assert not v.passed


def test_event_at_another_address_does_not_match():
    v = verdict([fault("double_free")], [event("double_free", address=B)])
    assert v.faults[0].outcome == "missed"
    assert v.outcome == "false-positive"


def test_event_before_the_fault_does_not_match():
    v = verdict([fault("double_free", line=5)], [event("double_free", line=3)])
    assert v.faults[0].outcome == "missed"
    assert v.false_positives


def test_detection_is_matched_by_causality_not_output_order():
    """An event drained after the fault line but recorded before the fault was done
    (its seq is not past the fault's) was caused by something earlier: e.g. the
    legitimate free of the block, drained late by another worker."""
    early = event("double_free", line=2, seq=4)
    v = verdict([fault("double_free", line=1, seq=4)], [early])
    assert v.faults[0].outcome == "missed"
    assert v.false_positives == (early,)
    assert not v.passed
    assert verdict([fault("double_free", line=1, seq=4)], [event("double_free", seq=5)]).passed


def test_detection_without_fault_is_false_positive_unless_allowed():
    assert verdict([], [event("overflow")]).outcome == "false-positive"
    assert not verdict([], [event("overflow")]).passed
    assert verdict([], [event("overflow")], plan(expect={"max_false_positives": 1})).passed


def test_clean_trial():
    v = verdict()
    assert v.outcome == "clean"
    assert v.passed, reasons(v)
    assert {c.name for c in v.checks} >= {"performed", "evidence", "pattern", "status",
                                          "counts", "live", "validate", "leaks", "workload",
                                          "alloc_failures", "forks"}


def test_each_fault_needs_its_own_detection():
    faults = [fault("double_free", fid=0, line=1),
              fault("double_free", fid=1, line=3, address=B)]
    v = verdict(faults, [event("double_free", line=4, address=B)])
    assert [f.outcome for f in v.faults] == ["missed", "detected"]
    assert v.outcome == "missed"


def test_same_address_reused_matches_each_event_to_its_cause():
    faults = [fault("double_free", fid=0, line=1, seq=0),
              fault("double_free", fid=1, line=3, seq=1)]
    events = [event("double_free", line=2, seq=1), event("double_free", line=4, seq=2)]
    v = verdict(faults, events)
    assert [f.event_seq for f in v.faults] == [1, 2]
    assert v.passed
    # the first fault's detection missing: the later event is the second fault's only
    v = verdict(faults, events[1:])
    assert [f.outcome for f in v.faults] == ["missed", "detected"]


def test_duplicate_detection_fails_unless_allowed():
    events = [event("use_after_free", line=2, seq=1), event("use_after_free", line=3, seq=2)]
    v = verdict([fault("uaf_write")], events)
    assert v.duplicates == 1 and not v.false_positives
    assert not v.passed
    f = [fault("uaf_write")]
    assert verdict(f, events, plan_for(f, expect={"allow_duplicate_detections": True})).passed


def test_a_call_that_returned_ok_was_not_caught():
    """Events and statuses are two pieces of evidence: an event with an ok status means
    the caller was never told; a status with no event means nothing was recorded."""
    v = verdict([fault("double_free", status=0)], [event("double_free")])
    assert v.faults[0].outcome == "missed" and not v.passed
    assert "returned ok" in v.faults[0].note
    v = verdict([fault("double_free", status=1)], [])
    assert v.faults[0].outcome == "missed"
    assert "status 1 but no event" in v.faults[0].note


def test_uaf_read_is_judged_by_the_byte_it_read():
    poisoned = verdict([fault("uaf_read", read=0xDB, was=0x5A)])
    assert poisoned.faults[0].outcome == "detected" and poisoned.passed
    stale = verdict([fault("uaf_read", read=0x5A, was=0x5A)])
    assert stale.faults[0].outcome == "missed" and not stale.passed
    assert "old contents" in stale.faults[0].note
    # an event at its address is not a detection of a read: nothing was written
    v = verdict([fault("uaf_read", read=0x5A, was=0x5A)], [event("use_after_free")])
    assert v.faults[0].outcome == "missed" and v.false_positives


def test_per_fault_override_lets_a_miss_pass():
    faults = [fault("uaf_write", line=1), fault("double_free", line=2, address=B, fid=1)]
    p = plan_for(faults, expect={"outcome": ["detected"],
                                 "faults": {"uaf_write": {"outcome": ["missed"]}}})
    v = verdict(faults, [event("double_free", address=B, line=3)], p)
    assert v.outcome == "missed"
    assert v.passed, reasons(v)
    assert [f.outcome for f in v.faults] == ["missed", "detected"]


def test_missed_fails_a_strict_plan_and_names_the_fault():
    v = verdict([fault("uaf_write", variant="middle")], [])
    assert not v.passed
    assert v.reasons == ("fault 0 (uaf_write/middle) missed, expected detected: no detection",)


# ---------------------------------------------------------------- performed


def test_a_planned_fault_the_driver_never_printed_fails():
    f = fault("double_free")
    p = plan(faults=[{"kind": "double_free", "count": 2}])
    v = judge(p, obs([f], [event("double_free")], start={"protocol": 2, "faults_planned": 2}))
    assert not v.passed
    assert "1 of 2 double_free fault(s) never performed" in reasons(v)


def test_a_driver_that_injects_nothing_does_not_make_a_strict_plan_clean():
    p = plan(faults=[{"kind": "overflow", "count": 3}])
    v = judge(p, obs([], [], start={"protocol": 2, "faults_planned": 0}))
    assert not v.passed
    assert "driver planned 0 fault(s), the plan asks for 3" in reasons(v)
    assert "3 of 3 overflow fault(s) never performed" in reasons(v)


def test_a_fault_with_no_block_to_hit_fails_and_says_why():
    f = fault("double_free", address=0, status=-1)
    v = verdict([f])
    assert not v.passed
    assert v.faults[0].outcome == "missed"
    assert "not performed: no block to hit" in reasons(v)


def test_performed_holds_even_when_integrity_is_waived():
    p = plan(faults=[{"kind": "overflow", "count": 1}], expect={"integrity": False})
    assert not judge(p, obs([], [], start={"protocol": 2, "faults_planned": 1})).passed


# ---------------------------------------------------------------- deaths


def test_abort_with_diagnostic_naming_the_fault_is_detected_abort():
    o = obs([fault("double_free", done=False)], [], signal=signal.SIGABRT,
            stderr_tail=f"some noise\nnmm: double_free at {A:#x} (alloc site a.c:3)\n")
    v = judge(plan_for(list(o.faults)), o)
    assert v.outcome == "detected-abort"
    assert v.diagnostic.startswith("nmm: double_free")
    assert not v.passed
    f = list(o.faults)
    assert judge(plan_for(f, expect={"outcome": ["detected-abort"]}), o).passed


def test_diagnostic_names_which_fault_aborted():
    faults = [fault("double_free", fid=0, line=1, address=A),
              fault("overflow", fid=1, line=2, address=B)]
    o = obs(faults, [], signal=signal.SIGABRT, stderr_tail=f"nmm: double_free at {A:#x}\n")
    v = judge(plan_for(faults), o)
    assert [f.outcome for f in v.faults] == ["detected-abort", "missed"]


def test_a_diagnostic_naming_an_address_inside_the_damaged_range_blames_that_fault():
    f = fault("uaf_write", address=A, offset=24, bytes=8, size=4096)
    o = obs([f], [], signal=signal.SIGSEGV,
            stderr_tail=f"nmm: use after free of large block at {A + 24:#x}\n")
    assert judge(plan_for([f]), o).faults[0].outcome == "detected-abort"


def test_a_crash_is_not_blamed_on_an_open_alloc_failure():
    """The hole: an alloc_failure fault never gets an event, so it stayed open and took
    any death; with detected-abort allowed for it, a SIGSEGV inside the heap passed."""
    faults = [fault("double_free", line=1), fault("alloc_failure", line=3, fid=1)]
    p = plan_for(faults, expect={"outcome": ["detected", "detected-abort"]})
    # the last stderr line echoes the double free, detected and survived long before
    o = obs(faults, [event("double_free", line=2)], signal=signal.SIGSEGV,
            stderr_tail=f"nmm: double_free at {A:#x}\n")
    v = judge(p, o)
    assert not v.passed
    assert v.outcome == "crashed"
    assert v.faults[1].outcome == "missed"


def test_only_the_last_stderr_line_is_a_diagnostic():
    f = [fault("double_free", done=False)]
    o = obs(f, [], signal=signal.SIGSEGV,
            stderr_tail=f"nmm: double_free at {A:#x}\nSegmentation fault in the driver\n")
    v = judge(plan_for(f, expect={"outcome": ["detected", "detected-abort"]}), o)
    assert v.outcome == "crashed" and not v.passed
    assert find_diagnostic(o.stderr_tail) is None


def test_a_diagnostic_naming_no_injected_fault_is_not_blamed_on_one():
    f = [fault("overflow", done=False)]
    o = obs(f, [], signal=signal.SIGABRT, stderr_tail=f"nmm: overflow at {B:#x}\n")
    v = judge(plan_for(f, expect={"outcome": ["detected", "detected-abort"]}), o)
    assert not v.passed
    assert v.faults[0].outcome == "missed"
    assert v.outcome == "false-positive"


def test_signal_without_diagnostic_is_crashed():
    f = [fault("overflow", done=False)]
    o = obs(f, [], signal=signal.SIGSEGV, stderr_tail="")
    v = judge(plan_for(f), o)
    assert v.outcome == "crashed"
    assert "SIGSEGV with no diagnostic" in reasons(v)


def test_crash_with_no_fault_injected_is_a_trial_crash():
    v = verdict([], [], signal=signal.SIGSEGV)
    assert v.outcome == "crashed"
    assert not v.passed
    assert verdict([], [], plan(expect={"outcome": ["crashed"]}), signal=11).passed


def test_abort_diagnostic_without_fault_is_a_false_positive():
    v = verdict([], [], signal=signal.SIGABRT, stderr_tail="nmm: overflow at 0x10\n")
    assert v.outcome == "false-positive"
    assert not v.passed


def test_timeout_is_hang():
    v = verdict([], [], timed_out=True, signal=9, wall_s=3.0)
    assert v.outcome == "hang"
    assert not v.passed
    assert "timeout" in v.reasons[0]


def test_exit_without_result_is_crashed():
    v = verdict([fault("double_free")], [], exit_code=3)
    assert v.outcome == "crashed"


def test_an_allowed_abort_may_leave_later_faults_unreached():
    f = fault("uaf_write", address=A, done=False)
    p = plan(faults=[{"kind": "uaf_write", "count": 3}],
             expect={"outcome": ["detected", "detected-abort"]})
    o = obs([f], [], signal=signal.SIGSEGV,
            stderr_tail=f"nmm: use after free of large block at {A:#x}\n",
            start={"protocol": 2, "faults_planned": 3})
    v = judge(p, o)
    assert v.passed, reasons(v)
    assert "2 planned fault(s) not reached" in next(c.detail for c in v.checks
                                                   if c.name == "performed")
    # not when the abort is not an allowed outcome
    assert not judge(plan(faults=[{"kind": "uaf_write", "count": 3}]), o).passed


def test_alloc_failure_in_a_trial_that_died_cannot_be_seen_handled():
    faults = [fault("alloc_failure", line=1), fault("uaf_write", line=2, fid=1, done=False)]
    o = obs(faults, [], signal=11, stderr_tail=f"nmm: use after free of large block at {A:#x}\n")
    v = judge(plan_for(faults, expect={"outcome": ["detected", "detected-abort"]}), o)
    assert [f.outcome for f in v.faults] == ["missed", "detected-abort"]
    assert not v.passed


def test_death_note_says_how_far_the_trial_got():
    o = obs([], [], signal=11, last_progress={"type": "progress", "ops": 4200})
    assert "killed by SIGSEGV with no diagnostic (last progress: 4200 ops)" in \
        judge(plan(), o).reasons[0]


# ---------------------------------------------------------------- evidence


def test_events_lost_on_the_way_fail_the_trial():
    v = verdict([], [], events_truncated=3, res=result(3, stats={"events": 3}))
    assert not v.passed and "not kept by the harness" in reasons(v)
    v = verdict([], [], res=result(0, stats={"events_dropped": 2}))
    assert not v.passed and "dropped by the heap's full event ring" in reasons(v)
    v = verdict([], [], res=result(0, stats={"events": 1}))
    assert not v.passed and "heap recorded 1 detection(s), the driver drained 0" in reasons(v)
    v = verdict([], [], res=result(0, events=2, stats={"events": 2}))
    assert not v.passed and "wrote 2 event(s), 0 arrived" in reasons(v)


def test_a_driver_speaking_protocol_1_cannot_be_judged_strictly():
    v = judge(plan(), obs(start={"type": "start", "protocol": 1, "faults_planned": 0}))
    assert not v.passed and "protocol 1" in reasons(v)


def test_detail_lines_past_the_drivers_cap_fail_the_trial():
    v = verdict([], [], res=result(0, detail_lines_dropped=4))
    assert not v.passed and "4 detail line(s)" in reasons(v)


def test_fork_failures_fail_the_trial():
    d = DetailLine(type="fork_failure", signal=11, line=5)
    v = verdict([], [], res=result(0, fork_failures=1), details=[d])
    assert not v.passed and "1 fork child(ren) failed: killed by SIGSEGV" in reasons(v)


# ---------------------------------------------------------------- allocation failures


def test_alloc_failure_handled_when_its_fail_point_fired_and_the_workload_went_on():
    f = fault("alloc_failure", injected_before=0)
    good = result(alloc_failures=5, stats={"alloc_failures": 5, "injected_failures": 5})
    v = verdict([f], res=good)
    assert v.faults[0].outcome == "detected" and v.passed, reasons(v)
    assert v.faults[0].note == "5 allocation(s) failed cleanly, workload went on"


def test_a_stray_null_does_not_detect_a_fail_point_that_never_fired():
    f = fault("alloc_failure", injected_before=0)
    stray = result(alloc_failures=2, stats={"alloc_failures": 2, "injected_failures": 0})
    v = verdict([f], res=stray)
    assert v.faults[0].outcome == "missed"
    assert "never fired" in v.faults[0].note
    assert "2 allocation(s) failed with no fail point behind them" in reasons(v)


def test_each_fail_point_is_credited_only_with_its_own_failures():
    faults = [fault("alloc_failure", line=1, injected_before=0),
              fault("alloc_failure", line=2, fid=1, injected_before=4)]
    res = result(alloc_failures=4, stats={"alloc_failures": 4, "injected_failures": 4})
    v = verdict(faults, res=res)
    assert [f.outcome for f in v.faults] == ["detected", "missed"]


def test_driver_nulls_must_be_the_heaps_failed_allocations():
    f = fault("alloc_failure", injected_before=0)
    res = result(alloc_failures=3, stats={"alloc_failures": 5, "injected_failures": 5})
    v = verdict([f], res=res)
    assert not v.passed and "driver saw 3 NULL(s), the heap counted 5" in reasons(v)


def test_injected_failures_need_an_armed_fail_point():
    res = result(alloc_failures=1, stats={"alloc_failures": 1, "injected_failures": 1})
    v = verdict([], res=res)
    assert not v.passed and "with no fail point armed" in reasons(v)


def test_a_limit_explains_failed_allocations():
    res = result(alloc_failures=3, stats={"alloc_failures": 3})
    assert verdict([], [], plan(target={"options": {"limit": "1M"}}), res=res).passed
    assert not verdict([], [], plan(), res=res).passed


def test_zero_byte_nulls_are_allowed_of_a_peer_but_not_of_an_nmm_heap():
    """C lets malloc(0) return NULL (glibc's realloc(p, 0) frees p and does): the driver
    counts a peer's apart (zero_nulls) and the trial passes; the same NULLs counted as
    allocation failures fail it; an NMM heap, whose zero-byte requests get a block, is
    never excused them."""
    peer = plan(target="malloc:glibc")
    bare = {"stats": {}, "stats_before": None, "counts": None, "walk": None,
            "walk_after": None, "validate_problems": None, "leaked_blocks": None}
    apart = result().model_copy(update={**bare, "zero_nulls": 7})
    assert verdict([], [], peer, res=apart).passed, reasons(verdict([], [], peer, res=apart))
    failed = result().model_copy(update={**bare, "alloc_failures": 7})
    v = verdict([], [], peer, res=failed)
    assert not v.passed and "7 allocation(s) returned NULL" in reasons(v)
    v = verdict([], [], plan(), res=result(zero_nulls=2))
    assert not v.passed and "2 zero-byte request(s) taken as a NULL C allows" in reasons(v)


def test_fork_children_that_got_null_need_a_fail_point_or_limit():
    v = verdict([], [], res=result(fork_alloc_failures=1))
    assert not v.passed and "fork child(ren) got NULL" in reasons(v)


def test_alloc_failure_workload_that_stopped_short_is_missed():
    f = fault("alloc_failure", injected_before=0)
    res = result(ops=1500, worker_ops=[1000, 500], alloc_failures=1,
                 stats={"alloc_failures": 1, "injected_failures": 1})
    v = verdict([f], res=res)
    assert v.faults[0].outcome == "missed"
    assert "worker 1 ran 500 ops, expected 1000" in v.faults[0].note


# ---------------------------------------------------------------- collateral damage


def _overflow_next_block(bytes_: int = 64) -> FaultLine:
    """An overflow of 48-byte block A reaching into its neighbour's header at A+64."""
    return fault("overflow", size=48, bytes=bytes_, offset=48)


NEXT = A + 64  # the neighbour: header at NEXT-8..NEXT, inside A+48..A+48+64


def test_overflow_collateral_on_the_next_block_is_not_a_false_positive():
    f = _overflow_next_block()
    events = [event("overflow", line=2, detail=48),
              event("header_corrupt", address=NEXT, line=3, seq=2)]
    v = verdict([f], events)
    assert v.collateral == 1 and not v.false_positives
    assert v.passed, reasons(v)


def test_only_the_first_event_per_damaged_block_is_collateral():
    f = _overflow_next_block()
    events = [event("overflow", line=2, detail=48),
              event("header_corrupt", address=NEXT, line=3, seq=2),
              event("underflow", address=NEXT, line=4, seq=3, detail=8)]
    v = verdict([f], events)
    assert v.collateral == 1 and len(v.false_positives) == 1
    assert not v.passed


def test_collateral_must_lie_in_the_damaged_range():
    # a 1-byte overflow damages A+48 only: a header 16 bytes further on is not its doing
    f = _overflow_next_block(bytes_=1)
    events = [event("overflow", line=2, detail=48),
              event("header_corrupt", address=NEXT, line=3, seq=2)]
    v = verdict([f], events)
    assert len(v.false_positives) == 1 and not v.passed


def test_collateral_must_come_after_the_fault():
    f = _overflow_next_block()
    f = f.model_copy(update={"seq": 5})
    events = [event("overflow", line=2, detail=48, seq=6),
              event("header_corrupt", address=NEXT, line=3, seq=4)]
    assert len(verdict([f], events).false_positives) == 1


def test_far_away_corruption_is_still_a_false_positive():
    v = verdict([fault("overflow")], [event("overflow", line=2, detail=48),
                                      event("header_corrupt", address=A + 0x10000, line=3)])
    assert len(v.false_positives) == 1


def test_a_refused_legitimate_free_is_explained_only_by_damage_at_its_block():
    f = _overflow_next_block()
    events = [event("overflow", line=2, detail=48),
              event("header_corrupt", address=NEXT, line=3, seq=2)]
    status = DetailLine(type="status_error", call="free", address=NEXT, size=32,
                        status=CORRUPTED, line=4)
    ok = verdict([f], events, res=result(2, unexpected_status=1), details=[status])
    assert ok.passed, reasons(ok)
    elsewhere = status.model_copy(update={"address": B})
    v = verdict([f], events, res=result(2, unexpected_status=1), details=[elsewhere])
    assert not v.passed
    assert f"free({B:#x}) = 3" in reasons(v)
    # a bare count with no line naming the block explains nothing
    v = verdict([f], events, res=result(2, unexpected_status=1))
    assert not v.passed and "1 refused call(s) counted, 0 named" in reasons(v)


def test_a_free_refused_as_double_is_never_collateral():
    f = _overflow_next_block()
    status = DetailLine(type="status_error", call="free", address=NEXT, size=32, status=1,
                        line=4)
    v = verdict([f], [event("overflow", line=2, detail=48)],
                res=result(1, unexpected_status=1), details=[status])
    assert not v.passed


# ---------------------------------------------------------------- patterns


def _perr(address: int, offset: int, line: int = 5, what: str = "check",
          source: int | None = None) -> DetailLine:
    return DetailLine(type="pattern_error", what=what, address=address, offset=offset,
                      size=32, line=line, source=source)


def test_pattern_errors_fail_the_trial_and_name_the_block():
    v = verdict([], [], res=result(pattern_errors=1), details=[_perr(B, 12)])
    assert not v.passed
    assert f"check {B:#x}+12" in reasons(v) and "handed out twice" in reasons(v)


def test_a_pattern_error_inside_the_damaged_range_is_explained():
    f = _overflow_next_block()
    ev = [event("overflow", line=2, detail=48)]
    ok = verdict([f], ev, res=result(1, pattern_errors=1), details=[_perr(NEXT, 4)])
    assert ok.passed, reasons(ok)
    # one missed overflow does not excuse a block handed out twice elsewhere
    v = verdict([f], ev, res=result(1, pattern_errors=1), details=[_perr(B, 4)])
    assert not v.passed
    # nor a second wrong pattern on the same block
    v = verdict([f], ev, res=result(1, pattern_errors=2),
                details=[_perr(NEXT, 4), _perr(NEXT, 6, line=6)])
    assert not v.passed


def test_a_reused_block_damaged_in_each_of_two_lifetimes_explains_two_wrong_patterns():
    # level off, seed 3007 of shapes: an underflow's byte landed in the block below,
    # which its check saw; that address was freed, handed out again, and a later
    # overflow reached into it: the second wrong pattern is the second fault's
    first = _overflow_next_block()
    second = fault("overflow", size=48, bytes=64, offset=48, line=6, op=300, fid=1, seq=1)
    ev = [event("overflow", line=2, detail=48), event("overflow", line=7, seq=2, detail=48)]
    seen = [_perr(NEXT, 4, line=5), _perr(NEXT, 0, line=8)]
    ok = verdict([first, second], ev, res=result(2, pattern_errors=2), details=seen)
    assert ok.passed, reasons(ok)
    # the same two wrong patterns with only the first fault: the second is the allocator's
    v = verdict([first], ev[:1], res=result(1, pattern_errors=2), details=seen)
    assert not v.passed and f"check {NEXT:#x}+0" in reasons(v)
    # and a wrong pattern seen before the second fault is not put down to it
    early = [_perr(NEXT, 4, line=5), _perr(NEXT, 0, line=5)]
    v = verdict([first, second], ev, res=result(2, pattern_errors=2), details=early)
    assert not v.passed


def test_a_realloc_pattern_error_is_placed_at_the_old_block():
    f = _overflow_next_block()
    ev = [event("overflow", line=2, detail=48)]
    moved = _perr(B, 4, what="realloc", source=NEXT)
    assert verdict([f], ev, res=result(1, pattern_errors=1), details=[moved]).passed


def test_damage_a_check_saw_and_a_realloc_copied_is_one_damage():
    # level off, seed 1003 of smoke: an underflow's bytes landed in the block before; the
    # driver's check saw them, then its realloc of that block carried them forward
    f = _overflow_next_block()
    ev = [event("overflow", line=2, detail=48)]
    seen = _perr(NEXT, 4, line=5)
    carried = _perr(B, 4, what="realloc", source=NEXT, line=6)
    assert verdict([f], ev, res=result(1, pattern_errors=2), details=[seen, carried]).passed
    # but not twice carried, nor a second wrong byte the check saw
    twice = _perr(B + 64, 4, what="realloc", source=NEXT, line=7)
    v = verdict([f], ev, res=result(1, pattern_errors=3), details=[seen, carried, twice])
    assert not v.passed
    v = verdict([f], ev, res=result(1, pattern_errors=2),
                details=[seen, _perr(NEXT, 6, line=6)])
    assert not v.passed


def test_calloc_and_alignment_errors_are_never_excused():
    f = _overflow_next_block()
    ev = [event("overflow", line=2, detail=48)]
    for what in ("calloc", "aligned"):
        v = verdict([f], ev, res=result(1, pattern_errors=1),
                    details=[_perr(NEXT, 4, what=what)])
        assert not v.passed


def test_pattern_errors_counted_but_not_named_fail():
    v = verdict([], [], res=result(pattern_errors=2), details=[])
    assert not v.passed and "2 pattern error(s) counted, 0 named" in reasons(v)


# ---------------------------------------------------------------- counts, walks, leaks


def test_the_heaps_counts_must_match_the_drivers_books():
    v = verdict([], [], res=result(stats={"allocs": 101}))
    assert not v.passed and "differences 1 and 0 must be equal" in reasons(v)


def test_reallocs_the_heap_counted_must_be_the_drivers_reallocs():
    # 5 reallocs, 3 moved: the heap may count 3..5 extra allocs and frees
    ok = result(stats={"allocs": 104, "frees": 104},
                counts={"reallocs": 5, "reallocs_moved": 3})
    assert verdict([], [], res=ok).passed
    few = result(stats={"allocs": 102, "frees": 102},
                 counts={"reallocs": 5, "reallocs_moved": 3})
    assert "allow 3..5" in reasons(verdict([], [], res=few))
    many = result(stats={"allocs": 106, "frees": 106},
                  counts={"reallocs": 5, "reallocs_moved": 3})
    assert not verdict([], [], res=many).passed


def test_live_blocks_by_driver_counter_and_walk_must_agree():
    for bad in ({"stats_before": {"live_blocks": 11}}, {"counts": {"live_blocks": 9}},
                {"walk": {"blocks": 12}}):
        v = verdict([], [], res=result(**bad))
        assert not v.passed and "live blocks: driver" in reasons(v), bad


def test_a_walk_that_disagrees_with_the_driver_fails_and_names_the_block():
    d = DetailLine(type="walk_mismatch", what="unknown", address=B, walk_size=64, line=4)
    v = verdict([], [], res=result(walk={"unknown": 1}), details=[d])
    assert not v.passed and f"1 block(s) live in the walk but not the driver's ({B:#x})" \
        in reasons(v)
    v = verdict([], [], res=result(walk={"missing": 1}))
    assert not v.passed and "the driver's but not live in the walk" in reasons(v)


def test_requested_bytes_must_match_at_header_levels():
    v = verdict([], [], res=result(walk={"bytes": 481}))
    assert not v.passed and "requested bytes live: driver 480, heap walk 481" in reasons(v)
    # level off keeps no header: the walk reports usable sizes
    assert verdict([], [], plan(target={"level": "off"}), res=result(walk={"bytes": 481})
                   ).passed


def test_a_walk_size_mismatch_is_excused_only_for_a_damaged_header():
    f = _overflow_next_block()
    ev = [event("overflow", line=2, detail=48)]
    d = DetailLine(type="walk_mismatch", what="size", address=NEXT, size=32, walk_size=72,
                   line=9)
    # the walk's byte total carries the damaged header's size (72 for 32): 40 more
    assert verdict([f], ev, res=result(1, walk={"size_mismatch": 1, "bytes": 520}),
                   details=[d]).passed
    # and only that difference (test_driver_shapes' overflow:bytes=64 failed on it)
    v = verdict([f], ev, res=result(1, walk={"size_mismatch": 1, "bytes": 521}), details=[d])
    assert not v.passed and "(+40 from damaged headers)" in reasons(v)
    # the heap's leak report aggregates the same damaged size: the same difference only
    report = {"parsed": True, "live_blocks": 10, "live_bytes": 520}
    assert verdict([f], ev, res=result(1, walk={"size_mismatch": 1, "bytes": 520},
                                       leak_report=report), details=[d]).passed
    v = verdict([f], ev, res=result(1, walk={"size_mismatch": 1, "bytes": 520},
                                    leak_report={**report, "live_bytes": 521}), details=[d])
    assert not v.passed and "leak report counts 521 live byte(s)" in reasons(v)
    other = d.model_copy(update={"address": B})
    assert not verdict([f], ev, res=result(1, walk={"size_mismatch": 1}),
                       details=[other]).passed


@pytest.mark.parametrize("query", ["requested_size", "usable_size", "usable_size_checked"])
def test_a_size_query_that_disagrees_with_the_driver_fails_and_names_the_block(query: str
                                                                              ) -> None:
    """The driver asks the heap nmm_requested_size, nmm_usable_size and
    nmm_usable_size_checked of every live block the walk agrees on: a wrong answer is a
    size mismatch named by query (the walk's bytes stay right: nothing to take out of
    them), excused only at a block whose header an injected fault damaged."""
    d = DetailLine(type="walk_mismatch", what=query, address=B, size=32, walk_size=40, line=4)
    v = verdict([], [], res=result(walk={"size_mismatch": 1}), details=[d])
    assert not v.passed and f"{B:#x}: 32 != 40 ({query})" in reasons(v), reasons(v)
    f = _overflow_next_block()
    ev = [event("overflow", line=2, detail=48)]
    damaged = d.model_copy(update={"address": NEXT, "line": 9})
    assert verdict([f], ev, res=result(1, walk={"size_mismatch": 1}), details=[damaged]).passed
    # one excuse per block: the walk's size and a query of the same block are two problems
    walk = DetailLine(type="walk_mismatch", what="size", address=NEXT, size=32, walk_size=72,
                      line=9)
    assert not verdict([f], ev, res=result(1, walk={"size_mismatch": 2, "bytes": 520}),
                       details=[walk, damaged]).passed


def test_leaks_after_teardown_fail_with_no_allowance_for_damage():
    """Damaged blocks are retired and counted freed: a damage fault explains no leak."""
    f = _overflow_next_block()
    ev = [event("overflow", line=2, detail=48)]
    v = verdict([f], ev, res=result(1, leaked_blocks=1, stats={"live_blocks": 1}))
    assert not v.passed and "1 block(s) still live" in reasons(v)
    v = verdict([], [], res=result(walk_after={"blocks": 2, "bytes": 96}))
    assert not v.passed and "heap walk still finds 2 live block(s)" in reasons(v)
    v = verdict([], [], res=result(stats={"live_bytes": 64}))
    assert not v.passed and "64 live byte(s) still counted" in reasons(v)


def test_no_fault_excuses_a_leak_after_teardown():
    """A fault line claiming it leaves blocks on purpose (the old ``leaks`` field) buys
    no allowance: after teardown the heap must hold nothing, by counter, walk and bytes."""
    f = fault("double_free", leaks=1)
    leaky = result(1, leaked_blocks=1, walk_after={"blocks": 1, "bytes": 32},
                   stats={"live_blocks": 1, "live_bytes": 32})
    v = verdict([f], [event("double_free")], res=leaky)
    assert not v.passed
    assert "1 block(s) still live by the heap's counters" in reasons(v)
    assert "heap walk still finds 1 live block(s)" in reasons(v)
    assert verdict([f], [event("double_free")], res=result(1)).passed


def test_validate_problems_must_each_be_an_explained_event():
    f = fault("uaf_write")
    final = event("use_after_free", line=9, worker=-1)
    assert verdict([f], [final], res=result(1, validate_problems=1)).passed
    v = verdict([], [], res=result(validate_problems=1))
    assert not v.passed and "1 integrity problem(s)" in reasons(v)


def test_integrity_checks_can_be_waived():
    p = plan(expect={"integrity": False})
    assert judge(p, obs(res=result(pattern_errors=1))).passed


def test_workload_must_run_every_op_of_every_worker():
    v = verdict([], [], res=result(ops=1999, worker_ops=[1000, 999]))
    assert not v.passed and "worker 1 ran 999 ops, expected 1000" in reasons(v)
    v = verdict([], [], res=result(ops=2000, worker_ops=[1000, 999]))
    assert "sum to 1999" in reasons(v)


def test_find_diagnostic_takes_the_last_line_only():
    assert find_diagnostic("a\nnmm: one\nb\nnmm: two at 0x1\n") == "nmm: two at 0x1"
    assert find_diagnostic("nmm: one\nb\n") is None
    assert find_diagnostic("no diagnostics here\n xnmm: no\n") is None
    assert find_diagnostic("x\nfree(): double free detected\n", foreign=True) == \
        "free(): double free detected"
    # an NMM report: its summary line, then only its indented stacks
    report = ("nmm: double_free at 0x10 size 8 (thread 3)\n  detected by thread 3 here:\n"
              "    #0 0x401000 in main+0x10 a.c:3:5 (/tmp/a+0x1000)\n")
    assert find_diagnostic("noise\n" + report) == "nmm: double_free at 0x10 size 8 (thread 3)"
    assert find_diagnostic(report + "later output\n") is None
    assert find_diagnostic(report, foreign=True) == "nmm: double_free at 0x10 size 8 (thread 3)"


def test_verdict_round_trips_through_json():
    from harness.records import Verdict

    v = verdict([fault("double_free")], [event("double_free")])
    assert Verdict.model_validate_json(v.model_dump_json()) == v


def test_replay_command_of_a_failure():
    from harness.records import TrialRecord
    from harness.robustness import build_report, replay_command, run_of_records

    f = [fault("double_free")]
    p = plan_for(f)
    o = obs(f, [])
    record = TrialRecord(key="k", plan="p", plan_hash=p.plan_hash(), seed=7,
                         target="nmm:standard", observation=o, verdict=judge(p, o))
    run = run_of_records(p, [record], run_id="r", plan_path="chaos_plans/x.toml",
                         overrides=["workload.threads=4", "seed=3", 'expect.outcome=["a"]'])
    assert replay_command(record, run.info["k"], ["nmm-chaos"]) == (
        "nmm-chaos run chaos_plans/x.toml --set workload.threads=4 "
        "--set 'expect.outcome=[\"a\"]' --seed 7 --seeds 1")
    doc = build_report([run])
    assert doc["failures"][0]["replay"].endswith(" run chaos_plans/x.toml --set "
                                                 "workload.threads=4 --set 'expect.outcome="
                                                 "[\"a\"]' --seed 7 --seeds 1")
    assert doc["matrix"]["double_free"]["nmm:standard"]["outcomes"] == {"missed": 1}


# ---------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_KINDS = ["double_free", "invalid_free", "overflow", "underflow", "uaf_write", "uaf_read",
          "realloc_freed", "alloc_failure"]
_EVENT_FOR = {"double_free": "double_free", "invalid_free": "invalid_free",
              "overflow": "overflow", "underflow": "underflow",
              "uaf_write": "use_after_free", "realloc_freed": "realloc_freed"}


@st.composite
def consistent_trials(draw: Any) -> tuple[list[FaultLine], list[EventLine], ResultLine]:
    """A trial in which every fault was performed and caught the way the protocol says
    a caught fault looks: its own block, its event after it (line and seq), its status."""
    kinds = draw(st.lists(st.sampled_from(_KINDS), max_size=6))
    faults: list[FaultLine] = []
    events: list[EventLine] = []
    line = seq = injected = 0
    for i, kind in enumerate(kinds):
        line += 1
        address = A + 0x1000 * i
        if kind == "alloc_failure":
            faults.append(fault(kind, line=line, fid=i, seq=seq, injected_before=injected))
            injected += draw(st.integers(1, 5))
            continue
        faults.append(fault(kind, address=address, line=line, fid=i, seq=seq))
        if kind in _EVENT_FOR:
            line += 1
            seq += 1
            detail = 48 if kind == "overflow" else 1 if kind == "underflow" else 0
            events.append(event(_EVENT_FOR[kind], address=address, line=line, seq=seq,
                                detail=detail))
    res = result(len(events), alloc_failures=injected,
                 stats={"alloc_failures": injected, "injected_failures": injected})
    return faults, events, res


_BREAKAGES = ["drop_event", "late_seq", "stray_event", "drop_fault_line", "pattern",
              "status", "count", "leak", "walk", "fork", "short"]


def _break(how: str, faults: list[FaultLine], events: list[EventLine], res: ResultLine,
           details: list[DetailLine]) -> tuple[list[FaultLine], list[EventLine],
                                               ResultLine, list[DetailLine]]:
    faults, events = list(faults), list(events)
    r = res.model_dump()
    if how == "drop_event" and events:
        events.pop()
    elif how == "late_seq" and events:
        cause = next(f for f in faults if f.address == events[-1].address)
        events[-1] = events[-1].model_copy(update={"seq": cause.seq})
    elif how == "drop_fault_line" and faults:
        faults.pop()
    elif how == "pattern":
        r["pattern_errors"] += 1
        details.append(_perr(B + 0x100000, 8, line=10_000))
    elif how == "status":
        r["unexpected_status"] += 1
        details.append(DetailLine(type="status_error", call="free", address=B + 0x100000,
                                  size=16, status=CORRUPTED, line=10_000))
    elif how == "count":
        r["stats"]["frees"] += 1
    elif how == "leak":
        r["walk_after"]["blocks"] = 1
    elif how == "walk":
        r["walk"]["missing"] = 1
    elif how == "fork":
        r["fork_failures"] = 1
    elif how == "short":
        r["worker_ops"] = [1000, 999]
        r["ops"] = 1999
    else:  # "stray_event", and the fallback when there is nothing to drop
        top = max([e.seq for e in events] + [f.seq or 0 for f in faults] + [0])
        events.append(event("double_free", address=B + 0x100000, line=10_000, seq=top + 1))
        r["events"] += 1
        r["stats"]["events"] += 1
    return faults, events, ResultLine.model_validate(r), details


@settings(max_examples=200, deadline=None)
@given(trial=consistent_trials(), how=st.sampled_from(_BREAKAGES))
def test_property_a_consistent_trial_passes_and_any_one_breakage_fails_it(trial, how):
    """Model-based: a trial built to the protocol's meaning of "caught" passes (not
    by the oracle's own construction, but by this independent description), and
    breaking any one piece of evidence makes it fail."""
    faults, events, res = trial
    p = plan_for(faults)
    good = judge(p, obs(faults, events, res=res))
    assert good.passed, reasons(good)
    assert good.outcome == ("detected" if faults else "clean")
    bf, be, br, bd = _break(how, faults, events, res, [])
    bad = judge(p, obs(bf, be, res=br, details=bd,
                       start={"protocol": 2, "faults_planned": len(faults)}))
    assert not bad.passed, how
    assert judge(p, obs(bf, be, res=br, details=bd,
                        start={"protocol": 2, "faults_planned": len(faults)})) == bad


_ev_kinds = st.sampled_from(["double_free", "invalid_free", "overflow", "underflow",
                             "use_after_free", "header_corrupt", "realloc_freed", "odd"])
_addr = st.sampled_from([0, A, B, A + 64, B - 8])


@settings(max_examples=200, deadline=None)
@given(faults=st.lists(st.builds(FaultLine, id=st.integers(0, 5), kind=st.sampled_from(
           [*_KINDS, "weird"]), address=_addr, line=st.integers(0, 20),
           seq=st.one_of(st.none(), st.integers(0, 5)), size=st.integers(0, 100),
           offset=st.one_of(st.none(), st.integers(-8, 100)),
           bytes=st.one_of(st.none(), st.integers(1, 64)),
           status=st.one_of(st.none(), st.integers(-1, 6)), done=st.booleans()), max_size=5),
       events=st.lists(st.builds(EventLine, kind=_ev_kinds, address=_addr,
                                 line=st.integers(0, 20), seq=st.integers(0, 8),
                                 detail=st.integers(0, 64),
                                 worker=st.one_of(st.none(), st.integers(-1, 2))),
                       max_size=6),
       sig=st.one_of(st.none(), st.sampled_from([6, 9, 11])), timed_out=st.booleans(),
       stderr=st.sampled_from(["", f"nmm: overflow at {A:#x}\n", "boom\n"]))
def test_property_judge_never_raises_and_a_death_never_passes_a_strict_plan(
        faults, events, sig, timed_out, stderr):
    o = Observation(start={"protocol": 2, "faults_planned": len(faults)},
                    faults=tuple(faults), events=tuple(events), result=None, signal=sig,
                    exit_code=None if sig else 1, timed_out=timed_out, stderr_tail=stderr)
    v = judge(plan(), o)
    assert len(v.faults) == len(faults)
    assert not v.passed  # it died: a plan expecting only "detected" never passes that
    if timed_out:
        assert v.outcome == "hang"
    assert judge(plan(), o) == v  # pure: same inputs, same verdict


@pytest.mark.parametrize(("kind", "detail", "ok"), [
    ("overflow", 48, True), ("overflow", 55, False), ("overflow", 2, False),
    ("uaf_write", 0, True), ("uaf_write", 30, False),
])
def test_a_detection_must_point_at_the_damage(kind, detail, ok):
    """A check that reports the right kind at the wrong place (a canary check that
    stops short and a fallback that names some other byte) has not found the damage."""
    event_kind = "overflow" if kind == "overflow" else "use_after_free"
    v = verdict([fault(kind)], [event(event_kind, detail=detail)])
    assert v.passed is ok, reasons(v)
    if not ok:
        assert v.faults[0].outcome == "missed" and "the damage was at" in v.faults[0].note


# ---------------------------------------------------------------- abort policy


def abort_plan(faults: list[FaultLine]) -> Plan:
    return plan_for(faults, target={"kind": "nmm", "level": "paranoid", "policy": "abort"},
                    expect={"outcome": ["detected", "detected-abort"]})


def test_a_fault_injected_while_the_abort_report_was_written_is_not_reached():
    """Smoke, nmm:paranoid+abort, double_free (seed 1000): worker 1's double free aborted
    the process, and while its report was being written worker 0 performed the second
    double free, whose call never returned. That fault never had a chance: "not reached",
    not "missed", and the trial passes."""
    faults = [fault("double_free", fid=0, line=7, address=A, done=False, status=None),
              fault("double_free", fid=1, line=11, address=B, seq=0, done=False,
                    status=None)]
    o = obs(faults, [], signal=signal.SIGABRT,
            stderr_tail=f"nmm: double_free at {A:#x} size 48 (thread 7)\n"
                        "  detected by thread 7 here:\n    #0 0x1 in f\n")
    v = judge(abort_plan(faults), o)
    assert [f.outcome for f in v.faults] == ["detected-abort", "not-reached"]
    assert "dying of fault 0's detection" in v.faults[1].note
    assert v.outcome == "detected-abort"
    assert v.passed, reasons(v)
    # a second fault whose call did return without a detection was missed
    done = [faults[0], fault("double_free", fid=1, line=11, address=B, status=0)]
    v = judge(abort_plan(done), obs(done, [], signal=signal.SIGABRT,
                                    stderr_tail=f"nmm: double_free at {A:#x}\n"))
    assert [f.outcome for f in v.faults] == ["detected-abort", "missed"]
    assert not v.passed


def test_under_abort_a_detected_fault_the_diagnostic_names_is_what_the_process_died_of():
    """The same race the other way round (seed 1000 again): worker 0 drained fault 0's
    event (seq 1) before the abort took the process, then injected fault 1 (its line says
    the heap's latest event was already seq 1). The death is fault 0's abort, not a crash,
    and fault 1 came after it: not reached."""
    faults = [fault("double_free", fid=0, line=7, address=A, seq=0, done=False, status=None),
              fault("double_free", fid=1, line=11, address=B, seq=1, done=True, status=0)]
    events = [event("double_free", address=A, line=9, seq=1)]
    o = obs(faults, events, signal=signal.SIGABRT,
            stderr_tail=f"nmm: double_free at {A:#x} size 48 (thread 7)\n")
    v = judge(abort_plan(faults), o)
    assert [f.outcome for f in v.faults] == ["detected-abort", "not-reached"]
    assert "event seq 1" in v.faults[1].note
    assert v.outcome == "detected-abort" and v.passed, reasons(v)
    # under policy=record the same line is an echo of a survived detection: a crash
    rec = plan_for(faults, target={"kind": "nmm", "level": "paranoid"},
                   expect={"outcome": ["detected", "detected-abort"]})
    assert judge(rec, o).outcome == "crashed"


# ---------------------------------------------------------------- the leak report at exit

LEAKED = {"blocks": 8, "bytes": 9000, "suppressed_blocks": 2, "suppressed_bytes": 1000}


def _exit_report(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "exit_report", "json": True,
        "definitely_lost": {"blocks": 6, "bytes": 8000},
        "indirectly_lost": {"blocks": 0, "bytes": 0},
        "still_reachable": {"blocks": 0, "bytes": 0},
        "suppressed": {"blocks": 2, "bytes": 1000},
        "ungrouped": {"blocks": 0, "bytes": 0},
        "text_bytes": 900, "text_names_lost": True, "json_names_lost": True}
    return {**base, **kw}


def _exit_plan() -> Plan:
    return plan_for([]).model_copy(update={"workload": plan_for([]).workload.model_copy(
        update={"exit_leaks": 8})})


def test_the_exit_leak_report_must_list_exactly_the_blocks_leaked_on_purpose():
    p = _exit_plan()
    good = verdict([], [], p=p, res=result(exit_leaks=LEAKED), exit_report=_exit_report())
    assert good.passed, reasons(good)
    # no report at all (the heap's destructor never ran, or wrote nowhere)
    v = verdict([], [], p=p, res=result(exit_leaks=LEAKED))
    assert not v.passed and "no leak report came at exit" in reasons(v)
    # a lost block missed, one counted reachable, the suppression not applied
    for wrong, said in [
            ({"definitely_lost": {"blocks": 5, "bytes": 7000}}, "definitely_lost: the report "
             "says 5 block(s), 7000 byte(s); the driver leaked 6, 8000"),
            ({"still_reachable": {"blocks": 1, "bytes": 64}}, "still_reachable: the report "
             "says 1 block(s)"),
            ({"suppressed": {"blocks": 0, "bytes": 0}}, "suppressed: the report says 0"),
            ({"text_names_lost": False}, "text report does not name")]:
        v = verdict([], [], p=p, res=result(exit_leaks=LEAKED), exit_report=_exit_report(**wrong))
        assert not v.passed and said in reasons(v), wrong
    # a driver that never leaked what the plan asked for
    v = verdict([], [], p=p, exit_report=_exit_report())
    assert not v.passed and "the result line has none" in reasons(v)
    # a plan without exit leaks does not judge a report
    assert verdict([], [], res=result(exit_leaks=LEAKED)).passed


def _damage_plan(level: str, **options: Any) -> Plan:
    base = plan_for([], target={"kind": "nmm", "level": level, "options": options})
    return base.model_copy(update={"workload": base.workload.model_copy(
        update={"exit_leaks": 8, "exit_damage": True})})


DAMAGED = {**LEAKED, "damaged": ["0x7f0000001010", "0x7f0000200000"],
           "freed_written": "0x7f0000003030"}
NAMED_AT_EXIT = [{"kind": "overflow", "address": "0x7f0000001010"},
                 {"kind": "overflow", "address": "0x7f0000200000"},
                 {"kind": "use_after_free", "address": "0x7f0000003030"}]


def test_the_exit_check_must_name_each_block_damaged_before_the_exit_and_nothing_else():
    """workload.exit_damage: lost blocks with their canary's first byte flipped, at
    paranoid a freed block written in the quarantine; the exit check must name each at
    its address with its kind, once, and nothing else."""
    p = _damage_plan("paranoid")

    def judged(errors: list[dict[str, str]] | None, leaked: dict[str, Any] = DAMAGED,
               pl: Plan = p):
        extra = {} if errors is None else {"exit_errors": errors}
        return verdict([], [], p=pl, res=result(exit_leaks=leaked),
                       exit_report=_exit_report(**extra))

    good = judged(NAMED_AT_EXIT)
    assert good.passed, reasons(good)
    # one overflow not named (an exit check that skips large blocks, say)
    v = judged(NAMED_AT_EXIT[:1] + NAMED_AT_EXIT[2:])
    assert not v.passed and "the overflow at 0x7f0000200000: the exit check named nothing" \
        in reasons(v)
    # the quarantined block named as something else, or twice
    v = judged([*NAMED_AT_EXIT[:2], {"kind": "overflow", "address": "0x7f0000003030"}])
    assert not v.passed and "the use_after_free at 0x7f0000003030: the exit check named " \
        "overflow there" in reasons(v)
    v = judged([*NAMED_AT_EXIT, NAMED_AT_EXIT[0]])
    assert not v.passed and "named overflow, overflow there" in reasons(v)
    # a block nobody damaged named
    v = judged([*NAMED_AT_EXIT, {"kind": "overflow", "address": "0x7f0000009000"}])
    assert not v.passed and "1 block(s) no one damaged: overflow at 0x7f0000009000" in reasons(v)
    # no list at all; a driver that damaged nothing
    v = judged(None)
    assert not v.passed and "lists no exit_errors" in reasons(v)
    v = judged([], leaked={**LEAKED, "damaged": [], "freed_written": None})
    assert not v.passed and "no leaked block damaged at paranoid" in reasons(v)
    v = judged([], leaked=LEAKED)
    assert not v.passed and "a driver without --exit-damage" in reasons(v)
    # standard: no freed block is written; exit_check=1 makes it look; without, nothing
    standard = {**DAMAGED, "freed_written": None}
    assert judged(NAMED_AT_EXIT[:2], standard, _damage_plan("standard", exit_check=1)).passed
    v = judged(NAMED_AT_EXIT[:1], standard, _damage_plan("standard", exit_check=1))
    assert not v.passed and "the exit check named nothing" in reasons(v)
    assert judged([], standard, _damage_plan("standard")).passed
    v = judged(NAMED_AT_EXIT[:2], standard, _damage_plan("standard"))
    assert not v.passed and "no one damaged" in reasons(v)
    # paranoid with the exit check turned off names nothing
    assert judged([], DAMAGED, _damage_plan("paranoid", exit_check=0)).passed
    # off: nothing damaged, nothing named
    off = {**LEAKED, "damaged": [], "freed_written": None}
    assert judged([], off, _damage_plan("off", exit_check=1)).passed
    with pytest.raises(ValueError, match="needs exit_leaks"):
        plan(workload={"threads": 2, "ops": 1000, "exit_damage": True})


BAD_PIECES = ["nosuch=1", "quarantine=lots", "help"]
NAMED = ("nmm: NMM_OPTIONS: unknown key 'nosuch'; valid keys: level, policy; ignored, the "
         "other keys apply\n"
         "nmm: NMM_OPTIONS: bad value 'lots' for key 'quarantine' (expected a size in bytes "
         "like 4096, 64k, 4M, 1G); ignored, the other keys apply\n")
TABLE = ("NMM_OPTIONS=key=value:key=value:...  (keys also accepted under their field names)\n"
         "key          field            default  unit                   meaning\n"
         + "".join(f"{k:<13}{k:<17}0        x                      what {k} does\n"
                   for k in ("level", "policy", "quarantine", "leaks", "suppressions",
                             "exitcode", "log_path", "log_format")))


def test_bad_nmm_options_pieces_must_each_be_named_once_and_help_must_list_the_keys():
    """workload.bad_options go before the default heap's NMM_OPTIONS: the heap must name
    each bad piece on one stderr line and ignore it (the other keys apply: the exit
    report's check), refuse nothing else, and print its key table for 'help'."""
    base = _exit_plan()
    p = base.model_copy(update={"workload": base.workload.model_copy(
        update={"bad_options": BAD_PIECES})})

    def judged(stderr: str):
        return verdict([], [], p=p, res=result(exit_leaks=LEAKED), exit_report=_exit_report(),
                       stderr_tail=stderr)

    good = judged(NAMED + TABLE)
    assert good.passed, reasons(good)
    # a bad piece the heap took silently (the other keys' check cannot see that)
    v = judged(NAMED.splitlines(keepends=True)[0] + TABLE)
    assert not v.passed and "bad piece 'quarantine=lots': named on 0 stderr line(s)" in reasons(v)
    # one named twice
    v = judged(NAMED + NAMED.splitlines(keepends=True)[1] + TABLE)
    assert not v.passed and "named on 2 stderr line(s)" in reasons(v)
    # a good key refused as well
    refused = ("nmm: NMM_OPTIONS: bad value '1' for key 'tracking' (expected 0 or 1); "
               "ignored, the other keys apply\n")
    v = judged(NAMED + refused + TABLE)
    assert not v.passed and "1 NMM_OPTIONS line(s) name no bad piece" in reasons(v)
    # help asked for, no table; a table missing a key the trial set
    v = judged(NAMED)
    assert not v.passed and "a 'help' piece, and no key table" in reasons(v)
    v = judged(NAMED + TABLE.replace("log_path ", "logpath  "))
    assert not v.passed and "the key table has no row for log_path" in reasons(v)
    # a table nobody asked for
    unasked = base.model_copy(update={"workload": base.workload.model_copy(
        update={"bad_options": BAD_PIECES[:2]})})
    v = verdict([], [], p=unasked, res=result(exit_leaks=LEAKED), exit_report=_exit_report(),
                stderr_tail=NAMED + TABLE)
    assert not v.passed and "no 'help' piece asked for it" in reasons(v)
    # the lines are never why a process died
    assert find_diagnostic(NAMED) is None


def test_bad_pieces_of_one_key_take_a_line_each():
    """Several bad fail specs in one trial: as many lines quoting 'fail' as pieces, so
    one the heap took silently (or named twice) fails the trial."""
    base = _exit_plan()
    pieces = ["fail=alloc@", "fail=alloc@p2", "quarantine=lots"]
    p = base.model_copy(update={"workload": base.workload.model_copy(
        update={"bad_options": pieces})})
    fail_lines = ["nmm: NMM_OPTIONS: bad value for key 'fail': fail point spec 'alloc@': no "
                  "term after '@'; ignored, the other keys apply\n",
                  "nmm: NMM_OPTIONS: bad value for key 'fail': fail point spec 'alloc@p2': "
                  "probability must be a number from 0 to 1 (or 0% to 100%), got 'p2'; "
                  "ignored, the other keys apply\n"]
    quarantine = NAMED.splitlines(keepends=True)[1]

    def judged(stderr: str):
        return verdict([], [], p=p, res=result(exit_leaks=LEAKED), exit_report=_exit_report(),
                       stderr_tail=stderr)

    assert judged("".join(fail_lines) + quarantine).passed
    v = judged(fail_lines[0] + quarantine)
    assert not v.passed and "bad pieces of key 'fail' (2): named on 1 stderr line(s), " \
        "expected 2" in reasons(v)
    v = judged("".join(fail_lines) + fail_lines[1] + quarantine)
    assert not v.passed and "named on 3 stderr line(s), expected 2" in reasons(v)


def test_bad_options_belong_to_exit_leak_trials_one_help():
    with pytest.raises(ValueError, match="none without exit_leaks"):
        plan(workload={"threads": 2, "ops": 1000, "bad_options": ["nosuch=1"]})
    for pieces, said in [(["a=1:b=2"], "one NMM_OPTIONS piece"), ([" "], "one NMM_OPTIONS"),
                         (["help", "help=1"], "one 'help' piece")]:
        with pytest.raises(ValueError, match=said):
            plan(workload={"threads": 2, "ops": 1000, "exit_leaks": 4, "bad_options": pieces})
    # a plan without them keeps the hash it had before the key existed: these two
    # artifacts were shrunk (and their plans hashed) before it
    root = Path(__file__).resolve().parents[2] / "chaos_plans" / "regressions" / "mutants"
    for name in ("flush_race", "refill_unlocked"):
        artifact = Artifact.load(root / f"{name}-{name}.artifact.json")
        assert artifact.plan_model().plan_hash() == artifact.identity["plan_hash"]


# ---------------------------------------------------------------- issue 11's kinds

NEW_KINDS = [  # (kind, the event that detects it, its detail: where it saw the damage)
    ("dealloc_mismatch", "alloc_dealloc_mismatch", 256),
    ("sized_delete", "delete_size_mismatch", 49),
    ("memcpy_overflow", "overflow", 48),
    ("exit_only_overflow", "overflow", 48),
    ("zero_size_write", "overflow", 0),
    ("zero_size_write", "zero_size_access", 0),
]


def _new_kind(kind: str) -> FaultLine:
    return fault(kind, size=0) if kind == "zero_size_write" else fault(kind)


def _kept(n_events: int) -> ResultLine:
    """The result of a trial whose exit_only_overflow block the final sweep reported,
    given back by the driver after it: the heap ends empty like any other."""
    return result(n_events, validate_problems=n_events)


@pytest.mark.parametrize(("kind", "event_kind", "detail"), NEW_KINDS)
def test_new_kinds_are_matched_by_address_and_causality(kind, event_kind, detail):
    f = _new_kind(kind)
    size = f.size
    res = _kept(1) if kind == "exit_only_overflow" else None
    by = -1 if kind == "exit_only_overflow" else None  # the final sweep's drain
    v = verdict([f], [event(event_kind, size=size, detail=detail, worker=by)], res=res)
    assert v.outcome == "detected" and v.passed, reasons(v)
    # at another address: the fault is missed and the event is the allocator's
    v = verdict([f], [event(event_kind, address=B, size=size, detail=detail, worker=by)],
                res=res)
    assert v.faults[0].outcome == "missed" and v.outcome == "false-positive"
    # recorded before the fault was done (its seq is not past the fault's): not its cause
    v = verdict([fault(kind, seq=5, size=size)], [event(event_kind, size=size, detail=detail,
                                                        seq=5, worker=by)], res=res)
    assert v.faults[0].outcome == "missed" and not v.passed


@pytest.mark.parametrize("kind", ["dealloc_mismatch", "sized_delete", "memcpy_overflow",
                                  "exit_only_overflow", "zero_size_write"])
def test_a_new_kind_without_its_detection_fails_the_trial(kind):
    v = verdict([_new_kind(kind)], [], res=_kept(0) if kind == "exit_only_overflow" else None)
    assert v.faults[0].outcome == "missed"
    assert not v.passed
    assert f"fault 0 ({kind}" in reasons(v) and "missed, expected detected" in reasons(v)
    # ... and a detection of another kind at its address does not stand in for it
    other = "double_free" if kind in ("dealloc_mismatch", "sized_delete") else "underflow"
    v = verdict([_new_kind(kind)], [event(other)])
    assert v.faults[0].outcome == "missed" and not v.passed


@pytest.mark.parametrize("kind", ["dealloc_mismatch", "sized_delete", "zero_size_write"])
def test_a_mismatched_free_that_returned_ok_was_not_caught(kind):
    f = _new_kind(kind).model_copy(update={"status": 0})
    ev = event("alloc_dealloc_mismatch" if kind == "dealloc_mismatch" else
               "delete_size_mismatch" if kind == "sized_delete" else "overflow",
               size=f.size, detail=0)
    v = verdict([f], [ev])
    assert v.faults[0].outcome == "missed" and "returned ok" in v.faults[0].note


def test_a_copy_overflow_event_pointing_away_from_the_copy_is_not_its_detection():
    """The check names the first byte outside the block; an overflow event whose damage
    is elsewhere (here at +8, the copy reached only +48) is not this copy's."""
    v = verdict([fault("memcpy_overflow")], [event("overflow", detail=8)])
    assert v.faults[0].outcome == "missed" and not v.passed


def test_an_overflow_kept_past_the_sweep_is_found_by_it_and_no_leak_is_excused():
    f = fault("exit_only_overflow")
    sweep = event("overflow", worker=-1, driver_op=1000)
    v = verdict([f], [sweep], res=_kept(1))
    assert v.outcome == "detected" and v.passed, reasons(v)
    # a block it left live after the teardown is a leak like any other
    kept = result(1, validate_problems=1, leaked_blocks=1,
                  walk_after={"blocks": 1, "bytes": 48}, stats={"live_blocks": 1,
                                                              "live_bytes": 48})
    v = verdict([f], [sweep], res=kept)
    assert not v.passed and "1 block(s) still live" in reasons(v)
    # a second report of it (its free after the sweep) is a duplicate, not a detection
    v = verdict([f], [sweep, event("overflow", worker=-1, line=3, seq=2)], res=_kept(2))
    assert v.duplicates == 1 and not v.passed


def test_a_fail_point_is_still_handled_when_the_final_sweep_found_only_injected_damage():
    af = fault("alloc_failure", injected_before=0, line=1)
    kept = fault("exit_only_overflow", fid=1, line=2)
    stats = {"alloc_failures": 5, "injected_failures": 5}
    res = result(1, alloc_failures=5, stats=stats, validate_problems=1)
    v = verdict([af, kept], [event("overflow", worker=-1, line=3)], res=res)
    assert [x.outcome for x in v.faults] == ["detected", "detected"], reasons(v)
    # a sweep problem nothing explains still says the heap was not intact
    res2 = result(1, alloc_failures=5, stats=stats, validate_problems=2)
    v = verdict([af, kept], [event("overflow", worker=-1, line=3)], res=res2)
    assert v.faults[0].outcome == "missed" and "no injected fault explains" in v.faults[0].note


def test_a_zero_size_write_at_paranoid_is_a_detected_abort_named_by_its_block():
    f = fault("zero_size_write", size=0, done=False, status=None)
    o = obs([f], [], signal=signal.SIGSEGV, stderr_tail=(
        f"nmm: write of a zero-size block allocated at faults_inject+0x3c3 (nmm-driver) "
        f"(block {A:#x}) (thread 7)\n"))
    v = judge(plan_for([f], expect={"outcome": ["detected-abort"]}), o)
    assert v.faults[0].outcome == "detected-abort" and v.passed, reasons(v)
    # the same death naming another block is not this fault's
    o = obs([f], [], signal=signal.SIGSEGV, stderr_tail=(
        f"nmm: write of a zero-size block allocated at x+0x1 (p) (block {B:#x}) (thread 7)\n"))
    v = judge(plan_for([f], expect={"outcome": ["detected-abort"]}), o)
    assert v.faults[0].outcome != "detected-abort" and not v.passed


def test_plans_take_the_new_kinds_variants_and_bytes():
    p = plan(faults=[{"kind": "dealloc_mismatch", "variant": "new_delete_array"},
                     {"kind": "sized_delete", "variant": "alignment"},
                     {"kind": "sized_delete", "bytes": 64},
                     {"kind": "memcpy_overflow", "variant": "memset", "bytes": 8},
                     {"kind": "exit_only_overflow", "bytes": 8},
                     {"kind": "zero_size_write"}])
    assert [f.driver_arg(p.total_ops) for f in p.faults] == [
        "dealloc_mismatch:count=1:variant=new_delete_array",
        "sized_delete:count=1:variant=alignment", "sized_delete:count=1:bytes=64",
        "memcpy_overflow:count=1:variant=memset:bytes=8", "exit_only_overflow:count=1:bytes=8",
        "zero_size_write:count=1"]
    with pytest.raises(Exception, match="one of malloc_delete, new_free"):
        plan(faults=[{"kind": "dealloc_mismatch", "variant": "first"}])
    with pytest.raises(Exception, match="no bytes for dealloc_mismatch"):
        plan(faults=[{"kind": "dealloc_mismatch", "bytes": 3}])


def test_an_overflow_into_the_next_slots_header_explains_its_use_after_free_at_offset_0(
        ) -> None:
    """At paranoid a 64-byte overflow of a 27-byte block in 48-byte slots ends 3 bytes
    into the header of the slot after next; that slot, never handed out, reports the
    damage as use_after_free at its user pointer, offset 0 (detect_fresh_damaged clamps
    header damage to 0). The overflow explains it (smoke's shapes seed 3007 failed on
    it); the same event one byte past the header's window is not explained."""
    from harness.oracle import _Excuser, event_damage

    a = 0x7EFEDB950BB0
    fault = FaultLine(id=8, kind="overflow", worker=1, op=1, address=a, size=27, bytes=64,
                      offset=27, seq=2, line=17, done=True)
    inside = EventLine(kind="use_after_free", address=a + 96, size=0, detail=0, seq=6,
                       line=36)
    assert event_damage(inside) == (a + 88, a + 97)
    assert _Excuser([fault]).excuse("event", inside.address, event_damage(inside),
                                    inside.line, inside.seq) is fault
    beyond = EventLine(kind="use_after_free", address=a + 96, size=0, detail=1, seq=6,
                       line=36)
    assert _Excuser([fault]).excuse("event", beyond.address, event_damage(beyond),
                                    beyond.line, beyond.seq) is None


def test_an_overflow_into_an_aligned_quarantined_neighbour_is_judged_at_its_block() -> None:
    """shapes at paranoid, seeds 3113/3133: a 64-byte overflow of a 3030-byte block
    (3072-byte slots) runs 30 bytes into the next slot, whose 512-aligned block
    (user = slot + 504) sits poisoned in the quarantine. The allocator used to report
    that damage when the block left the quarantine as use_after_free at the aligned
    block, offset 0 (it lies below the user pointer): nowhere near the overflow, a false
    positive. It now names the overflowing block: once by its free (the canary), the rest
    is that report's; or, when the neighbour is checked first, as that block's overflow
    at the damaged byte (detail 3072..3093, extra the last). Either passes; the old event
    (and any use after free no injected fault explains) still fails the trial."""
    size, slot = 3030, 3072
    f = fault("overflow", address=B, size=size, bytes=64, line=1, seq=0)
    neighbour = B + slot + 496
    assert verdict([f], [event("overflow", address=B, size=size, line=2)]).passed
    early = event("overflow", address=B, size=size, line=2, detail=slot)
    v = verdict([f], [early])
    assert v.passed and v.faults[0].outcome == "detected", reasons(v)
    old = event("use_after_free", address=neighbour, size=2400, detail=0, line=3, seq=2)
    v = verdict([f], [event("overflow", address=B, size=size, line=2), old])
    assert not v.passed and "false positive" in reasons(v), reasons(v)
    assert "use_after_free at " + hex(neighbour) in reasons(v)
    # a write after free of a block no fault touched: no overflow explains it
    stray = event("use_after_free", address=B + 4 * slot + 8, size=100, detail=0, line=3,
                  seq=2)
    v = verdict([f], [event("overflow", address=B, size=size, line=2), stray])
    assert not v.passed and "false positive" in reasons(v), reasons(v)
    # nor does an overflow event at the block that locates no byte of its damage
    wrong = event("overflow", address=B, size=size, line=2, detail=slot + 200)
    assert not verdict([f], [wrong]).passed


# ---------------------------------------------------------------- NMM as the process's malloc

PRELOADED = {"kind": "malloc", "peer": "nmm-preload-standard"}


def _logged(kind: str, address: int, extent: str = "", seq: int = 1) -> Any:
    from harness.records import LoggedError

    return LoggedError(pid=10, kind=kind, address=address, size=48, seq=seq, extent=extent)


def _preloaded(faults: list[FaultLine], errors=(), stderr: str = "", **kw: Any) -> Any:
    """A malloc-target trial of NMM's preload library: no event stream (the driver
    cannot drain a preloaded NMM's events), its reports in the log and on stderr."""
    from harness.records import ReportLog

    log = ReportLog(processes=1, errors=tuple(errors)) if errors is not None else None
    p = plan_for(faults, target=PRELOADED, expect=kw.pop("expect", {}))
    return judge(p, obs(faults, [], report_log=log, stderr_tail=stderr, **kw))


def _malloc_faults() -> list[FaultLine]:
    return [fault("double_free", address=A, fid=0, line=3, status=0),
            fault("overflow", address=B, fid=1, line=5, status=0)]


def test_a_preloaded_nmms_logged_reports_detect_the_faults_at_their_addresses():
    """NMM preloaded as the driver's malloc reports each misuse in its log: each report
    is matched to the fault at its address by kind (before: every one was "missed")."""
    faults = _malloc_faults()
    v = _preloaded(faults, [_logged("double_free", A, seq=1),
                            _logged("overflow", B, "1 byte past the 48-byte block", seq=2)])
    assert [f.outcome for f in v.faults] == ["detected", "detected"], reasons(v)
    assert [f.event_kind for f in v.faults] == ["double_free", "overflow"]
    assert v.passed and not v.false_positives, reasons(v)
    # no report at all: missed, and the plan fails
    v = _preloaded(faults, [])
    assert [f.outcome for f in v.faults] == ["missed", "missed"] and not v.passed


def test_a_preloaded_nmms_stderr_lines_detect_the_faults_without_a_log():
    """No report log (a trial directory NMM_OPTIONS cannot carry): the ``nmm:`` lines."""
    faults = _malloc_faults()
    stderr = (f"nmm: double_free at {A:#x} size 48 free site f+0x1 (nmm-driver) (thread 3)\n"
              f"nmm: overflow at {B:#x} size 48 (1 byte past the 48-byte block) free site "
              f"f+0x1 (nmm-driver) (thread 4)\n")
    v = _preloaded(faults, None, stderr)
    assert [f.outcome for f in v.faults] == ["detected", "detected"], reasons(v)
    assert v.passed, reasons(v)


def test_a_preloaded_report_of_another_kind_or_address_does_not_detect_and_is_a_false_positive():
    faults = _malloc_faults()
    v = _preloaded(faults, [_logged("invalid_free", A), _logged("overflow", A + 0x40,
                                                                 "1 byte past the 48-byte block")])
    assert [f.outcome for f in v.faults] == ["missed", "missed"]
    assert {(e.kind, e.address) for e in v.false_positives} == {
        ("invalid_free", A), ("overflow", A + 0x40)}
    assert not v.passed


def test_a_preloaded_overflow_report_must_reach_the_damage():
    """The log's extent words say where the damage is (diag.c): an overflow that reaches
    40 bytes past the block is not the 1-byte overflow's detection."""
    faults = _malloc_faults()
    v = _preloaded(faults, [_logged("double_free", A),
                            _logged("overflow", B, "40 bytes past the 48-byte block")])
    assert v.faults[1].outcome == "missed" and "points at" in v.faults[1].note
    v = _preloaded(faults, [_logged("double_free", A),
                            _logged("overflow", B, "1 byte past the 48-byte block")])
    assert v.faults[1].outcome == "detected"


def test_a_preloaded_nmm_that_died_of_its_report_is_a_detected_abort_of_the_named_fault():
    """policy=abort in the preloaded NMM: the process dies right after its report, which
    is in the log too; the death is the fault the line names, not a crash or a miss."""
    faults = [fault("double_free", address=A, fid=0, line=3, status=0),
              fault("double_free", address=B, fid=1, line=5, done=False, status=None)]
    line = f"nmm: double_free at {B:#x} size 48 free site f+0x1 (nmm-driver) (thread 4)\n"
    v = _preloaded(faults, [_logged("double_free", A, seq=1), _logged("double_free", B, seq=2)],
                   f"nmm: double_free at {A:#x} size 48 (thread 3)\n" + line,
                   signal=signal.SIGABRT, expect={"outcome": ["detected", "detected-abort"]})
    assert [f.outcome for f in v.faults] == ["detected", "detected-abort"], reasons(v)
    assert v.outcome == "detected-abort" and v.passed, reasons(v)


def test_an_nmm_heaps_report_log_is_not_counted_twice():
    """An NMM heap streams its events; the same detections in its report log are not
    added again (they would be duplicates)."""
    from harness.records import ReportLog

    f = fault("double_free")
    log = ReportLog(processes=1, errors=(_logged("double_free", A),))
    v = judge(plan_for([f]), obs([f], [event("double_free")], report_log=log))
    assert v.faults[0].outcome == "detected" and v.duplicates == 0 and v.passed, reasons(v)
