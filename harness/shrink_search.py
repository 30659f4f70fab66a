"""The shrinker's search for small failing trials by placing one preemption where the
failing trial had one (``harness.shrink``'s small-shape phase).

Fresh seeds find the window of a race in a small trial by luck: a random walk over a
few hundred steps rarely stops a worker at the one yield point that matters. The
failing trial already says where that is: the yield points its schedule preempted a
worker at (``--op-log``'s ``P`` lines). So a small shape is tried systematically, as
in bounded-preemption search (CHESS's iterative context bounding, Musuvathi and Qadeer,
PLDI 2007) but guided: one worker runs alone (a *baseline* that lists every step's yield
point, ``--yield-log``), and the trials are the baseline cut at a step where that worker
yielded at one of the failing trial's preemption points, another worker then running
to its end (``--after-schedule nonpreemptive``). Which points first: by kind
(``point_kind``): the hand-placed window points (the failing trial's preemption can land
on an atomic inside a window, so the window points it passed count too), then the named
lock operations, then the generic ``file.c:line`` ones; within a kind the failing
trial's last preemption first (its trace cut to the shortest failing prefix: that one
is needed). Session 3's search took the last preemption alone first: for flush_race
that was ``class.lock``, met at every op, and the flush's own point was never cut at.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class YieldStep:
    """One step of a controlled trial: the worker that held the baton, the decision's
    number, the yield point it was at, and whether it could have gone on (a blocked
    worker's switch is forced, not a preemption)."""

    worker: int
    step: int
    where: str
    runnable: bool


def parse_yield_log(text: str) -> list[YieldStep]:
    """``Y worker step where R|B`` lines (harness/native/sched.c ``--yield-log``)."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) == 5 and parts[0] == "Y":
            out.append(YieldStep(int(parts[1]), int(parts[2]), parts[3], parts[4] == "R"))
    return out


def preemption_points(op_log: str) -> list[str]:
    """The yield points a trial's schedule preempted a worker at (``P`` lines), the
    last preemption's first: once the trace is cut to its shortest failing prefix, its
    last preemption is one the failure needs (a shorter prefix would fail otherwise)."""
    points: list[str] = []
    for line in op_log.splitlines():
        parts = line.split(" ", 3)
        if parts[0] == "P" and len(parts) == 4:
            points.append(parts[3])
    return list(dict.fromkeys(reversed(points)))


#: the kinds of yield point, the most telling first (``point_kind``)
WINDOW, LOCK, GENERIC = 0, 1, 2


def point_kind(where: str) -> int:
    """How telling a preemption at ``where`` is. The chaos build names its yield points
    two ways (allocator/src/chaos.h): every lock and atomic is a *generic* point named
    by its ``file.c:line``, or ``op`` between driver operations, which a trial passes
    at every step; the hand-placed ``NMM_YIELD("name")`` points mark the windows the
    allocator's author knew of (``tcache.flush``, ``tcache.refill``, ``bin.push``, a
    mutant's ``mutant.NAME``) and its named lock operations (``class.lock``,
    ``quarantine.unlock``). A window point says where a race can be; a lock operation
    is the boundary of one; a generic point is everywhere."""
    if where == "op" or ":" in where or "." not in where:
        return GENERIC
    if where.rsplit(".", 1)[1] in ("lock", "unlock"):
        return LOCK
    return WINDOW


def window_points(steps: list[YieldStep], exclude: set[str]) -> list[str]:
    """The window points (``point_kind``) a trial passed, but those in ``exclude``, the
    rarest first (a point passed at every op says less than one passed at a flush)."""
    count: dict[str, int] = {}
    for y in steps:
        if point_kind(y.where) == WINDOW and y.where not in exclude:
            count[y.where] = count.get(y.where, 0) + 1
    return sorted(count, key=lambda where: (count[where], where))


ALL_KINDS = frozenset({WINDOW, LOCK, GENERIC})


def cut_points(baseline: list[YieldStep], worker: int, evidence: list[str],
               limit: int, kinds: frozenset[int] = ALL_KINDS,
               until: int | None = None) -> list[YieldStep]:
    """Where to preempt ``worker`` in a baseline it ran alone: the steps (up to step
    ``until``) it was runnable at one of the ``evidence`` yield points of the ``kinds``
    asked for, at most ``limit``. By kind of point first (``point_kind``), then round by
    round: every point's first occurrence (in the evidence's order), then every point's
    second, ... so that a point met at every op (a lock) does not take all the cuts
    from the rarer points of its kind."""
    rank = {where: i for i, where in enumerate(evidence) if point_kind(where) in kinds}
    seen: dict[str, int] = {}
    mine = []
    for y in sorted(baseline, key=lambda y: y.step):
        if until is not None and y.step > until:
            break
        if y.worker == worker and y.runnable and y.where in rank:
            seen[y.where] = seen.get(y.where, 0) + 1
            mine.append((point_kind(y.where), seen[y.where], rank[y.where], y.step, y))
    mine.sort(key=lambda t: t[:4])
    return [t[4] for t in mine[:limit]]


def op_ends(op_log: str, worker: int) -> dict[int, int]:
    """The step at which ``worker`` finished each of its ops (``O worker op step`` lines
    of ``--op-log``): op count -> step."""
    out: dict[int, int] = {}
    for line in op_log.splitlines():
        parts = line.split(" ")
        if len(parts) == 4 and parts[0] == "O" and parts[1] == str(worker):
            out[int(parts[2])] = int(parts[3])
    return out


def cut_schedule(first: int, at: YieldStep, other: int) -> tuple[tuple[int, int], ...]:
    """The trace runs of "``first`` runs alone until decision ``at.step``, which hands
    the baton to ``other``" (nonpreemptive after it: ``other`` runs to its end)."""
    return ((first, at.step - 1), (other, 1)) if at.step > 1 else ((other, 1),)


def shapes(threads: int, below: int, most: int) -> Iterator[tuple[int, ...]]:
    """Every shape (ops per worker, each at least one) of 1..``threads`` workers with
    fewer than ``below`` and at most ``most`` ops in all: fewest ops first, then fewest
    workers, then the most even split."""
    top = min(below - 1, most)
    for total in range(1, top + 1):
        found = []
        for n in range(1, min(threads, total) + 1):
            for cut in itertools.combinations(range(1, total), n - 1):
                bounds = (0, *cut, total)
                found.append(tuple(b - a for a, b in itertools.pairwise(bounds)))
        found.sort(key=lambda c: (len(c), max(c) - min(c), c))
        yield from found
