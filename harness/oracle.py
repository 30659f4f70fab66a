"""The oracle: a pure function from (plan, observation) to a verdict.

Every check compares two pieces of evidence that could disagree (design.md, "Trial →
oracle → verdict"): the faults the plan asked for against the fault lines the driver
printed and performed; a detection against the fault that caused it (an event at the
fault's address with a sequence number after the fault's, and, for a misused call,
its error status); the heap's counters against the driver's own books and a walk of
the heap; every wrong pattern, refused free or walk mismatch against the byte range an
injected write damaged (by address, first one per block); a death against the fault
its one-line diagnostic names. A check computed from the number it checks cannot
fail and has no place here. No I/O, no clock, no randomness: the same inputs give the
same verdict.
"""

from __future__ import annotations

import re
import signal as _signal
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.plan import NmmTarget, Plan
from harness.records import (
    NOT_REACHED,
    WRITING_FAULTS,
    Check,
    DetailLine,
    EventLine,
    FaultLine,
    FaultVerdict,
    Observation,
    ResultLine,
    Verdict,
)

#: event kinds that count as detecting each fault kind (at the fault's own address).
#: uaf_read causes no event: it is judged by the byte it read (``_uaf_read_outcome``).
ACCEPTED_EVENTS: dict[str, frozenset[str]] = {
    "double_free": frozenset({"double_free"}),
    "invalid_free": frozenset({"invalid_free"}),
    # an overflow leaves the block's own header alone: header_corrupt at its address
    # would be a check that misread where the damage is (a broken canary check whose
    # fallback names the header)
    "overflow": frozenset({"overflow", "guard_page"}),
    "underflow": frozenset({"underflow", "header_corrupt"}),
    "uaf_write": frozenset({"use_after_free", "freelist_corrupt"}),
    "uaf_read": frozenset(),
    "realloc_freed": frozenset({"realloc_freed", "invalid_realloc"}),
    "alloc_failure": frozenset(),
    # the freeing call of the wrong family, or a sized delete that does not match
    "dealloc_mismatch": frozenset({"alloc_dealloc_mismatch"}),
    "sized_delete": frozenset({"delete_size_mismatch"}),
    # the copy check before the copy, or (a block it does not look up, a copy that went
    # through unchecked) the canary at the free that follows; a large block's guard page
    "memcpy_overflow": frozenset({"overflow", "guard_page"}),
    # never freed: only a sweep (the final validate, an exit check) sees it
    "exit_only_overflow": frozenset({"overflow", "guard_page"}),
    # paranoid: the access faults in the zero-size area (named before the process dies);
    # standard: the zero-size canary at the free
    "zero_size_write": frozenset({"zero_size_access", "overflow"}),
    # the heap's own books damaged: judged by CORRUPT_REPORTS, not by one event kind
    "corrupt_meta": frozenset(),
}
#: What nmm_validate must report for each shape of damage to the heap's books (a
#: corrupt_meta fault): freelist_corrupt events, each (detail, where) with the detail's
#: meaning in allocator/src/core.h (VALIDATE_*; 1..7 validate.c's block checks) and
#: where: "address" (the fault line's: the slab, block or quarantine entry damaged),
#: "also" (its second address; required only when the line gives one), "none" (a count:
#: no address) or "any" (a slab the walk stopped at). Every report is required; a
#: freelist_corrupt event of the damaged heap that is none of them is a false positive.
CORRUPT_REPORTS: dict[str, tuple[tuple[int | tuple[int, ...], str], ...]] = {
    # pushed twice: its prev is not its predecessor (9), the walk never ends (8, on the
    # slab itself: the only one the cycle holds), the list's length is not its slabs' (11)
    "list_twice": ((9, "address"), (8, "address"), (11, "none")),
    # the first slab met again with another predecessor (9); the bound ends the walk
    # wherever the cycle is then (8); the length (11)
    "list_cycle": ((9, "address"), (8, "any"), (11, "none")),
    # a live block past the bump pointer (20); a slab whose count now asks for another
    # list than the one it is on (10, at the slab: ``also``)
    "free_count": ((20, "address"), (10, "also")),
    # a block reached twice from the free stack (1), and a free block reached by none:
    # freed (6), or never used (7: a cache's refill from the bump pointer given back)
    "freelist_link": ((1, "address"), ((6, 7), "also")),
    "quar_twice": ((13, "address"),),   # one block in two quarantine entries
    "quar_lost": ((14, "address"),),    # a quarantined block in none
    "quar_bytes": ((15, "none"),),
    "limit_charge": ((16, "none"),),
    "live_count": ((17, "none"),),
    "retained": ((12, "none"),),
}
#: faults performed by one call (free, realloc, delete) whose status must say it was
#: caught (zero_size_write: the free of the written block)
CALL_FAULTS = frozenset({"double_free", "invalid_free", "overflow", "underflow",
                         "realloc_freed", "dealloc_mismatch", "sized_delete",
                         "zero_size_write"})
#: faults that damage memory; damage may also show up on neighbouring blocks (a copy
#: the check clamped damages nothing, but one it did not see does)
DAMAGE_FAULTS = WRITING_FAULTS
#: event kinds that neighbouring damage can cause
COLLATERAL_KINDS = frozenset({"overflow", "underflow", "header_corrupt", "freelist_corrupt",
                              "use_after_free", "guard_page"})
#: how bad each outcome is, worst first (the trial's outcome is its worst)
SEVERITY: tuple[str, ...] = ("deadlock", "hang", "crashed", "false-positive", "missed",
                             "detected-abort", "detected", "clean")
#: the driver protocol whose evidence (PROTOCOL.md) this oracle requires in full
PROTOCOL = 2
#: NMM statuses (nmm.h)
NMM_OK = 0
NMM_E_CORRUPTED = 3
#: bytes of an NMM block header below its user pointer; the canary's after the block
_HDR = 8
_CANARY = 8
#: walk_mismatch lines about a block's size: the walk's, or a size query's (PROTOCOL.md)
_SIZE_WHATS = frozenset({"size", "requested_size", "usable_size", "usable_size_checked"})
_DIAG = re.compile(r"^nmm: ")
#: the default heap's line for a bad NMM_OPTIONS piece (options.c say_bad_piece): never
#: why a process died
_BAD_PIECE = re.compile(r"^nmm: NMM_OPTIONS: (.*); ignored, the other keys apply$")
_HELP_HEAD = "NMM_OPTIONS=key=value"
#: the process keys exitleak.c adds to NMM_OPTIONS after the target's own
_EXIT_PROCESS_KEYS = ("leaks", "exitcode", "log_format", "log_path", "suppressions")
_HEX = re.compile(r"0x[0-9a-fA-F]+")


def find_diagnostic(stderr_tail: str, *, foreign: bool = False) -> str | None:
    """The process's last words when they are a diagnostic: the summary line of NMM's
    last report if nothing but that report follows it (an ``nmm: ...`` line, then the
    report's indented stack lines), else for a foreign allocator any last line (glibc,
    Scudo and the others each word their report differently). An ``nmm:`` line followed
    by anything else is an earlier detection's echo, not why the process died.
    """
    lines = [ln.rstrip() for ln in stderr_tail.splitlines() if ln.strip()]
    if not lines:
        return None
    last = len(lines) - 1
    while last > 0 and lines[last][:1].isspace():  # the report's stack lines
        last -= 1
    if _DIAG.match(lines[last]) and not _BAD_PIECE.match(lines[last]):
        return lines[last].strip()
    return lines[-1].strip() if foreign else None


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def event_damage(ev: EventLine) -> tuple[int, int]:
    """Where an event says the damage is (``detail`` is an offset for these kinds:
    detect.c), else the block's whole checked extent (header to canary)."""
    a, d = ev.address, ev.detail
    if ev.kind == "use_after_free" and d == 0:
        # a free or never-used slot's poison covers its header too, and damage there
        # is reported at offset 0 (detect_fresh_damaged clamps it): from the slot's start
        return (a - _HDR, a + 1)
    if ev.kind in ("overflow", "use_after_free"):
        return (a + d, a + d + 1)
    if ev.kind == "underflow":
        return (a - d, a - d + 1) if d else (a - _HDR, a)
    if ev.kind == "header_corrupt":
        return (a - _HDR, a)
    return (a - _HDR, a + max(ev.size, 1) + _CANARY)


