"""Text of a finished run for terminals, pipes and CI logs: the trial table, the failure
blocks with their replay commands, the verdict line.

Two table layouts: boxed on a wide terminal, compact (no box, one line per trial, no
cell ever wrapped) when narrower than ``WIDE`` columns or not a terminal. Failing trials
come first; passing ones are one summary line unless ``verbose``. The same failure
block serves the terminal and the pytest plugin. Builds strings and rich renderables;
never prints (the command line does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from harness.records import NOT_REACHED, TrialRecord

#: a terminal at least this wide gets the boxed table; narrower ones and pipes the compact one
WIDE = 100
#: failing trials shown in the table and as failure blocks (the rest are in the report)
MAX_FAILURES = 20
#: injected faults listed one by one in a failure block (failing ones first)
MAX_FAULT_LINES = 6

_DETECTED = ("detected", "detected-abort")


class PipeConsole(Console):
    """A rich console that lets a broken pipe (``| head``) raise ``BrokenPipeError``, as
    ``click.echo`` does, for the command line to end with the command's own exit code.
    rich's default exits with status 1, a failed trial's code. Every command prints
    through this class (``console()``), not ``rich.console.Console``."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(32, "Broken pipe")


def console(**kwargs: Any) -> Console:
    """A ``PipeConsole`` (stdout unless ``stderr=True``); ``kwargs`` go to rich."""
    return PipeConsole(**kwargs)


#: the running command's exit code once its verdict is known (see ``record_verdict``)
_verdict: list[int] = []


def record_verdict(code: int) -> int:
    """Record the command's exit code before it prints its result, and return it: if the
    reader of stdout goes away (``| head``) the command line ends quietly with it."""
    _verdict[:] = [code]
    return code


def recorded_verdict() -> int | None:
    """The code ``record_verdict`` recorded in this command, if any."""
    return _verdict[0] if _verdict else None


def forget_verdict() -> None:
    """Start a new command (the command line's ``main`` calls this)."""
    _verdict.clear()


def si(value: float) -> str:
    """``950``, ``12.3k``, ``4.56M``: a rate in at most six characters."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def seed_ranges(seeds: Iterable[int], limit: int = 4) -> str:
    """``1-16, 20, 22-30``: consecutive seeds as ranges, at most ``limit`` of them."""
    ordered = sorted(set(seeds))
    runs: list[tuple[int, int]] = []
    for s in ordered:
        if runs and s == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    text = [f"{a}-{b}" if b > a else str(a) for a, b in runs[:limit]]
    if len(runs) > limit:
        text.append("...")
    return ", ".join(text)


def faults_cell(record: TrialRecord) -> str:
    """``3/4``: faults detected of faults injected (``-`` when none was injected)."""
    faults = [f for f in record.verdict.faults if f.outcome != NOT_REACHED]
    if not faults:
        return "-"
    return f"{sum(1 for f in faults if f.outcome in _DETECTED)}/{len(faults)}"


def trial_table(records: Sequence[TrialRecord], *, verbose: bool = False,
                compact: bool = True, width: int = 80) -> Table | None:
    """The failing trials (all trials if ``verbose``), one row each, in ``width`` columns;
    None when there is no row to show. Columns a narrow screen cannot hold are left out
    (wall time first, then the rate): a row never wraps."""
    failing = [r for r in records if not r.verdict.passed]
    rows = failing[:MAX_FAILURES] + ([r for r in records if r.verdict.passed]
                                     if verbose else [])
    if not rows:
        return None
    cells = [(str(r.seed), r.target, r.verdict.outcome, faults_cell(r), si(r.ops_per_s),
              f"{r.observation.wall_s:.2f}", "pass" if r.verdict.passed else "FAIL")
             for r in rows]
    names = ("seed", "target", "outcome", "faults", "ops/s", "wall s", "result")
    # without --verbose every row is a failure: no result column to say so
    keep = list(range(len(names) if verbose else len(names) - 1))
    gap = 2 if compact else 3  # padding (and a box line) between two columns

    def needed(cols: list[int]) -> int:
        return sum(max(len(names[c]), *(len(row[c]) for row in cells)) + gap
                   for c in cols) + (0 if compact else 1)

    for optional in (5, 4):  # wall s, then ops/s
        if needed(keep) > width:
            keep.remove(optional)
    table = Table(box=None if compact else box.ROUNDED, show_edge=not compact,
                  pad_edge=not compact, padding=(0, 1), header_style="bold")
    for c in keep:
        table.add_column(names[c], no_wrap=True, overflow="ellipsis",
                         justify="right" if c in (0, 3, 4, 5) else "left")
    for row, record in zip(cells, rows, strict=True):
        style = "" if record.verdict.passed else "red"
        table.add_row(*(row[c] for c in keep), style=style)
    return table


def passed_line(records: Sequence[TrialRecord], *, skipped: int = 0) -> str | None:
    """``196 trials passed (seeds 1003-1198)``, or None if none did."""
    passed = [r.seed for r in records if r.verdict.passed]
    if not passed:
        return None
    from_journal = f", {skipped} of them from the journal" if skipped else ""
    return (f"{len(passed)} trial{'s' if len(passed) != 1 else ''} passed "
            f"(seed{'s' if len(passed) != 1 else ''} {seed_ranges(passed)}{from_journal})")


def matrix_lines(doc: dict[str, Any]) -> list[str]:
    """The report's detection matrix as short lines, one per fault row:
    ``double_free  nmm:standard 16/16`` (trials that detected it / trials that reached it,
    as in every report)."""
    from harness.robustness import cell_text

    rows = doc.get("rows") or []
    if not rows:
        return []
    width = max(len(row) for row in rows)
    lines = []
    for row in rows:
        by_target = doc["matrix"][row]
        cells = [f"{target} {cell_text(by_target[target])}"
                 for target in doc.get("targets") or sorted(by_target) if target in by_target]
        lines.append(f"  {row:<{width}}  " + "; ".join(cells))
    return ["detections (trials detected/reached):", *lines]


def first_diagnostic(record: TrialRecord) -> str | None:
    """The allocator's one-line diagnostic, else the first line the child wrote to stderr."""
    if record.verdict.diagnostic:
        return record.verdict.diagnostic
    for line in record.observation.stderr_tail.splitlines():
        if line.strip():
            return line.strip()
    return None


