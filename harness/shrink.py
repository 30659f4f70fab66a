"""``nmm-chaos shrink``: minimise a failing trial while keeping its failure signature
(design.md "Reproduction", issue 9).

Delta debugging over four dimensions, schedule first:
1. preemptions — the schedule trace is cut to its shortest prefix that still fails once
   the rest runs without preemptions (``--after-schedule nonpreemptive``), then its
   switches are removed in chunks (ddmin over the trace's runs: a removed run lets the
   worker before it go on);
2. threads — one fewer worker at a time;
3. ops — the ops per worker halved, then trimmed, while it fails;
4. faults — each fault spec dropped, then its count lowered; the live set halved.
A candidate of another shape (fewer threads, ops) keeps no schedule: it is tried under
the plan's strategy with the artifact's seed and a few after it, and kept with the
schedule it took. The preemption pass runs again on the final shape.

Progress is saved after every accepted step (``ARTIFACT.shrink.json``), so a shrink
stopped by its budget (or killed) resumes where it was. The result: the minimal plan
under ``chaos_plans/regressions/mutants/`` (TOML, its seed pinned) with the artifact
beside it, and a witness a person can read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.chaos import Artifact, Schedule, TrialRun, artifact_of, run_trial, with_strategy
from harness.plan import Plan
from harness.witness import witness_lines

#: seeds tried for a candidate of another shape (the artifact's, then the next ones)
SEEDS_PER_SHAPE = 8
PROGRESS_VERSION = 1


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


class _Shrinker:
    def __init__(self, artifact: Artifact, budget_s: float, progress: Path,
                 note: Callable[[str], None]) -> None:
        self.best = artifact
        self.deadline = time.monotonic() + budget_s
        self.progress = progress
        self.note = note
        self.trials = 0
        self.phase = "schedule"

    # ---- running candidates

    def _check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Budget

    def _try(self, plan: Plan, seed: int, follow: Schedule | None) -> TrialRun | None:
        self._check_time()
        self.trials += 1
        run = run_trial(plan, seed, follow=follow,
                        after="nonpreemptive" if follow is not None else "seeded")
        return run if run.signature == self.best.signature else None

    def _accept(self, plan: Plan, run: TrialRun, why: str) -> None:
        doc = plan.model_dump(mode="json")
        doc["seed"], doc["seeds"] = run.record.seed, 1
        self.best = Artifact(identity=self.best.identity, plan=doc, seed=run.record.seed,
                             signature=self.best.signature, schedule=run.schedule,
                             witness=[], reasons=list(run.record.verdict.reasons))
        self.note(f"{why}: {describe(self.best)}")
        self.save()

    def save(self) -> None:
        doc = {"version": PROGRESS_VERSION, "phase": self.phase, "trials": self.trials,
               "best": self.best.to_json()}
        tmp = self.progress.with_name(self.progress.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.progress)

    # ---- the dimensions

    def schedule_pass(self) -> None:
        """Shortest failing prefix, then ddmin over the trace's runs."""
        sched = self.best.schedule
        if sched is None:
            return
        plan = self.best.plan_model()
        runs = list(sched.runs)
        lo, hi = 0, len(runs)  # the prefix of hi runs fails; find the smallest
        while lo < hi:
            mid = (lo + hi) // 2
            cand = Schedule(sched.threads, sched.kind, tuple(runs[:mid]))
            run = self._try(plan, self.best.seed, cand)
            if run is not None:
                hi = mid
            else:
                lo = mid + 1
        if hi < len(runs):
            run = self._try(plan, self.best.seed,
                            Schedule(sched.threads, sched.kind, tuple(runs[:hi])))
            if run is not None:
                self._accept(plan, run, f"schedule prefix of {hi} runs")
                runs = list(self.best.schedule.runs) if self.best.schedule else []
        # ddmin: remove chunks of runs (each removal drops a switch)
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
        # else fresh interleavings: the plan's strategy and random, a few seeds each
        variants = [plan] if plan.scheduler.kind == "random" else \
            [plan, with_strategy(plan, "random")]
        for k in range(SEEDS_PER_SHAPE):
            seed = (self.best.seed + k) % (1 << 64)
            for variant in variants:
                run = self._try(variant, seed, None)
                if run is not None:
                    self._accept(variant, run, why)
                    return True
        return False

    def shape_pass(self) -> None:
        # threads
        while True:
            doc = json.loads(json.dumps(self.best.plan))
            threads = doc["workload"]["threads"]
            if threads <= 2:
                break
            doc["workload"]["threads"] = threads - 1
            if not self._shape(doc, f"threads {threads - 1}"):
                break
        # faults: drop each spec, then lower counts
        i = 0
        while i < len(self.best.plan.get("faults") or []):
            doc = json.loads(json.dumps(self.best.plan))
            del doc["faults"][i]
            if not self._shape(doc, f"fault {i} dropped"):
                i += 1
        for i in range(len(self.best.plan.get("faults") or [])):
            while (self.best.plan["faults"][i].get("count") or 1) > 1:
                doc = json.loads(json.dumps(self.best.plan))
                doc["faults"][i]["count"] = max(1, doc["faults"][i]["count"] // 2)
                if not self._shape(doc, f"fault {i} count {doc['faults'][i]['count']}"):
                    break
        # ops per worker: halve while it fails, else cut by a quarter, an eighth
        while _ops(self.best.plan) > 1:
            ops = _ops(self.best.plan)
            for new in dict.fromkeys((ops // 2, ops - ops // 4, ops - ops // 8)):
                if not 1 <= new < ops:
                    continue
                doc = json.loads(json.dumps(self.best.plan))
                _set_ops(doc, new)
                if self._shape(doc, f"ops {new} per worker"):
                    break
            else:
                break
        # the live set
        while True:
            doc = json.loads(json.dumps(self.best.plan))
            live = doc["workload"].get("live", 1000)
            if live <= 1:
                break
            doc["workload"]["live"] = max(1, live // 2)
            if not self._shape(doc, f"live set {doc['workload']['live']}"):
                break


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


def describe(a: Artifact) -> str:
    w = a.plan.get("workload", {})
    sched = a.schedule
    return (f"{w.get('threads')} threads x {_ops(a.plan)} ops, live {w.get('live')}, "
            f"{len(a.plan.get('faults') or [])} fault spec(s), seed {a.seed}"
            + (f", {sched.steps} steps, {sched.preemptions} switches" if sched else ""))


def _load_progress(path: Path, artifact: Artifact) -> tuple[Artifact, str, int]:
    try:
        doc = json.loads(path.read_text())
        if doc.get("version") != PROGRESS_VERSION:
            return artifact, "schedule", 0
        tmp = path.with_name(path.name + ".artifact")
        tmp.write_text(json.dumps(doc["best"]))
        best = Artifact.load(tmp)
        tmp.unlink()
        if best.signature != artifact.signature:
            return artifact, "schedule", 0
        return best, str(doc.get("phase", "schedule")), int(doc.get("trials", 0))
    except (OSError, ValueError, KeyError):
        return artifact, "schedule", 0


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
                           else (artifact, "schedule", 0))
    if progress.is_file():
        note(f"resuming at phase {phase}: {describe(best)}")
    s = _Shrinker(best, budget_s, progress, note)
    s.trials = trials
    phases = ["schedule", "shape", "schedule-again", "done"]
    finished = False
    try:
        for name in phases[phases.index(phase) if phase in phases else 0:]:
            s.phase = name
            s.save()
            if name in ("schedule", "schedule-again"):
                s.schedule_pass()
            elif name == "shape":
                s.shape_pass()
            else:
                finished = True
    except _Budget:
        note("budget spent; progress saved")
    plan = s.best.plan_model()
    final = run_trial(plan, s.best.seed, follow=s.best.schedule, after="nonpreemptive")
    if final.signature == s.best.signature:
        out = artifact_of(plan, final, s.best.identity.get("overrides") or [])
        out.identity = {**s.best.identity, "shrunk_from": str(artifact_path)}
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
