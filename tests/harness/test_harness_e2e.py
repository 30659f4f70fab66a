"""End to end through the real native driver (harness/_native/nmm-driver, or
$NMM_CHAOS_DRIVER): each fault kind detected at the level that should detect it and
reported missed at one that should not, abort policy, clean churn, and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _nmm_c import require_driver

from harness.cli import main
from harness.plan import Plan
from harness.runner import run_plan

DRIVER = require_driver()

PLANS = Path(__file__).resolve().parent.parent.parent / "chaos_plans"


def make_plan(level: str, faults: list[dict[str, Any]], *, threads: int = 1,
              policy: str = "record", seeds: int = 3, **expect: Any) -> Plan:
    # one thread, no cross frees: the trial is a pure function of the seed
    return Plan.model_validate({
        "schema_version": 1, "seed": 40, "seeds": seeds, "timeout_s": 60,
        "target": {"level": level, "policy": policy},
        "workload": {"threads": threads, "ops": 20000, "live": 300,
                     "sizes": ["16-512:4", "513-4096:1"]},
        "faults": faults, "expect": expect})


@pytest.mark.parametrize(("fault", "level"), [
    ({"kind": "double_free", "count": 2}, "standard"),
    ({"kind": "invalid_free", "variant": "interior"}, "standard"),
    ({"kind": "invalid_free", "variant": "stack"}, "standard"),
    ({"kind": "invalid_free", "variant": "wild"}, "standard"),
    ({"kind": "invalid_free", "variant": "foreign_heap"}, "standard"),
    ({"kind": "overflow", "bytes": 1, "count": 2}, "standard"),
    ({"kind": "underflow", "bytes": 8}, "standard"),
    ({"kind": "realloc_freed"}, "standard"),
    ({"kind": "uaf_write", "variant": "middle"}, "paranoid"),
    ({"kind": "alloc_failure", "fail": "alloc@every100,max10"}, "standard"),
    ({"kind": "double_free"}, "off"),
    ({"kind": "invalid_free", "variant": "wild"}, "off"),
])
def test_fault_detected_at_its_level(fault, level):
    result = run_plan(make_plan(level, [fault]), jobs=2, command=DRIVER)
    for record in result.records:
        assert record.verdict.passed, (record.seed, record.verdict.reasons)
        assert [f.outcome for f in record.verdict.faults] == \
            ["detected"] * len(record.verdict.faults)
        assert record.verdict.faults


@pytest.mark.parametrize(("fault", "level"), [
    ({"kind": "uaf_write", "variant": "middle"}, "standard"),
    ({"kind": "overflow", "bytes": 1}, "off"),
    ({"kind": "underflow", "bytes": 8}, "off"),
])
def test_fault_missed_at_a_level_that_does_not_look(fault, level):
    plan = make_plan(level, [fault], outcome=["missed"])
    result = run_plan(plan, jobs=2, command=DRIVER)
    for record in result.records:
        assert [f.outcome for f in record.verdict.faults] == ["missed"], record.verdict
        assert record.verdict.outcome == "missed"
        assert record.verdict.passed, record.verdict.reasons


def test_abort_policy_gives_detected_abort_with_the_diagnostic():
    plan = make_plan("standard", [{"kind": "double_free"}], policy="abort",
                     outcome=["detected-abort"], seeds=2)
    result = run_plan(plan, jobs=2, command=DRIVER)
    for record in result.records:
        assert record.verdict.outcome == "detected-abort"
        assert record.observation.signal == 6
        assert record.verdict.diagnostic is not None
        assert record.verdict.diagnostic.startswith("nmm:")
        assert record.verdict.passed


@pytest.mark.parametrize("level", ["off", "standard", "paranoid"])
def test_clean_churn_is_clean(level):
    plan = make_plan(level, [], threads=2, seeds=2)
    result = run_plan(plan, jobs=2, command=DRIVER)
    for record in result.records:
        assert record.verdict.outcome == "clean", record.verdict.reasons
        assert record.verdict.passed, record.verdict.reasons
        assert record.observation.result is not None
        assert record.observation.result.ops == plan.total_ops
        # a trial this short may end before the parent's first sample; the driver's
        # own peak RSS is always there
        assert record.observation.result.peak_rss > 1 << 20
        assert all(s.rss > 0 for s in record.observation.samples)


def test_report_takes_peak_rss_and_cpu_from_the_driver_when_unsampled():
    from harness.robustness import build_report, run_of_records

    plan = make_plan("standard", [], seeds=1)
    record = run_plan(plan, command=DRIVER).records[0]
    unsampled = record.model_copy(update={
        "observation": record.observation.model_copy(update={"samples": ()})})
    trial = build_report([run_of_records(plan, [unsampled], run_id="r")])["trials"][0]
    assert trial["peak_rss"] == record.observation.result.peak_rss > 1 << 20
    assert trial["cpu_s"] == record.observation.result.cpu_ns / 1e9 > 0


def test_same_seed_same_faults():
    plan = make_plan("standard", [{"kind": "double_free", "count": 3}], seeds=1)
    a = run_plan(plan, command=DRIVER).records[0].observation
    b = run_plan(plan, command=DRIVER).records[0].observation
    assert [(f.kind, f.worker, f.op, f.size) for f in a.faults] == \
        [(f.kind, f.worker, f.op, f.size) for f in b.faults]


def test_cli_runs_a_shipped_plan_end_to_end(tmp_path, capsys):
    code = main(["run", str(PLANS / "double_free.toml"), "--seeds", "3", "--out",
                 str(tmp_path), "--set", "workload.threads=1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3/3 trials passed" in out
    assert list(tmp_path.glob("*/result.json"))


def test_bad_nmm_option_is_bad_input(tmp_path, capsys):
    code = main(["run", str(PLANS / "double_free.toml"), "--seeds", "1", "--out",
                 str(tmp_path), "--set", "target.options.no_such_option=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no_such_option" in err


def glibc_plan(fault: dict[str, Any], outcome: str) -> Plan:
    # 100-byte requests sit in 104 usable bytes: a 1-byte overflow stays in glibc's slack
    return Plan.model_validate({
        "schema_version": 1, "seed": 7, "seeds": 2, "timeout_s": 60,
        "target": {"kind": "malloc", "peer": "glibc"},
        "workload": {"threads": 1, "ops": 20000, "live": 300, "sizes": ["100-100:1"]},
        "faults": [fault], "expect": {"outcome": [outcome]}})


def test_foreign_target_glibc_aborts_on_a_double_free():
    result = run_plan(glibc_plan({"kind": "double_free"}, "detected-abort"), command=DRIVER)
    for record in result.records:
        assert record.verdict.outcome == "detected-abort", record.verdict
        assert record.observation.signal == 6
        assert "double free" in (record.verdict.diagnostic or "")
        assert record.target == "malloc:glibc"


def test_foreign_target_glibc_misses_a_one_byte_overflow():
    result = run_plan(glibc_plan({"kind": "overflow", "bytes": 1}, "missed"), command=DRIVER)
    for record in result.records:
        assert [f.outcome for f in record.verdict.faults] == ["missed"]
        assert record.verdict.passed, record.verdict.reasons


def test_unknown_peer_is_bad_input(tmp_path, write_plan, capsys):
    plan = write_plan('schema_version = 1\n[target]\nkind = "malloc"\npeer = "nosuch"\n')
    code = main(["run", str(plan), "--out", str(tmp_path)])
    assert code == 2
    assert "target.peer: unknown target 'nosuch'; expected one of glibc" in \
        capsys.readouterr().err
