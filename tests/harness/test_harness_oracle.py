"""The oracle on synthetic observations: matching, false positives, deaths, checks,
expectations. No processes: judge() is a pure function."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from harness.oracle import find_diagnostic, judge
from harness.plan import Plan
from harness.records import EventLine, FaultLine, Observation, ResultLine

A = 0x7F00_0000_1000
B = 0x7F00_0000_2000


def plan(**kw: Any) -> Plan:
    doc: dict[str, Any] = {"schema_version": 1, "workload": {"threads": 2, "ops": 1000}}
    doc.update(kw)
    return Plan.model_validate(doc)


def fault(kind: str, address: int = A, line: int = 1, op: int = 100, fid: int = 0,
          size: int = 48, **kw: Any) -> FaultLine:
    return FaultLine(id=fid, kind=kind, address=address, line=line, op=op, size=size, **kw)


def event(kind: str, address: int = A, line: int = 2, driver_op: int | None = 105,
          size: int = 48, seq: int = 1) -> EventLine:
    return EventLine(kind=kind, address=address, line=line, driver_op=driver_op, size=size,
                     seq=seq)


def result(**kw: Any) -> ResultLine:
    base: dict[str, Any] = {"ops": 2000, "elapsed_ns": 10**6,
                            "stats": {"allocs": 100, "frees": 90, "live_blocks": 10}}
    base.update(kw)
    return ResultLine(**base)


def obs(faults=(), events=(), res: ResultLine | None = None, **kw: Any) -> Observation:
    if res is None and "signal" not in kw and not kw.get("timed_out") and \
            "exit_code" not in kw:
        res = result()
    return Observation(faults=tuple(faults), events=tuple(events), result=res,
                       exit_code=kw.pop("exit_code", 0 if res else None), **kw)


@pytest.mark.parametrize(("kind", "event_kind"), [
    ("double_free", "double_free"), ("invalid_free", "invalid_free"),
    ("overflow", "overflow"), ("overflow", "header_corrupt"), ("underflow", "underflow"),
    ("underflow", "header_corrupt"), ("uaf_write", "use_after_free"),
    ("realloc_freed", "realloc_freed"),
])
def test_fault_matched_by_an_acceptable_event_is_detected(kind, event_kind):
    v = judge(plan(), obs([fault(kind)], [event(event_kind)]))
    assert v.outcome == "detected"
    assert v.passed
    assert v.faults[0].latency_ops == 5
    assert v.faults[0].event_kind == event_kind


@pytest.mark.parametrize(("kind", "event_kind"), [
    ("double_free", "invalid_free"), ("overflow", "double_free"),
    ("uaf_write", "overflow"), ("invalid_free", "double_free"),
])
def test_wrong_kind_is_a_miss_and_a_false_positive(kind, event_kind):
    v = judge(plan(), obs([fault(kind)], [event(event_kind, address=B)]))
    assert v.faults[0].outcome == "missed"
    assert len(v.false_positives) == 1
    assert v.outcome == "false-positive"
    assert not v.passed


def test_event_at_another_address_does_not_match():
    v = judge(plan(), obs([fault("double_free")], [event("double_free", address=B)]))
    assert v.faults[0].outcome == "missed"
    assert v.outcome == "false-positive"


def test_event_before_the_fault_does_not_match():
    v = judge(plan(), obs([fault("double_free", line=5)], [event("double_free", line=3)]))
    assert v.faults[0].outcome == "missed"
    assert v.false_positives


def test_detection_without_fault_is_false_positive_unless_allowed():
    o = obs([], [event("overflow")])
    assert judge(plan(), o).outcome == "false-positive"
    assert not judge(plan(), o).passed
    assert judge(plan(expect={"max_false_positives": 1}), o).passed


def test_clean_trial():
    v = judge(plan(), obs())
    assert v.outcome == "clean"
    assert v.passed
    assert {c.name for c in v.checks} >= {"pattern", "stats", "validate", "leaks", "completed"}


def test_each_fault_needs_its_own_detection():
    faults = [fault("double_free", fid=0, line=1), fault("double_free", fid=1, line=3,
                                                          address=B)]
    v = judge(plan(), obs(faults, [event("double_free", line=4, address=B)]))
    assert [f.outcome for f in v.faults] == ["missed", "detected"]
    assert v.outcome == "missed"


def test_same_address_reused_matches_faults_in_order():
    faults = [fault("double_free", fid=0, line=1), fault("double_free", fid=1, line=3)]
    events = [event("double_free", line=2, seq=1), event("double_free", line=4, seq=2)]
    v = judge(plan(), obs(faults, events))
    assert [f.event_seq for f in v.faults] == [1, 2]
    assert v.passed


def test_duplicate_detection_fails_unless_allowed():
    events = [event("use_after_free", line=2, seq=1), event("use_after_free", line=3, seq=2)]
    o = obs([fault("uaf_write")], events)
    v = judge(plan(), o)
    assert v.duplicates == 1 and not v.false_positives
    assert not v.passed
    assert judge(plan(expect={"allow_duplicate_detections": True}), o).passed


def test_overflow_collateral_on_the_next_block_is_not_a_false_positive():
    p = plan(faults=[{"kind": "overflow", "bytes": 64}])
    next_block = A + 48 + 16  # header of the neighbour lies inside the damaged range
    events = [event("overflow", line=2), event("header_corrupt", address=next_block, line=3)]
    v = judge(p, obs([fault("overflow", size=48)], events))
    assert v.collateral == 1 and not v.false_positives
    assert v.passed


def test_far_away_corruption_is_still_a_false_positive():
    p = plan(faults=[{"kind": "overflow", "bytes": 1}])
    events = [event("overflow", line=2), event("header_corrupt", address=A + 0x10000, line=3)]
    v = judge(p, obs([fault("overflow")], events))
    assert len(v.false_positives) == 1


def test_per_fault_override_lets_a_miss_pass():
    p = plan(expect={"outcome": ["detected"], "faults": {"uaf_write": {"outcome": ["missed"]}}})
    faults = [fault("uaf_write", line=1), fault("double_free", line=2, address=B, fid=1)]
    v = judge(p, obs(faults, [event("double_free", address=B, line=3)]))
    assert v.outcome == "missed"
    assert v.passed
    assert [f.outcome for f in v.faults] == ["missed", "detected"]


def test_missed_fails_a_strict_plan_and_names_the_fault():
    v = judge(plan(), obs([fault("uaf_write", variant="middle")], []))
    assert not v.passed
    assert v.reasons == ("fault 0 (uaf_write/middle) missed, expected detected: no detection",)


def test_abort_with_diagnostic_is_detected_abort():
    o = obs([fault("double_free")], [], signal=signal.SIGABRT,
            stderr_tail=f"some noise\nnmm: double_free at {A:#x} (alloc site a.c:3)\n")
    v = judge(plan(), o)
    assert v.outcome == "detected-abort"
    assert v.diagnostic.startswith("nmm: double_free")
    assert not v.passed
    assert judge(plan(expect={"outcome": ["detected-abort"]}), o).passed


def test_diagnostic_names_which_fault_aborted():
    faults = [fault("double_free", fid=0, line=1, address=A),
              fault("overflow", fid=1, line=2, address=B)]
    o = obs(faults, [], signal=signal.SIGABRT, stderr_tail=f"nmm: double_free at {A:#x}\n")
    v = judge(plan(), o)
    assert [f.outcome for f in v.faults] == ["detected-abort", "missed"]


def test_signal_without_diagnostic_is_crashed():
    o = obs([fault("overflow")], [], signal=signal.SIGSEGV, stderr_tail="Segmentation\n")
    v = judge(plan(), o)
    assert v.outcome == "crashed"
    assert "SIGSEGV with no diagnostic" in v.faults[0].note


def test_crash_with_no_fault_injected_is_a_trial_crash():
    v = judge(plan(), obs([], [], signal=signal.SIGSEGV))
    assert v.outcome == "crashed"
    assert not v.passed
    assert judge(plan(expect={"outcome": ["crashed"]}), obs([], [], signal=11)).passed


def test_abort_diagnostic_without_fault_is_a_false_positive():
    v = judge(plan(), obs([], [], signal=signal.SIGABRT, stderr_tail="nmm: overflow at 0x10\n"))
    assert v.outcome == "false-positive"
    assert not v.passed


def test_timeout_is_hang():
    v = judge(plan(), obs([], [], timed_out=True, signal=9, wall_s=3.0))
    assert v.outcome == "hang"
    assert not v.passed
    assert "timeout" in v.reasons[0]


def test_exit_without_result_is_crashed():
    v = judge(plan(), obs([fault("double_free")], [], exit_code=3))
    assert v.outcome == "crashed"


def test_pattern_errors_fail_the_trial():
    v = judge(plan(), obs(res=result(pattern_errors=2)))
    assert not v.passed
    assert any("pattern" in r and "handed out twice" in r for r in v.reasons)


def test_stats_must_add_up():
    bad = result(stats={"allocs": 100, "frees": 90, "live_blocks": 11})
    v = judge(plan(), obs(res=bad))
    assert not v.passed
    assert any("allocs 100 - frees 90 != live 11" in r for r in v.reasons)


def test_validate_problems_beyond_injected_damage_fail():
    damage = [fault("overflow")]
    ok = judge(plan(), obs(damage, [event("overflow")], res=result(validate_problems=1)))
    assert ok.passed
    bad = judge(plan(), obs([], [], res=result(validate_problems=1)))
    assert not bad.passed


def test_leaks_must_equal_injected_leaks_when_the_driver_says():
    f = fault("overflow", leaks=1)
    assert judge(plan(), obs([f], [event("overflow")], res=result(leaked_blocks=1))).passed
    assert not judge(plan(), obs([f], [event("overflow")], res=result(leaked_blocks=2))).passed
    assert not judge(plan(), obs([], [], res=result(leaked_blocks=1))).passed


def test_integrity_checks_can_be_waived():
    assert judge(plan(expect={"integrity": False}), obs(res=result(pattern_errors=1))).passed


def test_workload_must_complete():
    v = judge(plan(), obs(res=result(ops=1999)))
    assert any("1999 of 2000 ops" in r for r in v.reasons)


def test_alloc_failure_handled_when_failures_happened_and_workload_went_on():
    f = fault("alloc_failure", address=0)
    good = result(alloc_failures=5, stats={"allocs": 10, "frees": 10, "live_blocks": 0,
                                           "injected_failures": 5})
    v = judge(plan(), obs([f], [], res=good))
    assert v.faults[0].outcome == "detected"
    assert v.passed
    never = judge(plan(), obs([f], [], res=result()))
    assert never.faults[0].outcome == "missed"
    assert "never fired" in never.faults[0].note
    stopped = judge(plan(), obs([f], [], res=result(ops=10, alloc_failures=1)))
    assert stopped.faults[0].outcome == "missed"
    assert "workload stopped" in stopped.faults[0].note


def test_find_diagnostic_takes_the_last_nmm_line():
    assert find_diagnostic("a\nnmm: one\nb\nnmm: two at 0x1\n") == "nmm: two at 0x1"
    assert find_diagnostic("no diagnostics here\n xnmm: no\n") is None


def test_verdict_round_trips_through_json():
    from harness.records import Verdict

    v = judge(plan(), obs([fault("double_free")], [event("double_free")]))
    assert Verdict.model_validate_json(v.model_dump_json()) == v


def test_undetected_damage_may_explain_a_neighbours_pattern_error():
    p = plan(expect={"outcome": ["missed"]})
    assert judge(p, obs([fault("overflow")], [], res=result(pattern_errors=1))).passed
    assert not judge(p, obs([fault("overflow")], [], res=result(pattern_errors=2))).passed
    detected = obs([fault("overflow")], [event("overflow")], res=result(pattern_errors=1))
    assert not judge(plan(), detected).passed


# ---------------------------------------------------------------- property: never raises

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_kinds = st.sampled_from(["double_free", "invalid_free", "overflow", "underflow", "uaf_write",
                          "uaf_read", "realloc_freed", "alloc_failure", "weird"])
_ev_kinds = st.sampled_from(["double_free", "invalid_free", "overflow", "underflow",
                             "use_after_free", "header_corrupt", "realloc_freed", "odd"])
_addr = st.sampled_from([0, A, B, A + 64, B - 8])
_faults = st.lists(st.builds(FaultLine, id=st.integers(0, 5), kind=_kinds, address=_addr,
                             line=st.integers(0, 20), op=st.integers(0, 3000),
                             size=st.integers(0, 100), worker=st.integers(0, 2),
                             bytes=st.one_of(st.none(), st.integers(1, 64)),
                             leaks=st.one_of(st.none(), st.integers(0, 2))), max_size=5)
_events = st.lists(st.builds(EventLine, kind=_ev_kinds, address=_addr,
                             line=st.integers(0, 20), size=st.integers(0, 100),
                             worker=st.one_of(st.none(), st.integers(-1, 2)),
                             driver_op=st.one_of(st.none(), st.integers(0, 3000))),
                   max_size=6)
_results = st.one_of(st.none(), st.builds(
    ResultLine, ops=st.integers(0, 3000), pattern_errors=st.integers(0, 2),
    alloc_failures=st.integers(0, 3), validate_problems=st.one_of(st.none(), st.integers(0, 3)),
    leaked_blocks=st.one_of(st.none(), st.integers(0, 3)),
    unexpected_status=st.integers(0, 2),
    stats=st.fixed_dictionaries({}, optional={"allocs": st.integers(0, 9),
                                              "frees": st.integers(0, 9),
                                              "live_blocks": st.integers(0, 9),
                                              "injected_failures": st.integers(0, 3)})))


@settings(max_examples=300, deadline=None)
@given(faults=_faults, events=_events, res=_results,
       sig=st.one_of(st.none(), st.sampled_from([6, 9, 11])),
       code=st.one_of(st.none(), st.integers(0, 3)), timed_out=st.booleans(),
       stderr=st.sampled_from(["", "nmm: overflow at 0x7f0000001000\n", "boom\n"]),
       expect=st.sampled_from([{}, {"outcome": ["missed"]}, {"integrity": False},
                               {"faults": {"overflow": {"outcome": ["missed"]}}}]))
def test_property_judge_never_raises_and_is_consistent(faults, events, res, sig, code,
                                                       timed_out, stderr, expect):
    o = Observation(faults=tuple(faults), events=tuple(events), result=res, signal=sig,
                    exit_code=code, timed_out=timed_out, stderr_tail=stderr)
    v = judge(plan(expect=expect), o)
    assert v.outcome in ("detected", "detected-abort", "crashed", "missed", "false-positive",
                         "hang", "clean")
    assert v.passed == (not v.reasons)
    assert len(v.faults) == len(faults)
    if timed_out:
        assert v.outcome == "hang" or any(f.outcome == "hang" for f in v.faults)
    assert judge(plan(expect=expect), o) == v  # pure: same inputs, same verdict


def test_alloc_failure_in_a_trial_that_aborted_on_another_fault_shares_its_end():
    faults = [fault("alloc_failure", address=0, line=1), fault("uaf_write", line=2, fid=1)]
    o = obs(faults, [], signal=11, stderr_tail=f"nmm: use after free at {A:#x}\n")
    v = judge(plan(expect={"outcome": ["detected", "detected-abort"]}), o)
    assert [f.outcome for f in v.faults] == ["detected-abort", "detected-abort"]
    assert v.passed


def test_death_note_says_how_far_the_trial_got():
    o = obs([fault("overflow")], [], signal=11, last_progress={"type": "progress", "ops": 4200})
    assert judge(plan(), o).faults[0].note == \
        "killed by SIGSEGV with no diagnostic (last progress: 4200 ops)"


def test_replay_command_of_a_failure():
    from harness.records import TrialRecord
    from harness.report import build_document

    p = plan()
    o = obs([fault("double_free")], [])
    record = TrialRecord(key="k", plan="p", plan_hash=p.plan_hash(), seed=7,
                         target="nmm:standard", observation=o, verdict=judge(p, o))
    doc = build_document(p, [record], run_id="r", plan_path="chaos_plans/x.toml",
                         overrides=["workload.threads=4", "seed=3", 'expect.outcome=["a"]'],
                         program=["nmm-chaos"])
    assert doc["failures"][0]["replay"] == (
        "nmm-chaos run chaos_plans/x.toml --set workload.threads=4 "
        "--set 'expect.outcome=[\"a\"]' --seed 7 --seeds 1")
    assert doc["detection_matrix"]["double_free"]["nmm:standard"]["missed"] == 1
