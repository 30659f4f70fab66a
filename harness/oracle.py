"""The oracle: a pure function from (plan, observation) to a verdict.

It matches every injected fault with exactly one detection of an acceptable kind at
the fault's address, calls every other detection a false positive (unless it is
collateral damage of an injected write), classifies a dead child from its signal and
stderr, runs the integrity checks of a finished trial and applies the plan's
expectations. No I/O, no clock, no randomness: the same inputs give the same verdict.
"""

from __future__ import annotations

import re
import signal as _signal
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.plan import Plan
from harness.records import Check, EventLine, FaultLine, FaultVerdict, Observation, Verdict

#: event kinds that count as detecting each fault kind (at the fault's own address)
ACCEPTED_EVENTS: dict[str, frozenset[str]] = {
    "double_free": frozenset({"double_free"}),
    "invalid_free": frozenset({"invalid_free"}),
    "overflow": frozenset({"overflow", "header_corrupt", "guard_page"}),
    "underflow": frozenset({"underflow", "header_corrupt"}),
    "uaf_write": frozenset({"use_after_free", "freelist_corrupt"}),
    "uaf_read": frozenset({"use_after_free"}),
    "realloc_freed": frozenset({"realloc_freed", "invalid_realloc"}),
    "alloc_failure": frozenset(),
}
#: faults that damage memory; damage may also show up on neighbouring blocks
DAMAGE_FAULTS = frozenset({"overflow", "underflow", "uaf_write"})
#: event kinds that neighbouring damage can cause
_COLLATERAL_KINDS = frozenset({"overflow", "underflow", "header_corrupt", "freelist_corrupt",
                               "use_after_free", "guard_page"})
#: bytes around a reported block that its header, guard and canary may occupy
_SLACK = 64
#: how bad each outcome is, worst first (the trial's outcome is its worst)
SEVERITY: tuple[str, ...] = ("hang", "crashed", "false-positive", "missed", "detected-abort",
                             "detected", "clean")
_DIAG = re.compile(r"^nmm: .*$", re.MULTILINE)
_HEX = re.compile(r"0x[0-9a-fA-F]+")


def find_diagnostic(stderr_tail: str, *, foreign: bool = False) -> str | None:
    """The last one-line ``nmm: ...`` diagnostic in a stderr tail, if any.

    For a foreign allocator (``foreign``) any last non-empty stderr line counts: glibc,
    Scudo and the others each word their one-line report differently.
    """
    hits = _DIAG.findall(stderr_tail)
    if hits:
        return str(hits[-1]).strip()
    if foreign:
        lines = [ln.strip() for ln in stderr_tail.splitlines() if ln.strip()]
        return lines[-1] if lines else None
    return None


def _window(fault: FaultLine, bytes_: int) -> tuple[int, int]:
    """The byte range an injected write may have damaged."""
    if fault.bytes:
        bytes_ = fault.bytes
    if fault.kind == "overflow":
        return fault.address + fault.size, fault.address + fault.size + max(bytes_, 1)
    if fault.kind == "underflow":
        return fault.address - max(bytes_, 1), fault.address
    return fault.address, fault.address + max(fault.size, 1)


def _is_collateral(event: EventLine, fault: FaultLine, bytes_: int) -> bool:
    if fault.kind not in DAMAGE_FAULTS or event.kind not in _COLLATERAL_KINDS:
        return False
    if event.line <= fault.line:
        return False
    lo, hi = _window(fault, bytes_)
    ev_lo = event.address - _SLACK
    ev_hi = event.address + max(event.size, 0) + _SLACK
    return ev_lo < hi and lo < ev_hi


@dataclass
class _Match:
    event: EventLine | None = None
    duplicates: int = 0
    outcome: str | None = None
    note: str = ""
    extra: list[str] = field(default_factory=list)


