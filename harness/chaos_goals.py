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
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

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


#: the throughput workload: xfree_unsync's plan without its mutant, bigger
THROUGHPUT_SET = ["workload.ops=2000", "workload.threads=4"]


def throughput(repeat: int = 3) -> dict[str, Any]:
    """Steps per second under control, and a controlled trial's time against the same
    trial free-running: the driver's own time of the ops phase (no process start, no
    judging), the best of ``repeat`` seeds per kind (a quiet machine's number)."""
    plan = load_plan(PLANS / "xfree_unsync.toml", THROUGHPUT_SET)
    rows: list[dict[str, Any]] = []
    for kind in ("free", "pct", "pos", "surw", "random"):
        p = with_strategy(plan, kind)
        best: tuple[float, int, int] | None = None
        for r in range(repeat):
            result = run_trial(p, 1 + r).record.observation.result
            if result is None or not result.elapsed_ns:
                raise SystemExit(f"throughput: the {kind} trial gave no result line")
            sched = result.sched or {}
            took = (result.elapsed_ns / 1e9, int(sched.get("steps") or 0),
                    int(sched.get("switches") or 0))
            best = took if best is None or took[0] < best[0] else best
        assert best is not None
        rows.append({"kind": kind, "seconds": best[0], "steps": best[1], "switches": best[2],
                     "ops": plan.workload.threads * plan.workload.ops_per_worker})
    free_s = rows[0]["seconds"]
    for row in rows:
        row["steps_per_s"] = row["steps"] / row["seconds"] if row["steps"] else None
        row["ops_per_s"] = row["ops"] / row["seconds"]
        row["x_free"] = row["seconds"] / free_s
    return {"workload": f"xfree_unsync plan without the mutant, {' '.join(THROUGHPUT_SET)}",
            "repeat": repeat, "load_avg_1m": os.getloadavg()[0], "rows": rows}


def throughput_markdown(doc: dict[str, Any]) -> str:
    lines = ["## Controlled scheduler: throughput against free-running", "",
             f"{doc['workload']}; the driver's time of the ops phase, best of "
             f"{doc['repeat']} seeds; load average {doc['load_avg_1m']:.1f} when measured.", "",
             "| scheduler | ms per trial | ops/s | steps | switches | steps/s | time x free |",
             "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        steps_s = f"{r['steps_per_s']:,.0f}" if r["steps_per_s"] else "-"
        lines.append(f"| {r['kind']} | {r['seconds'] * 1000:,.1f} | {r['ops_per_s']:,.0f} | "
                     f"{r['steps']:,} | {r['switches']:,} | {steps_s} | {r['x_free']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.chaos_goals",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table", help="seeds per strategy per mutant (median of hunts)")
    t.add_argument("--hunts", type=int, default=10)
    t.add_argument("--max-seeds", type=int, default=100)
    t.add_argument("--mutant", action="append", choices=mutant_names())
    tp = sub.add_parser("throughput", help="controlled-mode steps/s and its cost")
    tp.add_argument("--repeat", type=int, default=3)
    tp.add_argument("--bench-dir", type=Path,
                    help="a `nmm-chaos bench` report directory: chaos_throughput.json is "
                         "written there and the table appended to its bench.md")
    args = parser.parse_args(argv)
    if args.cmd == "table":
        print(table(args.mutant or mutant_names(), args.hunts, args.max_seeds))
        return 0
    doc = throughput(args.repeat)
    text = throughput_markdown(doc)
    print(text, end="")
    if args.bench_dir is not None:
        (args.bench_dir / "chaos_throughput.json").write_text(json.dumps(doc, indent=1) + "\n")
        with (args.bench_dir / "bench.md").open("a") as md:
            md.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
