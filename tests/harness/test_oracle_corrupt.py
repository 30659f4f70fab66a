"""The oracle on corrupt_meta faults (damage to the heap's own books; oracle.CORRUPT_REPORTS):
each shape is detected only when nmm_validate made every report the shape needs, at the
address damaged, while the damage was there. For every shape, a validate that stays
silent, drops one report, names the wrong address or detail, counts a problem it does
not report, or leaves the heap changed once the damage is undone fails the trial.
Synthetic observations (no process): ``trial()`` builds a consistent, passing one."""

from __future__ import annotations

from typing import Any

import pytest

from harness.oracle import CORRUPT_REPORTS, judge
from harness.plan import CORRUPT_SHAPES, Plan
from harness.records import EventLine, FaultLine, Observation
from tests.harness.test_harness_oracle import obs, reasons

SLAB = 0x7F00_0010_0008
LOST = 0x7F00_0010_4008
OTHER = 0x7F00_0020_0008
BOOKS = 0x7EFF_0000_1000


def _plan(shape: str) -> Plan:
    return Plan.model_validate({"schema_version": 1, "workload": {"threads": 2, "ops": 1000},
                                "faults": [{"kind": "corrupt_meta", "variant": shape}]})


def _where(where: str) -> int:
    return {"address": SLAB, "also": LOST, "none": 0, "any": OTHER}[where]


def _needs(shape: str) -> list[tuple[int, int]]:
    """(detail, address) of every report the shape needs, the first detail of each."""
    out = []
    for detail, where in CORRUPT_REPORTS[shape]:
        first = detail[0] if isinstance(detail, tuple) else detail
        out.append((first, _where(where)))
    return out


def _fault(shape: str, n_reports: int, **kw: Any) -> FaultLine:
    also = LOST if any(w == "also" for _, w in CORRUPT_REPORTS[shape]) else 0
    doc: dict[str, Any] = {
        "id": 0, "kind": "corrupt_meta", "variant": shape, "line": 1, "op": 1000,
        "address": 0 if all(w == "none" for _, w in CORRUPT_REPORTS[shape]) else SLAB,
        "also": also, "damaged": BOOKS, "what": "the books", "seq": 0, "done": True,
        "status": -1, "problems": n_reports, "after": 0, "seq_end": n_reports}
    doc.update(kw)
    return FaultLine(**doc)


def _events(reports: list[tuple[int, int]], first_seq: int = 1) -> list[EventLine]:
    return [EventLine(kind="freelist_corrupt", address=addr, detail=detail, seq=first_seq + i,
                      line=2 + i, worker=0, driver_op=1000)
            for i, (detail, addr) in enumerate(reports)]


def trial(shape: str, reports: list[tuple[int, int]] | None = None, **fault_kw: Any
          ) -> tuple[Plan, Observation]:
    reports = _needs(shape) if reports is None else reports
    f = _fault(shape, **{"n_reports": len(reports), **fault_kw})
    return _plan(shape), obs([f], _events(reports))


def test_every_shape_has_its_reports() -> None:
    assert set(CORRUPT_REPORTS) == set(CORRUPT_SHAPES)


@pytest.mark.parametrize("shape", CORRUPT_SHAPES)
def test_a_shape_reported_in_full_is_detected(shape: str) -> None:
    v = judge(*trial(shape))
    assert v.passed, reasons(v)
    assert v.faults[0].outcome == "detected"
    assert v.faults[0].event_kind == "freelist_corrupt"


@pytest.mark.parametrize("shape", CORRUPT_SHAPES)
def test_a_shape_validate_stays_silent_on_fails(shape: str) -> None:
    v = judge(*trial(shape, reports=[]))
    assert not v.passed
    assert v.faults[0].outcome == "missed"
    assert "did not report" in reasons(v)


@pytest.mark.parametrize(("shape", "drop"), [(s, i) for s in CORRUPT_SHAPES
                                             for i in range(len(CORRUPT_REPORTS[s]))])
