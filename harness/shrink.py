"""``nmm-chaos shrink``: minimise a failing trial while keeping its failure signature
(design.md "Reproduction", issue 9).

Delta debugging, preemptions first, then the cuts that make every later trial cheaper:
1. preemptions — the schedule trace is cut to its shortest prefix that still fails once
   the rest runs without preemptions (``--after-schedule nonpreemptive``): a binary
   search, a few trials;
2. small — every shape of at most ``SMALL_SEARCH_OPS`` ops, fewest first, each tried
   with one preemption placed where the failing trial had one (``harness.shrink_search``:
   a worker runs alone, logging its yield points, and is cut at the failing trial's
   preemption points, window points first, another worker running to its end), a shape
   of a few ops also under a few fresh interleavings (a bug needing two preemptions,
   such as a lock-order inversion behind a cache's creation, is out of one cut's
   reach), with a fork and a new thread after every op and a 64-byte quarantine first,
   for the artifact's seed and the next ones (other op streams);
3. knobs — the settings a window may need many ops for (quarantine size, live set,
   fork interval, thread churn);
4. shape — the ops per worker by halves; threads down to one; faults dropped, their
   counts halved; then each worker's own op count halved (``workload.worker_ops``).
   A candidate of another shape first follows the current schedule (the op streams of
   a smaller shape are prefixes of the bigger one's), then gets the guided preemptions
   of phase 2, else is tried under the plan's strategy, ``random`` and ``pos`` with the
   artifact's seed and a few after it, and kept with the schedule it took;
5. small-rest — the small phase again where it stopped, with the time left;
6. schedule — on the small trial: the prefix again, then its switches removed in chunks
   (ddmin over the trace's runs: a removed run lets the worker before it go on).

The budget (``PhaseBudget``): each phase but the last two keeps running while it finds
smaller trials and hands over after a quarter of the budget without one; phases 3-5 are
skipped once the trial has at most ``SMALL_SEARCH_OPS`` operations (the witness goal:
they only cut bigger trials), phases 3-4 leave the small search a quarter of the budget,
and a tenth is kept for phase 6.

Progress is saved after every accepted step (``ARTIFACT.shrink.json``), so a shrink
stopped by its budget (or killed) resumes where it was. The result: the minimal plan
under ``chaos_plans/regressions/mutants/`` (TOML, its seed pinned) with the artifact
beside it, and a witness a person can read.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.chaos import Artifact, Schedule, TrialRun, artifact_of, run_trial, with_strategy
from harness.plan import Plan
from harness.shrink_search import (
    GENERIC,
    LOCK,
    WINDOW,
    YieldStep,
    cut_points,
    cut_schedule,
    op_ends,
    parse_yield_log,
    preemption_points,
    shapes,
    window_points,
)
from harness.witness import operations, witness_lines

#: seeds tried for a candidate of another shape (the artifact's, then the next ones)
SEEDS_PER_SHAPE = 4
#: ... and for a shape of at most SMALL_SHAPE_OPS ops in all
SEEDS_PER_SMALL_SHAPE = 12
SMALL_SHAPE_OPS = 40
#: the small-shape phase tries every shape of at most this many ops (issue 9's witness
#: goal), fewest first ...
SMALL_SEARCH_OPS = 10
#: ... for the artifact's seed and the next ones (each seed: other op streams), first
#: with preemptions at window points only, then at the others for fewer seeds
SMALL_SEARCH_SEEDS = 8
SMALL_SEARCH_SEEDS_ALL = 3
#: a phase keeps running while it finds smaller trials: it has this share of the budget
#: from its start and again from every smaller trial it keeps; after that long without
#: one, the next phase runs (``PhaseBudget``)
PHASE_SLICE_SHARE = 0.25
#: the share set aside for the last phase (the schedule's switches: cheap on a small trial)
SCHEDULE_SHARE = 0.1
#: the strategies a shape of at most SMALL_FRESH_OPS ops is also tried under (first
#: round, each seed): a bug whose window needs two preemptions (lock_inversion: the
#: refill holding its class lock must come after the other thread's cache was made and
#: before that thread's exit takes the registry lock) is out of reach of one guided
#: cut, and a trial of a few ops has so few interleavings that a random walk finds it
#: (2 x 1 ops under pos deadlock at 6 of 30 seeds, 1+1+1 ops under random at 24 of 30).
#: Not for bigger shapes: 3 trials a shape and seed tripled the search's cost
#: (flush_race's 3+4 at its second seed: 2 s -> not within 30 s)
SMALL_FRESH_KINDS = ("pos", "random", "surw")
SMALL_FRESH_OPS = 4
#: guided preemption points tried per worker run alone (the most telling first)
GUIDED_POINTS = 6
PROGRESS_VERSION = 4  # 4: phases prefix, small, knobs, shape, small-rest, schedule

#: the phases in order, and what each gets of the budget: whether it is sliced (keeps
#: going only while it finds smaller trials) and the shares it must leave to the phases
#: after it. knobs and shape leave the small search at least a slice of its own, and
#: are skipped once the trial has at most SMALL_SEARCH_OPS operations (they cut big
#: trials; the small phase has tried every smaller shape for its seeds), like the small
#: search's second turn (``small-rest``: the small phase where it stopped, with the time
#: the others left)
PHASES: dict[str, tuple[bool, float]] = {
    "prefix": (True, SCHEDULE_SHARE),
    "small": (True, SCHEDULE_SHARE),
    "knobs": (True, SCHEDULE_SHARE + PHASE_SLICE_SHARE),
    "shape": (True, SCHEDULE_SHARE + PHASE_SLICE_SHARE),
    "small-rest": (False, SCHEDULE_SHARE),
    "schedule": (False, 0.0),
}
BIG_TRIAL_PHASES = frozenset({"knobs", "shape", "small-rest"})


@dataclass
class ShrinkOutcome:
    artifact: Artifact
    plan_path: Path
    artifact_path: Path
    trials: int
    seconds: float
    finished: bool
    summary: str


class _Budget(Exception):
    """The time budget ran out."""


class _PhaseSpent(Exception):
    """The running phase's time is up: the next phase runs."""


