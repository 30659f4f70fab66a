"""Robustness reports over one or many runs: the versioned JSON document, Markdown, JUnit.

``load_run`` reads a run or campaign directory (or a bare ``journal.jsonl``) into its
records plus what each trial was (plan document, whether it gates, how to replay it).
``build_report`` aggregates any number of runs into one document (schema in
``harness/schemas/report.schema.json``): the verdict, the detection matrix fault x
target with rates over seeds and the first diagnostic line of each cell, throughput,
latency and RSS per target, leaks, every failure with the command that replays it, the
environment, and with several runs a trend per fault and target. ``render_markdown`` and
``render_junit`` render it; ``harness.html`` renders the page. Never prints.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import statistics
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.campaign import fault_row
from harness.errors import HarnessError
from harness.guarantee import pct_guarantees
from harness.hangstop import SKIPPED_HANGING
from harness.invocation import command_line, program
from harness.journal import JOURNAL_NAME, read_journal
from harness.plan import FAULT_VARIANTS, Plan
from harness.records import NOT_REACHED, TrialRecord
from harness.reportlogs import site_of

REPORT_KIND = "nmm-chaos-report"
#: 3: leak_sites (NMM's leak reports by site), failures' report (the error report's
#: frames), trials' report_log; faults never reached (not-reached) left out of the
#: faults_injected counts
REPORT_VERSION = 3
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "report.schema.json"
DETECTED = ("detected", "detected-abort")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
#: order of badness when one row has several outcomes in a trial
_WORST = ("infra-failure", "hang", "skipped-hanging", "crashed", "false-positive", "missed",
          "not-reached", "detected-abort", "detected", "clean")


class ReportError(HarnessError):
    """A run directory or journal that cannot be reported on."""


@dataclass(frozen=True)
class TrialInfo:
    """What a trial was, beyond its record: its plan, whether it gates, how it replays."""

    plan: Plan | None
    gating: bool = True
    plan_path: str = ""
    overrides: tuple[str, ...] = ()
    #: the plan as run differs from the file + overrides in these keys (campaigns)
    replay_sets: tuple[str, ...] = ()
    engine_options: tuple[str, ...] = ()


@dataclass
class LoadedRun:
    """One run or campaign as read from disk."""

    id: str
    kind: str
    path: str
    records: list[TrialRecord]
    info: dict[str, TrialInfo] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    command: str = ""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: coverage of allocator/src by the run's trials (``coverage.json``, written by
    #: ``make coverage``), or None
    coverage: dict[str, Any] | None = None


# ---------------------------------------------------------------- loading

def percentiles(values: Sequence[float], points: Sequence[float] = (50, 90, 99, 100)
                ) -> dict[str, float]:
    """Nearest-rank percentiles (``p50``, ``p90``, ``p99``, ``max``) of ``values``."""
    if not values:
        return {}
    ordered = sorted(values)
    out: dict[str, float] = {}
    for p in points:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out["max" if p == 100 else f"p{p:g}"] = ordered[rank - 1]
    return out


def toml_inline(value: Any) -> str:
    """``value`` as a TOML inline literal (for ``--set key=<value>``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_inline(v)}" for k, v in value.items()
                               if v is not None) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


def _target_set(target: Any) -> str:
    """The ``--set`` that puts ``target`` in a plan: the short form when it says it all."""
    doc = target.model_dump(mode="json")
    short = target.label
    if (doc["kind"] == "malloc" or (doc["kind"] == "lib" and not doc.get("env"))
            or (doc["kind"] == "nmm" and doc["policy"] == "record" and not doc["options"])):
        return f"target={short}" if doc["kind"] != "nmm" else f"target=nmm:{doc['level']}"
    return f"target={toml_inline(doc)}"


def replay_command(record: TrialRecord, info: TrialInfo,
                   program: Sequence[str] | None = None) -> str:
    """The exact command that runs this one trial again, alone: ``nmm-chaos run PLAN``
    (named as this process was invoked, or ``program``), the engine's options, the run's
    ``--set`` overrides (its seed range left out) and those that make the plan the one
    the trial ran, ``--seed N --seeds 1`` and, for a timed trial, the op counts that pin
    its streams."""
    from harness.runner import replay_overrides

    args = ["run", info.plan_path or record.plan, *info.engine_options]
    for override in info.overrides:
        if not override.startswith(("seed=", "seeds=")):
            args += ["--set", override]
    for override in info.replay_sets:
        args += ["--set", override]
    args += ["--seed", str(record.seed), "--seeds", "1"]
    if info.plan is not None:
        for override in replay_overrides(info.plan, record):
            args += ["--set", override]
    return command_line(*args, prefix=program)


