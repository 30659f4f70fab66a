"""The shrinker's guided small-shape search (harness.shrink_search): shapes fewest ops
first, preemptions placed where the failing trial had one (its last first), and, end to
end, a race whose window the shape search missed by seed luck (stats_racy: 12 ops in
session 2) shrunk to a witness of at most 10 operations (issue 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.chaos import Artifact
from harness.cli import main
from harness.shrink_search import (
    GENERIC,
    LOCK,
    WINDOW,
    YieldStep,
    cut_points,
    cut_schedule,
    op_ends,
    parse_yield_log,
    point_kind,
    preemption_points,
    shapes,
    window_points,
)
from harness.witness import is_operation, operations
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


def test_cut_points_take_each_point_in_turn_in_the_evidence_order() -> None:
    base = parse_yield_log("Y 0 2 op R\nY 0 3 a.c:1 R\nY 0 4 b.c:2 R\nY 0 5 a.c:1 B\n"
                           "Y 0 6 a.c:1 R\nY 1 7 b.c:2 R\nY 0 8 b.c:2 R\nbad line\n")
    assert base[0] == YieldStep(0, 2, "op", True) and not base[3].runnable
    cuts = cut_points(base, 0, ["b.c:2", "a.c:1"], limit=3)
    # worker 0 only, runnable only (a blocked worker's switch is no preemption); every
    # point's first occurrence before any point's second
    assert [(c.step, c.where) for c in cuts] == [(4, "b.c:2"), (3, "a.c:1"), (8, "b.c:2")]
    assert cut_points(base, 0, ["nowhere"], limit=3) == []
    # up to a step (a worker's first ops): later occurrences are not cut at
    assert [c.step for c in cut_points(base, 0, ["b.c:2", "a.c:1"], 9, until=5)] == [4, 3]


def test_points_are_ranked_window_then_lock_then_generic() -> None:
    assert point_kind("mutant.flush_race") == point_kind("tcache.flush") == WINDOW
    assert point_kind("bin.push") == WINDOW
    assert point_kind("class.lock") == point_kind("quarantine.unlock") == LOCK
    assert point_kind("detect.c:477") == point_kind("op") == GENERIC
    # session 3's flush_race: its last preemption was class.lock, so a lock took the
    # cuts; the window point, even last in the evidence and later in the run, comes first
    base = parse_yield_log("Y 1 5 class.lock R\nY 1 6 detect.c:477 R\nY 1 9 class.lock R\n"
                           "Y 1 12 mutant.flush_race R\nY 1 14 class.unlock R\n")
    evidence = ["class.lock", "detect.c:477", "class.unlock", "mutant.flush_race"]
    assert [c.where for c in cut_points(base, 1, evidence, limit=2)] == [
        "mutant.flush_race", "class.lock"]
    assert [c.step for c in cut_points(base, 1, evidence, 9, kinds=frozenset({LOCK}))
            ] == [5, 14, 9]
    assert cut_points(base, 1, evidence, 9, kinds=frozenset({WINDOW}), until=11) == []


def test_window_points_passed_are_evidence_too_the_rarest_first() -> None:
    steps = parse_yield_log("Y 0 1 bin.push R\nY 0 2 mutant.x R\nY 1 3 bin.push R\n"
                            "Y 1 4 class.lock R\nY 0 5 a.c:1 R\nY 0 6 tcache.flush R\n")
    assert window_points(steps, exclude=set()) == ["mutant.x", "tcache.flush", "bin.push"]
    assert window_points(steps, exclude={"mutant.x"}) == ["tcache.flush", "bin.push"]


def test_op_ends_are_the_steps_a_worker_finished_its_ops_at() -> None:
    log = "O 1 1 76\nO 1 2 127\nP 1 130 class.lock\nO 0 1 272\nO 1 3 171\n"
    assert op_ends(log, 1) == {1: 76, 2: 127, 3: 171}
    assert op_ends(log, 0) == {1: 272} and op_ends("", 0) == {}


def test_a_cut_runs_the_first_worker_to_the_step_then_hands_over() -> None:
    assert cut_schedule(0, YieldStep(0, 9, "x", True), 1) == ((0, 8), (1, 1))
    assert cut_schedule(1, YieldStep(1, 1, "x", True), 0) == ((0, 1),)


@pytest.mark.parametrize("mutant", ["stats_racy", "flush_race"])
def test_shrink_brings_a_race_to_at_most_ten_operations(tmp_path: Path, capsys,
                                                        mutant: str) -> None:
    """stats_racy: session 2's shape search stopped at 2 x 6 ops (a window of a few steps
    that fresh seeds rarely hit); the guided small shapes find it in a few ops.
    flush_race: session 3's guided search stopped at 19 ops (it cut at the failing
    trial's lock points; its window point comes first now). The budget is generous:
    the shrink ends when its phases are done, not at the budget."""
    art = tmp_path / f"{mutant}.json"
    assert main(["hunt", str(PLANS / f"{mutant}.toml"), "--mutant", mutant,
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


def test_a_lock_order_deadlock_shrinks_to_a_few_operations(tmp_path: Path, capsys) -> None:
    """lock_inversion needs two preemptions in a small trial (the refill holding its
    class lock comes after the other thread's cache was made and before that thread's
    exit takes the registry lock), out of one guided cut's reach: the small shapes'
    fresh interleavings find it (before them a shrink stopped at 300+1+1 ops)."""
    art = tmp_path / "lock_inversion.json"
    assert main(["hunt", str(PLANS / "lock_inversion.toml"), "--mutant", "lock_inversion",
                 "--max-seeds", "12", "--artifact", str(art), "-q"]) == 0
    out = tmp_path / "regressions"
    assert main(["shrink", str(art), "--budget", "900", "--out", str(out)]) == 0
    assert "DONE after" in capsys.readouterr().out
    shrunk = Artifact.load(next(out.glob("*.artifact.json")))
    assert shrunk.signature == Artifact.load(art).signature
    assert shrunk.signature.outcome == "deadlock"
    assert operations(shrunk.plan_model()) <= 10
    blocked = [ln for ln in shrunk.witness if " blocked at " in ln]
    assert len(blocked) >= 2
    # each blocked worker names the op it was inside, or its exit after its last op
    assert all(", unfinished: " in ln or " exiting after its last op: " in ln
               for ln in blocked), shrunk.witness
    shown = [ln for ln in shrunk.witness if is_operation(ln)]
    assert 1 <= len(shown) <= operations(shrunk.plan_model())