def failure_block(record: TrialRecord, replay: str | None) -> list[str]:
    """A failing trial in a few lines: the outcome of each fault, what else failed, the
    first diagnostic line and the command that replays it."""
    v = record.verdict
    lines = [f"seed {record.seed} ({record.target}): {v.outcome}"]
    faults = sorted(v.faults, key=lambda f: (f.ok, f.id))  # the wrong ones first
    for f in faults[:MAX_FAULT_LINES]:
        name = f.kind + (f"/{f.variant}" if f.variant else "")
        expected = "" if f.ok else f" (expected {' or '.join(f.allowed)})"
        note = f": {f.note}" if f.note and not f.ok else ""
        lines.append(f"  fault {f.id} {name}: {f.outcome}{expected}{note}")
    if len(faults) > MAX_FAULT_LINES:
        rest = faults[MAX_FAULT_LINES:]
        ok = sum(1 for f in rest if f.ok)
        lines.append(f"  ... {len(rest)} more fault(s), {ok} as expected")
    lines += [f"  {reason}" for reason in v.reasons if not reason.startswith("fault ")]
    diagnostic = first_diagnostic(record)
    if diagnostic:
        lines.append(f"  diagnostic: {diagnostic}")
    if replay:
        lines.append(f"  replay: {replay}")
    return lines


def failure_lines(records: Sequence[TrialRecord], replays: dict[str, str]) -> list[str]:
    """Every failing trial's block (at most ``MAX_FAILURES``), ``replays`` by trial key."""
    failing = [r for r in records if not r.verdict.passed]
    if not failing:
        return []
    lines = [f"{len(failing)} failing trial{'s' if len(failing) != 1 else ''}:"]
    for r in failing[:MAX_FAILURES]:
        lines += failure_block(r, replays.get(r.key))
    if len(failing) > MAX_FAILURES:
        lines.append(f"... {len(failing) - MAX_FAILURES} more in the report")
    return lines


def verdict_line(name: str, records: Sequence[TrialRecord], *, report: str | None = None,
                 interrupted: bool = False) -> str:
    """``PASS smoke: 16/16 trials passed; report reports/x/summary.md`` (or FAIL)."""
    failed = sum(1 for r in records if not r.verdict.passed)
    ok = failed == 0 and not interrupted
    text = (f"{'PASS' if ok else 'FAIL'} {name}: "
            f"{len(records) - failed}/{len(records)} trials passed")
    if failed:
        text += f", {failed} failed"
    if report:
        text += f"; report {report}"
    return text