def _campaign_info(run_dir: Path) -> tuple[dict[str, TrialInfo], list[str], str]:
    from harness.campaign import expand, load_definition
    from harness.engine import engine_from_spec

    defn = load_definition(run_dir)
    engine = engine_from_spec(defn.engine)
    info: dict[str, TrialInfo] = {}
    for trial in expand(defn, engine):
        source = defn.plans[trial.source]
        base = source.plan
        sets: list[str] = []
        if trial.plan.target != base.target:
            sets.append(_target_set(trial.plan.target))
        if trial.plan.faults != base.faults:
            sets.append("faults=" + toml_inline(
                [f.model_dump(mode="json", exclude_none=True) for f in trial.plan.faults]))
        if trial.plan.workload.ops != base.workload.ops:
            sets.append(f"workload.ops={trial.plan.workload.ops}")
        info[trial.key] = TrialInfo(trial.plan, trial.gating, source.path, source.overrides,
                                    tuple(sets), tuple(engine.options()))
    return info, list(defn.notes), defn.created


def _run_info(run_dir: Path, records: Sequence[TrialRecord]) -> tuple[dict[str, TrialInfo],
                                                                      str, str]:
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}, "", ""
    plan_path = str(meta.get("plan_path", ""))
    overrides = tuple(str(o) for o in meta.get("overrides", ()))
    plan: Plan | None = None
    if isinstance(meta.get("plan"), dict):  # the plan as run, kept in run.json
        try:
            plan = Plan.model_validate(meta["plan"])
        except ValueError:
            plan = None
    if plan is None:
        try:
            from harness.loader import load_plan

            plan = load_plan(plan_path, overrides)
        except (HarnessError, OSError):
            plan = None
    info = trial_infos(records, plan, plan_path=plan_path, overrides=overrides,
                       engine_options=_engine_options(meta))
    return info, str(meta.get("run_id", run_dir.name)), " ".join(meta.get("argv", []))


def _engine_options(meta: dict[str, Any]) -> tuple[str, ...]:
    """The ``run`` options that select the engine a run's ``run.json`` names."""
    from harness.engine import engine_from_spec

    spec = meta.get("engine_spec") or {"name": str(meta.get("engine", "native"))}
    try:
        return tuple(engine_from_spec(spec).options())
    except HarnessError:  # an engine this installation lacks: name it as the run did
        return ("--engine", str(spec.get("name")))


def trial_infos(records: Sequence[TrialRecord], plan: Plan | None, *, plan_path: str = "",
                overrides: Sequence[str] = (), engine_options: Sequence[str] = ()
                ) -> dict[str, TrialInfo]:
    """What each of a ``run``'s trials was: ``plan`` (for the trials whose plan hash is
    its own), the plan file, the ``--set`` overrides and the engine's options."""
    return {r.key: TrialInfo(plan if plan is not None and plan.plan_hash() == r.plan_hash
                             else None, True, plan_path, tuple(overrides), (),
                             tuple(engine_options))
            for r in records}


def run_of_records(plan: Plan, records: Sequence[TrialRecord], *, run_id: str,
                   plan_path: str = "", overrides: Sequence[str] = (),
                   engine_options: Sequence[str] = (), command: str = "") -> LoadedRun:
    """A ``run`` of ``plan`` held in memory (the pytest plugin, a library caller, tests):
    what ``load_run`` reads from a run directory, for ``build_report``."""
    return LoadedRun(id=run_id, kind="run", path="", records=list(records),
                     info=trial_infos(records, plan, plan_path=plan_path,
                                      overrides=overrides, engine_options=engine_options),
                     started_at=min((r.started_at for r in records if r.started_at),
                                    default=""),
                     command=command)


