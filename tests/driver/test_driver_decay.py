"""Empty slabs kept and decayed to the OS (chaos_plans/decay.toml): a large live set of
one size class freed on the locked paths empties many of its slabs; decay steps give the
coldest back. The final sweep holds the empty lists against the retained bytes, and the
oracle fails a trial whose sweep found a problem no fault explains (a decay that released
slabs without taking their bytes off the retained count: tests/bugs/decay_retained_leak.patch,
caught by decay.toml's first trial at off and at standard)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness._isolate import run_child
from harness.loader import load_plan
from harness.oracle import judge

PLAN = Path(__file__).resolve().parents[2] / "chaos_plans" / "decay.toml"


@pytest.mark.parametrize("level", ["off", "standard"])
def test_decayed_slabs_leave_the_books_straight(driver: Path, level: str) -> None:
    plan = load_plan(PLAN, overrides=[f"target.level={level}", "faults=[]"])
    w = plan.workload
    argv = [str(driver), "run", "--target", "nmm", "--nmm-options", plan.target.nmm_options(),
            "--seed", "5", "--threads", str(w.threads), "--ops", str(w.ops_per_worker),
            "--sizes", w.sizes_spec(), "--live", str(w.live), "--progress-every", "0"]
    obs = run_child(argv, 120.0)
    r = obs.result
    assert obs.exit_code == 0 and r is not None, obs.stderr_tail
    # the teardown emptied the class's ~80 slabs (about 5 MiB, under the 16 MiB retain
    # budget, so none is released at once): only decay steps give slabs back, about 30
    # here (31 to 32 by the threads' interleaving)
    assert r.stats["slabs_returned"] >= 8, r.stats
    assert r.validate_problems == 0
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons
    # the same trial with the retained bytes off by the released slabs: the final
    # sweep's one problem, which no fault explains, fails it
    bad = obs.model_copy(update={"result": r.model_copy(update={"validate_problems": 1})})
    v = judge(plan, bad)
    assert not v.passed and "1 integrity problem(s) found by the final sweep" in " | ".join(
        v.reasons)
