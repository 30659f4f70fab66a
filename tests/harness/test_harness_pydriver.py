"""The Python driver through the real binding: whole trials judged by the oracle, and a
hypothesis state machine that explores op sequences and fault placements."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

# The package build makes the binding: under CI its absence is a failure, not a skip.
allocator = (pytest.importorskip("allocator") if not os.environ.get("CI")
             else __import__("allocator"))

from harness.oracle import judge  # noqa: E402
from harness.plan import Fault, Plan  # noqa: E402
from harness.pydriver import PyDriver, plan_faults, run_python_trial  # noqa: E402


def make_plan(level: str = "paranoid", faults: tuple[dict[str, Any], ...] = (),
              **workload: Any) -> Plan:
    w = {"threads": 2, "ops": 3000, "live": 64, "sizes": ["16-512:4", "513-8192:1"],
         "cross": 0.2}
    w.update(workload)
    return Plan.model_validate({"schema_version": 1, "target": {"level": level},
                                "workload": w, "faults": list(faults)})


def test_clean_churn_is_clean_at_every_level():
    for level in ("off", "standard", "paranoid"):
        plan = make_plan(level)
        verdict = judge(plan, run_python_trial(plan, 5))
        assert verdict.outcome == "clean", verdict.reasons
        assert verdict.passed, verdict.reasons


def test_fault_placement_is_a_pure_function_of_the_seed():
    plan = make_plan(faults=({"kind": "double_free", "count": 5},))
    assert plan_faults(plan, 9) == plan_faults(plan, 9)
    assert plan_faults(plan, 9) != plan_faults(plan, 10)


def test_op_streams_reproduce_from_the_seed():
    plan = make_plan("standard", faults=({"kind": "double_free", "count": 3},))
    a, b = run_python_trial(plan, 21), run_python_trial(plan, 21)
    assert [(f.kind, f.worker, f.op, f.size) for f in a.faults] == \
        [(f.kind, f.worker, f.op, f.size) for f in b.faults]
    assert a.result is not None and b.result is not None
    assert a.result.stats["allocs"] == b.result.stats["allocs"]


@pytest.mark.parametrize(("kind", "extra", "level"), [
    ("double_free", {}, "standard"),
    ("invalid_free", {"variant": "interior"}, "standard"),
    ("invalid_free", {"variant": "wild"}, "standard"),
    ("invalid_free", {"variant": "stack"}, "standard"),
    ("invalid_free", {"variant": "foreign_heap"}, "standard"),
    ("overflow", {"bytes": 1}, "standard"),
    ("underflow", {"bytes": 8}, "standard"),
    ("realloc_freed", {}, "standard"),
    ("uaf_write", {"variant": "first"}, "paranoid"),
    ("uaf_write", {"variant": "middle"}, "paranoid"),
    ("alloc_failure", {"fail": "alloc@every20,max5"}, "standard"),
    ("dealloc_mismatch", {"variant": "malloc_delete"}, "standard"),
    ("dealloc_mismatch", {"variant": "new_free"}, "standard"),
    ("dealloc_mismatch", {"variant": "new_array_delete"}, "standard"),
    ("dealloc_mismatch", {"variant": "new_delete_array"}, "paranoid"),
    ("sized_delete", {"variant": "size", "bytes": 3}, "standard"),
    ("sized_delete", {"variant": "alignment"}, "paranoid"),
])
def test_each_fault_kind_is_detected_at_its_level(kind, extra, level):
    plan = make_plan(level, faults=({"kind": kind, "count": 2, **extra},))
    if kind == "alloc_failure":
        plan = make_plan(level, faults=({"kind": kind, **extra},))
    verdict = judge(plan, run_python_trial(plan, 77))
    assert verdict.passed, verdict.reasons
    assert {f.outcome for f in verdict.faults} == {"detected"}


@pytest.mark.parametrize("kind", ["dealloc_mismatch", "sized_delete"])
def test_cxx_mismatches_at_off_are_missed(kind):
    """Level off keeps no family or header: the Python driver's mismatches go through,
    and a plan that expects them detected fails."""
    plan = make_plan("off", faults=({"kind": kind, "count": 2},))
    verdict = judge(plan, run_python_trial(plan, 77))
    assert {f.outcome for f in verdict.faults} == {"missed"} and not verdict.passed


@pytest.mark.parametrize("kind", ["memcpy_overflow", "exit_only_overflow", "zero_size_write"])
def test_kinds_only_the_isolated_driver_performs_are_refused(kind):
    from harness.errors import UnsupportedFeature

    plan = make_plan("standard", faults=({"kind": kind},))
    with pytest.raises(UnsupportedFeature, match=f"{kind} needs the native driver"):
        PyDriver(plan, 1)


def test_abort_policy_is_refused_in_process():
    from harness.errors import UnsupportedFeature

    plan = Plan.model_validate({"schema_version": 1, "target": {"policy": "abort"}})
    with pytest.raises(UnsupportedFeature, match="policy must be 'record'"):
        PyDriver(plan, 1)


def test_option_the_allocator_rejects_is_a_plan_error():
    """A plan built without the loader (bench's pydriver kernel) got the binding's
    InvalidArgument, a traceback under nmm-chaos run --engine python."""
    from harness.errors import PlanError

    plan = Plan.model_validate({"schema_version": 1, "target": {"options": {"frob": 1}}})
    with pytest.raises(PlanError, match=r"^target\.options: unknown key 'frob'"):
        PyDriver(plan, 1)


FAULTS = st.sampled_from([
    Fault(kind="double_free"), Fault(kind="invalid_free", variant="interior"),
    Fault(kind="invalid_free", variant="wild"), Fault(kind="invalid_free", variant="stack"),
    Fault(kind="invalid_free", variant="foreign_heap"), Fault(kind="overflow", bytes=1),
    Fault(kind="overflow", bytes=8), Fault(kind="underflow", bytes=8),
    Fault(kind="uaf_write", variant="first"), Fault(kind="uaf_write", variant="middle"),
    Fault(kind="realloc_freed"),
])


class PyDriverMachine(RuleBasedStateMachine):
    """Random churn with faults dropped in anywhere, at paranoid: every fault must be
    detected, nothing else reported, and the heap must stay consistent."""

    @initialize(seed=st.integers(0, 2**32))
    def start(self, seed: int) -> None:
        self.plan = make_plan("paranoid", ops=1, live=24,
                              sizes=["16-256:3", "257-4096:1", "4097-20000:1"])
        self.driver = PyDriver(self.plan, seed)
        self.next_fault = 0
        self.injected: list[Fault] = []

    @rule(worker=st.integers(0, 1), n=st.integers(1, 60))
    def churn(self, worker: int, n: int) -> None:
        for _ in range(n):
            self.driver.step(worker)

    @rule(fault=FAULTS, worker=st.integers(0, 1), slot=st.integers(0, 23))
    def inject(self, fault: Fault, worker: int, slot: int) -> None:
        self.driver.inject(self.next_fault, fault, worker, slot)
        self.next_fault += 1
        self.injected.append(fault)

    def teardown(self) -> None:
        driver = getattr(self, "driver", None)
        if driver is None:
            return
        try:
            for worker in range(len(driver.workers)):
                driver.step(worker)
            driver.finish()
            # judged against a plan that asks for exactly the faults injected by hand
            doc = self.plan.model_dump(mode="json")
            doc["faults"] = [f.model_dump(mode="json", exclude_none=True)
                             for f in self.injected]
            verdict = judge(Plan.model_validate(doc), driver.observation())
        finally:
            driver.close()
        assert verdict.passed, verdict.reasons
        assert not verdict.false_positives
        assert all(f.outcome == "detected" for f in verdict.faults)


PyDriverMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_pydriver_state_machine = PyDriverMachine.TestCase


def test_cli_engine_python_runs_and_journals(tmp_path, capsys):
    from harness.cli import main
    from harness.journal import read_journal

    plan = tmp_path / "p.toml"
    plan.write_text('schema_version = 1\nseeds = 2\n[workload]\nops = 2000\n'
                    '[[faults]]\nkind = "double_free"\n')
    code = main(["run", str(plan), "--engine", "python", "--out", str(tmp_path / "r")])
    assert code == 0, capsys.readouterr()
    (journal,) = (tmp_path / "r").glob("*/journal.jsonl")
    records = read_journal(journal).records
    assert [r.driver for r in records] == ["python", "python"]
    assert all(r.verdict.outcome == "detected" for r in records)