def _caused_by(line: int, seq: int | None, fault: FaultLine) -> bool:
    """Whether something seen at stream line ``line`` (an event with ``seq``) can have
    been caused by ``fault``: written after the fault line, and for an event recorded
    after the fault's sequence number (when the driver gives both)."""
    if line <= fault.line:
        return False
    return fault.seq is None or seq is None or seq > fault.seq


#: stream line numbers given to detections read from NMM's own report (``logged_events``):
#: past every line of the driver's stream, whose order they are not part of
_LOGGED_LINE = 1 << 40
_NMM_LINE = re.compile(r"^nmm: ([a-z_]+) at (0x[0-9a-fA-F]+)(?: size (\d+))?(?: \(([^()]*)\))?")
_PAST = re.compile(r"^(\d+) bytes? past the (\d+)-byte block$")
_BEFORE = re.compile(r"^(\d+) bytes? before the ")
_FREED = re.compile(r"^bytes? (\d+)(?:\.\.\d+)? of the freed ")


def _extent_detail(kind: str, size: int, extent: str) -> int:
    """The event ``detail`` a report's extent words stand for (diag.c's
    ``diag_describe_extent``), as ``event_damage`` reads it: an overflow's last damaged
    offset (size + reach - 1), an underflow's distance before the block, a freed block's
    first changed byte; 0 when the words say none of these."""
    if kind == "overflow" and (m := _PAST.match(extent)):
        return int(m.group(2)) + int(m.group(1)) - 1
    if kind == "underflow" and (m := _BEFORE.match(extent)):
        return int(m.group(1))
    if kind == "use_after_free" and (m := _FREED.match(extent)):
        return int(m.group(1))
    return 0


def logged_events(plan: Plan, obs: Observation) -> list[EventLine]:
    """Detections of NMM as the process's malloc (a ``malloc`` or ``lib`` target with
    libnmm_preload.so): the driver cannot drain its events, so they are read from what
    NMM wrote itself, the trial's JSON report log (``report_log.errors``, capped) or its
    ``nmm:`` stderr lines (the tail), whichever holds more. NMM heap targets stream their
    events and get none here. The driver has no NMM sequence number to put on a fault
    line, so these carry no order against the faults (``_LOGGED_LINE``, no ``seq`` for
    ``_caused_by``): a report is matched by its address and kind alone."""
    if plan.target.kind == "nmm":
        return []
    from_log: list[EventLine] = []
    if obs.report_log is not None:
        for i, e in enumerate(obs.report_log.errors):
            from_log.append(EventLine(
                kind=e.kind, address=e.address, size=e.size, seq=e.seq, thread=e.thread,
                detail=_extent_detail(e.kind, e.size, e.extent), line=_LOGGED_LINE + i))
    from_stderr: list[EventLine] = []
    for ln in obs.stderr_tail.splitlines():
        m = _NMM_LINE.match(ln.strip())
        if m is None:
            continue
        kind, size = m.group(1), int(m.group(3) or 0)
        from_stderr.append(EventLine(
            kind=kind, address=int(m.group(2), 16), size=size, seq=len(from_stderr) + 1,
            detail=_extent_detail(kind, size, m.group(4) or ""),
            line=_LOGGED_LINE + len(from_stderr)))
    return from_log if len(from_log) >= len(from_stderr) else from_stderr


def _stream_seq(event: EventLine) -> int | None:
    """An event's sequence number for ordering against fault lines; None for one read
    from NMM's own report (no common sequence with the driver's fault lines)."""
    return None if event.line >= _LOGGED_LINE else event.seq


class _Excuser:
    """Explains trouble on a block by injected damage: something is excused only where
    its address falls inside a damage fault's window, the fault came before it, and no
    earlier trouble of its category on that block was already put down to that fault (a
    block damaged once explains one wrong pattern, one refused free, one event; a second
    is the allocator's). Blocks are reused: an address two faults damaged, once in each
    of two lifetimes, explains one of each."""

    def __init__(self, faults: Sequence[FaultLine]) -> None:
        self.damage = [f for f in faults if f.kind in DAMAGE_FAULTS and f.performed
                       and f.window()[1] > f.window()[0]]
        self.used: set[tuple[str, int, int]] = set()

    def excuse(self, category: str, block: int, where: tuple[int, int], line: int,
               seq: int | None = None) -> FaultLine | None:
        for f in reversed(self.damage):
            if (category, block, f.line) not in self.used and _caused_by(line, seq, f) \
                    and _overlap(where, f.window()):
                self.used.add((category, block, f.line))
                return f
        return None


@dataclass
class _Match:
    event: EventLine | None = None
    duplicates: int = 0
    outcome: str | None = None
    note: str = ""
    extra: list[str] = field(default_factory=list)