def load_run(path: str | Path) -> LoadedRun:
    """A run directory (``nmm-chaos run``), a campaign directory, or a journal file."""
    p = Path(path)
    journal = p / JOURNAL_NAME if p.is_dir() else p
    if not journal.is_file():
        raise ReportError(f"{p}: no {JOURNAL_NAME} (expected a run or campaign directory, "
                          "or a journal file)")
    contents = read_journal(journal)
    unreadable = [w for w in contents.warnings if "unreadable journal line" in w]
    if not contents.records and unreadable:
        # a plan file, a report or anything else given where a journal was expected:
        # reporting on it would write an empty report beside it (and pass a compare)
        line = unreadable[0][len(str(journal)) + 1:].split(":", 1)[0]
        raise ReportError(f"{journal}: not a trial journal (line {line} is not a trial "
                          "record); expected a run or campaign directory, or its "
                          f"{JOURNAL_NAME}")
    run_dir = journal.parent
    run = LoadedRun(id=run_dir.name, kind="journal", path=str(run_dir),
                    records=contents.records, warnings=list(contents.warnings))
    for key, ident in contents.unfinished.items():
        run.warnings.append(f"{journal}: trial {key} (plan {ident.get('plan')}, seed "
                            f"{ident.get('seed')}) started and left no record: the run "
                            "or the machine died during it (its identity is in the "
                            "journal's trial_start line; a resume runs it)")
    env_path = run_dir / "environment.json"
    if env_path.is_file():
        try:
            run.environment = json.loads(env_path.read_text())
        except ValueError:
            run.warnings.append(f"{env_path}: unreadable, left out")
    cov_path = run_dir / "coverage.json"
    if cov_path.is_file():
        try:
            run.coverage = json.loads(cov_path.read_text())
        except ValueError:
            run.warnings.append(f"{cov_path}: unreadable, left out")
    if (run_dir / "campaign.json").is_file():
        run.kind = "campaign"
        run.info, run.notes, run.started_at = _campaign_info(run_dir)
    elif (run_dir / "run.json").is_file():
        run.kind = "run"
        run.info, run_id, run.command = _run_info(run_dir, run.records)
        run.id = run_id or run.id
    if not run.started_at:
        run.started_at = min((r.started_at for r in run.records if r.started_at), default="")
    return run


# ---------------------------------------------------------------- aggregation

