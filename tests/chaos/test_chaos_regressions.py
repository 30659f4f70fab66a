"""Every minimal plan `nmm-chaos shrink` wrote under chaos_plans/regressions/mutants/
replays: its artifact brings the same signature back, its witness is at most 10
operations, and the plan without its mutant passes; every mutant has one (issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.chaos import Artifact, replay, run_trial
from harness.loader import load_plan
from harness.plan import Plan
from harness.witness import is_operation, operations
from tests.chaos.conftest import ROOT, mutant_names

REGRESSIONS = ROOT / "chaos_plans" / "regressions" / "mutants"


def _without_mutant(plan: Plan) -> Plan:
    doc = plan.model_dump(mode="json")
    doc["target"]["options"].pop("mutant", None)
    return Plan.model_validate(doc)


@pytest.mark.parametrize("artifact_path", sorted(REGRESSIONS.glob("*.artifact.json")),
                         ids=lambda p: p.name.split(".")[0])
def test_a_shrunk_mutant_replays_and_its_plan_passes_without_it(artifact_path: Path) -> None:
    artifact = Artifact.load(artifact_path)
    assert replay(artifact, 2).matched == 2
    plan = load_plan(artifact_path.with_name(artifact_path.name.replace(".artifact.json",
                                                                        ".toml")))
    assert plan.needs_chaos_build and plan.seed == artifact.seed
    assert run_trial(_without_mutant(plan), plan.seed).signature is None
    ops = operations(plan)  # allocator calls and forks
    shown = len([ln for ln in artifact.witness if is_operation(ln)])
    assert 1 <= shown <= ops <= 10  # every mutant's witness: at most 10 operations


def test_every_mutant_has_a_shrunk_regression() -> None:
    shrunk = {p.name.split("-")[0] for p in REGRESSIONS.glob("*.artifact.json")}
    assert set(mutant_names()) <= shrunk, sorted(set(mutant_names()) - shrunk)
