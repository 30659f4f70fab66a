"""Deliberate bugs against the chaos plans: does smoke (and nightly within 20 seeds)
fail when the allocator breaks?

Each ``*.patch`` here is one realistic allocator bug (its first line says what). For
each, this script copies ``allocator/`` and ``harness/native/`` to a temporary
directory, applies the patch there (the tree is never touched), builds an nmm-driver
from the copy, and runs a campaign's gating trials against it (every plan at its own
target and the levels its expectations name: ``harness.campaign.expand``), seed by seed
across the plans, until the first trial fails or the budget runs out. One line per bug:
which trial caught it, its outcome and first reason, and how many trials that took.

    .venv/bin/python tests/bugs/run.py                      # every bug, smoke then nightly
    .venv/bin/python tests/bugs/run.py canary_off_by_one --campaign smoke

Not a pytest test (minutes per bug); the results are in the issue's notes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness import campaign as cp  # noqa: E402
from harness.engine import NativeEngine  # noqa: E402

HERE = Path(__file__).resolve().parent
CFLAGS = ["-std=gnu11", "-O2", "-g", "-pthread", "-fvisibility=hidden", "-msse4.2"]


def build(patch: Path, work: Path) -> tuple[Path, Path]:
    """The drivers of the tree with ``patch`` applied, built in ``work``: the production
    one, and the chaos build's (for plans that need it: corrupt_meta's damage hook)."""
    shutil.copytree(ROOT / "allocator", work / "allocator",
                    ignore=shutil.ignore_patterns("_native", "*.so", "__pycache__"))
    shutil.copytree(ROOT / "harness" / "native", work / "harness" / "native")
    subprocess.run(["patch", "-s", "-p1", "-i", str(patch)], cwd=work, check=True)
    src = work / "allocator" / "src"
    sources = [*sorted((work / "harness" / "native").glob("*.c")),
               *sorted(p for p in src.glob("*.c") if not p.name.endswith("_shim.c"))]
    out = (work / "nmm-driver", work / "nmm-driver_chaos")
    for driver, defines in zip(out, ([], ["-DNMM_CHAOS"]), strict=True):
        subprocess.run(["gcc", *CFLAGS, *defines, "-I", str(work / "allocator" / "include"),
                        "-I", str(src), *map(str, sources), "-lm", "-ldl", "-o", str(driver)],
                       check=True)
    return out


class PatchedEngine(NativeEngine):
    """The patched tree's drivers, each plan on the one it needs (as the built ones are
    picked for the tree as it is)."""

    def __init__(self, drivers: tuple[Path, Path]) -> None:
        super().__init__([str(drivers[0])])
        self.chaos_command = [str(drivers[1])]

    def command_for(self, plan: Any) -> list[str]:
        return self.chaos_command if plan.needs_chaos_build else self.command


def trials(campaign: str, seeds: int | None) -> list[cp.Trial]:
    """A campaign's gating trials, seed by seed across its plans (the first seed of
    every plan and level, then the second, ...)."""
    spec = cp.load_campaign_file(ROOT / "chaos_plans" / "campaigns" / f"{campaign}.toml")
    defn = cp.define(list(spec.plans), seeds=seeds or spec.seeds, targets=list(spec.targets),
                     levels=list(spec.levels or ()) or None, overrides=list(spec.set),
                     split_faults=spec.split_faults)
    gating = [t for t in cp.expand(defn) if t.gating]
    rank: dict[tuple[str, str], int] = {}
    order = []
    for t in gating:
        key = (t.plan.name, t.plan.target.label)
        order.append((rank.get(key, 0), t))
        rank[key] = rank.get(key, 0) + 1
    return [t for _, t in sorted(order, key=lambda x: x[0])]


def hunt(drivers: tuple[Path, Path], todo: list[cp.Trial], budget_s: float, jobs: int
         ) -> dict[str, Any]:
    """Run ``todo`` until one fails; the first failing trial, or None."""
    engine = PatchedEngine(drivers)
    stop = threading.Event()
    t0 = time.monotonic()
    found: dict[str, Any] = {"ran": 0, "caught": None}
    queue = list(todo)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Future[Any], cp.Trial] = {}
        while (queue or running) and found["caught"] is None:
            while queue and len(running) < jobs and time.monotonic() - t0 < budget_s:
                t = queue.pop(0)
                running[pool.submit(engine.run, t.plan, t.seed, stop=stop)] = t
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                t = running.pop(fut)
                found["ran"] += 1
                record = fut.result()
                if not record.verdict.passed and found["caught"] is None:
                    found["caught"] = (t, record)
        stop.set()
    found["seconds"] = round(time.monotonic() - t0, 1)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bugs", nargs="*", help="patch names (default: every *.patch here)")
    parser.add_argument("--campaign", action="append", choices=["smoke", "nightly"])
    parser.add_argument("--nightly-seeds", type=int, default=20)
    parser.add_argument("--budget", type=float, default=900.0, help="seconds per bug and campaign")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    patches = ([HERE / f"{b}.patch" for b in args.bugs] if args.bugs
               else sorted(HERE.glob("*.patch")))
    campaigns = args.campaign or ["smoke", "nightly"]
    plans = {c: trials(c, args.nightly_seeds if c == "nightly" else None) for c in campaigns}
    print("| bug | campaign | caught by | outcome | trials run | s | first reason |")
    print("|---|---|---|---|---|---|---|")
    for patch in patches:
        with tempfile.TemporaryDirectory(prefix=f"bug-{patch.stem}-") as tmp:
            drivers = build(patch, Path(tmp))
            for c in campaigns:
                got = hunt(drivers, plans[c], args.budget, args.jobs)
                if got["caught"] is None:
                    print(f"| {patch.stem} | {c} | **not caught** | - | {got['ran']} | "
                          f"{got['seconds']} | |", flush=True)
                    continue
                t, rec = got["caught"]
                reason = (rec.verdict.reasons[0] if rec.verdict.reasons else "")[:160]
                # the same trial against the tree as it is must pass: the bug failed it
                clean = NativeEngine().run(t.plan, t.seed).verdict.passed
                print(f"| {patch.stem} | {c} | {t.plan.name} {t.plan.target.label} seed "
                      f"{t.seed} | {rec.verdict.outcome} | {got['ran']} | {got['seconds']} | "
                      f"{reason.replace('|', '/')}"
                      f"{'' if clean else ' (FAILS WITHOUT THE BUG TOO)'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
