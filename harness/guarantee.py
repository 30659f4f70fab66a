"""PCT's probabilistic guarantee (Burckhardt et al., ASPLOS 2010) for the trials a plan
ran under ``[scheduler] kind = "pct"``: each run finds a bug of depth d with probability
at least 1/(n k^(d-1)) for n threads and k scheduling steps, so ceil(ln 0.05 / ln(1-p))
runs find it with 95% confidence. ``hunt``, ``run``'s summary and the report state it;
k is the longest trial's recorded step count (what the trials really ran, not the
plan's guess). Nothing here runs or prints.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from harness.records import TrialRecord


def pct_guarantee(threads: int, steps: int, depth: int) -> tuple[float, int]:
    """PCT's bound: each run finds a bug of depth d with probability at least
    p = 1/(n k^(d-1)); the runs for 95% confidence, ceil(ln(0.05) / ln(1 - p))."""
    p = 1.0 / (max(1, threads) * max(1, steps) ** (max(1, depth) - 1))
    runs = 1 if p >= 1 else math.ceil(math.log(0.05) / math.log1p(-p))
    return p, runs


def pct_guarantee_line(threads: int, steps: int, depth: int) -> str:
    p, runs = pct_guarantee(threads, steps, depth)
    return (f"PCT guarantee: with n={threads} threads, k={steps} steps and depth d={depth}, "
            f"each run hits a depth-{depth} bug with probability at least "
            f"1/(n*k^(d-1)) = {p:.3g}; {runs:,} runs give 95% confidence")


def pct_guarantees(records: Iterable[TrialRecord]) -> list[dict[str, Any]]:
    """One entry per plan, depth and thread count run under pct: the trials, the steps
    (k: the longest trial's; the median beside it), the bound and its sentence."""
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        result = r.observation.result
        sched = result.sched if result is not None else None
        if not isinstance(sched, dict) or sched.get("kind") != "pct":
            continue
        threads = len(result.worker_ops) if result is not None and result.worker_ops else 0
        groups[(r.plan, int(sched.get("depth") or 1), threads)].append(sched)
    out = []
    for (plan, depth, threads), scheds in sorted(groups.items()):
        steps = sorted(int(s.get("steps") or 0) for s in scheds)
        k = steps[-1]
        p, runs = pct_guarantee(threads, k, depth)
        out.append({"plan": plan, "depth": depth, "threads": threads, "trials": len(scheds),
                    "steps": k, "steps_median": steps[len(steps) // 2],
                    "planned_k": int(scheds[0].get("k") or 0), "p_per_run": p,
                    "runs_for_95": runs,
                    "text": f"{plan}: " + pct_guarantee_line(threads, k, depth)})
    return out
