"""The plan axes that cover the allocator: workload knobs (realloc, calloc, aligned,
calloc_count, edge_every), fault shapes (skip, variant last), expectations per NMM
level (``[expect.levels.<level>]``) and the campaign plan entries that run a plan at its
own axes, with the level trials gating."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import campaign as cp
from harness._driver import driver_args
from harness.errors import PlanError, UnsupportedFeature
from harness.oracle import judge
from harness.plan import Plan
from harness.pydriver import PyDriver
from harness.records import FaultLine, Observation, ResultLine

A = 0x7F00_0000_1000


def plan(**kw: Any) -> Plan:
    doc: dict[str, Any] = {"schema_version": 1, "workload": {"threads": 1, "ops": 1000}}
    doc.update(kw)
    return Plan.model_validate(doc)


def test_workload_knobs_reach_the_driver_only_when_a_plan_changes_them() -> None:
    plain = driver_args(plan(), 1)
    assert not {"--realloc", "--calloc", "--aligned", "--calloc-count",
                "--edge-every"} & set(plain)
    p = plan(workload={"ops": 1000, "realloc": 0.3, "calloc": 0.2, "aligned": 0.1,
                       "calloc_count": 64, "edge_every": 500})
    args = driver_args(p, 1)
    got = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert (got["--realloc"], got["--calloc"], got["--aligned"]) == ("0.3", "0.2", "0.1")
    assert (got["--calloc-count"], got["--edge-every"]) == ("64", "500")


def test_fault_shapes_reach_the_driver() -> None:
    p = plan(faults=[{"kind": "underflow", "bytes": 1, "skip": 3},
                     {"kind": "uaf_write", "variant": "last", "bytes": 4}])
    args = driver_args(p, 1)
    faults = [args[i + 1] for i, a in enumerate(args) if a == "--fault"]
    assert faults == ["underflow:count=1:bytes=1:skip=3", "uaf_write:count=1:variant=last:bytes=4"]


@pytest.mark.parametrize(("doc", "words"), [
    ({"workload": {"calloc": 0.7, "aligned": 0.5}}, ["workload.aligned", "0.5", "at most 0.3"]),
    ({"faults": [{"kind": "uaf_write", "skip": 2}]}, ["faults.0.skip", "overflow and underflow"]),
    ({"faults": [{"kind": "overflow", "variant": "last"}]}, ["faults.0.variant", "no variant"]),
    ({"workload": {"calloc_count": 0}}, ["workload.calloc_count", "greater than or equal to 1"]),
    ({"expect": {"levels": {"insane": {}}}}, ["expect.levels", "insane"]),
    ({"expect": {"levels": {"off": {"faults": {"overflow": {"outcome": ["mised"]}}}}}},
     ["expect.levels.off.faults.overflow.outcome.0", "mised"]),
])
def test_bad_axes_are_named(doc: dict[str, Any], words: list[str]) -> None:
    from harness.loader import validate_document

    with pytest.raises(PlanError) as err:
        validate_document({"schema_version": 1, **doc}, {}, "p.toml")
    for word in words:
        assert word in str(err.value), str(err.value)


def test_level_expectations_apply_at_their_level_only() -> None:
    p = plan(target={"kind": "nmm", "level": "paranoid"},
             faults=[{"kind": "overflow"}, {"kind": "double_free"}],
             expect={"faults": {"overflow": {"outcome": ["detected", "detected-abort"]}},
                     "levels": {"off": {"faults": {"overflow": {"outcome": ["missed"]}}},
                                "standard": {"outcome": ["detected", "missed"]}}})
    assert p.allowed_for("overflow") == ("detected", "detected-abort")
    at = {lv: p.model_copy(update={"target": p.target.model_copy(update={"level": lv})})
          for lv in ("off", "standard")}
    assert at["off"].allowed_for("overflow") == ("missed",)
    assert at["off"].allowed_for("double_free") == ("detected",)   # the plan's own
    assert at["standard"].allowed_for("double_free") == ("detected", "missed")
    malloc = plan(target={"kind": "malloc", "peer": "glibc"}, expect=p.expect.model_dump())
    assert malloc.allowed_for("overflow") == ("detected", "detected-abort")


def _missed_overflow(level: str) -> tuple[Plan, Observation]:
    p = plan(target={"kind": "nmm", "level": level}, faults=[{"kind": "overflow"}],
             expect={"levels": {"off": {"faults": {"overflow": {"outcome": ["missed"]}}}}})
    f = FaultLine(id=0, kind="overflow", address=A, line=2, op=100, size=48, bytes=1,
                  offset=48, seq=0, done=True, status=0)
    res = ResultLine(ops=1000, worker_ops=[1000], elapsed_ns=1, faults=1, events=0,
                     stats={"allocs": 10, "frees": 10, "live_blocks": 0, "live_bytes": 0,
                            "events": 0, "events_dropped": 0, "alloc_failures": 0,
                            "injected_failures": 0},
                     stats_before={"live_blocks": 0},
                     counts={"allocs": 10, "frees": 10, "reallocs": 0, "reallocs_moved": 0,
                             "dropped": 0, "live_blocks": 0, "live_bytes": 0},
                     walk={"blocks": 0, "bytes": 0, "unknown": 0, "missing": 0,
                           "size_mismatch": 0},
                     walk_after={"blocks": 0, "bytes": 0, "unknown": 0, "missing": 0,
                                 "size_mismatch": 0},
                     validate_problems=0, leaked_blocks=0)
    obs = Observation(start={"protocol": 2, "faults_planned": 1}, faults=[f], result=res,
                      exit_code=0)
    return p, obs


def test_the_oracle_judges_a_trial_by_its_levels_expectations() -> None:
    p_off, obs = _missed_overflow("off")
    assert judge(p_off, obs).passed, judge(p_off, obs).reasons
    # the same missed overflow at standard, whose expectations are the plan's: a failure
    p_std, obs = _missed_overflow("standard")
    verdict = judge(p_std, obs)
    assert not verdict.passed and "expected detected" in verdict.reasons[0]


def test_the_python_driver_refuses_what_it_cannot_run() -> None:
    for p in (plan(workload={"ops": 100, "calloc_count": 4}),
              plan(faults=[{"kind": "overflow", "skip": 7}]),
              plan(faults=[{"kind": "uaf_write", "variant": "last"}])):
        with pytest.raises(UnsupportedFeature, match="native driver"):
            PyDriver.check_plan(p)


CAMPAIGN = """
[campaign]
plans = ["a.toml", {{ path = "b.toml", targets = ["plan"], levels = {levels} }}]
targets = ["nmm"]
levels = ["paranoid"]
split_faults = true
"""
PLAN_B = """
schema_version = 1
seeds = 2
[target]
level = "paranoid"
[workload]
ops = 100
[[faults]]
kind = "double_free"
[[faults]]
kind = "overflow"
[expect.levels.off.faults.overflow]
outcome = ["missed"]
[expect.levels.standard]
"""


def test_a_plan_entry_runs_at_its_own_axes_and_its_levels_gate(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("schema_version = 1\nseeds = 3\n[target]\n"
                                     "level = \"standard\"\n[workload]\nops = 100\n")
    (tmp_path / "b.toml").write_text(PLAN_B)
    levels = '["off", "standard", "paranoid", "paranoid+abort"]'
    (tmp_path / "c.toml").write_text(CAMPAIGN.format(levels=levels))
    spec = cp.load_campaign_file(tmp_path / "c.toml")
    defn = cp.define(list(spec.plans), targets=list(spec.targets), levels=list(spec.levels or ()),
                     split_faults=spec.split_faults)
    trials = cp.expand(defn)
    by = {(t.plan.name.split("[")[0], t.plan.target.label, t.gating) for t in trials}
    # a.toml: the campaign's axes (nmm at paranoid, not its own standard: no gate)
    assert ("a", "nmm:paranoid", False) in by
    # b.toml: its own levels (split, as the campaign splits), the named ones gating
    assert {(lbl, g) for n, lbl, g in by if n == "b"} == {
        ("nmm:off", True), ("nmm:standard", True), ("nmm:paranoid", True),
        ("nmm:paranoid+abort", False)}
    assert sum(1 for t in trials if t.plan.name.startswith("b[")) == 4 * 2 * 2
    # the trials at off judge the overflow by off's expectations
    off = next(t for t in trials if t.plan.name == "b[overflow]"
               and t.plan.target.label == "nmm:off")
    assert off.plan.allowed_for("overflow") == ("missed",)
    # every plan file named, in order, by plans validate
    from harness.loader import validate_paths
    assert [p.name for p, _ in validate_paths([tmp_path / "c.toml"])] == ["a.toml", "b.toml"]


def test_a_plan_entrys_bad_level_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("schema_version = 1\n")
    (tmp_path / "b.toml").write_text(PLAN_B)
    (tmp_path / "c.toml").write_text(CAMPAIGN.format(levels='["paranoia"]'))
    spec = cp.load_campaign_file(tmp_path / "c.toml")
    with pytest.raises(cp.CampaignError, match="paranoia"):
        cp.define(list(spec.plans), targets=list(spec.targets), levels=list(spec.levels or ()))


@pytest.mark.parametrize("name", ["smoke", "nightly"])
def test_the_campaigns_gate_every_nmm_level(name: str) -> None:
    root = Path(__file__).resolve().parents[2] / "chaos_plans" / "campaigns"
    spec = cp.load_campaign_file(root / f"{name}.toml")
    defn = cp.define(list(spec.plans), seeds=2, targets=list(spec.targets),
                     levels=list(spec.levels or ()), split_faults=spec.split_faults)
    gating = {(t.plan.name.split("[")[0], t.plan.target.label)
              for t in cp.expand(defn) if t.gating}
    plans = {n for n, _ in gating}
    slice_ = {"shapes", "api", "limit", "tcache_off", "failstorm", "large_realloc", "tracking",
              "exitleaks", "zero_sizes", "decay"}
    aborting = {(n, t) for n, t in gating if n == "abort"}
    assert aborting == {("abort", f"nmm:{lv}+abort") for lv in ("off", "standard", "paranoid")}
    assert slice_ <= plans
    for plan_name in ({"smoke"} if name == "smoke" else {"nightly"}) | slice_:
        for level in ("off", "standard", "paranoid"):
            assert (plan_name, f"nmm:{level}") in gating, (plan_name, level)


@pytest.mark.parametrize(("report", "passes", "words"), [
    ({"parsed": True, "live_blocks": 0, "live_bytes": 0}, True, ""),
    ({"parsed": True, "live_blocks": 3, "live_bytes": 0}, False, "counts 3 live block(s)"),
    ({"parsed": False, "json_bytes": 0}, False, "did not start with its totals"),
])
def test_the_heaps_leak_report_must_count_the_drivers_live_blocks(
        report: dict[str, Any], passes: bool, words: str) -> None:
    p, obs = _missed_overflow("off")
    assert obs.result is not None
    obs = obs.model_copy(update={"result": obs.result.model_copy(
        update={"leak_report": report})})
    verdict = judge(p, obs)
    assert verdict.passed is passes, verdict.reasons
    assert words in " ".join(verdict.reasons)
