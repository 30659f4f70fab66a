"""``compare``: what got worse between two reports (an old night and a new one).

Regressions, per fault row and target present in both: a fault newly missed (all
detected before, not now), a detection rate that fell, a crash or hang where there was
none; per target, a throughput drop beyond the noise of the two runs' own spread: the
medians of the per-trial throughputs differ by more than ``SIGMAS`` standard errors
(from each run's robust spread: 1.4826 x MAD, x 1.2533 / sqrt(n) for a median) and by
more than ``MIN_DROP`` of the old median. Pure: builds a ``Comparison``; the CLI prints it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.robustness import (
    REPORT_KIND,
    ReportError,
    build_report,
    cell_text,
    load_run,
)

#: standard errors a throughput drop must exceed
SIGMAS = 3.0
#: and the share of the old median it must exceed (a run's spread can be tiny)
MIN_DROP = 0.05
#: trials each side needs before its throughput is judged
MIN_TRIALS = 3


@dataclass(frozen=True)
class Change:
    """One line of the comparison."""

    what: str
    target: str
    old: str
    new: str
    regression: bool
    why: str = ""


@dataclass
class Comparison:
    """Every change found, regressions first."""

    old_title: str
    new_title: str
    changes: list[Change] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        """The changes that fail the gate."""
        return [c for c in self.changes if c.regression]


def load_report(path: str | Path) -> dict[str, Any]:
    """A report document: a ``result.json`` written by ``report``/``campaign``, or built
    now from a run or campaign directory (or journal)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise ReportError(f"{p}: not a readable report: {exc}") from None
        if not isinstance(doc, dict) or doc.get("kind") != REPORT_KIND:
            raise ReportError(f"{p}: not an nmm-chaos report (kind {REPORT_KIND!r}); give "
                              "a result.json written by `nmm-chaos report`, or a run "
                              "directory")
        return doc
    if p.is_dir() and (p / "result.json").is_file() and not (p / "journal.jsonl").is_file():
        return load_report(p / "result.json")
    return build_report([load_run(p)])


def _throughput(old: dict[str, Any], new: dict[str, Any], target: str) -> Change | None:
    a, b = old.get("values") or [], new.get("values") or []
    if len(a) < MIN_TRIALS or len(b) < MIN_TRIALS:
        return None
    med_a, med_b = old["median"], new["median"]
    noise = math.hypot(1.2533 * old["sd"] / math.sqrt(len(a)),
                       1.2533 * new["sd"] / math.sqrt(len(b)))
    drop = med_a - med_b
    regression = drop > SIGMAS * noise and drop > MIN_DROP * med_a
    ratio = med_b / med_a if med_a else 0.0
    why = (f"median fell {100 * (1 - ratio):.0f}%, beyond {SIGMAS:g}x the noise "
           f"({noise:,.0f} ops/s)") if regression else ""
    if not regression and abs(drop) <= max(SIGMAS * noise, MIN_DROP * med_a):
        return None  # within the noise: not worth a line
    return Change("throughput", target, f"{med_a:,.0f} ops/s", f"{med_b:,.0f} ops/s",
                  regression, why or f"x{ratio:.2f}")


def compare(old: dict[str, Any], new: dict[str, Any]) -> Comparison:
    """The changes from ``old`` to ``new`` (report documents)."""
    for name, doc in (("OLD", old), ("NEW", new)):
        if not doc["summary"]["trials"]:
            raise ReportError(f"{name} ({doc['title']}): no trials recorded; nothing to "
                              "compare")
    out = Comparison(old["title"], new["title"])
    for row in sorted(set(old["matrix"]) | set(new["matrix"])):
        for target in sorted(set(old["matrix"].get(row, {})) | set(new["matrix"].get(row, {}))):
            a = old["matrix"].get(row, {}).get(target)
            b = new["matrix"].get(row, {}).get(target)
            if a is None or b is None:
                if b is not None:
                    out.changes.append(Change(row, target, "-", cell_text(b), False, "new"))
                else:  # a gate that passed because a target or fault was dropped
                    out.changes.append(Change(row, target, cell_text(a), "-", True,
                                              "not run in NEW"))
                continue
            why = []
            ra, rb = a.get("rate"), b.get("rate")
            if ra == 1 and rb is not None and rb < 1:
                why.append("newly missed")
            elif ra is not None and rb is not None and rb < ra:
                why.append(f"detection rate fell ({100 * ra:.0f}% -> {100 * rb:.0f}%)")
            for bad in ("crashed", "hang", "skipped-hanging"):
                if b["outcomes"].get(bad) and not a["outcomes"].get(bad):
                    why.append(f"new {bad}")
            if why or cell_text(a) != cell_text(b):
                out.changes.append(Change(row, target, cell_text(a), cell_text(b),
                                          bool(why), "; ".join(why)))
    for target, th in new["throughput_ops_per_s"].items():
        before = old["throughput_ops_per_s"].get(target)
        if before:
            change = _throughput(before, th, target)
            if change is not None:
                out.changes.append(change)
    a_infra = old["summary"].get("infra_failures", 0)
    b_infra = new["summary"].get("infra_failures", 0)
    if b_infra > a_infra:
        out.changes.append(Change("infrastructure failures", "", str(a_infra), str(b_infra),
                                  False, "workers died (not the allocator's doing)"))
    out.changes.sort(key=lambda c: not c.regression)
    return out