def judge(plan: Plan, obs: Observation) -> Verdict:
    """Judge one trial: per-fault outcomes, false positives, checks, and pass/fail."""
    nmm = plan.target.kind == "nmm"
    protocol = int((obs.start or {}).get("protocol", 1) or 1)
    faults = sorted(obs.faults, key=lambda f: f.line)
    matches = {f.line: _Match() for f in faults}
    excuser = _Excuser(faults)
    false_pos: list[EventLine] = []
    duplicates = collateral = 0

    diagnostic = find_diagnostic(obs.stderr_tail, foreign=not nmm)
    died = obs.timed_out or obs.result is None or obs.signal is not None or (
        obs.exit_code not in (0, None))
    logged = logged_events(plan, obs)
    if logged and died and diagnostic is not None:
        # the report the process died of is the death's evidence (as an NMM heap's
        # event that an abort never let the driver drain): judged below by the line
        said = _NMM_LINE.match(diagnostic)
        for i in range(len(logged) - 1, -1, -1):
            if said is not None and logged[i].kind == said.group(1) \
                    and logged[i].address == int(said.group(2), 16):
                del logged[i]
                break
    # NMM is the process's malloc (its own reports were read): a death is blamed on the
    # fault its diagnostic names by address, as for an NMM heap
    names_addresses = nmm or obs.report_log is not None or bool(logged)

    claimed: set[int] = set()
    for f in faults:
        if f.kind == "corrupt_meta" and f.performed:
            duplicates += _match_corrupt(f, obs.events, matches[f.line], claimed, false_pos)

    for event in sorted([*obs.events, *logged], key=lambda e: (e.seq or 0, e.line)):
        if event.line in claimed:
            continue
        candidates = [f for f in faults
                      if f.performed and f.address == event.address
                      and event.kind in ACCEPTED_EVENTS.get(f.kind, frozenset())
                      and _caused_by(event.line, _stream_seq(event), f)]
        if candidates:
            # the most recent fault at the address caused it (blocks are reused)
            cause = max(candidates, key=lambda f: (f.seq or 0, f.line))
            if matches[cause.line].event is None:
                matches[cause.line].event = event
            else:
                matches[cause.line].duplicates += 1
                duplicates += 1
        elif event.kind in COLLATERAL_KINDS and excuser.excuse(
                "event", event.address, event_damage(event), event.line, _stream_seq(event)):
            collateral += 1
        else:
            false_pos.append(event)

    trial_level: list[str] = []
    death = _death_outcome(obs, diagnostic) if died else None
    victim: FaultLine | None = None
    if died:
        abort_policy = nmm and getattr(plan.target, "policy", "record") == "abort"
        victim = _victim(faults, matches, diagnostic, names_addresses, abort_policy)
        if victim is not None and death is not None:
            matches[victim.line].outcome = death
            matches[victim.line].note = _death_note(obs, diagnostic)
        if victim is not None and death == "detected-abort" and protocol >= 2:
            _mark_not_reached(faults, matches, victim)
        elif death == "detected-abort" and _names_detected(faults, matches, diagnostic):
            # the last line repeats a detection the trial already made and survived:
            # it says nothing about why the process died
            trial_level.append("crashed")
        elif death == "detected-abort":
            # a diagnostic that names no injected fault: the allocator saw something
            # nothing here explains
            trial_level.append("false-positive")
        elif death is not None:
            trial_level.append(death)

    result = obs.result
    after_injected = _injected_after(faults, result)
    verdicts: list[FaultVerdict] = []
    for f in faults:
        m = matches[f.line]
        allowed = plan.allowed_for(f.kind)
        outcome, note = _fault_outcome(plan, obs, f, m, died, diagnostic, nmm,
                                       after_injected.get(f.line),
                                       _unexplained_problems(obs, false_pos))
        latency = None
        if m.event is not None and m.event.driver_op is not None and \
                m.event.worker in (None, -1, f.worker):
            latency = max(0, m.event.driver_op - f.op)
        verdicts.append(FaultVerdict(
            id=f.id, kind=f.kind, variant=f.variant, address=f.address, outcome=outcome,
            allowed=allowed, event_kind=m.event.kind if m.event else None,
            event_seq=m.event.seq if m.event else None, latency_ops=latency, note=note))

    cut_short = (died and victim is not None and death is not None
                 and death in plan.allowed_for(victim.kind))
    checks: list[Check] = [_check_performed(plan, obs, faults, cut_short)]
    finished = result is not None and not died
    if finished:
        assert result is not None
        checks += _checks(plan, obs, result, faults, excuser, matches, false_pos, nmm,
                          protocol)
    if false_pos:
        trial_level.append("false-positive")
    outcomes = [v.outcome for v in verdicts if v.outcome != NOT_REACHED] + trial_level
    outcome = min(outcomes, key=SEVERITY.index) if outcomes else "clean"

    reasons: list[str] = []
    for v in verdicts:
        if not v.ok:  # a fault the trial never got to (NOT_REACHED) is ok: no evidence
            reasons.append(f"fault {v.id} ({v.kind}{'/' + v.variant if v.variant else ''}) "
                           f"{v.outcome}, expected {' or '.join(v.allowed)}"
                           + (f": {v.note}" if v.note else ""))
    for level in trial_level:
        if level == "false-positive":
            continue
        if level not in plan.expect.trial_outcomes(plan.nmm_level):
            reasons.append(f"trial {level}: {_death_note(obs, diagnostic)}")
    n_fp = len(false_pos) + (1 if "false-positive" in trial_level and not false_pos else 0)
    if n_fp > plan.expect.max_false_positives:
        kinds = ", ".join(sorted({f"{e.kind} at {e.address:#x}" for e in false_pos})[:5]) \
            or f"diagnostic {diagnostic!r}"
        reasons.append(f"{n_fp} false positive(s) ({kinds}), at most "
                       f"{plan.expect.max_false_positives} allowed")
    if duplicates and not plan.expect.allow_duplicate_detections:
        reasons.append(f"{duplicates} duplicate detection(s) of an already detected fault")
    for c in checks:
        if not c.ok and (plan.expect.integrity or c.name in _ALWAYS):
            reasons.append(f"check {c.name} failed: {c.detail}")
    return Verdict(outcome=outcome, passed=not reasons, faults=tuple(verdicts),
                   false_positives=tuple(false_pos), duplicates=duplicates,
                   collateral=collateral, checks=tuple(checks), reasons=tuple(reasons),
                   diagnostic=diagnostic)


#: checks that hold whatever ``expect.integrity`` says: without them the verdict
#: itself cannot be trusted (faults not performed, evidence lost)
_ALWAYS = frozenset({"performed", "evidence"})


# ------------------------------------------------------------------ faults


def _unexplained_problems(obs: Observation, false_pos: Sequence[EventLine]) -> int:
    """Problems of the final sweep that no injected fault explains: the sweep's count
    less its events (drained by the main thread at the end) the oracle matched to a
    fault or excused as collateral (an overflow of a block kept to the end is one)."""
    problems = obs.result.validate_problems if obs.result is not None else None
    if not problems:
        return 0
    explained = sum(1 for e in obs.events if e.worker == -1 and e not in false_pos)
    return max(0, problems - explained)


def _corrupt_needs(f: FaultLine) -> list[tuple[tuple[int, ...], str]]:
    """The reports a corrupt_meta fault's damage must get (``CORRUPT_REPORTS``): the
    details any one of which will do, and where."""
    return [(d if isinstance(d, tuple) else (d,), where)
            for d, where in CORRUPT_REPORTS.get(f.variant, ()) if where != "also" or f.also]


def _corrupt_fits(f: FaultLine, need: tuple[tuple[int, ...], str], ev: EventLine) -> bool:
    details, where = need
    if ev.detail not in details:
        return False
    return {"address": ev.address == f.address, "also": ev.address == f.also,
            "none": ev.address == 0, "any": ev.address != 0}[where]


def _match_corrupt(f: FaultLine, events: Sequence[EventLine], m: _Match, claimed: set[int],
                   false_pos: list[EventLine]) -> int:
    """Claim the freelist_corrupt events the probes of ``f``'s damaged heap caused (after
    its fault line and sequence number, up to its ``seq_end``): each must be one of the
    shape's reports; what is missing is noted in ``m.extra``. Returns the duplicates."""
    needs = _corrupt_needs(f)
    met: list[bool] = [False] * len(needs)
    duplicates = 0
    mine = [e for e in events if e.kind == "freelist_corrupt" and e.line > f.line
            and f.seq is not None and f.seq_end is not None and f.seq < e.seq <= f.seq_end]
    for ev in sorted(mine, key=lambda e: e.seq):
        claimed.add(ev.line)
        open_ = [i for i, n in enumerate(needs) if not met[i] and _corrupt_fits(f, n, ev)]
        if open_:
            met[open_[0]] = True
            if m.event is None or (needs[open_[0]][1] == "address"
                                   and m.event.address != f.address):
                m.event = ev
        elif any(_corrupt_fits(f, n, ev) for n in needs):
            m.duplicates += 1
            duplicates += 1
        else:
            false_pos.append(ev)  # validate named the damage wrongly (kind or address)
    for (details, where), ok in zip(needs, met, strict=True):
        if not ok:
            at = {"address": f"at {f.address:#x}", "also": f"at {f.also:#x}",
                  "none": "(no address)", "any": "at a slab of the list"}[where]
            m.extra.append(f"detail {' or '.join(map(str, details))} {at}")
    if f.problems is not None and f.problems != len(mine):
        m.extra.append(f"validate counted {f.problems} problem(s) and reported {len(mine)}")
    return duplicates


