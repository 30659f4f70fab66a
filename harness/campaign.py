"""Campaigns: plans x seeds x targets x NMM levels in one run, one journal.

``define`` turns what the user named (plan files, directories or one campaign file;
``--seeds``, ``--targets``, ``--levels``, ``--target-env``, ``--set``) into a
``Definition``, checking everything before anything runs: an unknown target or level, a
peer that is not installed (one line naming its Debian package), a missing library.
The definition holds the resolved plan documents, so ``--resume`` runs the same trials
whatever happened to the files since. ``expand`` lists its trials, each keyed as ``run``
keys them. ``run_campaign`` feeds the missing ones to a pool of workers (local
processes, or a Dask cluster), journals each record as it comes (fsynced), retries a
trial whose worker died once and then records it as an infrastructure failure, never
dropping it. Nothing here prints.

Which trials gate: those of each plan's own target (the configuration its expectations
were written for); the other targets and levels are the comparison (the detection
matrix). ``strict`` makes every trial gate.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import tomllib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import interrupts
from harness._peers import all_targets, not_installed
from harness.engine import Engine, engine_from_spec
from harness.errors import CampaignError, HarnessError
from harness.hangstop import HangStop, skipped_record
from harness.identity import trial_identity
from harness.journal import Journal
from harness.loader import load_plan, plan_files
from harness.plan import LibTarget, MallocTarget, NmmTarget, Plan
from harness.records import Observation, TrialRecord, Verdict
from harness.suggest import did_you_mean

CAMPAIGN_JSON = "campaign.json"
DEFINITION_VERSION = 1
#: the outcome of a trial whose worker died on both tries
INFRA_FAILURE = "infra-failure"
#: tries per trial when its worker dies under it
ATTEMPTS = 2
LEVELS = ("off", "standard", "paranoid")
#: --targets words that stand for several targets
GROUPS = ("plan", "nmm", "peers")
#: fault kinds only an NMM heap can take, and what of it they need
NMM_ONLY_FAULTS = {"alloc_failure": "an NMM heap's fail points",
                   "corrupt_meta": "an NMM heap's own books"}


# ---------------------------------------------------------------- campaign files

class PlanEntry(BaseModel):
    """A plan of a campaign file with its own axes: ``{ path = "../shapes.toml", targets =
    ["plan"], levels = ["off", "standard", "paranoid"] }`` runs that plan at the NMM levels
    only, whatever targets and levels the campaign gives its other plans (a plan of
    NMM-only shapes gains nothing from every peer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(min_length=1)
    targets: tuple[str, ...] | None = Field(default=None, min_length=1)
    levels: tuple[str, ...] | None = None
    split_faults: bool | None = None


class CampaignFile(BaseModel):
    """The ``[campaign]`` table of a campaign file (paths relative to the file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="", max_length=200)
    description: str = ""
    plans: tuple[str | PlanEntry, ...] = Field(min_length=1)
    seeds: int | None = Field(default=None, ge=1, le=100_000)
    targets: tuple[str, ...] = ("plan",)
    levels: tuple[str, ...] | None = None
    target_env: dict[str, str] = Field(default_factory=dict)
    set: tuple[str, ...] = ()
    split_faults: bool = False
    strict: bool = False
    engine: str = "native"


def load_campaign_file(path: str | Path) -> CampaignFile:
    """Read a campaign file; plan paths come back relative to the current directory."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CampaignError(f"{p}: cannot read the campaign file: {exc}") from None
    extra = sorted(set(doc) - {"campaign"})
    if extra:
        raise CampaignError(f"{p}: unknown top-level key {extra[0]!r}; a campaign file holds "
                            "one [campaign] table")
    try:
        spec = CampaignFile.model_validate(doc.get("campaign"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        hint = did_you_mean(str(first["loc"][-1]), CampaignFile.model_fields) if (
            first["type"] == "extra_forbidden") else ""
        raise CampaignError(f"{p}: campaign.{where}: {first['msg']}"
                            + (f"; {hint}" if hint else "")) from None
    plans = tuple(str(_relative(p.parent / plan)) if isinstance(plan, str) else
                  plan.model_copy(update={"path": str(_relative(p.parent / plan.path))})
                  for plan in spec.plans)
    return spec.model_copy(update={"plans": plans, "name": spec.name or p.stem})


def entry_path(entry: str | Path | PlanEntry) -> str:
    """The file of a campaign's plan entry."""
    return entry.path if isinstance(entry, PlanEntry) else str(entry)


def _relative(path: Path) -> Path:
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path.resolve()


# ---------------------------------------------------------------- the definition

class PlanSource(BaseModel):
    """One plan of a campaign: where it came from and what it resolved to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    overrides: tuple[str, ...] = ()
    document: dict[str, Any]
    #: this plan's own axes (a campaign file's plan entry); None: the campaign's
    targets: tuple[str, ...] | None = None
    levels: tuple[str, ...] | None = None
    split_faults: bool | None = None

    @property
    def plan(self) -> Plan:
        """The validated plan (overrides and ``--seeds`` applied)."""
        return Plan.model_validate(self.document)


class Definition(BaseModel):
    """What ``campaign.json`` records: everything needed to list the campaign's trials."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = DEFINITION_VERSION
    name: str
    created: str
    plans: tuple[PlanSource, ...]
    targets: tuple[str, ...]
    levels: tuple[str, ...] | None = None
    target_env: dict[str, str] = Field(default_factory=dict)
    split_faults: bool = False
    strict: bool = False
    engine: dict[str, Any] = Field(default_factory=lambda: {"name": "native"})
    #: targets named by a group that are not installed, and other things left out
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Trial:
    """One trial of a campaign."""

    key: str
    plan: Plan
    seed: int
    #: index of its plan in ``Definition.plans``
    source: int
    #: whether its verdict decides the campaign's (see the module docstring)
    gating: bool


def parse_level(token: str) -> tuple[str, str]:
    """``paranoid+abort`` -> (``paranoid``, ``abort``); ``CampaignError`` if not a level."""
    level, plus, policy = token.strip().partition("+")
    if level not in LEVELS or (plus and policy != "abort"):
        hint = did_you_mean(token, [*LEVELS, *(f"{lv}+abort" for lv in LEVELS)])
        raise CampaignError(f"--levels: given {token!r}; expected off, standard or paranoid, "
                            "each optionally with +abort (paranoid+abort)"
                            + (f"; {hint}" if hint else ""))
    return level, "abort" if plus else "record"


def _nmm_at(own: NmmTarget | None, token: str) -> NmmTarget:
    """An NMM heap at a level token, keeping the plan's own other options."""
    level, policy = parse_level(token)
    options = dict(own.options) if own is not None else {}
    process = dict(own.process_options) if own is not None else {}
    return NmmTarget(level=level, policy=policy, options=options,  # type: ignore[arg-type]
                     process_options=process)


def _peer_names() -> list[str]:
    return [t.name for t in all_targets() if t.driver_target == "malloc"]


def check_targets(tokens: Sequence[str], levels: Sequence[str] | None,
                  target_env: dict[str, str]) -> list[str]:
    """Check every ``--targets`` word (and level) before anything runs; return notes for
    group members left out. ``CampaignError`` names the bad word in one line."""
    if not tokens:
        raise CampaignError("--targets: given an empty list; expected target names "
                            f"({', '.join(GROUPS)}, a peer, nmm:<level> or lib:<path>)")
    for level in levels or ():
        parse_level(level)
    known = {t.name: t for t in all_targets()}
    notes: list[str] = []
    has_lib = False
    for token in tokens:
        kind, _, rest = token.partition(":")
        if token in GROUPS:
            if token == "peers":
                notes += [f"peers: skipped {not_installed(t)}" for t in all_targets()
                          if t.driver_target == "malloc" and not t.installed
                          and t.package]
            continue
        if kind == "nmm" and rest:
            parse_level(rest)
            continue
        if kind == "lib":
            has_lib = True
            if not rest:
                raise CampaignError("--targets lib: expected lib:/path/to/libfoo.so")
            if not Path(rest).is_file():
                raise CampaignError(f"--targets {token}: no such file (a shared library "
                                    "that replaces malloc)")
            continue
        name = rest if kind == "malloc" and rest else token
        target = known.get(name)
        if target is None or target.driver_target != "malloc":
            choices = [*GROUPS, *_peer_names()]
            hint = did_you_mean(name, choices)
            raise CampaignError(f"--targets: unknown target {token!r}; expected one of "
                                f"{', '.join(choices)}, nmm:<level> or lib:<path>"
                                + (f"; {hint}" if hint else ""))
        if not target.installed:
            raise CampaignError(f"--targets {token}: {not_installed(target)}")
    if target_env and not has_lib:
        raise CampaignError("--target-env: applies to lib:<path> targets, and none is given")
    return notes


def _targets_for(own: Any, tokens: Sequence[str], levels: Sequence[str] | None,
                 target_env: dict[str, str]) -> list[Any]:
    """The plan targets a plan runs against, in order, without duplicates."""
    own_nmm = own if isinstance(own, NmmTarget) else None
    own_token = (own.level + ("+abort" if own.policy == "abort" else "")
                 if own_nmm is not None else "standard")
    out: list[Any] = []
    for token in tokens:
        kind, _, rest = token.partition(":")
        if token == "plan":
            out += ([_nmm_at(own_nmm, lv) for lv in levels] if levels and own_nmm is not None
                    else [own])
        elif token == "nmm":
            out += [_nmm_at(own_nmm, lv) for lv in (levels or [own_token])]
        elif kind == "nmm":
            out.append(_nmm_at(own_nmm, rest))
        elif token == "peers":
            out += [MallocTarget(kind="malloc", peer=t.name) for t in all_targets()
                    if t.driver_target == "malloc" and t.installed and (
                        t.package or t.name == "glibc")]
        elif kind == "lib":
            out.append(LibTarget(kind="lib", path=str(Path(rest).resolve()),
                                 env=dict(target_env)))
        else:
            out.append(MallocTarget(kind="malloc", peer=rest if kind == "malloc" else token))
    unique: dict[str, Any] = {}
    for target in out:
        unique.setdefault(target.label, target)
    return list(unique.values())


def fault_row(kind: str, variant: str | None) -> str:
    """A detection-matrix row: the fault kind, with its variant when it has one."""
    return f"{kind}/{variant}" if variant else kind


def _max_ops(target: Any) -> int | None:
    """Ops per worker a peer can take (Electric Fence and DUMA map a page or two per block
    and slow down by orders of magnitude: ``harness._peers`` caps them as bench does)."""
    if not isinstance(target, MallocTarget):
        return None
    for t in all_targets():
        if t.name == target.peer:
            return t.max_ops
    return None


def _retarget(plan: Plan, target: Any) -> Plan | None:
    """``plan`` against ``target``: faults only an NMM heap can take are dropped for other
    targets (None when that leaves a plan with faults none), and a peer's op cap applies
    (the faults land in the smaller window, as in any plan of that many ops)."""
    doc = plan.model_dump(mode="json")
    doc["target"] = target.model_dump(mode="json")
    if not isinstance(target, NmmTarget):
        kept = [f for f in doc["faults"] if f["kind"] not in NMM_ONLY_FAULTS]
        if doc["faults"] and not kept:
            return None
        doc["faults"] = kept
    cap = _max_ops(target)
    if cap is not None and plan.workload.ops_per_worker > cap and plan.workload.worker_ops is None:
        doc["workload"]["ops"] = cap
    return Plan.model_validate(doc)


def _split(plan: Plan) -> list[Plan]:
    """One plan per fault entry (a plan without faults stays whole)."""
    if len(plan.faults) <= 1:
        return [plan]
    rows = [fault_row(f.kind, f.variant) for f in plan.faults]
    out = []
    for i, fault in enumerate(plan.faults):
        row = rows[i] if rows.count(rows[i]) == 1 else f"{rows[i]}#{i}"
        doc = plan.model_dump(mode="json")
        doc["faults"] = [fault.model_dump(mode="json", exclude_none=True)]
        doc["name"] = f"{plan.name}[{row}]"[:200]
        out.append(Plan.model_validate(doc))
    return out


def expand(defn: Definition, engine: Engine | None = None) -> list[Trial]:
    """Every trial of the campaign, in order: plan by plan, target by target, seed by seed."""
    eng = engine or engine_from_spec(defn.engine)
    trials: list[Trial] = []
    for index, source in enumerate(defn.plans):
        base = source.plan
        targets, levels, split = axes(defn, source)
        for target in _targets_for(base.target, targets, levels, defn.target_env):
            plan = _retarget(base, target)
            if plan is None:
                continue
            gating = defn.strict or target == base.target or _level_gates(base, target)
            for part in (_split(plan) if split else [plan]):
                for seed in part.trial_seeds():
                    trials.append(Trial(eng.key(part, seed), part, seed, index, gating))
    return trials


def axes(defn: Definition, source: PlanSource
         ) -> tuple[tuple[str, ...], tuple[str, ...] | None, bool]:
    """The targets, levels and fault splitting one plan of a campaign runs with: its
    entry's own, else the campaign's."""
    targets = source.targets if source.targets is not None else defn.targets
    levels = source.levels if source.levels is not None else defn.levels
    split = source.split_faults if source.split_faults is not None else defn.split_faults
    return targets, levels, split


def _level_gates(base: Plan, target: Any) -> bool:
    """Whether a trial at another NMM level than the plan's own gates: the plan writes
    expectations for that level (``[expect.levels.<level>]``), with its own policy and
    options."""
    own = base.target
    return (isinstance(target, NmmTarget) and isinstance(own, NmmTarget)
            and target.level in base.expect.levels and target.policy == own.policy
            and target.options == own.options
            and target.process_options == own.process_options)


def skipped_pairs(defn: Definition) -> list[str]:
    """Notes on (plan, target) pairs left out: no fault of the plan applies to the target."""
    notes = []
    for source in defn.plans:
        base = source.plan
        targets, levels, _ = axes(defn, source)
        for target in _targets_for(base.target, targets, levels, defn.target_env):
            if _retarget(base, target) is None:
                kinds = dict.fromkeys(f.kind for f in base.faults)
                needs = dict.fromkeys(NMM_ONLY_FAULTS[k] for k in kinds)
                notes.append(f"{base.name} x {target.label}: skipped, its faults "
                             f"({', '.join(kinds)}) need {' and '.join(needs)}")
    return notes


def collect_plans(paths: Iterable[str | Path]) -> list[Path]:
    """Plan files named by ``paths`` (directories give the plans under them, campaign
    files left out); ``CampaignError`` if there are none."""
    found = plan_files(paths)
    if not found:
        raise CampaignError(f"no plans found in {', '.join(str(p) for p in paths)}")
    return found


def define(paths: Sequence[str | Path | PlanEntry], *, name: str | None = None,
           seeds: int | None = None, targets: Sequence[str] = ("plan",),
           levels: Sequence[str] | None = None,
           target_env: dict[str, str] | None = None, overrides: Sequence[str] = (),
           split_faults: bool = False, strict: bool = False,
           engine: Engine | None = None) -> Definition:
    """Check and resolve a campaign: load every plan (``overrides`` and ``seeds`` applied),
    check every target and level, and that the engine can run every (plan, target)."""
    from harness.engine import NativeEngine

    eng = engine or NativeEngine()
    env = dict(target_env or {})
    notes = check_targets(list(targets), levels, env)
    all_overrides = [*overrides, *([f"seeds={seeds}"] if seeds is not None else [])]
    sources = []
    for entry in paths:
        own = entry if isinstance(entry, PlanEntry) else None
        if own is not None:
            notes += check_targets(list(own.targets or targets), own.levels or levels, env)
        for path in collect_plans([entry_path(entry)]):
            plan = load_plan(path, all_overrides)
            sources.append(PlanSource(
                path=str(path), overrides=tuple(overrides),
                document=plan.model_dump(mode="json"),
                targets=own.targets if own else None, levels=own.levels if own else None,
                split_faults=own.split_faults if own else None))
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    defn = Definition(name=name or (Path(entry_path(paths[0])).stem if len(paths) == 1
                                    else "campaign"),
                      created=created, plans=tuple(sources), targets=tuple(targets),
                      levels=tuple(levels) if levels else None, target_env=env,
                      split_faults=split_faults, strict=strict, engine=eng.spec(),
                      notes=tuple(notes))
    checked: set[str] = set()
    for source in defn.plans:
        base = source.plan
        targets, levels, _ = axes(defn, source)
        for target in _targets_for(base.target, targets, levels, env):
            retargeted = _retarget(base, target)
            if retargeted is None:
                continue
            plan = retargeted
            try:
                if target.label not in checked or eng.in_process:
                    eng.check(plan)
                    checked.add(target.label)
                elif isinstance(eng, NativeEngine):
                    eng.argv(plan, plan.seed)
            except HarnessError as exc:
                raise CampaignError(f"{source.path} against {target.label}: {exc}") from None
    notes += skipped_pairs(defn)
    return defn.model_copy(update={"notes": tuple(notes)})


def save_definition(defn: Definition, run_dir: Path) -> None:
    """Write ``campaign.json`` (never over an existing one: a resume keeps the first)."""
    path = run_dir / CAMPAIGN_JSON
    if not path.exists():
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(defn.model_dump(mode="json"), indent=1) + "\n")
        tmp.replace(path)


def load_definition(run_dir: Path) -> Definition:
    """The definition a campaign directory was started with (``CampaignError`` if none)."""
    path = run_dir / CAMPAIGN_JSON
    try:
        return Definition.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise CampaignError(f"--resume {run_dir}: no {CAMPAIGN_JSON} there (not a campaign "
                            "directory)") from None
    except (OSError, ValueError) as exc:
        raise CampaignError(f"{path}: unreadable campaign definition: {exc}") from None


def safe_name(text: str) -> str:
    """``text`` as one path component."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip(".") or "campaign"


# ---------------------------------------------------------------- running

class Pool(Protocol):
    """Where jobs run: ``harness._workers.LocalPool`` or ``harness._dask.DaskPool``."""

    def capacity(self) -> int: ...
    def submit(self, key: str, job_json: str) -> None: ...
    def next_event(self, timeout: float) -> Any: ...
    def describe(self) -> dict[str, Any]: ...


@dataclass
class CampaignResult:
    """A campaign's records, in definition order (journaled ones included)."""

    trials: list[Trial]
    records: list[TrialRecord] = field(default_factory=list)
    skipped: int = 0
    retried: int = 0

    @property
    def gating(self) -> list[TrialRecord]:
        """Records of the trials that decide the verdict."""
        keys = {t.key for t in self.trials if t.gating}
        return [r for r in self.records if r.key in keys]

    @property
    def infra_failures(self) -> list[TrialRecord]:
        """Trials whose worker died on every try."""
        return [r for r in self.records if r.verdict.outcome == INFRA_FAILURE]

    @property
    def passed(self) -> bool:
        """Every gating trial held its expectations and no trial was lost to a dying worker."""
        return all(r.verdict.passed for r in self.gating) and not self.infra_failures


def job_json(trial: Trial, engine_spec: dict[str, Any]) -> str:
    """The job a worker runs for ``trial`` (``harness._workers.execute``)."""
    return json.dumps({"key": trial.key, "plan": trial.plan.model_dump(mode="json"),
                       "seed": trial.seed, "engine": engine_spec}, separators=(",", ":"))


def infra_record(trial: Trial, engine: str, reasons: Sequence[str]) -> TrialRecord:
    """The record of a trial whose worker died on every try: kept, never dropped."""
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    why = "; ".join(reasons)
    return TrialRecord(
        key=trial.key, plan=trial.plan.name, plan_hash=trial.plan.plan_hash(),
        seed=trial.seed, target=trial.plan.target.label, driver=engine, started_at=now,
        observation=Observation(stderr_tail=why),
        verdict=Verdict(outcome=INFRA_FAILURE, passed=False,
                        reasons=(f"infrastructure failure: the worker died on all "
                                 f"{len(reasons)} tries ({why})",)))


RecordCallback = Callable[[TrialRecord], None]


def run_campaign(defn: Definition, journal: Journal, pool: Pool, *,
                 on_record: RecordCallback | None = None,
                 on_retry: Callable[[Trial, str], None] | None = None,
                 poll_s: float = 0.1) -> CampaignResult:
    """Run every trial of ``defn`` that ``journal`` does not hold yet on ``pool``.

    Each record is journaled (fsynced) as it arrives, so a campaign stopped at any point
    (even by SIGKILL) resumes with exactly the missing trials. A trial whose worker died
    is run again once (``on_retry``), then journaled as an ``infra-failure``. A job the
    harness refused (a driver usage error) stops the campaign with ``CampaignError``.
    Interrupts propagate; the caller closes the pool, which ends the trials in flight
    (they were not journaled, so a resume runs them).
    """
    engine = engine_from_spec(defn.engine)
    trials = expand(defn, engine)
    result = CampaignResult(trials=trials)
    done = {r.key: r for r in journal.records}
    todo: deque[Trial] = deque(t for t in trials if t.key not in done)
    result.skipped = len(trials) - len(todo)
    attempts: dict[str, int] = {}
    deaths: dict[str, list[str]] = {}
    in_flight: dict[str, Trial] = {}
    fresh: dict[str, TrialRecord] = {}
    # a target that hangs in every trial has the rest of its trials skipped, not each
    # run into its watchdog (harness.hangstop); a resumed campaign's records count too
    hangs = HangStop()
    by_key = {t.key: t for t in trials}
    for record in done.values():
        if record.key in by_key:
            t = by_key[record.key]
            hangs.note(t.plan.target.label, t.plan.name, record)

    def keep(record: TrialRecord) -> None:
        journal.append(record)
        fresh[record.key] = record
        if on_record is not None:
            on_record(record)

    while todo or in_flight:
        free = pool.capacity()
        while todo and free > 0:
            trial = todo.popleft()
            why = hangs.why_skip(trial.plan.target.label, trial.plan.name)
            if why is not None:
                keep(skipped_record(key=trial.key, plan=trial.plan.name,
                                    plan_hash=trial.plan.plan_hash(), seed=trial.seed,
                                    target=trial.plan.target.label, driver=engine.name,
                                    why=why))
                continue
            attempts[trial.key] = attempts.get(trial.key, 0) + 1
            in_flight[trial.key] = trial
            journal.start(trial.key, trial_identity(trial.plan, trial.seed, (), engine.name))
            pool.submit(trial.key, job_json(trial, defn.engine))
            free -= 1
        with interrupts.deferred():  # Ctrl-C raised in a lock's wait would break it
            event = pool.next_event(poll_s)
        interrupts.raise_if_requested()
        if event is None:
            continue
        if event.key not in in_flight:
            continue  # an answer to a job given up on
        trial = in_flight.pop(event.key)
        if event.died is not None:
            deaths.setdefault(trial.key, []).append(event.died)
            if attempts[trial.key] < ATTEMPTS:
                result.retried += 1
                if on_retry is not None:
                    on_retry(trial, event.died)
                todo.appendleft(trial)
            else:
                keep(infra_record(trial, engine.name, deaths[trial.key]))
            continue
        answer = event.answer or {}
        if "error" in answer:
            raise CampaignError(f"trial {trial.plan.name} seed {trial.seed} against "
                                f"{trial.plan.target.label}: {answer['error']}")
        record = TrialRecord.model_validate(answer["record"])
        if record.key != trial.key:  # a worker of another build keys trials differently
            raise CampaignError(f"a worker answered trial {trial.key} as {record.key}: the "
                                "workers run another version of nmm-chaos")
        hangs.note(trial.plan.target.label, trial.plan.name, record)
        keep(record)
    result.records = [fresh.get(t.key) or done[t.key] for t in trials
                      if t.key in fresh or t.key in done]
    return result