class PhaseBudget:
    """How a shrink's seconds are shared by its phases (issue 9: a shrink within two
    minutes a mutant, to a witness of at most 10 operations). A fixed share per phase
    either starves a phase that is still finding smaller trials (atfork_order's small
    shapes: 2+6 ops, then 1+4, when 40% of the budget ran out) or spends the time on
    one that finds nothing (xfree_unsync's: 48 s, then halving found 2 x 5 ops in 2 s).
    So a *sliced* phase has PHASE_SLICE_SHARE of the budget from its start and again
    from every smaller trial it keeps (``kept``), and ends after a slice without one; an
    unsliced phase runs until only its reserve is left. No phase runs into its
    ``reserve`` (the share of the budget it leaves to the phases after it). ``clock`` is
    injected for the tests."""

    def __init__(self, budget_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.budget_s = budget_s
        self.end = clock() + budget_s
        self.phase_end = self.end
        self._floor = self.end
        self._slice: float | None = None

    def start(self, sliced: bool, reserve: float) -> None:
        """A phase starts: it may run a slice (``sliced``) and never past the budget's
        end less ``reserve`` (a share of the budget)."""
        self._floor = self.end - reserve * self.budget_s
        self._slice = self.budget_s * PHASE_SLICE_SHARE if sliced else None
        self.kept()

    def kept(self) -> None:
        """The phase kept a smaller trial: a sliced phase gets a new slice from now."""
        now = self.clock()
        self.phase_end = (self._floor if self._slice is None
                          else min(self._floor, now + self._slice))

    def check(self) -> None:
        """Raise ``_Budget`` once the budget is spent, ``_PhaseSpent`` once the phase's
        time is."""
        now = self.clock()
        if now > self.end:
            raise _Budget
        if now > self.phase_end:
            raise _PhaseSpent

    def elapsed(self) -> float:
        return self.clock() - (self.end - self.budget_s)


class _Shrinker:
    def __init__(self, artifact: Artifact, budget: PhaseBudget, progress: Path,
                 note: Callable[[str], None]) -> None:
        self.best = artifact
        self.budget = budget
        self.progress = progress
        self.note = note
        self.trials = 0
        self.phase = "prefix"
        self._evidence: list[str] | None = None
        self._baselines: dict[tuple[str, int, int],
                              tuple[list[YieldStep], dict[int, int]]] = {}
        #: the small shapes tried (round, seed, counts): the small search's second turn
        #: goes on where the first stopped
        self._small_tried: set[tuple[int, int, tuple[int, ...]]] = set()

    def operations(self) -> int:
        """The best trial's operations (allocator calls and forks: ``witness.operations``)."""
        return operations(self.best.plan_model())

    def run(self, first: str) -> None:
        """The phases from ``first`` on, each given its time by ``self.budget``; raises
        ``_Budget`` when the budget runs out first."""
        names = list(PHASES)
        for name in names[names.index(first) if first in names else 0:]:
            if name in BIG_TRIAL_PHASES and self.operations() <= SMALL_SEARCH_OPS:
                continue
            self.phase = name
            self.save()
            self.budget.start(*PHASES[name])
            try:
                self._pass(name)
            except _PhaseSpent:
                self.note(f"{name}: its time is up ({self.budget.elapsed():.0f}s in); "
                          "next phase")
        self.phase = "done"
        self.save()

    def _pass(self, name: str) -> None:
        if name == "prefix":
            self.prefix_pass()
        elif name in ("small", "small-rest"):
            self.small_pass()
        elif name == "knobs":
            self.knobs_pass()
        elif name == "shape":
            self.shape_pass()
        else:
            self.schedule_pass()

    # ---- running candidates

    def _check_time(self) -> None:
        self.budget.check()

    def _try(self, plan: Plan, seed: int, follow: Schedule | None) -> TrialRun | None:
        self._check_time()
        self.trials += 1
        run = run_trial(plan, seed, follow=follow,
                        after="nonpreemptive" if follow is not None else "seeded")
        return run if run.signature == self.best.signature else None

    def _logged(self, plan: Plan, seed: int, follow: Schedule) -> tuple[TrialRun, str, str]:
        """A trial following ``follow`` (nonpreemptive after it), with its op log and
        yield log."""
        self._check_time()
        self.trials += 1
        with tempfile.TemporaryDirectory(prefix="nmm-shrink-") as tmp:
            op_log, yield_log = Path(tmp) / "ops.log", Path(tmp) / "yield.log"
            run = run_trial(plan, seed, follow=follow, after="nonpreemptive",
                            driver_extra=["--op-log", str(op_log),
                                          "--yield-log", str(yield_log)])
            ops = op_log.read_text() if op_log.is_file() else ""
            ylog = yield_log.read_text() if yield_log.is_file() else ""
        return run, ops, ylog

    def evidence(self) -> list[str]:
        """The yield points the failing trial's schedule preempted a worker at, its
        last preemption's first, then the window points (``point_kind``) it passed
        without a preemption, the rarest first: its preemption may have landed on a
        generic point inside a window (an atomic after ``mutant.flush_race``), not on
        the window's own point."""
        if self._evidence is None:
            self._evidence = []
            if self.best.schedule is not None:
                _, ops, ylog = self._logged(self.best.plan_model(), self.best.seed,
                                            self.best.schedule)
                self._evidence = preemption_points(ops)
                self._evidence += window_points(parse_yield_log(ylog),
                                                exclude=set(self._evidence))
        return self._evidence

    def _guided(self, plan: Plan, seed: int) -> TrialRun | None:
        """``plan`` with one preemption where the failing trial had one: each worker
        runs alone (the baseline), cut at its rarest evidence yield points, another
        worker then running to its end."""
        if not plan.scheduler.controlled or not self.evidence():
            return None
        threads, kind = plan.workload.threads, plan.scheduler.kind
        for first in range(threads):
            base, _, ylog = self._logged(plan, seed, Schedule(threads, kind, ((first, 1),)))
            if base.signature == self.best.signature:
                return base
            run = self._cuts(plan, seed, first, cut_points(parse_yield_log(ylog), first,
                                                           self.evidence(), GUIDED_POINTS))
            if run is not None:
                return run
        return None

    def _cuts(self, plan: Plan, seed: int, first: int,
              points: Sequence[YieldStep]) -> TrialRun | None:
        """``plan`` with worker ``first`` preempted at one of ``points`` (its baseline's
        steps), each other worker in turn then running to its end: the first that fails."""
        threads, kind = plan.workload.threads, plan.scheduler.kind
        for at in points:
            for other in range(threads):
                if other != first:
                    run = self._try(plan, seed,
                                    Schedule(threads, kind, cut_schedule(first, at, other)))
                    if run is not None:
                        return run
        return None

    def small_pass(self) -> None:
        """Every shape of at most SMALL_SEARCH_OPS ops (and fewer than now), fewest
        first, under one guided preemption, each with the small knobs first (a live set
        of one, a fork after every op, a quarantine of 64 bytes: a small shape has few
        ops to fill a window with) and as it is. In two rounds: preemptions at the window
        points only (the hand-placed ones, ``point_kind``: few in a small trial, so
        cheap) for SMALL_SEARCH_SEEDS seeds,
        then at the lock and generic points for the first SMALL_SEARCH_SEEDS_ALL of them
        (each seed: other op streams). A shape tried is not tried again when the phase
        has a second turn (``small-rest``)."""
        if self.best.plan.get("faults") or self.best.schedule is None:
            return
        threads = int(self.best.plan["workload"]["threads"])
        start = self.best.seed
        rounds = ((frozenset({WINDOW}), SMALL_SEARCH_SEEDS),
                  (frozenset({LOCK, GENERIC}), SMALL_SEARCH_SEEDS_ALL))
        for r, (kinds, seeds) in enumerate(rounds):
            for k in range(seeds):
                seed = (start + k) % (1 << 64)
                for counts in shapes(threads, sum(_worker_counts(self.best.plan)),
                                     SMALL_SEARCH_OPS):
                    if len(counts) == 1 and WINDOW not in kinds:
                        continue  # one worker has no cut: tried in the first round
                    if (r, seed, counts) in self._small_tried:
                        continue
                    found = self._small_shape(counts, seed, kinds)
                    self._small_tried.add((r, seed, counts))
                    if found:
                        break  # the shapes before it passed for this seed: next seed

    def _small_shape(self, counts: tuple[int, ...], seed: int, kinds: frozenset[int]) -> bool:
        """One small shape, small knobs first, then as it is (whether it was kept)."""
        doc = _copy(self.best.plan)
        doc["workload"]["threads"] = len(counts)
        _set_worker_counts(doc, list(counts), keep_ops=False)
        for variant in dict.fromkeys(map(json.dumps, (_small_knobs(doc), doc))):
            try:
                plan = Plan.model_validate(json.loads(variant))
            except ValueError:
                continue
            name = f"small shape {'+'.join(map(str, counts))}"
            run = self._guided_small(plan, counts, seed, kinds)
            if run is not None:
                self._accept(plan, run, f"{name} (one guided preemption)")
                return True
            if (WINDOW in kinds and 1 < len(counts) and sum(counts) <= SMALL_FRESH_OPS
                    and plan.scheduler.controlled):
                for kind in SMALL_FRESH_KINDS:
                    fresh = with_strategy(plan, kind)
                    run = self._try(fresh, seed, None)
                    if run is not None:
                        self._accept(fresh, run, f"{name} ({kind})")
                        return True
        return False

    def _guided_small(self, plan: Plan, counts: tuple[int, ...], seed: int,
                      kinds: frozenset[int]) -> TrialRun | None:
        """``plan`` (of shape ``counts``) with one preemption where the failing trial had
        one: each worker is cut at the evidence points it yielded at in its first
        ``counts[first]`` ops when it ran alone, another worker then running to its end.
        A worker's op stream does not depend on its count (a smaller count is a prefix),
        so its alone run is made once per seed, knobs and thread count, with the most ops
        a small shape gives it (``_baseline``), not once per shape."""
        if len(counts) == 1:  # no one to hand over to: the trial itself
            return self._try(plan, seed, Schedule(1, plan.scheduler.kind, ((0, 1),)))
        if not plan.scheduler.controlled or not self.evidence():
            return None
        for first in range(len(counts)):
            steps, ends = self._baseline(plan, seed, first)
            run = self._cuts(plan, seed, first,
                             cut_points(steps, first, self.evidence(), GUIDED_POINTS, kinds,
                                        until=ends.get(counts[first])))
            if run is not None:
                return run
        return None

    def _baseline(self, plan: Plan, seed: int, first: int
                  ) -> tuple[list[YieldStep], dict[int, int]]:
        """Worker ``first`` of ``plan`` run alone with the most ops a small shape of its
        thread count gives one worker (the others one op each): its yield steps and the
        step each of its ops ended at (cached)."""
        doc = plan.model_dump(mode="json")
        threads = int(doc["workload"]["threads"])
        counts = [1] * threads
        counts[first] = max(1, SMALL_SEARCH_OPS - (threads - 1))
        _set_worker_counts(doc, counts, keep_ops=False)
        key = (json.dumps(doc, sort_keys=True), seed, first)
        if key not in self._baselines:
            base = Plan.model_validate(doc)
            _, ops, ylog = self._logged(base, seed, Schedule(threads, base.scheduler.kind,
                                                             ((first, 1),)))
            self._baselines[key] = (parse_yield_log(ylog), op_ends(ops, first))
        return self._baselines[key]

    def _accept(self, plan: Plan, run: TrialRun, why: str) -> None:
        doc = plan.model_dump(mode="json")
        doc["seed"], doc["seeds"] = run.record.seed, 1
        self.best = Artifact(identity=self.best.identity, plan=doc, seed=run.record.seed,
                             signature=self.best.signature, schedule=run.schedule,
                             witness=[], reasons=list(run.record.verdict.reasons))
        self.note(f"{why}: {describe(self.best)}")
        self.save()
        self.budget.kept()

    def save(self) -> None:
        doc = {"version": PROGRESS_VERSION, "phase": self.phase, "trials": self.trials,
               "best": self.best.to_json()}
        tmp = self.progress.with_name(self.progress.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.progress)

    # ---- the dimensions

    def schedule_pass(self) -> None:
        """Shortest failing prefix, then ddmin over the trace's runs."""
        self.prefix_pass()
        self.ddmin_pass()

    def prefix_pass(self) -> None:
        """The shortest prefix of the trace that still fails (nonpreemptive after it)."""
        sched = self.best.schedule
        if sched is None:
            return
        plan = self.best.plan_model()
        runs = list(sched.runs)
        lo, hi = 0, len(runs)  # the prefix of hi runs fails; find the smallest
        shortest: TrialRun | None = None  # the failing run of the hi-run prefix, once shorter
        while lo < hi:
            mid = (lo + hi) // 2
            cand = Schedule(sched.threads, sched.kind, tuple(runs[:mid]))
            run = self._try(plan, self.best.seed, cand)
            if run is not None:
                hi, shortest = mid, run
            else:
                lo = mid + 1
        if shortest is not None:
            self._accept(plan, shortest, f"schedule prefix of {hi} runs")

    def ddmin_pass(self) -> None:
        """Remove chunks of the trace's runs (each removal drops a switch)."""
        sched = self.best.schedule
        if sched is None:
            return
        plan = self.best.plan_model()
        runs = list(sched.runs)
        chunk = max(1, len(runs) // 2)
        while chunk >= 1 and len(runs) > 1:
            i, removed = 1, False
            while i < len(runs):
                cand_runs = runs[:i] + runs[i + chunk:]
                run = self._try(plan, self.best.seed,
                                Schedule(sched.threads, sched.kind, tuple(_merge(cand_runs))))
                if run is not None and run.schedule is not None and \
                        run.schedule.preemptions < len(runs) - 1:
                    self._accept(plan, run, f"{len(runs) - 1 - run.schedule.preemptions} "
                                 "switch(es) removed")
                    runs = list(run.schedule.runs)
                    removed = True
                else:
                    i += chunk
            if not removed:
                chunk //= 2

    def _shape(self, doc: dict[str, Any], why: str) -> bool:
        """Try a plan of another shape under its own strategy, a few seeds."""
        try:
            plan = Plan.model_validate(doc)
        except ValueError:
            return False
        # the op streams of a smaller shape are prefixes of the bigger one's: following
        # the current schedule (no preemptions past it) keeps the interleaving that failed
        if self.best.schedule is not None:
            run = self._try(plan, self.best.seed, self.best.schedule)
            if run is not None:
                self._accept(plan, run, why)
                return True
        run = self._guided(plan, self.best.seed)
        if run is not None:
            self._accept(plan, run, why + " (one guided preemption)")
            return True
        # else fresh interleavings: the plan's strategy, random and pos, a few seeds
        # each (more for a small shape: its window is rarer, its trials cheap)
        kinds = dict.fromkeys((plan.scheduler.kind, "random", "pos"))
        variants = [plan if kind == plan.scheduler.kind else with_strategy(plan, kind)
                    for kind in kinds]
        small = sum(_worker_counts(doc)) <= SMALL_SHAPE_OPS
        for k in range(SEEDS_PER_SMALL_SHAPE if small else SEEDS_PER_SHAPE):
            seed = (self.best.seed + k) % (1 << 64)
            for variant in variants:
                run = self._try(variant, seed, None)
                if run is not None:
                    self._accept(variant, run, why)
                    return True
        return False

    def shape_pass(self) -> None:
        """Smaller shapes (after the knobs that make a window need many ops: quarantine
        size, live set, fork interval, thread churn): ops per worker by halves (every
        later trial gets cheaper), threads down to one, faults, then each worker's own
        op count."""
        self._ops_by_halves()
        self._threads()
        self._faults()
        self._per_worker_ops()

    def _ops_by_halves(self) -> None:
        while _ops(self.best.plan) > 1:
            ops = _ops(self.best.plan)
            for new in _fewer(ops):
                if not 1 <= new < ops:
                    continue
                doc = _copy(self.best.plan)
                _set_ops(doc, new)
                if self._shape(doc, f"ops {new} per worker"):
                    break
            else:
                return

    def _threads(self) -> None:
        while True:
            doc = _copy(self.best.plan)
            threads = doc["workload"]["threads"]
            if threads <= 1:
                return
            doc["workload"]["threads"] = threads - 1
            doc["workload"].pop("worker_ops", None)
            if not self._shape(doc, f"threads {threads - 1}"):
                return

    def knobs_pass(self) -> bool:
        """The target and workload settings a window may need many ops for (whether
        one was lowered)."""
        before = self.best
        quarantine = _size_bytes((self.best.plan["target"].get("options") or {})
                                 .get("quarantine"))
        if quarantine is not None and quarantine > 64:
            self._lower(("target", "options", "quarantine"), [64], "quarantine {} bytes",
                        halve=True, floor=64)
        live = self.best.plan["workload"].get("live") or 1000
        if live > 1:
            self._lower(("workload", "live"), [1], "live set {}", halve=True, floor=1,
                        start=live)
        if (self.best.plan["workload"].get("fork_every") or 0) > 1:
            self._lower(("workload", "fork_every"), [1], "fork every {} ops")
        if self.best.plan["workload"].get("thread_churn"):
            self._lower(("workload", "thread_churn"), [0], "thread churn {}")
        return self.best is not before

    def _lower(self, path: tuple[str, ...], first: Sequence[int], why: str, *,
               halve: bool = False, floor: int = 1, start: int | None = None) -> None:
        """Try the values ``first``, then (``halve``) halves of the current value."""
        for value in first:
            if self._shape(_with(self.best.plan, path, value), why.format(value)):
                return
        while halve:
            cur = _size_bytes(_get(self.best.plan, path, start))
            if cur is None or cur // 2 < floor:
                return
            if not self._shape(_with(self.best.plan, path, cur // 2), why.format(cur // 2)):
                return

    def _faults(self) -> None:
        """Each fault spec dropped, then its count halved."""
        i = 0
        while i < len(self.best.plan.get("faults") or []):
            doc = _copy(self.best.plan)
            del doc["faults"][i]
            if not self._shape(doc, f"fault {i} dropped"):
                i += 1
        for i in range(len(self.best.plan.get("faults") or [])):
            while (self.best.plan["faults"][i].get("count") or 1) > 1:
                doc = _copy(self.best.plan)
                doc["faults"][i]["count"] = max(1, doc["faults"][i]["count"] // 2)
                if not self._shape(doc, f"fault {i} count {doc['faults'][i]['count']}"):
                    break

    def _per_worker_ops(self) -> None:
        """Each worker's op count halved on its own (``workload.worker_ops``); a plan
        with faults keeps its ``ops`` (the window its faults land in) as the floor."""
        for worker in range(self.best.plan["workload"]["threads"]):
            while True:
                counts = _worker_counts(self.best.plan)
                floor = _ops(self.best.plan) if self.best.plan.get("faults") else 1
                if counts[worker] <= floor:
                    break
                for new in _fewer(counts[worker]):
                    if not floor <= new < counts[worker]:
                        continue
                    doc = _copy(self.best.plan)
                    _set_worker_counts(doc, [*counts[:worker], new, *counts[worker + 1:]],
                                       keep_ops=bool(doc.get("faults")))
                    if self._shape(doc, f"worker {worker}: {new} ops"):
                        break
                else:
                    break


def _small_knobs(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with the knobs a window needs many ops for at their smallest that keeps
    them on: a live set of one block, a fork after every op, a new thread after every op
    (each a new thread cache: its lane comes round again after CORE_LANES of them, so a
    few ops reach two threads sharing a lane), a quarantine of 64 bytes."""
    out = _copy(doc)
    if (out["workload"].get("live") or 1000) > 1:
        out["workload"]["live"] = 1
    for knob in ("fork_every", "thread_churn"):
        if (out["workload"].get(knob) or 0) > 1:
            out["workload"][knob] = 1
    options = (out.get("target") or {}).get("options") or {}
    quarantine = _size_bytes(options.get("quarantine"))
    if quarantine is not None and quarantine > 64:
        options["quarantine"] = 64
    return out


def _fewer(n: int) -> list[int]:
    """Smaller counts to try for n: a half, three quarters, and (small n) one fewer."""
    return [m for m in dict.fromkeys((n // 2, n - n // 4, n - 1 if n <= 16 else 0))
            if 1 <= m < n]


def _merge(runs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for w, n in runs:
        if out and out[-1][0] == w:
            out[-1] = (w, out[-1][1] + n)
        else:
            out.append((w, n))
    return out


def _ops(doc: dict[str, Any]) -> int:
    w = doc["workload"]
    return int(w.get("ops_per_worker") or w.get("ops") or 0)


def _set_ops(doc: dict[str, Any], ops: int) -> None:
    w = doc["workload"]
    key = "ops_per_worker" if "ops_per_worker" in w else "ops"
    w[key] = ops
    w.pop("worker_ops", None)


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(doc))  # type: ignore[no-any-return]


def _get(doc: dict[str, Any], path: Sequence[str], default: Any = None) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return default
        cur = cur[key]
    return cur


def _with(doc: dict[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    out = _copy(doc)
    cur = out
    for key in path[:-1]:
        cur = cur.setdefault(key, {})
    cur[path[-1]] = value
    return out


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size_bytes(value: Any) -> int | None:
    """An NMM_OPTIONS size (``1K``, ``4M``, ``512``) in bytes; None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS else ""
    number = text[:-1] if unit else text
    return int(number) * _UNITS[unit] if number.isdigit() else None


def _worker_counts(doc: dict[str, Any]) -> list[int]:
    w = doc["workload"]
    if w.get("worker_ops"):
        return [int(n) for n in w["worker_ops"]]
    return [_ops(doc)] * int(w["threads"])


def _set_worker_counts(doc: dict[str, Any], counts: list[int], *, keep_ops: bool) -> None:
    w = doc["workload"]
    key = "ops_per_worker" if "ops_per_worker" in w else "ops"
    if not keep_ops:
        w[key] = min(counts)
    if all(n == w[key] for n in counts):
        w.pop("worker_ops", None)
    else:
        w["worker_ops"] = counts


def describe(a: Artifact) -> str:
    w = a.plan.get("workload", {})
    sched = a.schedule
    counts = _worker_counts(a.plan)
    ops = (f"{w.get('threads')} threads x {_ops(a.plan)} ops" if len(set(counts)) <= 1
           else f"{w.get('threads')} threads, ops {'+'.join(map(str, counts))}")
    forks = counts[0] // w["fork_every"] if w.get("fork_every") else 0
    return (f"{ops} ({sum(counts)} in all{f', and {forks} forks' if forks else ''}), "
            f"live {w.get('live')}, "
            f"{len(a.plan.get('faults') or [])} fault spec(s), seed {a.seed}"
            + (f", {sched.steps} steps, {sched.preemptions} switches" if sched else ""))


def _load_progress(path: Path, artifact: Artifact) -> tuple[Artifact, str, int]:
    try:
        doc = json.loads(path.read_text())
        if doc.get("version") != PROGRESS_VERSION:
            return artifact, "prefix", 0
        tmp = path.with_name(path.name + ".artifact")
        tmp.write_text(json.dumps(doc["best"]))
        best = Artifact.load(tmp)
        tmp.unlink()
        if best.signature != artifact.signature:
            return artifact, "prefix", 0
        return best, str(doc.get("phase", "prefix")), int(doc.get("trials", 0))
    except (OSError, ValueError, KeyError):
        return artifact, "prefix", 0


def regression_toml(a: Artifact) -> str:
    """The minimal plan as TOML (seed pinned, one seed)."""
    lines = [f"# minimal plan from nmm-chaos shrink: {a.signature.text()}",
             "# replay: nmm-chaos replay {this file's .artifact.json}"]
    top = {k: v for k, v in a.plan.items() if not isinstance(v, dict | list)}
    tables = {k: v for k, v in a.plan.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in a.plan.items() if isinstance(v, list)}
    for k, v in top.items():
        if v is not None:
            lines.append(f"{k} = {_toml(v)}")
    for k, v in tables.items():
        _table(lines, k, v)
    for k, items in arrays.items():
        if not items:
            continue
        for item in items:
            lines.append(f"\n[[{k}]]")
            for ik, iv in item.items():
                if iv is not None and not isinstance(iv, dict):
                    lines.append(f"{ik} = {_toml(iv)}")
    return "\n".join(lines) + "\n"


def _table(lines: list[str], name: str, table: dict[str, Any]) -> None:
    plain = {k: v for k, v in table.items() if not isinstance(v, dict) and v is not None
             and v != [] and v != ()}
    subs = {k: v for k, v in table.items() if isinstance(v, dict) and v}
    lines.append(f"\n[{name}]")
    for k, v in plain.items():
        lines.append(f"{k} = {_toml(v)}")
    for k, v in subs.items():
        _table(lines, f"{name}.{k}", v)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items() if x is not None) + "}"
    return json.dumps(str(v))


def shrink(artifact: Artifact, artifact_path: Path, *, budget_s: float = 120,
           out_dir: Path = Path("chaos_plans/regressions/mutants"),
           note: Callable[[str], None] = lambda _: None) -> ShrinkOutcome:
    """Minimise ``artifact`` within ``budget_s`` seconds (resuming saved progress)."""
    t0 = time.monotonic()
    progress = artifact_path.with_name(artifact_path.name + ".shrink.json")
    best, phase, trials = (_load_progress(progress, artifact) if progress.is_file()
                           else (artifact, "prefix", 0))
    if progress.is_file():
        note(f"resuming at phase {phase}: {describe(best)}")
    s = _Shrinker(best, PhaseBudget(budget_s), progress, note)
    s.trials = trials
    finished = False
    try:
        if phase != "done":
            s.run(phase)
        finished = True
    except _Budget:
        note("budget spent; progress saved")
    plan = s.best.plan_model()
    final = run_trial(plan, s.best.seed, follow=s.best.schedule, after="nonpreemptive")
    if final.signature == s.best.signature:
        # the identity of the trial just run: the shrunk plan's hash, its seed and the
        # build it failed on (the one replay compares with), not the hunt trial's; the
        # trial it was shrunk from is named beside it
        out = artifact_of(plan, final, s.best.identity.get("overrides") or [])
        out.identity["shrunk_from"] = {
            "artifact": str(artifact_path),
            **{key: artifact.identity.get(key)
               for key in ("plan", "plan_hash", "seed", "build_id")}}
    else:  # should not happen: keep the best as it was, with a fresh witness attempt
        out = s.best
        out.witness = witness_lines(plan, final) if final.schedule else []
    out_dir.mkdir(parents=True, exist_ok=True)
    mutant = (out.plan.get("target") or {}).get("options", {}).get("mutant", "trial")
    stem = f"{mutant}-{out.plan.get('name', 'plan')}"
    plan_path = out_dir / f"{stem}.toml"
    art_path = out_dir / f"{stem}.artifact.json"
    out.save(art_path)
    plan_path.write_text(regression_toml(out).replace("{this file's .artifact.json}",
                                                      str(art_path)))
    return ShrinkOutcome(out, plan_path, art_path, s.trials, time.monotonic() - t0, finished,
                         describe(out))