def _corrupt_outcome(f: FaultLine, m: _Match, died: bool) -> tuple[str, str]:
    """A corrupt_meta fault is detected when validate made every report its shape needs
    (and no other) while the damage was there, and found the heap whole once undone."""
    if f.problems is None:
        return "missed", ("the damaged heap's probes (validate, stats, exit check) never "
                          "finished" + (": the process died" if died else ""))
    if m.extra:
        return "missed", (f"validate on the damaged {f.what or 'books'} did not report: "
                          + "; ".join(m.extra))
    if f.after:
        return "missed", (f"validate found {f.after} problem(s) once the damage was undone: "
                          "the probes left the heap changed")
    return "detected", ""


def _fault_outcome(plan: Plan, obs: Observation, f: FaultLine, m: _Match, died: bool,
                   diagnostic: str | None, nmm: bool,
                   fired: int | None, unexplained: int = 0) -> tuple[str, str]:
    """How one fault ended, and why."""
    if m.outcome is not None:
        return m.outcome, m.note
    if not f.performed:
        what = (f"the fail point {f.fail!r} did not arm" if f.kind == "alloc_failure"
                else f"no such structure on this heap: {f.what}" if f.kind == "corrupt_meta"
                else "no block to hit (the allocation for one failed)")
        return "missed", f"not performed: {what}"
    if f.kind == "corrupt_meta":
        return _corrupt_outcome(f, m, died)
    if f.kind == "alloc_failure":
        if died or obs.result is None:
            return "missed", ("the process ended before the workload finished, so its "
                              "failed allocations could not be seen handled: "
                              + _death_note(obs, diagnostic))
        return _alloc_failure_outcome(plan, obs.result, fired, unexplained)
    if f.kind == "uaf_read":
        if f.read is not None and f.was is not None:
            return _uaf_read_outcome(f)
        if died:
            return "missed", "no detection before the process died"
        return "missed", "the driver did not say what the read returned"
    status_checked = nmm and f.kind in CALL_FAULTS and f.status is not None and f.status >= 0
    if m.event is not None:
        if status_checked and f.status == NMM_OK:
            return "missed", (f"a {m.event.kind} event was recorded but the call returned "
                              "ok: the caller was never told")
        where, window = event_damage(m.event), f.window()
        if f.kind in DAMAGE_FAULTS and f.offset is not None and window[1] > window[0] \
                and not _overlap(where, window):
            return "missed", (f"the {m.event.kind} event points at {where[0] - f.address:+d}.."
                              f"{where[1] - f.address:+d} of the block, the damage was at "
                              f"{window[0] - f.address:+d}..{window[1] - f.address:+d}")
        return "detected", ""
    if status_checked and f.status not in (None, NMM_OK):
        return "missed", (f"the call returned status {f.status} but no event was "
                          "recorded for its address")
    return "missed", "no detection before the process died" if died else "no detection"


def _uaf_read_outcome(f: FaultLine) -> tuple[str, str]:
    """A read of a freed block is caught when it no longer returns the block's data
    (paranoid poisons freed blocks); reading what was there is a miss."""
    assert f.read is not None and f.was is not None
    if f.read == f.was:
        return "missed", (f"the read returned the freed block's old contents "
                          f"({f.read:#04x})")
    return "detected", f"the read returned {f.read:#04x}, not the block's old {f.was:#04x}"


def _injected_after(faults: Sequence[FaultLine], result: ResultLine | None
                    ) -> dict[int, int | None]:
    """Allocations each alloc_failure fault's fail point failed: the heap's injected
    failures from its arming to the next arming (or the end)."""
    armed = sorted((f for f in faults if f.kind == "alloc_failure" and f.armed
                    and f.injected_before is not None),
                   key=lambda f: (f.injected_before or 0, f.line))
    end = int(result.stats.get("injected_failures", 0) or 0) if result else None
    out: dict[int, int | None] = {}
    for i, f in enumerate(armed):
        nxt = armed[i + 1].injected_before if i + 1 < len(armed) else end
        out[f.line] = None if nxt is None else nxt - (f.injected_before or 0)
    for f in faults:  # a protocol-1 line: only the heap's total is known
        if f.kind == "alloc_failure" and f.line not in out and result is not None:
            out[f.line] = end
    return out


def _alloc_failure_outcome(plan: Plan, result: ResultLine, fired: int | None,
                           unexplained: int) -> tuple[str, str]:
    if not fired:
        return "missed", "the fail point never fired (no injected failure counted)"
    short = _short_workers(plan, result)
    if short:
        return "missed", f"the workload did not go on after the failures: {short}"
    if unexplained:
        # damage injected on purpose (a block kept overflowed to the end) is not the
        # failures' doing; anything else the final sweep found is
        return "missed", f"heap not intact after failures: {unexplained} problem(s) no " \
            "injected fault explains"
    return "detected", f"{fired} allocation(s) failed cleanly, workload went on"


# ------------------------------------------------------------------ deaths


def _death_outcome(obs: Observation, diagnostic: str | None) -> str:
    if obs.sched_stop is not None:  # the controlled scheduler stopped it: deadlock, hang
        return str(obs.sched_stop.get("outcome", "hang"))
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
    if obs.sched_stop is not None:
        return sched_stop_text(obs.sched_stop)
    if obs.timed_out and obs.hang:
        h = obs.hang
        return (f"no progress for {h.get('stalled_s')}s in phase {h.get('phase')} "
                f"(ops {h.get('ops')}, step {h.get('step')}), child killed"
                + ("; every thread's stack is in the record" if obs.stacks else ""))
    if obs.timed_out:
        return f"no result within the timeout ({obs.wall_s:.1f}s), child killed"
    if obs.signal is not None:
        name = signal_name(obs.signal)
        return f"killed by {name}" + (f" after {diagnostic!r}" if diagnostic else
                                      " with no diagnostic")
    if obs.result is None:
        return f"exited with status {obs.exit_code} without a result line"
    return f"exited with status {obs.exit_code}"


