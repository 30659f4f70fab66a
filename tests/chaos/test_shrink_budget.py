"""How a shrink shares its budget among its phases (harness.shrink.PhaseBudget and
_Shrinker.run; issue 9: a shrink within 2 minutes a mutant, to a witness of at most 10
operations). No trial runs and no wall clock is read: the clock is a fake one, and each
phase is a script of trials, each taking so many fake seconds and keeping (or not) a
smaller trial through the shrinker's own ``_accept``."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.chaos import Artifact, Signature
from harness.shrink import (
    PHASE_SLICE_SHARE,
    SCHEDULE_SHARE,
    SMALL_SEARCH_OPS,
    PhaseBudget,
    _Budget,
    _PhaseSpent,
    _Shrinker,
)
from harness.witness import operations
from tests.chaos.conftest import ROOT

BUDGET = 120.0
SLICE = BUDGET * PHASE_SLICE_SHARE  # 30 s
NOTHING = None  # a trial that keeps nothing


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_sliced_phase_ends_a_slice_after_its_last_kept_trial() -> None:
    clock = FakeClock()
    budget = PhaseBudget(BUDGET, clock)
    budget.start(sliced=True, reserve=SCHEDULE_SHARE)
    clock.now += SLICE
    budget.check()  # exactly a slice: still running
    clock.now += 0.5
    with pytest.raises(_PhaseSpent):
        budget.check()
    budget.kept()  # a smaller trial: a new slice from now
    clock.now += SLICE - 1
    budget.check()
    # never into the reserve: slices renewed late are cut at the budget's end less it
    clock.now = budget.end - BUDGET * SCHEDULE_SHARE - 1
    budget.kept()
    clock.now += 2
    with pytest.raises(_PhaseSpent):
        budget.check()


def test_an_unsliced_phase_runs_to_its_reserve_and_the_budget_ends_all() -> None:
    clock = FakeClock()
    budget = PhaseBudget(BUDGET, clock)
    budget.start(sliced=False, reserve=SCHEDULE_SHARE)
    clock.now += BUDGET * (1 - SCHEDULE_SHARE) - 1
    budget.check()  # 107 s without a kept trial: no slice
    clock.now += 2
    with pytest.raises(_PhaseSpent):
        budget.check()
    budget.start(sliced=False, reserve=0.0)  # the last phase: to the end
    budget.check()
    clock.now = budget.end + 0.1
    with pytest.raises(_Budget):
        budget.check()
    assert budget.elapsed() == pytest.approx(BUDGET + 0.1)


REAL = Artifact.load(ROOT / "chaos_plans" / "regressions" / "mutants"
                     / "stats_racy-stats_racy.artifact.json")


def _artifact(ops: int) -> Artifact:
    """A trial of one worker with ``ops`` operations (a real plan, never run)."""
    plan = json.loads(json.dumps(REAL.plan))
    plan["workload"].update(threads=1, ops=ops, fork_every=0)
    plan["workload"].pop("worker_ops", None)
    return Artifact(identity={}, plan=plan, seed=1, signature=Signature("x", "y"))


class Scripted(_Shrinker):
    """A shrinker whose phases are scripts of (seconds, ops kept or NOTHING) trials;
    ``small-rest`` goes on with what ``small`` left of its script, as the real one goes
    on with the shapes not tried yet. A script running dry ends its phase."""

    def __init__(self, clock: FakeClock, ops: int, script: dict[str, list[Any]]) -> None:
        super().__init__(_artifact(ops), PhaseBudget(BUDGET, clock), Path("unused"),
                         self.notes_append)
        self.clock = clock
        self.notes: list[str] = []
        self.script = {name: deque(trials) for name, trials in script.items()}
        self.script["small-rest"] = self.script.setdefault("small", deque())
        self.ran: list[tuple[str, float, float]] = []  # phase, start, end (from t0)
        self.t0 = clock.now

    def notes_append(self, text: str) -> None:
        self.notes.append(text)

    def save(self) -> None:
        pass

    def _pass(self, name: str) -> None:
        start = self.clock.now - self.t0
        try:
            trials = self.script.get(name, deque())
            while trials:
                self._check_time()
                seconds, ops = trials.popleft()
                self.clock.now += seconds
                if ops is not NOTHING:
                    run = SimpleNamespace(record=SimpleNamespace(
                        seed=1, verdict=SimpleNamespace(reasons=[])), schedule=None)
                    self._accept(_artifact(ops).plan_model(), run, f"{ops} ops")  # type: ignore[arg-type]
        finally:
            self.ran.append((name, start, self.clock.now - self.t0))

    def phases(self) -> list[str]:
        return [name for name, _, _ in self.ran]


def forever(seconds: float = 1.0) -> list[Any]:
    return [(seconds, NOTHING)] * 10_000


def test_a_small_phase_still_finding_keeps_its_time_and_a_small_witness_skips_big_cuts():
    """atfork_order's case: the small shapes found 2+6 ops, then 1+4 later than the 40%
    the small phase had before. Now each kept trial renews its slice; once the trial has
    at most SMALL_SEARCH_OPS operations, knobs and shape (which cut big trials) and the
    small search's second turn are skipped: the schedule phase comes next."""
    clock = FakeClock()
    s = Scripted(clock, 400, {
        "prefix": [(1, NOTHING)],
        "small": [(29, NOTHING), (1, 8), (28, NOTHING), (1, 5), *forever()],
        "knobs": [(1, 3)], "shape": [(1, 2)],  # never run
        "schedule": [(1, NOTHING)] * 5})
    s.run("prefix")
    assert s.phase == "done"  # every phase ran or was skipped, none ran out the budget
    assert s.phases() == ["prefix", "small", "schedule"]
    assert operations(s.best.plan_model()) == 5 <= SMALL_SEARCH_OPS
    _, start, end = s.ran[1]
    # found at 31 s and 60 s (past a fixed 40% = 48 s); a slice without a find after it
    assert start == 1 and end == pytest.approx(60 + SLICE + 1)
    assert s.ran[2][2] - s.ran[2][1] == 5
    assert any(n.startswith("small: its time is up") for n in s.notes)


