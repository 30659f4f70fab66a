"""Each mutant of the chaos build (allocator/src/chaos.h) is caught by its plan under
chaos_plans/mutants/ on the chaos build, and the same plan, seeds and strategies pass
with no mutant: the harness catches real allocator bugs, and only them (issue 9)."""

from __future__ import annotations

import pytest

from harness.chaos import hunt, run_trial, strategy_for, with_mutant, with_strategy
from harness.loader import load_plan
from tests.chaos.conftest import ROOT, mutant_names

PLANS = ROOT / "chaos_plans" / "mutants"
#: the evidence each mutant must be caught by (the signature's kind)
CAUGHT_BY = {
    "xfree_unsync": ("check pattern", "check walk", "check counts", "check live",
                     "check validate", "check status", "false-positive"),
    "flush_race": ("check pattern", "check walk", "check counts", "check live",
                   "check validate", "check status", "false-positive"),
    "skip_df_check": ("fault double_free",),
    "canary_late": ("fault overflow",),
    # the final validate sees the class counters disagree with the slabs as well
    "stats_racy": ("check counts", "check live", "false-positive"),
    "atfork_order": ("check forks",),
    "lock_inversion": ("deadlock",),
    "refill_unlocked": ("check pattern", "check walk", "check counts", "check live",
                        "check validate", "check status", "false-positive"),
}


def test_every_mutant_has_a_plan_and_an_expected_catch() -> None:
    names = mutant_names()
    assert len(names) >= 8
    assert sorted(names) == sorted(CAUGHT_BY)
    assert sorted(p.stem for p in PLANS.glob("*.toml")) == sorted(names)


@pytest.mark.parametrize("mutant", mutant_names())
def test_the_plan_catches_its_mutant_and_passes_without_it(mutant: str) -> None:
    plan = load_plan(PLANS / f"{mutant}.toml")
    assert plan.scheduler.controlled
    found = hunt(with_mutant(plan, mutant), strategy="auto", max_seeds=plan.seeds,
                 start_seed=plan.seed)
    assert found.found is not None, f"{mutant}: not caught in {plan.seeds} seeds"
    signature = found.found.signature
    assert signature is not None and signature.kind.startswith(CAUGHT_BY[mutant]), signature
    # the clean build: every seed the hunt could have tried, each under its strategy
    for i, seed in enumerate(plan.trial_seeds()):
        clean = run_trial(with_strategy(plan, strategy_for("auto", i)), seed)
        assert clean.signature is None, (mutant, seed, clean.record.verdict.reasons)


def test_an_unknown_mutant_is_refused_naming_the_known_ones() -> None:
    from harness.chaos import ChaosError

    plan = load_plan(PLANS / "xfree_unsync.toml")
    with pytest.raises(ChaosError, match=r"unknown mutant; expected one of .*xfree_unsync"):
        with_mutant(plan, "nosuch")


