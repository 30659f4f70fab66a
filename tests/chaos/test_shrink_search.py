"""The shrinker's guided small-shape search (harness.shrink_search): shapes fewest ops
first, preemptions placed where the failing trial had one (its last first), and, end to
end, a race whose window the shape search missed by seed luck (stats_racy: 12 ops in
session 2) shrunk to a witness of at most 10 operations (issue 9)."""

from __future__ import annotations

from pathlib import Path

from harness.chaos import Artifact
from harness.cli import main
from harness.shrink_search import (
    YieldStep,
    cut_points,
    cut_schedule,
    parse_yield_log,
    preemption_points,
    shapes,
)
from tests.chaos.conftest import ROOT

PLANS = ROOT / "chaos_plans" / "mutants"


def test_shapes_come_fewest_ops_first_then_fewest_workers_then_even() -> None:
    got = list(shapes(threads=3, below=6, most=10))
    assert got[:6] == [(1,), (2,), (1, 1), (3,), (1, 2), (2, 1)]
    totals = [sum(c) for c in got]
    assert totals == sorted(totals) and max(totals) == 5
    assert (2, 2) in got and (1, 1, 1) in got and all(len(c) <= 3 for c in got)
    assert got.index((2, 2)) < got.index((1, 3)) < got.index((1, 1, 2))
    assert len(got) == len(set(got))
    # at most `most` ops even when the trial is bigger; nothing when it is already one op
    assert max(sum(c) for c in shapes(2, 100, 4)) == 4
    assert list(shapes(2, 1, 10)) == []


def test_the_last_preemption_point_is_the_first_evidence() -> None:
    log = "O 0 1 5\nP 0 7 heap.c:10\nO 1 1 9\nP 1 12 mutant.x\nP 0 15 heap.c:10\n"
    assert preemption_points(log) == ["heap.c:10", "mutant.x"]
    assert preemption_points("O 0 1 5\n") == []


def test_cut_points_follow_the_evidence_order_then_steps() -> None:
    base = parse_yield_log("Y 0 2 op R\nY 0 3 a.c:1 R\nY 0 4 b.c:2 R\nY 0 5 a.c:1 B\n"
                           "Y 0 6 a.c:1 R\nY 1 7 b.c:2 R\nY 0 8 b.c:2 R\nbad line\n")
    assert base[0] == YieldStep(0, 2, "op", True) and not base[3].runnable
    cuts = cut_points(base, 0, ["b.c:2", "a.c:1"], limit=3)
    # worker 0 only, runnable only (a blocked worker's switch is no preemption)
    assert [(c.step, c.where) for c in cuts] == [(4, "b.c:2"), (8, "b.c:2"), (3, "a.c:1")]
    assert cut_points(base, 0, ["nowhere"], limit=3) == []


def test_a_cut_runs_the_first_worker_to_the_step_then_hands_over() -> None:
    assert cut_schedule(0, YieldStep(0, 9, "x", True), 1) == ((0, 8), (1, 1))
    assert cut_schedule(1, YieldStep(1, 1, "x", True), 0) == ((0, 1),)


def test_shrink_brings_a_lost_update_race_to_at_most_ten_operations(tmp_path: Path,
                                                                   capsys) -> None:
    """stats_racy: session 2's shape search stopped at 2 x 6 ops (a window of a few steps
    that fresh seeds rarely hit); the guided small shapes find it in a few ops. The
    budget is generous: the shrink ends when its phases are done, not at the budget."""
    art = tmp_path / "stats_racy.json"
    assert main(["hunt", str(PLANS / "stats_racy.toml"), "--mutant", "stats_racy",
                 "--max-seeds", "12", "--artifact", str(art), "-q"]) == 0
    out = tmp_path / "regressions"
    assert main(["shrink", str(art), "--budget", "900", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "DONE after" in said
    shrunk = Artifact.load(next(out.glob("*.artifact.json")))
    assert shrunk.signature == Artifact.load(art).signature
    workload = shrunk.plan["workload"]
    ops = sum(workload.get("worker_ops") or [workload["ops"]] * workload["threads"])
    assert ops <= 10
    shown = [ln for ln in shrunk.witness if ln.startswith("T") and " op " in ln]
    assert len(shown) == ops and any("free(b" in ln for ln in shown)
