"""Replays every minimised regression plan under chaos_plans/regressions/ end to end
through the real native driver: each must pass for every seed it lists. The driver is
pinned, with this process (which reads its output), to one CPU so that its worker
threads are preempted often, which is what the concurrency regressions need."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _nmm_c import require_driver

from harness.loader import load_plan
from harness.runner import run_plan

DRIVER = require_driver()

REGRESSIONS = Path(__file__).resolve().parent.parent.parent / "chaos_plans" / "regressions"


@contextmanager
def _one_cpu() -> Iterator[None]:
    """This process and the children it starts share one CPU (restored after)."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


@pytest.mark.parametrize("path", sorted(REGRESSIONS.glob("*.toml")), ids=lambda p: p.stem)
def test_regression_plan_passes_every_seed(path: Path) -> None:
    plan = load_plan(path)
    with _one_cpu():
        result = run_plan(plan, jobs=1, command=DRIVER)
    assert len(result.records) == plan.seeds
    for record in result.records:
        assert record.verdict.passed, (path.name, record.seed, record.verdict.reasons)
