"""Reproducing concurrency bugs from a seed (design.md "Reproduction", issue 9): a trial's
identity, its failure signature, schedule traces, failure artifacts, ``replay`` and
``hunt``. Shrinking is ``harness.shrink``; the CLI is ``harness._cli_chaos``.

A controlled trial (``[scheduler] kind`` pct, pos, surw or random) runs on the chaos
build's driver with ``--schedule-out``: the schedule it took comes back as a trace (the
worker chosen at each step, run-length encoded; ``NMMSCHED 1`` in sched.c). A failing
trial is saved as an *artifact*: its identity (plan hash and overrides, seed, target and
options, build id, scheduler and parameters), the plan itself, the trace and the failure
signature (outcome, event kind, site). ``replay`` runs it again following the trace and
says whether the same signature came back, and at which step the trace stopped matching
when the code changed. Nothing here prints.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.engine import NativeEngine
from harness.errors import HarnessError
from harness.guarantee import pct_guarantee as pct_guarantee
from harness.guarantee import pct_guarantee_line as pct_guarantee_line
from harness.identity import build_id, trial_identity
from harness.plan import NmmTarget, Plan
from harness.records import TrialRecord

#: the artifact format this module writes and reads
ARTIFACT_VERSION = 1
#: the schedule trace's first bytes (harness/native/sched.c)
SCHEDULE_MAGIC = b"NMMSCHED 1"
#: the strategies ``hunt --strategy auto`` rotates through, one per seed
AUTO_STRATEGIES: tuple[str, ...] = ("pct", "pos", "surw", "random")
STRATEGIES: tuple[str, ...] = ("auto", "pct", "pos", "surw", "random", "free")

_ROOT = Path(__file__).resolve().parent.parent


class ChaosError(HarnessError):
    """Bad input to replay, shrink or hunt: an unreadable artifact, an unknown mutant."""


# ------------------------------------------------------------------ identity


def mutant_names() -> list[str]:
    """The mutants of the chaos build (chaos.h's NMM_MUTANTS list)."""
    header = _ROOT / "allocator" / "src" / "chaos.h"
    if not header.is_file():
        return []
    text = header.read_text()
    start = text.find("#define NMM_MUTANTS(X)")
    end = text.find("NMM_MUTANT_ENUM_", start)
    import re

    return re.findall(r"\bX\((\w+),", text[start:end])


def with_mutant(plan: Plan, mutant: str | None) -> Plan:
    """``plan`` with ``target.options.mutant`` set (``ChaosError`` naming the known ones
    for an unknown name; None: unchanged)."""
    if mutant is None:
        return plan
    known = mutant_names()
    if known and mutant not in known:
        raise ChaosError(f"--mutant {mutant}: unknown mutant; expected one of "
                         f"{', '.join(known)}")
    if not isinstance(plan.target, NmmTarget):
        raise ChaosError(f"--mutant {mutant}: mutants are in the NMM heap; the plan's "
                         f"target is {plan.target.label}")
    doc = plan.model_dump(mode="json")
    doc["target"]["options"] = {**doc["target"].get("options", {}), "mutant": mutant}
    return Plan.model_validate(doc)


def with_strategy(plan: Plan, kind: str, depth: int | None = None) -> Plan:
    """``plan`` under another scheduler kind (pct's depth kept or given)."""
    doc = plan.model_dump(mode="json")
    old = doc.get("scheduler") or {}
    sched: dict[str, Any] = {"kind": kind}
    if kind == "pct":
        sched["depth"] = depth if depth is not None else old.get("depth") or 3
        if old.get("steps") is not None:
            sched["steps"] = old["steps"]
    if kind != "free" and old.get("max_steps") is not None:
        sched["max_steps"] = old["max_steps"]
    if kind == "pos" and old.get("pos_p") is not None:
        sched["pos_p"] = old["pos_p"]
    doc["scheduler"] = sched
    return Plan.model_validate(doc)


# ------------------------------------------------------------------ signatures


@dataclass(frozen=True)
class Signature:
    """What a failure looks like, independent of addresses and op counts: the trial's
    outcome, the kind of evidence that failed it, and where (a lock, a check, a fault)."""

    outcome: str
    kind: str
    site: str = ""

    def text(self) -> str:
        return f"{self.outcome} / {self.kind}" + (f" / {self.site}" if self.site else "")

    def as_dict(self) -> dict[str, str]:
        return {"outcome": self.outcome, "kind": self.kind, "site": self.site}


def signature_of(record: TrialRecord) -> Signature | None:
    """The failure signature of a trial, or None when it passed."""
    verdict, obs = record.verdict, record.observation
    if verdict.passed:
        return None
    if obs.sched_stop is not None:
        waits = sorted({str(t.get("waiting_for")) for t in obs.sched_stop.get("threads", ())
                        if t.get("state") == "blocked"})
        return Signature(verdict.outcome, str(obs.sched_stop.get("outcome")), ", ".join(waits))
    for f in verdict.faults:
        if not f.ok:
            return Signature(verdict.outcome, f"fault {f.kind}", f.outcome)
    if verdict.false_positives:
        return Signature(verdict.outcome, "false-positive", verdict.false_positives[0].kind)
    for check in verdict.checks:
        if not check.ok:
            site = ""
            if check.name == "pattern" and obs.details:
                site = str(getattr(obs.details[0], "what", "") or "")
            return Signature(verdict.outcome, f"check {check.name}", site)
    if obs.signal is not None:
        return Signature(verdict.outcome, "signal", str(obs.signal))
    return Signature(verdict.outcome, "exit", str(obs.exit_code))


# ------------------------------------------------------------------ schedule traces


@dataclass(frozen=True)
class Schedule:
    """A schedule trace: which worker ran at each step, as runs ``(worker, steps)``."""

    threads: int
    kind: str
    runs: tuple[tuple[int, int], ...]

    @property
    def steps(self) -> int:
        return sum(n for _, n in self.runs)

    @property
    def preemptions(self) -> int:
        """Switches between runs (an upper bound on the preemptions: a switch away from
        a worker that blocked or ended is not one)."""
        return max(0, len(self.runs) - 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> Schedule:
        head, sep, body = data.partition(b"\n")
        if not head.startswith(SCHEDULE_MAGIC + b" ") or not sep:
            raise ChaosError("not a schedule trace of version 1 (its first line should "
                             f"start with {SCHEDULE_MAGIC.decode()!r})")
        fields = dict(part.split("=", 1) for part in head.decode().split()[2:] if "=" in part)
        values: list[int] = []
        x = shift = 0
        for byte in body:
            x |= (byte & 0x7F) << shift
            if byte & 0x80:
                shift += 7
                continue
            values.append(x)
            x = shift = 0
        if shift or len(values) % 2:
            raise ChaosError(f"schedule trace truncated after {len(values) // 2} runs")
        runs = tuple(zip(values[0::2], values[1::2], strict=True))
        return cls(int(fields.get("threads", 0)), fields.get("kind", "?"), runs)

    def to_bytes(self) -> bytes:
        out = bytearray(f"{SCHEDULE_MAGIC.decode()} threads={self.threads} "
                        f"kind={self.kind}\n".encode())
        for value in (v for run in self.runs for v in run):
            while value >= 0x80:
                out.append((value & 0x7F) | 0x80)
                value >>= 7
            out.append(value)
        return bytes(out)


# ------------------------------------------------------------------ running one trial


class _TracedEngine(NativeEngine):
    """The native engine with the scheduler's trace options appended."""

    def __init__(self, extra: Sequence[str], command: Sequence[str] | None = None) -> None:
        super().__init__(command)
        self.extra = list(extra)

    def argv(self, plan: Plan, seed: int) -> list[str]:
        return [*super().argv(plan, seed), *self.extra]


@dataclass
class TrialRun:
    """One trial run by this module: its record, the schedule it took (controlled
    trials), its signature, and the step where a followed schedule stopped matching."""

    record: TrialRecord
    schedule: Schedule | None
    signature: Signature | None
    diverged_at: int | None = None
    argv: tuple[str, ...] = ()


def run_trial(plan: Plan, seed: int, *, follow: Schedule | None = None,
              after: str = "seeded", command: Sequence[str] | None = None,
              driver_extra: Sequence[str] = ()) -> TrialRun:
    """Run one trial of ``plan`` (a controlled one records its schedule; ``follow``
    replays one, ``after`` deciding what runs once it ends or diverges;
    ``driver_extra``: more scheduler options, e.g. ``--yield-log FILE``)."""
    with tempfile.TemporaryDirectory(prefix="nmm-chaos-") as tmp:
        extra: list[str] = list(driver_extra)
        out = Path(tmp) / "out.trace"
        if plan.scheduler.controlled:
            extra += ["--schedule-out", str(out)]
            if follow is not None:
                src = Path(tmp) / "in.trace"
                src.write_bytes(follow.to_bytes())
                extra += ["--schedule-in", str(src), "--after-schedule", after]
        engine = _TracedEngine(extra, command)
        record = engine.run(plan, seed)
        schedule = None
        if plan.scheduler.controlled and out.is_file() and out.stat().st_size:
            try:
                schedule = Schedule.from_bytes(out.read_bytes())
            except ChaosError:
                schedule = None
        argv = tuple(record.observation.argv)
    sched = record.observation.result.sched if record.observation.result else None
    diverged = sched.get("diverged_at") if isinstance(sched, dict) else None
    return TrialRun(record, schedule, signature_of(record),
                    int(diverged) if isinstance(diverged, int) else None, argv)


# ------------------------------------------------------------------ artifacts


@dataclass
class Artifact:
    """A failing trial, saved to be replayed and shrunk."""

    identity: dict[str, Any]
    plan: dict[str, Any]
    seed: int
    signature: Signature
    schedule: Schedule | None = None
    witness: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def plan_model(self) -> Plan:
        try:
            return Plan.model_validate(self.plan)
        except ValidationError as exc:
            raise ChaosError(f"the artifact's plan no longer validates: "
                             f"{exc.errors()[0].get('msg')}") from None

    def to_json(self) -> dict[str, Any]:
        sched = None
        if self.schedule is not None:
            raw = self.schedule.to_bytes()
            sched = {"version": 1, "encoding": "zlib+base64 of the NMMSCHED 1 trace",
                     "threads": self.schedule.threads, "kind": self.schedule.kind,
                     "steps": self.schedule.steps, "runs": len(self.schedule.runs),
                     "data": base64.b64encode(zlib.compress(raw, 9)).decode()}
        return {"artifact_version": ARTIFACT_VERSION, "identity": self.identity,
                "seed": self.seed, "signature": self.signature.as_dict(), "plan": self.plan,
                "schedule": sched, "witness": self.witness, "reasons": self.reasons}

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        p = Path(path)
        try:
            doc = json.loads(p.read_text())
        except FileNotFoundError:
            raise ChaosError(f"{p}: no such artifact file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ChaosError(f"{p}: not a chaos artifact (not JSON: {exc})") from None
        if not isinstance(doc, dict) or "artifact_version" not in doc:
            raise ChaosError(f"{p}: not a chaos artifact (no artifact_version)")
        if doc["artifact_version"] != ARTIFACT_VERSION:
            raise ChaosError(f"{p}: artifact_version {doc['artifact_version']!r}; this "
                             f"nmm-chaos reads version {ARTIFACT_VERSION}")
        try:
            sig = doc["signature"]
            schedule = None
            if doc.get("schedule"):
                raw = zlib.decompress(base64.b64decode(doc["schedule"]["data"]))
                schedule = Schedule.from_bytes(raw)
            return cls(identity=dict(doc["identity"]), plan=dict(doc["plan"]),
                       seed=int(doc["seed"]),
                       signature=Signature(str(sig["outcome"]), str(sig["kind"]),
                                           str(sig.get("site", ""))),
                       schedule=schedule, witness=list(doc.get("witness") or []),
                       reasons=list(doc.get("reasons") or []))
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise ChaosError(f"{p}: damaged chaos artifact ({type(exc).__name__}: {exc})"
                             ) from None


def artifact_of(plan: Plan, run: TrialRun, overrides: Sequence[str] = ()) -> Artifact:
    """The artifact of a failing trial (``run.signature`` must be set)."""
    assert run.signature is not None
    doc = plan.model_dump(mode="json")
    doc["seed"], doc["seeds"] = run.record.seed, 1
    from harness.witness import witness_lines

    return Artifact(identity=trial_identity(plan, run.record.seed, overrides), plan=doc,
                    seed=run.record.seed, signature=run.signature, schedule=run.schedule,
                    witness=witness_lines(plan, run), reasons=list(run.record.verdict.reasons))


# ------------------------------------------------------------------ replay


@dataclass
class ReplayResult:
    """The runs of one replay: each one's signature and divergence step."""

    artifact: Artifact
    runs: list[TrialRun]
    build_changed: bool

    @property
    def matched(self) -> int:
        return sum(1 for r in self.runs if r.signature == self.artifact.signature)


def replay(artifact: Artifact, times: int = 1, *,
           on_run: Callable[[int, TrialRun], None] | None = None) -> ReplayResult:
    """Run an artifact ``times`` times, following its schedule (a controlled trial)."""
    plan = artifact.plan_model()
    identity = artifact.identity
    changed = identity.get("build_id") not in (None, "unknown", build_id(
        str(identity.get("build", "chaos"))))
    runs = []
    for i in range(times):
        run = run_trial(plan, artifact.seed, follow=artifact.schedule)
        runs.append(run)
        if on_run is not None:
            on_run(i, run)
    return ReplayResult(artifact, runs, bool(changed))


# ------------------------------------------------------------------ hunt


@dataclass
class HuntResult:
    """How a hunt ended: the seeds tried, and the first failing trial (if any)."""

    plan: Plan
    tried: int
    found: TrialRun | None
    strategy_of_found: str | None
    seeds: list[int]


def calibrated_steps(run: TrialRun) -> int | None:
    """The steps a controlled trial took (its result line's, else its trace's): pct's k
    calibrated on the trial itself."""
    result = run.record.observation.result
    sched = result.sched if result is not None else None
    steps = (sched or {}).get("steps") if isinstance(sched, dict) else None
    if isinstance(steps, int) and steps > 0:
        return steps
    return run.schedule.steps if run.schedule is not None and run.schedule.steps else None


def with_steps(plan: Plan, steps: int) -> Plan:
    """``plan`` with pct's expected steps k set."""
    doc = plan.model_dump(mode="json")
    doc["scheduler"] = {**doc["scheduler"], "steps": steps}
    return Plan.model_validate(doc)


def strategy_for(strategy: str, index: int) -> str:
    """The scheduler kind of the index-th seed of a hunt (``auto`` rotates)."""
    if strategy == "auto":
        return AUTO_STRATEGIES[index % len(AUTO_STRATEGIES)]
    return strategy


def journal_line(path: Path, line: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (a trial that kills the machine leaves it)."""
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def hunt(plan: Plan, *, strategy: str = "auto", max_seeds: int = 100, start_seed: int = 1,
         depth: int | None = None, journal: Path | None = None,
         on_trial: Callable[[int, int, str, TrialRun], None] | None = None,
         calibrate: bool = False) -> HuntResult:
    """Try seeds ``start_seed, start_seed+1, ...`` until a trial fails or ``max_seeds``
    were tried. Each seed runs under ``strategy`` (``auto``: pct, pos, surw and random
    in turn). With ``journal``, each trial's identity is appended (fsynced) before it
    starts (``trial_start``), and its signature after (``trial_end``).

    ``calibrate`` (pct, when the plan gives no ``steps``): the first pct trial runs with
    the driver's guess k = threads * ops * 10 and the later ones with k = the steps that
    trial took, spreading the change points over the whole run. Off by default: on the
    mutant plans (k 4-5x short of the steps on the fork and churn plans) it took more
    seeds for pct d2, not fewer (their windows come early; issue 9 notes)."""
    if strategy not in STRATEGIES:
        raise ChaosError(f"--strategy {strategy}: expected one of {', '.join(STRATEGIES)}")
    variants = {kind: with_strategy(plan, kind, depth) for kind in
                (AUTO_STRATEGIES if strategy == "auto" else (strategy,))}
    seeds: list[int] = []
    for i in range(max_seeds):
        seed = (start_seed + i) % (1 << 64)
        kind = strategy_for(strategy, i)
        if journal is not None:
            journal_line(journal, {"type": "trial_start",
                                   "identity": trial_identity(variants[kind], seed)})
        run = run_trial(variants[kind], seed)
        if calibrate and kind == "pct" and plan.scheduler.steps is None:
            k = calibrated_steps(run)
            if k and variants[kind].scheduler.steps is None:
                variants[kind] = with_steps(variants[kind], k)
        if journal is not None:
            journal_line(journal, {"type": "trial_end", "seed": seed,
                                   "signature": run.signature.as_dict() if run.signature
                                   else None})
        seeds.append(seed)
        if on_trial is not None:
            on_trial(i + 1, seed, kind, run)
        if run.signature is not None:
            return HuntResult(variants[kind], i + 1, run, kind, seeds)
    return HuntResult(plan, max_seeds, None, None, seeds)


def command_text(argv: Iterable[str]) -> str:
    return shlex.join(list(argv))
