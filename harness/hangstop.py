"""Stop running a target that hangs, instead of waiting out each of its trials.

A hang costs a trial its whole watchdog (``hang_s`` without progress, or ``timeout_s``),
so an allocator that hangs in every trial would make a campaign of hundreds of trials
take hours to say one thing. ``HangStop`` watches the records as they arrive and, once a
target has shown it hangs, the trials of it still to run are recorded as
``skipped-hanging`` (failed, never passed, the hangs that stopped it named) instead of
run:

- a row (one plan, or one fault entry of a split plan, against one target) stops after
  ``ROW_HANGS`` hangs once more of its finished trials hung than did not;
- the whole allocator stops once ``TARGET_ROWS`` of its rows stopped that way and more
  of its finished trials anywhere hung than did not. An allocator is a target label but
  for NMM, whose levels and policies (``nmm:off``, ``nmm:paranoid+abort``, ...) are one
  library: an NMM that hangs at every level is stopped once, not once per level.

Trials that finish otherwise (passed, or failed another way) keep a row and target
running: an allocator that hangs now and then runs its trials, one that hangs
only on one fault (a peer looping on a double free) all its other rows. (Counting
"more hung than not", not "all hung": at ``policy=abort`` a trial may die at a detection
before it reaches the hang.) A trial whose plan expects a hang (it passed) counts as
finished otherwise. Must not print; not thread-safe (callers hold their own lock).
"""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from dataclasses import dataclass, field

from harness.records import Observation, TrialRecord, Verdict

__all__ = ["ROW_HANGS", "SKIPPED_HANGING", "TARGET_ROWS", "HangStop", "skipped_record"]

#: the outcome of a trial not run because its target hangs
SKIPPED_HANGING = "skipped-hanging"
#: hangs of one row (outnumbering its trials that finished otherwise) before its
#: other trials are skipped
ROW_HANGS = 2
#: rows hung that way (and no trial of the target finished otherwise) before the
#: target's every other trial is skipped
TARGET_ROWS = 2


@dataclass
class _Tally:
    hangs: list[int] = field(default_factory=list)  # seeds of the trials that hung
    others: int = 0                                   # trials that finished otherwise


class HangStop:
    """What to skip, from the records seen so far (``note`` each, ``why_skip`` before
    running a trial)."""

    def __init__(self, row_hangs: int = ROW_HANGS, target_rows: int = TARGET_ROWS) -> None:
        self.row_hangs = row_hangs
        self.target_rows = target_rows
        self._rows: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
        self._targets: dict[str, _Tally] = defaultdict(_Tally)

    def note(self, target: str, row: str, record: TrialRecord) -> None:
        """Count one finished trial of ``row`` (a plan name) against ``target`` (a label).
        Skipped records are not counted."""
        if record.verdict.outcome == SKIPPED_HANGING:
            return
        hung = record.verdict.outcome == "hang" and not record.verdict.passed
        for tally in (self._rows[(target, row)], self._targets[_allocator(target)]):
            if hung:
                tally.hangs.append(record.seed)
            else:
                tally.others += 1

    def _row_stopped(self, target: str, row: str) -> bool:
        tally = self._rows.get((target, row))
        return (tally is not None and len(tally.hangs) >= self.row_hangs
                and len(tally.hangs) > tally.others)

    def why_skip(self, target: str, row: str) -> str | None:
        """Why a trial of ``row`` against ``target`` is not to run, or None to run it."""
        if self._row_stopped(target, row):
            seeds = self._rows[(target, row)].hangs
            others = self._rows[(target, row)].others
            return (f"not run: {target} hung in {len(seeds)} trial(s) of {row} (seeds "
                    f"{_seeds(seeds)}), {others} finished otherwise")
        allocator = _allocator(target)
        whole = self._targets.get(allocator)
        if whole is None or len(whole.hangs) <= whole.others:
            return None
        stopped = sorted(f"{r} on {t}" for (t, r) in self._rows
                         if _allocator(t) == allocator and self._row_stopped(t, r))
        if len(stopped) < self.target_rows:
            return None
        return (f"not run: {allocator} hung in {len(whole.hangs)} trial(s), in "
                f"{', '.join(stopped)} and more, {whole.others} finished otherwise")


def _allocator(target: str) -> str:
    """The library a target label runs: ``nmm`` for every NMM level and policy."""
    return "nmm" if target.startswith("nmm:") else target


def _seeds(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in sorted(seeds))


def skipped_record(*, key: str, plan: str, plan_hash: str, seed: int, target: str,
                   driver: str, why: str) -> TrialRecord:
    """The record of a trial skipped because its target hangs: failed, with the reason."""
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return TrialRecord(key=key, plan=plan, plan_hash=plan_hash, seed=seed, target=target,
                       driver=driver, started_at=now, observation=Observation(),
                       verdict=Verdict(outcome=SKIPPED_HANGING, passed=False, reasons=(why,)))