def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, MAD-based standard deviation (robust to one slow trial), min and max."""
    if not values:
        return {}
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values)
    return {"median": round(med, 1), "sd": round(1.4826 * mad, 1),
            "min": round(min(values), 1), "max": round(max(values), 1), "n": len(values)}


def planned_rows(plan: Plan | None) -> list[str]:
    """The matrix rows a plan's faults make (a kind's default variant filled in, as the
    driver reports it: the first of ``FAULT_VARIANTS``)."""
    if plan is None:
        return []
    return list(dict.fromkeys(
        fault_row(f.kind, f.variant or (FAULT_VARIANTS.get(f.kind) or ("",))[0])
        for f in plan.faults))


def _performed_row(fault: Any) -> str:
    """The row of a performed fault (a driver that leaves its variant out: the default)."""
    return fault_row(fault.kind, fault.variant or (FAULT_VARIANTS.get(fault.kind) or ("",))[0])


def _worst(outcomes: Sequence[str]) -> str:
    return min(outcomes, key=lambda o: _WORST.index(o) if o in _WORST else 0)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:200] if (text or "").strip() else ""


def _row_outcomes(record: TrialRecord, info: TrialInfo | None) -> dict[str, tuple[str, str]]:
    """Per matrix row of this trial: (outcome, diagnostic line)."""
    performed: dict[str, list[Any]] = defaultdict(list)
    for f in record.verdict.faults:
        performed[_performed_row(f)].append(f)
    rows = list(dict.fromkeys([*planned_rows(info.plan if info else None), *performed]))
    out: dict[str, tuple[str, str]] = {}
    for row in rows:
        faults = performed.get(row)
        if record.verdict.outcome in ("infra-failure", SKIPPED_HANGING):
            out[row] = (record.verdict.outcome, "")
            continue
        if not faults:
            out[row] = (NOT_REACHED, "")
            continue
        # a fault the process never got to (dying of another's detection) does not make
        # the row "not reached" when one of its faults was
        reached = [f for f in faults if f.outcome != NOT_REACHED] or faults
        outcome = _worst([f.outcome for f in reached])
        diag = ""
        for f in faults:
            if f.outcome == "detected-abort" or f.outcome == "crashed":
                diag = _first_line(record.verdict.diagnostic) or _first_line(f.note)
            elif f.outcome == "detected" and f.event_kind:
                diag = f"{f.event_kind} event (seq {f.event_seq})" + (
                    f": {f.note}" if f.note else "")
            if diag:
                break
        out[row] = (outcome, diag)
    return out


def _cell_class(cell: dict[str, Any]) -> str:
    """The colour class of a matrix cell."""
    reached = cell["reached"]
    if not reached:
        return NOT_REACHED if cell["trials"] else "empty"
    if cell["detected"] == reached:
        return "detected"
    if cell["detected"] == 0:  # the commonest way it went wrong
        o = {k: n for k, n in cell["outcomes"].items()
             if k in ("missed", "crashed", "hang", SKIPPED_HANGING, "infra-failure")}
        return max(o, key=lambda k: o[k]) if o else "missed"
    return "partial"


#: leak-site rows kept in a report, and seeds listed per row
MAX_LEAK_SITES = 200
MAX_SITE_SEEDS = 20
_LOST = ("definitely_lost", "indirectly_lost")


def _leak_sites(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """NMM's own leak reports (the trials' report logs) grouped by target, the first
    non-allocator frame of each group (``function file:line``) and whether the blocks
    were lost, still reachable or suppressed (the C library's own one-time buffers, a
    suppressions file): blocks and bytes summed over trials and seeds, lost first."""
    sites: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in records:
        log = r.observation.report_log
        if log is None:
            continue
        for g in log.leak_groups:
            kind = ("lost" if g.category in _LOST else
                    "suppressed" if g.category == "suppressed" else "still reachable")
            site = site_of(g.frames, g.site)
            entry = sites.setdefault((r.target, site, kind), {
                "target": r.target, "site": site, "category": kind, "blocks": 0, "bytes": 0,
                "trials": 0, "seeds": [], "_keys": set()})
            entry["blocks"] += g.blocks
            entry["bytes"] += g.bytes
            if r.key not in entry["_keys"]:
                entry["_keys"].add(r.key)
                entry["trials"] += 1
                if r.seed not in entry["seeds"] and len(entry["seeds"]) < MAX_SITE_SEEDS:
                    entry["seeds"].append(r.seed)
    order = {"lost": 0, "still reachable": 1, "suppressed": 2}
    rows = sorted(sites.values(), key=lambda e: (order[e["category"]], -e["bytes"],
                                                  e["target"], e["site"]))
    for e in rows:
        del e["_keys"]
        e["seeds"].sort()
    return rows[:MAX_LEAK_SITES]


def _error_report(record: TrialRecord) -> dict[str, Any] | None:
    """The error report that says most about a failed trial: the one its diagnostic
    names (the report the process died of), else the last one written; with its first
    frames (``function file:line``) and where the block was allocated and freed."""
    log = record.observation.report_log
    if log is None or not log.errors:
        return None
    named = {int(h, 16) for h in _HEX.findall(record.verdict.diagnostic or "")}
    chosen = next((e for e in reversed(log.errors) if e.address in named), log.errors[-1])

    def first(frames: Sequence[Any]) -> str | None:
        return site_of(frames) if frames else None

    return {"kind": chosen.kind, "address": f"{chosen.address:#x}", "extent": chosen.extent,
            "frames": [site_of([f]) for f in chosen.stack[:3]],
            "allocated_at": first(chosen.alloc), "freed_at": first(chosen.free)}


def _report_log_summary(record: TrialRecord) -> dict[str, Any] | None:
    log = record.observation.report_log
    if log is None:
        return None
    return {"processes": log.processes, "errors": len(log.errors) + log.errors_dropped,
            "leak_groups": len(log.leak_groups) + log.leak_groups_dropped,
            "notes": list(log.notes)}


def _trial_peak_rss(record: TrialRecord) -> int:
    obs = record.observation
    return max([s.rss for s in obs.samples] + [obs.result.peak_rss if obs.result else 0])


def _trial_cpu_s(record: TrialRecord) -> float:
    """CPU seconds of the trial: the driver's own count, else the last sample's (a child
    that died before its result line)."""
    obs = record.observation
    if obs.result and obs.result.cpu_ns:
        return obs.result.cpu_ns / 1e9
    return obs.samples[-1].cpu_s if obs.samples else 0.0


def build_report(runs: Sequence[LoadedRun], *, title: str | None = None) -> dict[str, Any]:
    """The versioned report document of one or many runs (oldest first)."""
    if not runs:
        raise ReportError("no runs to report on")
    runs = sorted(runs, key=lambda r: r.started_at)
    latest = runs[-1]
    # trials in a fixed order (the journal's is the order they finished in): run, plan,
    # target as first seen, seed
    order = {t: i for i, t in enumerate(dict.fromkeys(r.target for run in runs
                                                      for r in run.records))}
    records = [(run, r) for _, run, r in sorted(
        ((i, run, r) for i, run in enumerate(runs) for r in run.records),
        key=lambda t: (t[0], t[2].plan, order[t[2].target], t[2].seed))]
    cur = latest.records
    info = latest.info

    # the matrix and the verdict describe the latest run; trends span them all
    targets = list(dict.fromkeys(r.target for r in cur))
    matrix: dict[str, dict[str, dict[str, Any]]] = {}
    det_latency: dict[str, list[float]] = defaultdict(list)
    for r in cur:
        for row, (outcome, diag) in _row_outcomes(r, info.get(r.key)).items():
            cell = matrix.setdefault(row, {}).setdefault(r.target, {
                "trials": 0, "reached": 0, "detected": 0, "outcomes": {},
                "faults_injected": 0, "faults_detected": 0, "first_diagnostic": ""})
            cell["trials"] += 1
            cell["outcomes"][outcome] = cell["outcomes"].get(outcome, 0) + 1
            if outcome != NOT_REACHED:
                cell["reached"] += 1
            if outcome in DETECTED:
                cell["detected"] += 1
            if diag and not cell["first_diagnostic"] and outcome in (*DETECTED, "crashed"):
                cell["first_diagnostic"] = diag
        for f in r.verdict.faults:
            cell = matrix[_performed_row(f)][r.target]
            cell["faults_injected"] += f.outcome != NOT_REACHED
            cell["faults_detected"] += f.outcome in DETECTED
            if f.latency_ops is not None:
                det_latency[_performed_row(f)].append(f.latency_ops)
    for by_target in matrix.values():
        for cell in by_target.values():
            cell["rate"] = round(cell["detected"] / cell["reached"], 4) if cell["reached"] else None
            cell["class"] = _cell_class(cell)
    rows = sorted(matrix)

    per_target: dict[str, list[TrialRecord]] = defaultdict(list)
    for r in cur:
        per_target[r.target].append(r)
    throughput = {t: {**spread([r.ops_per_s for r in rs if r.ops_per_s]),
                      "values": [r.ops_per_s for r in rs if r.ops_per_s]}
                  for t, rs in per_target.items()}
    op_latency: dict[str, dict[str, float]] = {}
    for t, rs in per_target.items():
        lats = [r.observation.result.latency_ns for r in rs
                if r.observation.result and r.observation.result.latency_ns]
        if lats:
            op_latency[t] = {k: round(statistics.median([d[k] for d in lats if k in d]), 1)
                             for k in ("p50", "p99", "p999") if any(k in d for d in lats)}
            op_latency[t]["max"] = max(d.get("max", 0) for d in lats)
    rss = {t: {"peak_median": int(statistics.median([_trial_peak_rss(r) for r in rs])),
               "peak_max": max(_trial_peak_rss(r) for r in rs)} for t, rs in per_target.items()}

    leaks: dict[tuple[str, str], dict[str, Any]] = {}
    for r in cur:
        result = r.observation.result
        if result is None or not result.leaked_blocks:
            continue
        rest = result.leaked_blocks
        if rest > 0:
            site = f"left after teardown ({r.plan})"
            entry = leaks.setdefault((r.target, site), {"target": r.target, "site": site,
                                                        "blocks": 0, "trials": 0,
                                                        "expected": False})
            entry["blocks"] += rest
            entry["trials"] += 1

    gating = [r for r in cur if (info.get(r.key) or TrialInfo(None)).gating]
    infra = [r for r in cur if r.verdict.outcome == "infra-failure"]
    failed_gating = [r for r in gating if not r.verdict.passed]
    status = "pass" if not failed_gating and not infra and cur else "fail"
    text = (f"{len(gating) - len(failed_gating)}/{len(gating)} gating trials met their "
            "expectations" + (f"; {len(infra)} lost to dying workers" if infra else ""))
    failures = []
    prefix = program()  # once: naming it looks up PATH (a large report has thousands)
    for r in cur:
        if r.verdict.passed:
            continue
        i = info.get(r.key) or TrialInfo(None)
        failures.append({"key": r.key, "plan": r.plan, "seed": r.seed, "target": r.target,
                         "gating": i.gating, "outcome": r.verdict.outcome,
                         "reasons": list(r.verdict.reasons),
                         "diagnostic": r.verdict.diagnostic,
                         "report": _error_report(r),
                         "replay": replay_command(r, i, prefix)})
    failures.sort(key=lambda f: (not f["gating"], f["plan"], f["target"], f["seed"]))

    outcomes = Counter(r.verdict.outcome for r in cur)
    summary = {
        "trials": len(cur), "passed": sum(r.verdict.passed for r in cur),
        "failed": sum(not r.verdict.passed for r in cur),
        "gating_trials": len(gating), "gating_failed": len(failed_gating),
        "infra_failures": len(infra), "outcomes": dict(sorted(outcomes.items())),
        "faults_injected": sum(f.outcome != NOT_REACHED for r in cur for f in r.verdict.faults),
        "faults_detected": sum(f.outcome in DETECTED for r in cur for f in r.verdict.faults),
        "false_positives": sum(len(r.verdict.false_positives) for r in cur),
        "ops": sum(r.observation.result.ops for r in cur if r.observation.result),
        "wall_s": round(sum(r.observation.wall_s for r in cur), 3),
        "plans": sorted({r.plan for r in cur}),
    }
    plans = {i.plan.plan_hash(): (i, i.plan) for i in info.values() if i.plan is not None}
    single: dict[str, Any] | None = None
    if len(plans) == 1 and latest.kind == "run":
        one, plan = next(iter(plans.values()))
        single = {"name": plan.name, "path": one.plan_path, "hash": plan.plan_hash(),
                  "overrides": list(one.overrides), "document": plan.model_dump(mode="json")}
    return {
        "kind": REPORT_KIND, "report_version": REPORT_VERSION,
        "run_id": latest.id,
        **({"plan": single} if single else {}),
        "generated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "title": title or (f"nmm-chaos {latest.kind} {latest.id}" if len(runs) == 1
                           else f"nmm-chaos: {len(runs)} runs, {runs[0].id} .. {latest.id}"),
        "verdict": {"status": status, "text": text},
        "summary": summary,
        "runs": [{"id": run.id, "kind": run.kind, "path": run.path,
                  "started_at": run.started_at, "command": run.command,
                  "trials": len(run.records),
                  "passed": sum(r.verdict.passed for r in run.records),
                  "notes": run.notes, "warnings": run.warnings} for run in runs],
        "environment": latest.environment,
        "targets": targets, "rows": rows, "matrix": matrix,
        "detection_latency_ops": {k: percentiles(v) for k, v in sorted(det_latency.items())},
        "throughput_ops_per_s": throughput, "op_latency_ns": op_latency, "rss_bytes": rss,
        "leaks": sorted(leaks.values(), key=lambda e: (-e["blocks"], e["target"])),
        "leak_sites": _leak_sites(cur),
        "failures": failures,
        # PCT's bound for the plans the latest run ran under pct (harness.guarantee)
        "pct_guarantee": pct_guarantees(cur),
        "trends": _trends(runs),
        "coverage": latest.coverage,
        "trials": [{"key": r.key, "run": run.id, "plan": r.plan, "seed": r.seed,
                    "target": r.target,
                    "gating": (run.info.get(r.key) or TrialInfo(None)).gating,
                    "outcome": r.verdict.outcome, "passed": r.verdict.passed,
                    "ops_per_s": r.ops_per_s, "wall_s": r.observation.wall_s,
                    "peak_rss": _trial_peak_rss(r), "cpu_s": _trial_cpu_s(r),
                    "worker_ops": (list(r.observation.result.worker_ops)
                                   if r.observation.result else None),
                    "report_log": _report_log_summary(r)}
                   for run, r in records],
    }


def _trends(runs: Sequence[LoadedRun]) -> dict[str, Any]:
    """Per run (oldest first): detection rate per row and target, median throughput per
    target, failed trials."""
    detection: dict[str, dict[str, list[float | None]]] = {}
    throughput: dict[str, list[float | None]] = {}
    for i, run in enumerate(runs):
        cells: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        tput: dict[str, list[float]] = defaultdict(list)
        for r in run.records:
            for row, (outcome, _) in _row_outcomes(r, run.info.get(r.key)).items():
                if outcome != NOT_REACHED:
                    cells[(row, r.target)][1] += 1
                    cells[(row, r.target)][0] += outcome in DETECTED
            if r.ops_per_s:
                tput[r.target].append(r.ops_per_s)
        for (row, target), (found, reached) in cells.items():
            series = detection.setdefault(row, {}).setdefault(target, [None] * len(runs))
            series[i] = round(found / reached, 4) if reached else None
        for target, values in tput.items():
            throughput.setdefault(target, [None] * len(runs))[i] = round(
                statistics.median(values), 1)
    return {"runs": [run.id for run in runs], "started_at": [run.started_at for run in runs],
            "detection": detection, "throughput": throughput,
            "failed": [sum(not r.verdict.passed for r in run.records) for run in runs]}


# ---------------------------------------------------------------- rendering

def cell_text(cell: dict[str, Any] | None) -> str:
    """``200/200``, ``3/16 (13 missed)``, ``not reached`` or ``-``."""
    if not cell:
        return "-"
    if not cell["reached"]:
        return "not reached"
    extra = ", ".join(f"{n} {o}" for o, n in cell["outcomes"].items()
                      if o not in DETECTED and n)
    return f"{cell['detected']}/{cell['reached']}" + (f" ({extra})" if extra else "")


def render_markdown(doc: dict[str, Any]) -> str:
    """The Markdown summary of a report, for CI logs."""
    s, v = doc["summary"], doc["verdict"]
    lines = [f"# {doc['title']}", "",
             f"**{'PASS' if v['status'] == 'pass' else 'FAIL'}**: {v['text']}. "
             f"{s['passed']}/{s['trials']} trials passed in all; "
             f"{s['faults_detected']}/{s['faults_injected']} faults detected; "
             f"{s['false_positives']} false positive(s); {s['ops']:,} ops.", ""]
    if doc["matrix"]:
        targets = doc["targets"]
        lines += ["## Detection matrix (trials detected / trials reached)", "",
                  "| fault | " + " | ".join(targets) + " |",
                  "|---|" + "---|" * len(targets)]
        for row in doc["rows"]:
            lines.append(f"| {row} | " + " | ".join(
                cell_text(doc["matrix"][row].get(t)) for t in targets) + " |")
    if doc["throughput_ops_per_s"]:
        lines += ["", "## Throughput (ops/s per trial: median ± robust sd)", "",
                  "| target | median | sd | trials |", "|---|---|---|---|"]
        for t, th in doc["throughput_ops_per_s"].items():
            if th.get("n"):
                lines.append(f"| {t} | {th['median']:,.0f} | {th['sd']:,.0f} | {th['n']} |")
    if doc.get("leak_sites"):
        lines += ["", "## Leaks by site (NMM's leak reports)", "",
                  "| site | target | blocks | bytes | trials | seeds |",
                  "|---|---|---|---|---|---|"]
        for e in doc["leak_sites"][:20]:
            seeds = ", ".join(str(s) for s in e["seeds"][:8]) + (
                ", ..." if len(e["seeds"]) > 8 or e["trials"] > len(e["seeds"]) else "")
            what = "" if e["category"] == "lost" else f" ({e['category']})"
            lines.append(f"| `{e['site']}`{what}"
                         f" | {e['target']} | {e['blocks']:,} | {e['bytes']:,} | {e['trials']} "
                         f"| {seeds} |")
        if len(doc["leak_sites"]) > 20:
            lines.append(f"| ... {len(doc['leak_sites']) - 20} more in result.json | | | | | |")
    log_notes = [(t, n) for t in doc["trials"] for n in ((t.get("report_log") or {})
                                                         .get("notes") or [])]
    if doc.get("pct_guarantee"):
        lines += ["", "## Controlled scheduler (pct)", ""]
        lines += [f"- {g['text']} (k: the longest of {g['trials']} trial(s); median "
                  f"{g['steps_median']:,} steps)" for g in doc["pct_guarantee"]]
    if len(doc["runs"]) > 1:
        lines += ["", "## Trend (failed trials per run)", ""]
        lines += [f"- {rid}: {n} failed" for rid, n in
                  zip(doc["trends"]["runs"], doc["trends"]["failed"], strict=True)]
    if doc["failures"]:
        lines += ["", f"## Failures ({len(doc['failures'])})", ""]
        for f in doc["failures"][:50]:
            tag = "" if f["gating"] else " (comparison target)"
            lines.append(f"- {f['plan']} seed {f['seed']} on {f['target']}{tag}: "
                         f"**{f['outcome']}** — " + "; ".join(f["reasons"])[:300])
            report = f.get("report")
            if report and report["frames"]:
                lines.append(f"  {report['kind']} at `{report['frames'][0]}`"
                             + (f", allocated at `{report['allocated_at']}`"
                                if report["allocated_at"] else ""))
            lines.append(f"  replay: `{f['replay']}`")
        if len(doc["failures"]) > 50:
            lines.append(f"- ... {len(doc['failures']) - 50} more in report.json")
    if doc.get("coverage"):
        from harness.coverage import render_markdown as coverage_markdown

        lines += ["", coverage_markdown(doc["coverage"]).rstrip()]
    notes = [n for run in doc["runs"] for n in run["notes"]]
    notes += [f"seed {t['seed']} on {t['target']}: report log: {n}" for t, n in log_notes[:20]]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def render_junit(doc: dict[str, Any]) -> str:
    """JUnit XML: one test suite per plan and target, one test case per trial
    (``plan[seed]``); comparison targets' failures are reported as skipped, not failed."""
    failures = {f["key"]: f for f in doc["failures"]}
    suites: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    latest = doc["runs"][-1]["id"]
    for t in doc["trials"]:
        if t["run"] == latest:
            suites[(t["plan"], t["target"])].append(t)
    root = ET.Element("testsuites", name=doc["title"])
    for (plan, target), trials in suites.items():
        suite = ET.SubElement(root, "testsuite", name=f"{plan} @ {target}",
                              tests=str(len(trials)))
        n_fail = n_skip = 0
        for t in trials:
            case = ET.SubElement(suite, "testcase", classname=f"{plan}.{target}",
                                 name=f"{plan}[{t['seed']}]", time=f"{t['wall_s']:.3f}")
            f = failures.get(t["key"])
            if f is None:
                continue
            message = f"{f['outcome']}: " + "; ".join(f["reasons"])
            if f["gating"]:
                n_fail += 1
                el = ET.SubElement(case, "failure", message=message[:500], type=f["outcome"])
                el.text = f"{message}\nreplay: {f['replay']}"
            else:
                n_skip += 1
                ET.SubElement(case, "skipped", message=f"comparison target: {message}"[:500])
        suite.set("failures", str(n_fail))
        suite.set("skipped", str(n_skip))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_report(doc: dict[str, Any], out_dir: str | Path, runs: Sequence[LoadedRun]
                 ) -> dict[str, Path]:
    """Write ``result.json``, ``summary.md``, ``junit.xml`` and ``report.html`` into
    ``out_dir`` (each atomically); returns their paths."""
    from harness.html import render_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "result.json", "markdown": out / "summary.md",
             "junit": out / "junit.xml", "html": out / "report.html"}
    _atomic_write(paths["json"], json.dumps(doc, indent=1) + "\n")
    _atomic_write(paths["markdown"], render_markdown(doc))
    _atomic_write(paths["junit"], render_junit(doc))
    _atomic_write(paths["html"], render_html(doc, runs))
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
