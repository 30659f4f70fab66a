"""Issue 9's goals, measured: seeds each strategy needs to catch each mutant (median of
10 hunts from different starting seeds), and the controlled scheduler's throughput.

    python -m harness.chaos_goals table [--hunts 10] [--max-seeds 100] [--mutant NAME]
    python -m harness.chaos_goals throughput

Seed counts are a property of the strategies, not of the machine's speed, so the table can
be measured on a busy machine; the throughput (steps/s, and a controlled trial's
cost against the same trial free-running) is a benchmark: run it on a quiet machine
(``make bench`` does).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from harness.chaos import hunt, mutant_names, run_trial, with_mutant, with_strategy
from harness.loader import load_plan

PLANS = Path(__file__).resolve().parent.parent / "chaos_plans" / "mutants"
#: (column, strategy, pct depth)
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("pct d1", "pct", 1), ("pct d2", "pct", 2), ("pct d3", "pct", 3), ("pos", "pos", None),
    ("surw", "surw", None), ("random", "random", None), ("auto", "auto", None),
    ("free", "free", None))


def seeds_needed(mutant: str, strategy: str, depth: int | None, hunts: int,
                 max_seeds: int) -> list[int | None]:
    """Seeds each of ``hunts`` hunts took (None: not within ``max_seeds``); hunt h
    starts at seed 1000 * (h + 1)."""
    plan = with_mutant(load_plan(PLANS / f"{mutant}.toml"), mutant)
    out: list[int | None] = []
    for h in range(hunts):
        result = hunt(plan, strategy=strategy, depth=depth, max_seeds=max_seeds,
                      start_seed=1000 * (h + 1))
        out.append(result.tried if result.found is not None else None)
    return out


def _median(values: list[int | None], max_seeds: int) -> str:
    found = [v for v in values if v is not None]
    if len(found) * 2 <= len(values):  # the median hunt did not find it
        return f">{max_seeds}"
    ranked = sorted(values, key=lambda v: max_seeds + 1 if v is None else v)
    med = ranked[(len(ranked) - 1) // 2] if len(ranked) % 2 else \
        statistics.median([ranked[len(ranked) // 2 - 1] or max_seeds + 1,
                           ranked[len(ranked) // 2] or max_seeds + 1])
    misses = len(values) - len(found)
    return f"{med:g}" + (f" ({misses} miss)" if misses else "")


def table(mutants: list[str], hunts: int, max_seeds: int) -> str:
    head = "| mutant | " + " | ".join(c for c, _, _ in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for mutant in mutants:
        cells = []
        for _, strategy, depth in COLUMNS:
            t0 = time.monotonic()
            values = seeds_needed(mutant, strategy, depth, hunts, max_seeds)
            cells.append(_median(values, max_seeds))
            print(f"{mutant} {strategy}{depth or ''}: {values} ({time.monotonic() - t0:.0f}s)",
                  file=sys.stderr, flush=True)
        rows.append(f"| {mutant} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def throughput(repeat: int = 3) -> str:
    """Steps per second under control, and the controlled trial's wall time against the
    same trial free-running (a quiet machine's number)."""
    plan = load_plan(PLANS / "xfree_unsync.toml", ["workload.ops=2000", "workload.threads=4"])
    lines = []
    for kind in ("random", "pct", "free"):
        p = with_strategy(plan, kind)
        best = None
        steps = 0
        for r in range(repeat):
            t0 = time.monotonic()
            run = run_trial(p, 1 + r)
            wall = time.monotonic() - t0
            sched = run.record.observation.result.sched if run.record.observation.result else None
            steps = int((sched or {}).get("steps") or 0)
            best = wall if best is None else min(best, wall)
        assert best is not None
        rate = f"{steps / best:,.0f} steps/s" if steps else "free-running"
        lines.append(f"{kind:7s} {best * 1000:8.1f} ms per trial (4 workers x 2000 ops), {rate}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.chaos_goals",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="seeds per strategy per mutant (median of hunts)")
    t.add_argument("--hunts", type=int, default=10)
    t.add_argument("--max-seeds", type=int, default=100)
    t.add_argument("--mutant", action="append", choices=mutant_names())
    sub.add_parser("throughput", help="controlled-mode steps/s and its cost")
    args = parser.parse_args(argv)
    if args.cmd == "table":
        print(table(args.mutant or mutant_names(), args.hunts, args.max_seeds))
    else:
        print(throughput())
    return 0


if __name__ == "__main__":
    sys.exit(main())
