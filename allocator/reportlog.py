"""NMM's report logs, as programs read them.

With ``NMM_OPTIONS=log_path=PREFIX:log_format=json`` (or ``both``) every process that
uses NMM's default heap (the preload library, a program on ``nmm_default_heap()``)
writes its reports to ``PREFIX.<pid>.json``, one JSON object per line:

* ``{"type": "error", ...}`` for each detection written (double free, overflow, ...):
  kind, address, size, extent, sites, and the stacks of the call that found it
  (``stack``), of the block's allocation (``alloc``) and, for a freed block, of its
  free (``free``), each frame with its module, offset, function and source line;
* ``{"type": "leaks", ...}`` for the leak report at exit: totals by category
  (definitely lost, indirectly lost, still reachable, suppressed) and every group
  with its sampled stacks (and, for a code-address site, ``site_frame``: the
  allocating call symbolized).

A program on heaps of its own (``nmm_heap_create``, the harness's driver) writes the
same files: the process keys apply to every heap, and ``nmm_heap_destroy`` of a tracking
heap writes its leak report there.

``read_log`` parses one file into frozen dataclasses; ``read_logs`` every file of a
prefix, by pid. A line that is not a report raises ``ReportLogError`` naming the
file and the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator.errors import ReportLogError


@dataclass(frozen=True, slots=True)
class Frame:
    """One stack frame: ``pc`` the call instruction (a return address moved back),
    ``module`` its file and ``offset`` into it (what a symbolizer takes), ``function``
    with ``function_offset`` from the symbol table, and ``file:line:column`` when the
    module has debug info ("" and 0 otherwise). ``inlined`` names the inlined function
    whose line this is, if any."""

    pc: int
    module: str
    offset: int
    function: str
    function_offset: int
    file: str
    line: int
    column: int
    inlined: str = ""

    @property
    def location(self) -> str:
        """``file:line`` (``""`` without debug info)."""
        return f"{self.file}:{self.line}" if self.file else ""


@dataclass(frozen=True, slots=True)
class Stack:
    """A stack and the thread that ran it; ``blocks`` counts the leaked blocks that
    share it (leak reports; 0 in error reports)."""

    thread: int
    frames: tuple[Frame, ...]
    blocks: int = 0


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """One detection, as written to the log (see nmm.h's event kinds)."""

    pid: int
    kind: str
    thread: int
    seq: int
    address: int
    size: int
    detail: int
    extra: int
    extent: str          # "1 byte past the 24-byte block", or ""
    reason: str          # why a pointer was invalid, or ""
    alloc_site: str | None
    free_site: str | None
    stack: tuple[Frame, ...]  # the call that found it
    alloc: Stack | None
    free: Stack | None


@dataclass(frozen=True, slots=True)
class Counted:
    """Blocks and bytes of one leak category."""

    blocks: int
    bytes: int


@dataclass(frozen=True, slots=True)
class LeakGroup:
    """Live blocks of one allocation site in one category."""

    category: str  # definitely_lost, indirectly_lost, still_reachable or suppressed
    site: str
    blocks: int
    bytes: int
    stacks: tuple[Stack, ...]
    #: a code-address site (the malloc replacement's) symbolized: the allocating call's
    #: function and file:line even when no stack was sampled; None for a (file, line) site
    site_frame: Frame | None = None


@dataclass(frozen=True, slots=True)
class LeakReport:
    """The leak report a process wrote at exit."""

    pid: int
    definitely_lost: Counted
    indirectly_lost: Counted
    still_reachable: Counted
    suppressed: Counted
    groups: tuple[LeakGroup, ...]

    @property
    def lost(self) -> Counted:
        """Definitely and indirectly lost together (what ``exitcode`` looks at)."""
        return Counted(self.definitely_lost.blocks + self.indirectly_lost.blocks,
                       self.definitely_lost.bytes + self.indirectly_lost.bytes)


Report = ErrorReport | LeakReport


def _hex(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _frame(obj: Mapping[str, Any]) -> Frame:
    return Frame(pc=_hex(obj["pc"]), module=str(obj["module"]), offset=_hex(obj["offset"]),
                 function=str(obj["function"]), function_offset=int(obj["function_offset"]),
                 file=str(obj["file"]), line=int(obj["line"]), column=int(obj["column"]),
                 inlined=str(obj.get("inlined", "")))


def _frames(items: Iterable[Mapping[str, Any]]) -> tuple[Frame, ...]:
    return tuple(_frame(f) for f in items)


def _stack(obj: Mapping[str, Any] | None) -> Stack | None:
    if obj is None:
        return None
    return Stack(thread=int(obj["thread"]), frames=_frames(obj["stack"]))


def _counted(obj: Mapping[str, Any]) -> Counted:
    return Counted(int(obj["blocks"]), int(obj["bytes"]))


def parse_report(obj: Mapping[str, Any]) -> Report:
    """One decoded JSON line into its report; ``KeyError``/``ValueError``/``TypeError``
    when it is not one."""
    kind = obj["type"]
    if kind == "error":
        return ErrorReport(
            pid=int(obj["pid"]), kind=str(obj["kind"]), thread=int(obj["thread"]),
            seq=int(obj["seq"]), address=_hex(obj["address"]), size=int(obj["size"]),
            detail=int(obj["detail"]), extra=int(obj["extra"]), extent=str(obj["extent"]),
            reason=str(obj.get("reason", "")), alloc_site=obj.get("alloc_site"),
            free_site=obj.get("free_site", obj.get("realloc_site")),
            stack=_frames(obj.get("stack", [])), alloc=_stack(obj.get("alloc")),
            free=_stack(obj.get("free")))
    if kind == "leaks":
        groups = tuple(
            LeakGroup(category=str(g["category"]), site=str(g["site"]), blocks=int(g["blocks"]),
                      bytes=int(g["bytes"]),
                      stacks=tuple(Stack(thread=int(s["thread"]), frames=_frames(s["frames"]),
                                         blocks=int(s["blocks"])) for s in g["stacks"]),
                      site_frame=_frame(g["site_frame"]) if g.get("site_frame") else None)
            for g in obj["groups"])
        return LeakReport(pid=int(obj["pid"]), definitely_lost=_counted(obj["definitely_lost"]),
                          indirectly_lost=_counted(obj["indirectly_lost"]),
                          still_reachable=_counted(obj["still_reachable"]),
                          suppressed=_counted(obj["suppressed"]), groups=groups)
    raise ValueError(f"unknown report type {kind!r} (expected 'error' or 'leaks')")


def read_log(path: str | Path) -> list[Report]:
    """Every report in one ``PREFIX.<pid>.json`` file, in the order written."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ReportLogError(f"{path}: cannot read it: {exc.strerror}") from None
    reports: list[Report] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            reports.append(parse_report(json.loads(line)))
        except (json.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
            why = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ReportLogError(f"{path}:{number}: not an NMM report ({why})") from None
    return reports


def read_logs(prefix: str | Path) -> dict[int, list[Report]]:
    """The reports of every process that wrote ``PREFIX.<pid>.json``, by pid."""
    prefix = Path(prefix)
    found: dict[int, list[Report]] = {}
    for path in sorted(prefix.parent.glob(prefix.name + ".*.json")):
        pid = path.name[len(prefix.name) + 1:-len(".json")]
        if pid.isdigit():
            found[int(pid)] = read_log(path)
    return found