def judge(plan: Plan, obs: Observation) -> Verdict:
    """Judge one trial: per-fault outcomes, false positives, checks, and pass/fail."""
    faults = sorted(obs.faults, key=lambda f: f.line)
    bytes_by_kind: dict[str, int] = {f.kind: (f.bytes or 1) for f in plan.faults}
    matches = {f.line: _Match() for f in faults}
    false_pos: list[EventLine] = []
    duplicates = collateral = 0

    for event in sorted(obs.events, key=lambda e: e.line):
        candidates = [f for f in faults
                      if f.line < event.line and f.address == event.address
                      and event.kind in ACCEPTED_EVENTS.get(f.kind, frozenset())]
        fresh = [f for f in candidates if matches[f.line].event is None]
        if fresh:
            matches[fresh[0].line].event = event
        elif candidates:
            matches[candidates[-1].line].duplicates += 1
            duplicates += 1
        elif any(_is_collateral(event, f, bytes_by_kind.get(f.kind, 1)) for f in faults):
            collateral += 1
        else:
            false_pos.append(event)

    diagnostic = find_diagnostic(obs.stderr_tail, foreign=plan.target.kind != "nmm")
    died = obs.timed_out or obs.result is None or obs.signal is not None or (
        obs.exit_code not in (0, None))
    trial_level: list[str] = []
    if died:
        death = _death_outcome(obs, diagnostic)
        victim = _victim(faults, matches, diagnostic)
        if victim is not None:
            matches[victim.line].outcome = death
            matches[victim.line].note = _death_note(obs, diagnostic)
        elif death == "detected-abort":
            # a diagnostic with no injected fault to explain it
            trial_level.append("false-positive")
        else:
            trial_level.append(death)

    result = obs.result
    verdicts: list[FaultVerdict] = []
    for f in faults:
        m = matches[f.line]
        allowed = plan.expect.allowed_for(f.kind)
        if m.outcome is not None:
            outcome, note = m.outcome, m.note
        elif f.address == 0 and f.kind not in ("alloc_failure", "invalid_free") and \
                m.event is None:
            outcome, note = "clean", "not performed: no live block to hit"
            allowed = (*allowed, "clean")
        elif f.kind == "alloc_failure" and (died or result is None):
            # the workload could not be seen going on: the trial's end is this fault's too
            outcome = _death_outcome(obs, diagnostic)
            note = "the process ended before the workload finished: " + \
                _death_note(obs, diagnostic)
        elif f.kind == "alloc_failure":
            outcome, note = _alloc_failure_outcome(plan, obs)
        elif m.event is not None:
            outcome, note = "detected", ""
        else:
            outcome = "missed"
            note = "no detection before the process died" if died else "no detection"
        latency = None
        if m.event is not None and m.event.driver_op is not None and \
                m.event.worker in (None, -1, f.worker):
            latency = max(0, m.event.driver_op - f.op)
        verdicts.append(FaultVerdict(
            id=f.id, kind=f.kind, variant=f.variant, address=f.address, outcome=outcome,
            allowed=allowed, event_kind=m.event.kind if m.event else None,
            event_seq=m.event.seq if m.event else None, latency_ops=latency, note=note))

    # damage nobody detected may have landed on a neighbouring live block's pattern
    undetected_damage = sum(1 for f, v in zip(faults, verdicts, strict=True)
                            if f.kind in DAMAGE_FAULTS and v.outcome == "missed")
    checks = _checks(plan, obs, faults, collateral, undetected_damage) \
        if result is not None and not died else ()
    if false_pos:
        trial_level.append("false-positive")
    outcomes = [v.outcome for v in verdicts] + trial_level
    outcome = min(outcomes, key=SEVERITY.index) if outcomes else "clean"

    reasons: list[str] = []
    for v in verdicts:
        if not v.ok:
            reasons.append(f"fault {v.id} ({v.kind}{'/' + v.variant if v.variant else ''}) "
                           f"{v.outcome}, expected {' or '.join(v.allowed)}"
                           + (f": {v.note}" if v.note else ""))
    for level in trial_level:
        if level == "false-positive":
            continue
        if level not in plan.expect.outcome:
            reasons.append(f"trial {level}: {_death_note(obs, diagnostic)}")
    n_fp = len(false_pos) + (1 if "false-positive" in trial_level and not false_pos else 0)
    if n_fp > plan.expect.max_false_positives:
        kinds = ", ".join(sorted({e.kind for e in false_pos})) or f"diagnostic {diagnostic!r}"
        reasons.append(f"{n_fp} false positive(s) ({kinds}), at most "
                       f"{plan.expect.max_false_positives} allowed")
    if duplicates and not plan.expect.allow_duplicate_detections:
        reasons.append(f"{duplicates} duplicate detection(s) of an already detected fault")
    if plan.expect.integrity:
        reasons.extend(f"check {c.name} failed: {c.detail}" for c in checks if not c.ok)
    return Verdict(outcome=outcome, passed=not reasons, faults=tuple(verdicts),
                   false_positives=tuple(false_pos), duplicates=duplicates,
                   collateral=collateral, checks=tuple(checks), reasons=tuple(reasons),
                   diagnostic=diagnostic)


def _death_outcome(obs: Observation, diagnostic: str | None) -> str:
    if obs.timed_out:
        return "hang"
    if diagnostic is not None and obs.signal is not None:
        return "detected-abort"
    return "crashed"