def test_a_small_phase_finding_nothing_hands_over_then_gets_what_is_left() -> None:
    """xfree_unsync's case: the small shapes found nothing in their 48 s, and halving then
    found 2 x 5 ops in 2 s. Now the small phase ends after a slice without a find,
    knobs and shape run (the trial still has more than SMALL_SEARCH_OPS operations), and
    the small search goes on for the rest, less the schedule phase's share."""
    clock = FakeClock()
    s = Scripted(clock, 400, {
        "prefix": [(1, NOTHING)],
        "small": forever(),
        "knobs": [(1, 200), (1, NOTHING)],
        "shape": [(1, 100), (1, 50), (1, 24), *forever()],
        "schedule": [(1, NOTHING)] * 3})
    s.run("prefix")
    assert s.phase == "done"  # every phase ran or was skipped, none ran out the budget
    assert s.phases() == ["prefix", "small", "knobs", "shape", "small-rest", "schedule"]
    ends = {name: end for name, _, end in s.ran}
    assert ends["small"] == pytest.approx(1 + SLICE + 1)
    assert ends["knobs"] == ends["small"] + 2  # its script ran dry
    # shape: a slice after its last kept trial (24 ops)
    assert ends["shape"] == pytest.approx(ends["knobs"] + 3 + SLICE + 1)
    # the small search's second turn runs to the schedule phase's share, not a slice
    assert ends["small-rest"] == pytest.approx(BUDGET * (1 - SCHEDULE_SHARE) + 1)
    assert operations(s.best.plan_model()) == 24


def test_big_trial_phases_leave_the_small_search_a_slice_of_its_own() -> None:
    """A shape phase that keeps finding (a halving every 5 s) would take the budget; it
    stops where the small search's last slice and the schedule's share begin."""
    clock = FakeClock()
    keeps = [(5, 300 - i) for i in range(100)]
    s = Scripted(clock, 400, {"small": [(1, NOTHING)] * 5, "shape": keeps,
                              "schedule": [(1, NOTHING)]})
    s.run("prefix")
    assert s.phase == "done"  # every phase ran or was skipped, none ran out the budget
    ends = {name: end for name, _, end in s.ran}
    assert ends["shape"] == pytest.approx(
        BUDGET * (1 - SCHEDULE_SHARE - PHASE_SLICE_SHARE), abs=5)
    assert s.phases()[-2:] == ["small-rest", "schedule"]


def test_a_resumed_shrink_starts_at_its_saved_phase_and_the_budget_can_end_it() -> None:
    clock = FakeClock()
    s = Scripted(clock, 400, {"prefix": [(1, 300)], "small": [(1, NOTHING)],
                              "schedule": forever(5)})
    with pytest.raises(_Budget):  # the last phase runs to the end of the budget
        s.run("shape")
    assert s.phases() == ["shape", "small-rest", "schedule"]
    assert s.ran[-1][2] == pytest.approx(BUDGET, abs=5)


def test_the_small_search_second_turn_goes_on_with_the_shapes_not_tried() -> None:
    """small-rest does not start the small shapes over: the first turn's time is not
    spent twice on the same (round, seed, shape)."""
    clock = FakeClock()
    s = Scripted(clock, 400, {})
    s.best = REAL  # 2 threads x 2 ops: every shape of 1..3 ops, 2 rounds of seeds
    calls: list[tuple[int, tuple[int, ...], frozenset[int]]] = []

    def small_shape(counts: tuple[int, ...], seed: int, kinds: frozenset[int]) -> bool:
        s._check_time()
        clock.now += 1
        calls.append((seed, counts, kinds))
        return False

    s._small_shape = small_shape  # type: ignore[method-assign]
    s.budget.start(sliced=True, reserve=SCHEDULE_SHARE)
    with pytest.raises(_PhaseSpent):
        s.small_pass()
    first = len(calls)
    assert first == SLICE + 1  # one fake second each, up to the end of the slice
    s.budget.start(sliced=False, reserve=SCHEDULE_SHARE)
    s.small_pass()
    assert len(calls) > first and len(set(calls)) == len(calls)
    # the whole search: every shape below 4 ops under each seed of the first round,
    # the shapes of two workers or more under the second round's seeds
    assert len(calls) == 6 * 8 + 3 * 3