def test_each_report_a_shape_needs_is_required(shape: str, drop: int) -> None:
    reports = _needs(shape)
    detail, _ = reports.pop(drop)
    v = judge(*trial(shape, reports=reports))
    assert not v.passed
    assert v.faults[0].outcome == "missed"
    assert f"detail {detail}" in reasons(v)


@pytest.mark.parametrize("shape", [s for s in CORRUPT_SHAPES
                                   if CORRUPT_REPORTS[s][0][1] in ("address", "none")])
def test_the_right_detail_at_the_wrong_address_fails(shape: str) -> None:
    reports = _needs(shape)
    detail, addr = reports[0]
    reports[0] = (detail, OTHER + 0x1000 if addr else OTHER)
    v = judge(*trial(shape, reports=reports))
    assert not v.passed
    assert v.faults[0].outcome == "missed"
    assert v.false_positives and v.false_positives[0].detail == detail


@pytest.mark.parametrize("shape", CORRUPT_SHAPES)
def test_another_detail_at_the_right_address_fails(shape: str) -> None:
    reports = _needs(shape)
    detail, addr = reports[0]
    reports[0] = (19 if detail != 19 else 18, addr)  # a cache bin's report: not this damage
    v = judge(*trial(shape, reports=reports))
    assert not v.passed
    assert v.outcome == "false-positive"


def test_the_lost_block_may_be_a_never_used_one() -> None:
    """freelist_link's lost block was freed (6) or never used (7: a refill given back)."""
    v = judge(*trial("freelist_link", reports=[(1, SLAB), (7, LOST)]))
    assert v.passed, reasons(v)


def test_also_is_needed_only_when_the_fault_line_names_it() -> None:
    v = judge(*trial("free_count", reports=[(20, SLAB)], also=0))
    assert v.passed, reasons(v)
    v = judge(*trial("free_count", reports=[(20, SLAB)]))  # also given, 10 not reported
    assert not v.passed and "detail 10" in reasons(v)


def test_a_problem_counted_but_not_reported_fails() -> None:
    v = judge(*trial("list_twice", problems=4))
    assert not v.passed
    assert "validate counted 4 problem(s) and reported 3" in reasons(v)


def test_a_heap_still_inconsistent_after_the_undo_fails() -> None:
    v = judge(*trial("quar_lost", after=1))
    assert not v.passed
    assert "once the damage was undone" in reasons(v)


def test_a_report_twice_is_a_duplicate() -> None:
    reports = _needs("quar_twice") * 2
    v = judge(*trial("quar_twice", reports=reports))
    assert not v.passed
    assert v.duplicates == 1


def test_reports_outside_the_damaged_window_are_not_the_faults() -> None:
    """Events after seq_end (the heap had been undone by then) explain nothing."""
    shape = "limit_charge"
    f = _fault(shape, 1, seq_end=0)
    v = judge(_plan(shape), obs([f], _events(_needs(shape))))
    assert not v.passed
    assert v.faults[0].outcome == "missed"
    assert v.false_positives


def test_a_shape_the_heap_has_no_structure_for_fails_saying_why() -> None:
    f = _fault("quar_twice", 0, damaged=0, address=0, what="no quarantined block",
               problems=None, seq_end=None, done=False)
    v = judge(_plan("quar_twice"), obs([f], []))
    assert not v.passed
    assert "no such structure on this heap" in reasons(v)
    assert "no quarantined block" in reasons(v)


def test_probes_that_never_finished_fail() -> None:
    """The fault line came, its done line never did: validate (or stats) looped on the
    damage until the harness named the hang."""
    f = _fault("list_cycle", 0, problems=None, seq_end=None, done=False)
    o = obs([f], [], timed_out=True)
    v = judge(_plan("list_cycle"), o)
    assert not v.passed
    assert v.faults[0].outcome in ("hang", "missed")
    assert v.outcome == "hang"
