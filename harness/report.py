"""Reports of a run: a versioned JSON result document and a Markdown summary.

``build_document`` turns trial records into the document (summary, detection matrix
fault x target, latency percentiles, RSS series, failures with their replay
command); the HTML report (later) renders the same document. ``write_reports``
puts ``result.json`` and ``summary.md`` under the run directory. Never prints.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.invocation import command_line
from harness.plan import OUTCOMES, Plan
from harness.records import TrialRecord
from harness.runner import replay_overrides

REPORT_VERSION = 1


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


def build_document(plan: Plan, records: Sequence[TrialRecord], *, run_id: str,
                   command: str = "", plan_path: str = "",
                   overrides: Sequence[str] = (),
                   program: Sequence[str] | None = None,
                   run_options: Sequence[str] = ()) -> dict[str, Any]:
    """The versioned JSON result document of one run.

    Replay commands start with ``program`` (default: ``nmm-chaos`` as this process was
    invoked, ``harness.invocation.program()``), so they paste into a shell, and repeat
    ``run_options`` (``--engine python``, ``--driver CMD``: how the trials were run)."""
    outcomes = Counter(r.verdict.outcome for r in records)
    matrix: dict[str, dict[str, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: {o: 0 for o in ("injected", *OUTCOMES)}))
    latency: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for f in r.verdict.faults:
            cell = matrix[f.kind][r.target]
            cell["injected"] += 1
            cell[f.outcome] = cell.get(f.outcome, 0) + 1
            if f.latency_ops is not None:
                latency[f.kind].append(f.latency_ops)
    failures = [r for r in records if not r.verdict.passed]
    op_latency = [r.observation.result.latency_ns for r in records
                  if r.observation.result and r.observation.result.latency_ns]
    return {
        "report_version": REPORT_VERSION,
        "run_id": run_id,
        "command": command,
        "plan": {"name": plan.name, "path": plan_path, "hash": plan.plan_hash(),
                 "overrides": list(overrides), "document": plan.model_dump(mode="json")},
        "summary": {
            "trials": len(records),
            "passed": sum(1 for r in records if r.verdict.passed),
            "failed": len(failures),
            "outcomes": {o: outcomes.get(o, 0) for o in OUTCOMES},
            "faults_injected": sum(len(r.verdict.faults) for r in records),
            "faults_detected": sum(1 for r in records for f in r.verdict.faults
                                   if f.outcome in ("detected", "detected-abort")),
            "false_positives": sum(len(r.verdict.false_positives) for r in records),
            "ops": sum(r.observation.result.ops for r in records if r.observation.result),
            "ops_per_s": percentiles([r.ops_per_s for r in records if r.ops_per_s]),
            "wall_s": round(sum(r.observation.wall_s for r in records), 3),
        },
        "detection_matrix": {kind: dict(targets) for kind, targets in sorted(matrix.items())},
        "detection_latency_ops": {kind: percentiles(vals) for kind, vals in
                                  sorted(latency.items())},
        "op_latency_ns": {key: percentiles([d[key] for d in op_latency if key in d])
                          for key in ("p50", "p99", "p999", "max")} if op_latency else {},
        "trials": [_trial_entry(r) for r in records],
        "failures": [{"key": r.key, "seed": r.seed, "target": r.target,
                      "outcome": r.verdict.outcome, "reasons": list(r.verdict.reasons),
                      "replay": replay_command(plan, r, plan_path=plan_path,
                                               overrides=overrides, program=program,
                                               run_options=run_options)}
                     for r in failures],
    }


def replay_command(plan: Plan, record: TrialRecord, *, plan_path: str = "",
                   overrides: Sequence[str] = (), program: Sequence[str] | None = None,
                   run_options: Sequence[str] = ()) -> str:
    """The shell command that runs ``record``'s trial again, alone: ``nmm-chaos run PLAN``
    (named as invoked, or ``program``) with the run's ``--set`` overrides (its seed
    range left out), ``run_options`` (``--engine``, ``--driver``), ``--seed N --seeds 1``
    and, for a timed trial, the op counts that pin its streams."""
    kept = [o for o in overrides if not o.startswith(("seed=", "seeds="))]
    return command_line("run", plan_path or plan.name, *run_options,
                        *[a for o in kept for a in ("--set", o)],
                        "--seed", str(record.seed), "--seeds", "1",
                        *[a for o in replay_overrides(plan, record) for a in ("--set", o)],
                        prefix=program)


def _trial_entry(r: TrialRecord) -> dict[str, Any]:
    obs = r.observation
    return {
        "key": r.key, "seed": r.seed, "target": r.target, "outcome": r.verdict.outcome,
        "passed": r.verdict.passed, "ops": obs.result.ops if obs.result else None,
        "worker_ops": list(obs.result.worker_ops) if obs.result else None,
        "ops_per_s": r.ops_per_s, "wall_s": obs.wall_s, "exit_code": obs.exit_code,
        "signal": obs.signal, "timed_out": obs.timed_out,
        "faults": [f.model_dump(mode="json") for f in r.verdict.faults],
        "false_positives": len(r.verdict.false_positives),
        "checks": [c.model_dump(mode="json") for c in r.verdict.checks],
        "diagnostic": r.verdict.diagnostic,
        "rss_series": [[s.t_s, s.rss] for s in obs.samples],
        # the driver's own numbers are exact; the sampled series is the fallback
        # for a child that died before its result line
        "peak_rss": max([s.rss for s in obs.samples]
                        + [obs.result.peak_rss if obs.result else 0]),
        "threads_max": max((s.threads for s in obs.samples), default=0),
        "cpu_s": (obs.result.cpu_ns / 1e9 if obs.result and obs.result.cpu_ns
                  else obs.samples[-1].cpu_s if obs.samples else 0.0),
        "latency_ns": obs.result.latency_ns if obs.result else {},
    }


def render_markdown(doc: dict[str, Any]) -> str:
    """A Markdown summary of a result document, for CI logs."""
    s = doc["summary"]
    lines = [f"# nmm-chaos run {doc['run_id']}: {doc['plan']['name']}", "",
             f"**{s['passed']}/{s['trials']} trials passed**, {s['failed']} failed; "
             f"{s['faults_detected']}/{s['faults_injected']} faults detected, "
             f"{s['false_positives']} false positive(s), {s['ops']:,} ops.", ""]
    lines += ["## Outcomes", "", "| outcome | trials |", "|---|---|"]
    lines += [f"| {o} | {n} |" for o, n in s["outcomes"].items() if n]
    if doc["detection_matrix"]:
        targets = sorted({t for row in doc["detection_matrix"].values() for t in row})
        lines += ["", "## Detection matrix (detected / injected)", "",
                  "| fault | " + " | ".join(targets) + " |",
                  "|---|" + "---|" * len(targets)]
        for kind, row in doc["detection_matrix"].items():
            cells = []
            for t in targets:
                c = row.get(t)
                if not c:
                    cells.append("-")
                    continue
                found = c.get("detected", 0) + c.get("detected-abort", 0)
                extra = ", ".join(f"{c[o]} {o}" for o in ("missed", "crashed", "hang")
                                  if c.get(o))
                cells.append(f"{found}/{c['injected']}" + (f" ({extra})" if extra else ""))
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    if doc["detection_latency_ops"]:
        lines += ["", "## Detection latency (ops)", "", "| fault | p50 | p90 | p99 | max |",
                  "|---|---|---|---|---|"]
        for kind, p in doc["detection_latency_ops"].items():
            lines.append(f"| {kind} | " + " | ".join(
                f"{p.get(k, 0):g}" for k in ("p50", "p90", "p99", "max")) + " |")
    if doc["failures"]:
        lines += ["", "## Failures", ""]
        for f in doc["failures"][:50]:
            lines.append(f"- seed {f['seed']} ({f['target']}): **{f['outcome']}** — "
                         + "; ".join(f["reasons"]))
            lines.append(f"  replay: `{f['replay']}`")
    return "\n".join(lines) + "\n"


def write_reports(run_dir: str | Path, doc: dict[str, Any]) -> dict[str, Path]:
    """Write ``result.json`` and ``summary.md`` into ``run_dir`` atomically; return paths."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "result.json", "markdown": out / "summary.md"}
    _atomic_write(paths["json"], json.dumps(doc, indent=1, sort_keys=False) + "\n")
    _atomic_write(paths["markdown"], render_markdown(doc))
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