def _death_note(obs: Observation, diagnostic: str | None) -> str:
    return _death_cause(obs, diagnostic) + _reached(obs)


def _reached(obs: Observation) -> str:
    """How far the streamed progress got before the end (empty if it finished)."""
    if obs.result is not None or not obs.last_progress:
        return ""
    ops = obs.last_progress.get("ops")
    return f" (last progress: {ops} ops)" if isinstance(ops, int) else ""


def _death_cause(obs: Observation, diagnostic: str | None) -> str:
    if obs.timed_out:
        return f"no result within the timeout ({obs.wall_s:.1f}s), child killed"
    if obs.signal is not None:
        name = signal_name(obs.signal)
        return f"killed by {name}" + (f" after {diagnostic!r}" if diagnostic else
                                      " with no diagnostic")
    if obs.result is None:
        return f"exited with status {obs.exit_code} without a result line"
    return f"exited with status {obs.exit_code}"


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11, ``signal 99`` for an unknown number."""
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _victim(faults: Sequence[FaultLine], matches: dict[int, _Match],
            diagnostic: str | None) -> FaultLine | None:
    """The injected fault a death is blamed on: the one the diagnostic names, else the last
    undetected one."""
    open_faults = [f for f in faults if matches[f.line].event is None]
    if diagnostic is not None:
        addresses = {int(h, 16) for h in _HEX.findall(diagnostic)}
        named = [f for f in open_faults if f.address in addresses]
        if named:
            return named[-1]
    return open_faults[-1] if open_faults else None


def _alloc_failure_outcome(plan: Plan, obs: Observation) -> tuple[str, str]:
    result = obs.result
    if result is None:
        return "missed", "the process died before the workload finished"
    injected = int(result.stats.get("injected_failures", 0) or 0)
    failures = max(result.alloc_failures, injected)
    if failures == 0:
        return "missed", "the fail point never fired"
    if result.ops < plan.total_ops:
        return "missed", (f"workload stopped after {result.ops} of {plan.total_ops} ops "
                          f"following {failures} failed allocation(s)")
    if result.validate_problems:
        return "missed", f"heap not intact after failures: {result.validate_problems} problems"
    return "detected", f"{failures} allocation(s) failed cleanly, workload went on"


def _checks(plan: Plan, obs: Observation, faults: Sequence[FaultLine],
            collateral: int, undetected_damage: int) -> tuple[Check, ...]:
    result = obs.result
    assert result is not None
    pattern_ok = result.pattern_errors <= undetected_damage
    checks = [Check(name="pattern", ok=pattern_ok,
                    detail="" if pattern_ok else
                    f"{result.pattern_errors} live block(s) with a wrong fill pattern "
                    "(handed out twice or corrupted by the allocator)"
                    + (f"; {undetected_damage} explained by undetected injected damage"
                       if undetected_damage else ""))]
    stats = result.stats
    if all(k in stats for k in ("allocs", "frees", "live_blocks")):
        allocs, frees, live = (int(stats[k]) for k in ("allocs", "frees", "live_blocks"))
        checks.append(Check(name="stats", ok=allocs - frees == live,
                            detail=f"allocs {allocs} - frees {frees} != live {live}"
                            if allocs - frees != live else ""))
    damage = sum(1 for f in faults if f.kind in DAMAGE_FAULTS)
    problems = result.validate_problems
    if problems is not None:
        checks.append(Check(name="validate", ok=problems <= damage,
                            detail=f"{problems} integrity problem(s), {damage} explained by "
                                   "injected damage" if problems > damage else ""))
    leaked = result.leaked_blocks
    if leaked is not None:
        if faults and all(f.leaks is not None for f in faults):
            expected = sum(f.leaks or 0 for f in faults)
            ok = leaked == expected
        else:  # damaged blocks may be retired (never reused), so at most one each
            expected = damage
            ok = leaked <= expected
        checks.append(Check(name="leaks", ok=ok,
                            detail="" if ok else f"{leaked} block(s) leaked, "
                                                 f"{expected} injected"))
    # a neighbour damaged by an injected write is retired when its owner frees it
    unexpected_ok = result.unexpected_status <= collateral
    checks.append(Check(name="unexpected_status", ok=unexpected_ok,
                        detail="" if unexpected_ok else
                        f"{result.unexpected_status} legitimate free/realloc call(s) returned "
                        f"an error, {collateral} explained by collateral damage"))
    completed = result.ops >= plan.total_ops
    checks.append(Check(name="completed", ok=completed,
                        detail="" if completed else f"{result.ops} of {plan.total_ops} ops done"))
    return tuple(checks)
