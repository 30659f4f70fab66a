"""Paranoid's poison under its options. poison_limit (chaos_plans/poison_limit*.toml): a
freed block longer than twice the limit is poisoned and checked at its two ends only, so
a use after free there must still be reported at the byte written. Each plan's trial on
the real driver passes the oracle with every fault detected at an end of its block; the
allocator with the tail left unchecked (tests/bugs/poison_limit_tail_unchecked.patch) or
with the word loop one word short (tests/bugs/poison_word_loop_short.patch) fails them
(the bugs' notes in the issue). avx2=0 (chaos_plans/poison_sse2.toml, a process key in the
driver's NMM_OPTIONS): blocks over 256 bytes poisoned and checked by the SSE2 code are
reported as the AVX2 code reports them (tests/bugs/poison_sse2_any_byte.patch, an SSE2 check
that takes a run with any poison byte as intact, fails that plan and no other)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness._driver import driver_args, driver_env
from harness._isolate import run_child
from harness._peers import resolve_target
from harness.loader import load_plan
from harness.oracle import judge

PLANS = Path(__file__).resolve().parents[2] / "chaos_plans"


@pytest.mark.parametrize(("name", "limit"), [
    ("poison_limit", 128), ("poison_limit_words", 8),  # thread caches: their own rings
    ("poison_limit_shared", 128), ("poison_limit_words_shared", 8),  # sweeps: the shared ring
])
def test_writes_at_the_poisoned_ends_are_reported_where_written(driver: Path, name: str,
                                                                 limit: int) -> None:
    plan = load_plan(PLANS / f"{name}.toml")
    assert plan.target.options["poison_limit"] == limit
    assert ("sweep" in plan.target.options) == name.endswith("_shared")
    # every request is longer than twice the limit: the limit applies to each block
    assert min(r.lo for r in plan.workload.sizes) > 2 * limit
    obs = run_child([str(driver), *driver_args(plan, plan.seed)], 120.0)
    assert obs.exit_code == 0 and obs.result is not None, obs.stderr_tail
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons
    assert len(obs.faults) == len(plan.faults)
    uaf = [e for e in obs.events if e.kind == "use_after_free"]
    for f in obs.faults:
        assert f.kind == "uaf_write" and f.offset is not None and f.bytes is not None
        # the write is inside the head's limit bytes or reaches the block's last bytes
        assert f.offset + f.bytes <= limit or f.offset + f.bytes == f.size, f
        hits = [e for e in uaf if e.address == f.address]
        assert hits and hits[0].detail == f.offset, (f, hits)
    # the same trial without those reports misses every fault: the oracle fails it
    quiet = obs.model_copy(update={"events": tuple(e for e in obs.events if e not in uaf)})
    bad = judge(plan, quiet)
    assert not bad.passed and all(v.outcome == "missed" for v in bad.faults), bad.reasons


def test_the_sse2_code_reports_what_the_avx2_code_reports(driver: Path) -> None:
    plan = load_plan(PLANS / "poison_sse2.toml")
    env = driver_env(resolve_target(plan.target))
    assert env["NMM_OPTIONS"] == "avx2=0"
    assert min(r.lo for r in plan.workload.sizes) > 256  # every block takes detect.c's code
    argv = [str(driver), *driver_args(plan, plan.seed)]
    for run_env in (env, {**env, "NMM_OPTIONS": ""}):  # SSE2, then AVX2 where the CPU has it
        obs = run_child(argv, 120.0, env=run_env)
        assert obs.exit_code == 0 and obs.result is not None, obs.stderr_tail
        verdict = judge(plan, obs)
        assert verdict.passed, verdict.reasons
        assert [v.outcome for v in verdict.faults] == ["detected"] * len(plan.faults)
        for f in obs.faults:
            hits = [e for e in obs.events if e.kind == "use_after_free" and e.address == f.address]
            assert hits and hits[0].detail == f.offset, (f, hits)