def sched_stop_text(stop: dict[str, Any]) -> str:
    """One line for a ``sched_stop``: why, at which step, and each worker's last yield
    point, the lock it waits for and the locks it holds."""
    parts = []
    for t in stop.get("threads", ()):
        if t.get("state") == "done":
            continue
        text = f"T{t.get('worker')} {t.get('state')} at {t.get('last_yield') or '?'}"
        if t.get("waiting_for"):
            text += f" waiting for {t['waiting_for']} ({t.get('waiting_at')})"
        held = [f"{h.get('lock')} ({h.get('at')})" for h in t.get("holds", ())]
        if held:
            text += " holding " + ", ".join(held)
        parts.append(text)
    return (f"{stop.get('outcome')}: {stop.get('why')} at step {stop.get('step')}"
            + ("; " + "; ".join(parts) if parts else ""))


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11, ``signal 99`` for an unknown number."""
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _victim(faults: Sequence[FaultLine], matches: dict[int, _Match],
            diagnostic: str | None, nmm: bool, abort_policy: bool = False
            ) -> FaultLine | None:
    """The injected fault a death is blamed on, if any.

    NMM: only a fault the diagnostic (the process's last line) names, by its address
    or an address inside the range it damaged; a death nothing names is the
    allocator's own. Under ``policy=abort`` every detection ends the process, so a
    detected fault the diagnostic names is the one it died of (another worker drained
    its event while the report was being written); otherwise such a line is an echo of
    a detection the process survived. A foreign allocator's report names no address:
    the fault the process died performing (no ``fault_done``), else the latest
    undetected one.
    """
    open_faults = [f for f in faults if matches[f.line].event is None and f.performed
                   and f.kind != "alloc_failure"]
    if diagnostic is None:
        return None
    if nmm:
        addresses = {int(h, 16) for h in _HEX.findall(diagnostic)}

        def named(among: Sequence[FaultLine]) -> list[FaultLine]:
            return [f for f in among if f.address in addresses
                    or any(f.window()[0] <= a < f.window()[1] for a in addresses)]

        hits = named(open_faults)
        if not hits and abort_policy:
            hits = named([f for f in faults if matches[f.line].event is not None])
        return hits[-1] if hits else None
    dying = [f for f in open_faults if not f.done]
    if dying:
        return dying[-1]
    return open_faults[-1] if open_faults else None


def _mark_not_reached(faults: Sequence[FaultLine], matches: dict[int, _Match],
                      victim: FaultLine) -> None:
    """Faults that never had a chance because the process was dying of ``victim``'s
    detection: injected after that detection was recorded (the fault line's ``seq``, the
    heap's latest event before the misuse, already counts it), or whose call had not
    returned when the process died (no ``fault_done``: typically a second worker's misuse
    blocked behind the report the first one's abort was writing). Their detections could
    not be written or drained; judging them "missed" blamed the allocator for the abort.
    """
    dying = matches[victim.line].event
    abort_seq = dying.seq if dying is not None and dying.seq else None
    for f in faults:
        m = matches[f.line]
        if f is victim or m.event is not None or m.outcome is not None or not f.performed \
                or f.kind in ("alloc_failure", "uaf_read"):
            continue
        after = abort_seq is not None and f.seq is not None and f.seq >= abort_seq
        if after or not f.done:
            m.outcome = NOT_REACHED
            m.note = (f"not reached: the process was already dying of fault {victim.id}'s "
                      + (f"detection (event seq {abort_seq}) when this fault was injected"
                         if after else "detection before this fault's call returned"))


def _names_detected(faults: Sequence[FaultLine], matches: dict[int, _Match],
                    diagnostic: str | None) -> bool:
    addresses = {int(h, 16) for h in _HEX.findall(diagnostic or "")}
    return any(matches[f.line].event is not None and f.address in addresses for f in faults)


# ------------------------------------------------------------------ checks


def _planned(plan: Plan) -> Counter[str]:
    counts: Counter[str] = Counter()
    for spec in plan.faults:
        counts[spec.kind] += spec.resolved_count(plan.total_ops)
    return counts


def _check_performed(plan: Plan, obs: Observation, faults: Sequence[FaultLine],
                     cut_short: bool) -> Check:
    """Every fault the plan asks for has its fault line and was performed (a trial
    an allowed detected-abort ended may leave later faults unreached)."""
    planned = _planned(plan)
    printed = Counter(f.kind for f in faults)
    problems: list[str] = []
    start_planned = (obs.start or {}).get("faults_planned")
    if start_planned is not None and int(start_planned) != sum(planned.values()):
        problems.append(f"the driver planned {start_planned} fault(s), the plan asks for "
                        f"{sum(planned.values())}")
    for kind in sorted(set(planned) | set(printed)):
        if printed[kind] > planned[kind]:
            problems.append(f"{printed[kind] - planned[kind]} {kind} fault(s) the plan "
                            "does not ask for")
        unreached = planned[kind] - printed[kind]
        if unreached > 0 and not cut_short:
            problems.append(f"{unreached} of {planned[kind]} {kind} fault(s) never "
                            "performed (no fault line)")
        failed = [f for f in faults if f.kind == kind and not f.performed]
        for f in failed:
            why = (f"fail point {f.fail!r} did not arm" if kind == "alloc_failure"
                   else f"no such structure on this heap ({f.what})"
                   if kind == "corrupt_meta" else "no block to hit")
            problems.append(f"fault {f.id} ({kind}) not performed: {why}")
    ok = not problems
    detail = "; ".join(problems)
    if ok and cut_short and sum(printed.values()) < sum(planned.values()):
        detail = (f"{sum(planned.values()) - sum(printed.values())} planned fault(s) not "
                  "reached: an allowed detected-abort ended the trial first")
    return Check(name="performed", ok=ok, detail=detail)


def _short_workers(plan: Plan, result: ResultLine) -> str:
    """Why the workers' op counts are not what the plan asks for ('' if they are)."""
    w = plan.workload
    floor = w.ops_per_worker
    counts = result.worker_ops
    if not counts:
        return "" if result.ops >= plan.total_ops else \
            f"{result.ops} of {plan.total_ops} ops done"
    if len(counts) != w.threads:
        return f"{len(counts)} worker(s) reported, the plan runs {w.threads}"
    if sum(counts) != result.ops:
        return f"worker op counts sum to {sum(counts)}, the result says {result.ops} ops"
    if w.worker_ops is not None:
        want = list(w.worker_ops)
        return "" if list(counts) == want else \
            f"worker ops {list(counts)}, the replay pins {want}"
    bad = [(i, n) for i, n in enumerate(counts)
           if (n < floor if w.timed else n != floor)]
    if not bad:
        return ""
    i, n = bad[0]
    return (f"worker {i} ran {n} ops, expected {'at least ' if w.timed else ''}{floor}"
            + (f" ({len(bad)} worker(s) off)" if len(bad) > 1 else ""))


def _s(stats: dict[str, Any] | None, key: str) -> int | None:
    if not stats or stats.get(key) is None:
        return None
    return int(stats[key])


def _checks(plan: Plan, obs: Observation, result: ResultLine, faults: Sequence[FaultLine],
            excuser: _Excuser, matches: dict[int, _Match], false_pos: Sequence[EventLine],
            nmm: bool, protocol: int) -> list[Check]:
    checks: list[Check] = []
    details = sorted(obs.details, key=lambda d: d.line)

    # ---- evidence: nothing the verdict rests on was lost on the way
    lost: list[str] = []
    if obs.events_truncated:
        lost.append(f"{obs.events_truncated} event line(s) not kept by the harness")
    if result.detail_lines_dropped:
        lost.append(f"{result.detail_lines_dropped} detail line(s) (pattern/status errors) "
                    "past the driver's cap: errors without an address cannot be matched")
    if nmm:
        dropped = _s(result.stats, "events_dropped")
        if dropped:
            lost.append(f"{dropped} detection(s) dropped by the heap's full event ring")
        seen = len(obs.events) + obs.events_truncated
        recorded = _s(result.stats, "events")
        if result.events != seen:
            lost.append(f"the driver says it wrote {result.events} event(s), "
                        f"{seen} arrived")
        if recorded is not None and recorded != result.events:
            lost.append(f"the heap recorded {recorded} detection(s), the driver drained "
                        f"{result.events}")
    if obs.start is not None and protocol < PROTOCOL:
        # an isolated driver speaks the protocol; the in-process Python driver (no start
        # line) gives what evidence it has, and is judged on that
        lost.append(f"driver protocol {protocol}: without protocol {PROTOCOL}'s evidence "
                    "(fault sequence numbers, statuses, the driver's own books, a heap "
                    "walk) this trial cannot be judged strictly")
    checks.append(Check(name="evidence", ok=not lost, detail="; ".join(lost)))

    # ---- every wrong pattern is injected damage (by address), or the allocator's
    perr = [d for d in details if d.type == "pattern_error"]
    unexplained = [d for d in perr if not _excuse_pattern(excuser, d)]
    bad = [f"{d.what} {(d.source or d.address):#x}+{d.offset}" for d in unexplained]
    count_ok = result.detail_lines_dropped > 0 or len(perr) == result.pattern_errors
    detail = ""
    if bad:
        detail = (f"{len(bad)} block(s) with a wrong fill pattern no injected write explains "
                  f"(handed out twice or corrupted by the allocator): {', '.join(bad[:5])}")
    if not count_ok:
        detail += ("; " if detail else "") + \
            f"{result.pattern_errors} pattern error(s) counted, {len(perr)} named"
    checks.append(Check(name="pattern", ok=not bad and count_ok, detail=detail))

    # ---- every refused legitimate free is a block injected damage hit
    serr = [d for d in details if d.type == "status_error"]
    unexplained = [d for d in serr if not _excuse_status(excuser, d)]
    count_ok = result.detail_lines_dropped > 0 or len(serr) == result.unexpected_status
    detail = ""
    if unexplained:
        detail = (f"{len(unexplained)} legitimate {'/'.join(sorted({d.call for d in serr}))} "
                  "call(s) returned an error no injected write explains: "
                  + ", ".join(f"{d.call}({d.address:#x}) = {d.status}"
                              for d in unexplained[:5]))
    if not count_ok:
        detail += ("; " if detail else "") + \
            f"{result.unexpected_status} refused call(s) counted, {len(serr)} named"
    checks.append(Check(name="status", ok=not unexplained and count_ok, detail=detail))

    # ---- forks: a child that found a wrong pattern, a refused free or died
    forks = [d for d in details if d.type == "fork_failure"]
    checks.append(Check(name="forks", ok=result.fork_failures == 0,
                        detail="" if result.fork_failures == 0 else
                        f"{result.fork_failures} fork child(ren) failed: "
                        + ", ".join(_fork_why(d) for d in forks[:5])))

    # ---- the workload ran what the plan says
    short = _short_workers(plan, result)
    checks.append(Check(name="workload", ok=not short, detail=short))

    checks.append(_check_alloc_failures(plan, result, faults, nmm))
    if not nmm:
        return checks

    # ---- the heap's counters against the driver's own books
    counts = result.counts
    if counts is not None or protocol >= PROTOCOL:
        checks.append(_check_counts(counts or {}, result.stats))
        checks.append(_check_live(plan, result, details, excuser))
    # ---- after teardown every block is gone: counters, walk, bytes
    checks.append(_check_teardown(result))
    # ---- the default heap's leak report at exit: exactly the blocks leaked on purpose
    if plan.workload.exit_leaks:
        checks.append(_check_exit_report(plan, result, obs.exit_report))
        if plan.workload.bad_options:
            checks.append(_check_bad_options(plan, obs.stderr_tail))
        if plan.workload.exit_damage:
            checks.append(_check_exit_damage(plan, result, obs.exit_report))
    # ---- the final sweep: every problem it found is an event the oracle explained
    problems = result.validate_problems
    if problems is not None:
        final = [e for e in obs.events if e.worker == -1]
        explained = sum(1 for e in final if e not in false_pos)
        ok = problems <= explained
        checks.append(Check(name="validate", ok=ok, detail="" if ok else
                            f"{problems} integrity problem(s) found by the final sweep, "
                            f"{explained} explained by injected damage"))
    return checks


def _excuse_pattern(excuser: _Excuser, d: DetailLine) -> bool:
    if d.what not in ("check", "realloc"):
        return False  # a calloc block not zeroed, a misaligned block: the allocator's
    base = d.source if d.source is not None else d.address
    at = base + d.offset
    # a driver that cannot say which byte (offset -1): anywhere in the block
    where = (at, at + 1) if d.offset >= 0 else (base, base + max(d.size, 1))
    # one damage, seen once by a check and once more when realloc copies the damaged
    # bytes forward (the driver checks, then reallocs, in one op): a category each
    return excuser.excuse(f"pattern:{d.what}", base, where, d.line) is not None


def _excuse_status(excuser: _Excuser, d: DetailLine) -> bool:
    if d.status != NMM_E_CORRUPTED:
        return False  # damage makes a block corrupted, never free or unknown
    where = (d.address - _HDR, d.address + max(d.size, 1) + _CANARY)
    return excuser.excuse("status", d.address, where, d.line) is not None


def _fork_why(d: DetailLine) -> str:
    if d.signal is not None:
        return f"killed by {signal_name(d.signal)}"
    return f"exit {d.exit}" + (f" ({d.what})" if d.what else "")


def _injectable(plan: Plan, faults: Iterable[FaultLine]) -> tuple[bool, bool]:
    """(a fail point was armed, the heap has a byte limit)."""
    options = plan.target.options if plan.target.kind == "nmm" else {}
    armed = any(f.kind == "alloc_failure" and f.performed for f in faults) or "fail" in options
    limit = str(options.get("limit", "0")).strip() not in ("", "0")
    return armed, limit


def _check_alloc_failures(plan: Plan, result: ResultLine, faults: Sequence[FaultLine],
                          nmm: bool) -> Check:
    """Every NULL the driver saw is one the allocator counted, and each is explained:
    by a fail point that was armed, or by the heap's limit."""
    armed, limit = _injectable(plan, faults)
    problems: list[str] = []
    if result.fork_alloc_failures and not (armed or limit):
        problems.append(f"{result.fork_alloc_failures} fork child(ren) got NULL with no "
                        "fail point armed and no limit")
    if nmm and result.stats:
        counted = _s(result.stats, "alloc_failures") or 0
        injected = _s(result.stats, "injected_failures") or 0
        edge = result.edge_nulls  # requests that must fail: counted by the heap too
        if counted != result.alloc_failures + edge:
            problems.append(f"the driver saw {result.alloc_failures} NULL(s)"
                            + (f" and {edge} refused edge request(s)" if edge else "")
                            + f", the heap counted {counted} failed allocation(s)")
        if injected > counted:
            problems.append(f"{injected} injected failure(s) but only {counted} failed "
                            "allocation(s)")
        if injected and not armed:
            problems.append(f"{injected} injected failure(s) with no fail point armed")
        if counted - injected - edge > 0 and not limit:
            problems.append(f"{counted - injected - edge} allocation(s) failed with no fail "
                            "point behind them and no limit")
        if result.zero_nulls:
            # C lets malloc(0) return NULL; NMM's contract is a zero-size block
            problems.append(f"{result.zero_nulls} zero-byte request(s) taken as a NULL C "
                            "allows, from an NMM heap, whose zero-byte requests get a block")
    elif result.alloc_failures and not (armed or limit):
        problems.append(f"{result.alloc_failures} allocation(s) returned NULL")
    return Check(name="alloc_failures", ok=not problems, detail="; ".join(problems))


def _check_counts(counts: dict[str, int], stats: dict[str, Any]) -> Check:
    """The heap's allocs and frees against the driver's: equal, up to the reallocs the
    heap counts as an alloc and a free (every moved one must be among them)."""
    allocs, frees = _s(stats, "allocs"), _s(stats, "frees")
    if allocs is None or frees is None or "allocs" not in counts:
        return Check(name="counts", ok=False, detail="missing evidence: the heap's allocs/"
                     "frees or the driver's own counts")
    d_allocs, d_frees = counts.get("allocs", 0), counts.get("frees", 0)
    reallocs, moved = counts.get("reallocs", 0), counts.get("reallocs_moved", 0)
    extra_a, extra_f = allocs - d_allocs, frees - d_frees
    problems = []
    if extra_a != extra_f:
        problems.append(f"heap allocs {allocs} / frees {frees}, driver {d_allocs} / "
                        f"{d_frees}: the differences {extra_a} and {extra_f} must be equal "
                        "(the reallocs the heap counts as an alloc and a free)")
    elif not moved <= extra_a <= reallocs:
        problems.append(f"the heap counts {extra_a} more alloc(s) and free(s) than the "
                        f"driver; its {reallocs} realloc(s), {moved} of them moved, allow "
                        f"{moved}..{reallocs}")
    return Check(name="counts", ok=not problems, detail="; ".join(problems))


def _check_live(plan: Plan, result: ResultLine, details: Sequence[DetailLine],
                excuser: _Excuser) -> Check:
    """Once the workers finished: the driver's live blocks = the heap's live counter =
    the blocks a walk of the heap finds, address by address, with the requested sizes
    the driver asked for."""
    counts = result.counts or {}
    before = result.stats_before or {}
    walk = result.walk
    problems: list[str] = []
    live = counts.get("live_blocks")
    counter = _s(before, "live_blocks")
    if walk is None or live is None or counter is None:
        return Check(name="live", ok=False,
                     detail="missing evidence: the driver's live set, the heap's counters "
                            "or the heap walk before teardown")
    if not live == counter == walk.get("blocks"):
        problems.append(f"live blocks: driver {live}, heap counter {counter}, heap walk "
                        f"{walk.get('blocks')}")
    mism = [d for d in details if d.type == "walk_mismatch"]
    # a header damaged by a fault (an overflow of the block before, an underflow) gives
    # the walk a wrong size: excused per block, and its difference out of the byte total
    excused_sizes = [d for d in mism if d.what in _SIZE_WHATS and excuser.excuse(
        "walk", d.address, (d.address - _HDR, d.address), d.line) is not None]
    excused = len(excused_sizes)
    excused_bytes = sum(d.walk_size - d.size for d in excused_sizes if d.what == "size")
    for key, what in (("unknown", "live in the walk but not the driver's"),
                      ("missing", "the driver's but not live in the walk")):
        if walk.get(key):
            addrs = [f"{d.address:#x}" for d in mism if d.what == key][:3]
            problems.append(f"{walk[key]} block(s) {what}" +
                            (f" ({', '.join(addrs)})" if addrs else ""))
    sizes = int(walk.get("size_mismatch", 0)) - excused
    if sizes > 0:
        addrs = [f"{d.address:#x}: {d.size} != {d.walk_size}"
                 + ("" if d.what == "size" else f" ({d.what})") for d in mism
                 if d.what in _SIZE_WHATS][:3]
        problems.append(f"{sizes} block(s) whose size in the walk (or the heap's "
                        "requested/usable size queries) is not the one requested"
                        + (f" ({', '.join(addrs)})" if addrs else ""))
    exact = plan.target.kind == "nmm" and (plan.target.level != "off" or bool(
        plan.target.options.get("tracking")))
    walk_bytes = walk.get("bytes")
    if walk_bytes is not None:
        walk_bytes -= excused_bytes
    if exact and not problems and walk_bytes != counts.get("live_bytes"):
        problems.append(f"requested bytes live: driver {counts.get('live_bytes')}, heap walk "
                        f"{walk.get('bytes')}"
                        + (f" ({excused_bytes:+} from damaged headers)" if excused_bytes
                           else ""))
    report = result.leak_report  # the heap's leak report: an aggregation of its own
    if report is not None:
        if not report.get("parsed"):
            problems.append("the heap's leak report did not start with its totals "
                            f"({report.get('json_bytes')} bytes)")
        elif report.get("live_blocks") != live:
            problems.append(f"the heap's leak report counts {report.get('live_blocks')} live "
                            f"block(s), the driver holds {live}")
        elif exact and (report.get("live_bytes") is None or report["live_bytes"]
                        - excused_bytes != counts.get("live_bytes")):
            problems.append(f"the heap's leak report counts {report.get('live_bytes')} live "
                            f"byte(s), the driver requested {counts.get('live_bytes')}")
    return Check(name="live", ok=not problems, detail="; ".join(problems))


#: the file name of the site block 4 of an exit_leaks trial is allocated under (the
#: driver's exitleak.c odd_site_file, the same bytes): the JSON leak report must escape
#: it, pass its valid UTF-8 through and replace each byte of an invalid sequence by U+FFFD
ODD_SITE_FILE = (b'nmm-odd/q"b\\t\tn\nc\x01 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 '
                 b"\xff \xc3( \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 end.c")
ODD_SITE_LINE = 4242


def json_text_of(raw: bytes) -> str:
    """What a report that follows the rule above says for ``raw`` once its JSON is parsed:
    each valid UTF-8 sequence (Python's strict decoder: no overlong form, surrogate or
    code point past U+10FFFF) as itself, every other byte as U+FFFD."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        for n in (1, 2, 3, 4):
            try:
                out.append(raw[i:i + n].decode("utf-8"))
            except UnicodeDecodeError:
                continue
            i += n
            break
        else:
            out.append("\ufffd")
            i += 1
    return "".join(out)


def _check_exit_report(plan: Plan, result: ResultLine,
                       report: dict[str, Any] | None) -> Check:
    """The leak report the default heap wrote at exit (read back by the driver) lists
    exactly what the driver leaked after teardown: the suppressed function's blocks as
    suppressed, the chained ones (pointed to only by a lost block) as indirectly lost,
    those the parked threads hold in a register (workload.exit_held) as still reachable,
    the rest as definitely lost (no pointer to them was kept), nothing ungrouped; the
    text report names the lost blocks' function, and, with workload.exit_symbolizer, a
    stack frame of theirs by the allocation's file:line; the JSON report's site of the
    block under an odd file name parses to the oracle's own decoding of its bytes; with a
    stack for every allocation (stacks=1), the stack of the block made in a signal
    handler goes on past the signal frame; with exit_symbolizer, the code-address site
    comes with a frame naming the allocating call by function and file:line."""
    leaked = result.exit_leaks
    if leaked is None:
        return Check(name="exit_leaks", ok=False,
                     detail="the plan asks for leaks at exit; the result line has none "
                            "(a driver without --exit-leaks)")
    if report is None or not report.get("json"):
        return Check(name="exit_leaks", ok=False,
                     detail=f"the driver leaked {leaked.get('blocks')} block(s); no leak "
                            "report came at exit" + (" (no JSON report)" if report else ""))
    supp_blocks = int(leaked.get("suppressed_blocks", 0))
    supp_bytes = int(leaked.get("suppressed_bytes", 0))
    ind_blocks = int(leaked.get("indirect_blocks", 0))
    ind_bytes = int(leaked.get("indirect_bytes", 0))
    held_blocks = int(leaked.get("held_blocks", 0))
    held_bytes = int(leaked.get("held_bytes", 0))
    lost_blocks = int(leaked.get("blocks", 0)) - supp_blocks - ind_blocks
    lost_bytes = int(leaked.get("bytes", 0)) - supp_bytes - ind_bytes
    want = {"definitely_lost": (lost_blocks, lost_bytes), "suppressed": (supp_blocks, supp_bytes),
            "indirectly_lost": (ind_blocks, ind_bytes),
            "still_reachable": (held_blocks, held_bytes), "ungrouped": (0, 0)}
    problems = []
    held = plan.workload.exit_held
    if int(leaked.get("held_threads", 0)) != held:
        problems.append(f"the plan parks {held} thread(s) at exit; the driver says "
                        f"{leaked.get('held_threads', 0)} (a driver without --exit-held)")
    elif held and int(leaked.get("held_started", 0)) != held:
        problems.append(f"only {leaked.get('held_started')} of the {held} threads to park at "
                        "exit started")
    for key, (blocks, nbytes) in want.items():
        got = report.get(key)
        got_pair = ((got or {}).get("blocks"), (got or {}).get("bytes"))
        if got_pair != (blocks, nbytes):
            problems.append(f"{key}: the report says {got_pair[0]} block(s), {got_pair[1]} "
                            f"byte(s); the driver leaked {blocks}, {nbytes}")
    if lost_blocks and not report.get("text_names_lost"):
        problems.append("the text report does not name the lost blocks' function")
    if int(leaked.get("odd_blocks", 0)):
        want_site = f"{json_text_of(ODD_SITE_FILE)}:{ODD_SITE_LINE}"
        if report.get("odd_site") != want_site:
            problems.append(f"the JSON report's site of the block under an odd file name is "
                            f"{report.get('odd_site')!r}, not {want_site!r}")
    every_stack = str(getattr(plan.target, "options", {}).get("stacks", "")) == "1"
    if (int(leaked.get("signal_blocks", 0)) and every_stack
            and not report.get("text_signal_stack_whole")):
        problems.append("the text report's stack of the block made in a signal handler "
                        "stops at the signal frame (no frame of the code that raised it)")
    if (plan.workload.exit_symbolizer is not None and lost_blocks
            and not report.get("text_frame_has_line")):
        problems.append(f"symbolizer={plan.workload.exit_symbolizer}: no frame of the text "
                        "report names the lost blocks' allocation by file:line")
    if (plan.workload.exit_symbolizer is not None and int(leaked.get("pc_blocks", 0))
            and not report.get("json_site_frame")):
        problems.append(f"symbolizer={plan.workload.exit_symbolizer}: the JSON report "
                        "gives the code-address site no frame naming the allocating call "
                        "(exit_leak_blocks at its file:line)")
    return Check(name="exit_leaks", ok=not problems, detail="; ".join(problems))


def _exit_check_on(plan: Plan) -> bool:
    """Whether the trial's heap runs its exit check: ``exit_check`` if the target gives
    it, else on at paranoid (options.c derives it from the level)."""
    target = plan.target
    if not isinstance(target, NmmTarget):
        return False
    given = target.options.get("exit_check")
    if given is None:
        return target.level == "paranoid"
    return str(given).strip().lower() in {"1", "true", "yes", "on"}


def _check_exit_damage(plan: Plan, result: ResultLine, report: dict[str, Any] | None) -> Check:
    """The blocks the driver damaged before the exit (workload.exit_damage): the exit
    check must name each lost block with a flipped canary byte as an overflow at its
    address, at paranoid the freed block written in the quarantine as a use_after_free
    at its address, each exactly once, and name nothing else; with the exit check off
    (or at off, where nothing is damaged) it names nothing."""
    leaked = result.exit_leaks or {}
    damaged, freed = leaked.get("damaged"), leaked.get("freed_written")
    if damaged is None:
        return Check(name="exit_damage", ok=False,
                     detail="the plan asks for damage seen at exit; the result line lists "
                            "no damaged blocks (a driver without --exit-damage)")
    level = plan.target.level if isinstance(plan.target, NmmTarget) else "off"
    problems = []
    if level != "off" and not damaged:
        problems.append(f"no leaked block damaged at {level} (nothing for the exit check "
                        "to name)")
    if level == "paranoid" and not freed:
        problems.append("no freed block written at paranoid")
    errors = (report or {}).get("exit_errors")
    if errors is None:
        problems.append("the exit report lists no exit_errors")
        return Check(name="exit_damage", ok=False, detail="; ".join(problems))
    want: dict[int, str] = {}
    if _exit_check_on(plan) and level != "off":
        want = {int(a, 16): "overflow" for a in damaged}
        if freed:
            want[int(freed, 16)] = "use_after_free"
    named: dict[int, list[str]] = {}
    for err in errors:
        named.setdefault(int(err["address"], 16), []).append(str(err["kind"]))
    for addr, kind in sorted(want.items()):
        got = named.get(addr, [])
        if got != [kind]:
            problems.append(f"the {kind} at {addr:#x}: the exit check named "
                            + (", ".join(got) if got else "nothing") + " there")
    stray = sorted(a for a in named if a not in want)
    if stray:
        problems.append(f"the exit check named {len(stray)} block(s) no one damaged: "
                        f"{named[stray[0]][0]} at {stray[0]:#x}")
    return Check(name="exit_damage", ok=not problems, detail="; ".join(problems))


def _piece_key(piece: str) -> str:
    return piece.split("=", 1)[0].strip()


def _check_bad_options(plan: Plan, stderr: str) -> Check:
    """The default heap's answer to the bad NMM_OPTIONS pieces put before the target's
    own (workload.bad_options): each named on exactly one ``nmm: NMM_OPTIONS: ...;
    ignored, the other keys apply`` line that quotes its key (pieces sharing a key: as
    many such lines as pieces), and no such line for
    anything else (a good key refused); a ``help`` piece brings the key table, with a row
    for every key the trial's NMM_OPTIONS set, and without one no table is printed. That
    the keys after the bad pieces still applied is what the exit report's check shows
    (tracking, leaks, log_path and the suppressions file come after them)."""
    named = [m.group(1) for ln in stderr.splitlines()
             if (m := _BAD_PIECE.match(ln.rstrip()))]
    bad = [p for p in plan.workload.bad_options if _piece_key(p) != "help"]
    problems = []
    claimed: set[int] = set()
    # pieces of one key (several bad fail specs) take one line each: as many lines
    # quoting that key as there are pieces with it
    by_key: dict[str, list[str]] = {}
    for piece in bad:
        by_key.setdefault(_piece_key(piece), []).append(piece)
    for key, pieces in by_key.items():
        quoted = f"'{key}'"
        lines = [i for i, ln in enumerate(named) if quoted in ln]
        claimed.update(lines)
        if len(lines) != len(pieces):
            what = (f"bad piece {pieces[0]!r}" if len(pieces) == 1 else
                    f"bad pieces of key {key!r} ({len(pieces)})")
            problems.append(f"{what}: named on {len(lines)} stderr line(s), "
                            f"expected {len(pieces)}")
    stray = [named[i] for i in range(len(named)) if i not in claimed]
    if stray:
        problems.append(f"{len(stray)} NMM_OPTIONS line(s) name no bad piece of the plan "
                        f"(a good key refused?): {stray[0][:160]!r}")
    rows = stderr.splitlines()
    head = [i for i, ln in enumerate(rows) if ln.startswith(_HELP_HEAD)]
    if any(_piece_key(p) == "help" for p in plan.workload.bad_options):
        target = plan.target
        used = [_piece_key(p) for p in target.nmm_options().split(":")] if isinstance(
            target, NmmTarget) else []
        table = {ln.split(None, 1)[0] for ln in rows[head[0] + 1:] if ln.strip()} \
            if head else set()
        missing = [k for k in (*used, *_EXIT_PROCESS_KEYS) if k not in table]
        if not head:
            problems.append("a 'help' piece, and no key table on stderr")
        elif missing:
            problems.append(f"the key table has no row for {', '.join(missing)}")
    elif head:
        problems.append("a key table on stderr, and no 'help' piece asked for it")
    return Check(name="bad_options", ok=not problems, detail="; ".join(problems))


def _check_teardown(result: ResultLine) -> Check:
    """After the driver freed its every block: no block left live, by the counter, the
    walk and the live bytes. No fault may leave a block behind: a block the driver
    cannot free (its header damaged, say) is a leak the heap must still give back."""
    problems: list[str] = []
    leaked = result.leaked_blocks
    if leaked:
        problems.append(f"{leaked} block(s) still live by the heap's counters")
    if result.walk_after is not None:
        if result.walk_after.get("blocks", 0):
            problems.append(f"the heap walk still finds {result.walk_after.get('blocks')} "
                            f"live block(s) ({result.walk_after.get('bytes')} bytes)")
        live_bytes = _s(result.stats, "live_bytes")
        if live_bytes:
            problems.append(f"{live_bytes} live byte(s) still counted")
    return Check(name="leaks", ok=not problems, detail="; ".join(problems))
