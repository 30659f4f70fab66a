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
to its end (``--after-schedule nonpreemptive``); the failing trial's last preemption
point first (its trace cut to the shortest failing prefix: that one is needed).
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


def cut_points(baseline: list[YieldStep], worker: int, evidence: list[str],
               limit: int) -> list[YieldStep]:
    """Where to preempt ``worker`` in a baseline it ran alone: the steps it was runnable
    at one of the ``evidence`` yield points, in the evidence's order (the most telling
    first), each point's occurrences in step order, at most
    ``limit``."""
    rank = {where: i for i, where in enumerate(evidence)}
    mine = [y for y in baseline if y.worker == worker and y.runnable and y.where in rank]
    mine.sort(key=lambda y: (rank[y.where], y.step))
    return mine[:limit]


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
