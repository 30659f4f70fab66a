"""NMM's JSON report logs in a trial: where the engine points ``log_path``, and reading
them back, bounded, into the trial's observation.

A trial against NMM (an NMM heap in the driver, or NMM as the process's malloc through
``libnmm_preload.so``) runs with ``NMM_OPTIONS`` process keys ``log_path=<trial
dir>/nmm:log_format=json:log_summary=1``: every report the allocator writes (an error
report with its stacks, the leak report of a tracking heap) lands as one JSON line in
``<trial dir>/nmm.<pid>.json`` (one file per process: fork children write their own),
and the one-line summary of each error still goes to stderr, where the oracle reads the
process's last words. After the child exits, ``read_report_logs`` turns the files into a
``ReportLog`` (``harness.records``): error reports and leak groups with their first
frames, cut to fixed bounds so one trial cannot bloat a journal. A file that is not a
report log, a line cut short by a kill, a file past the bounds: a note in the record,
never an exception (the trial's own record must survive whatever the log holds).
Nothing here prints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.records import LoggedError, LoggedLeakGroup, ReportFrame, ReportLog

if TYPE_CHECKING:  # importing the allocator package loads its binding: only when reading
    from allocator.reportlog import ErrorReport, Frame, LeakReport, Stack

#: the log prefix inside the trial's directory (files ``nmm.<pid>.json``)
LOG_PREFIX = "nmm"
#: bytes read from one file, and from all of a trial's files together
MAX_FILE_BYTES = 1 << 20
MAX_TOTAL_BYTES = 4 << 20
#: log files read (a fork-heavy trial writes one per child that reported)
MAX_FILES = 64
#: error reports and leak groups kept in the record; frames kept per stack
MAX_ERRORS = 20
MAX_LEAK_GROUPS = 40
MAX_FRAMES = 6
#: notes kept about unreadable lines (the rest are counted)
MAX_NOTES = 5

#: functions that are the allocator's entry points, not the program's code
_ALLOC_FUNCTIONS = frozenset({
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign",
    "aligned_alloc", "memalign", "valloc", "pvalloc", "malloc_usable_size", "strdup",
    "strndup", "operator new", "operator new[]", "operator delete", "operator delete[]",
})


#: source files that are the allocator, or (the driver's table of allocator calls) stand
#: for it: a frame in one is not where the program called
_ALLOCATOR_FILES = ("harness/native/target.c",)


#: NMM_OPTIONS key that keeps the child's own exit status (see ``with_log``)
KEEP_EXIT_STATUS = "exitcode=0"


def log_options(directory: Path) -> str:
    """The ``NMM_OPTIONS`` process keys that send a trial's reports to ``directory``."""
    return f"log_path={directory / LOG_PREFIX}:log_format=json:log_summary=1"


def is_nmm_preload(library: str) -> bool:
    """Whether an ``LD_PRELOAD`` library is NMM's malloc replacement (any flavour)."""
    name = os.path.basename(library)
    return name.startswith("libnmm") and "preload" in name


def with_log(env: dict[str, str], directory: Path) -> dict[str, str]:
    """``env`` with the log keys added to its ``NMM_OPTIONS`` (after the target's own,
    so a target cannot point them elsewhere; left out when the directory's path holds a
    ``:``, which NMM_OPTIONS cannot carry), and ``exitcode=0`` before them all."""
    # exitcode=0 goes first, so a target that sets its own exitcode keeps it: the oracle
    # reads detections from the report lines and judges the child by its own status, and
    # NMM's default (23 after any record-mode detection, as LSan) made every detecting
    # preload trial a "crash"
    logs = "" if ":" in str(directory) else log_options(directory)
    mine = env.get("NMM_OPTIONS", "")
    keys = ":".join(k for k in (KEEP_EXIT_STATUS, mine, logs) if k)
    return {**env, "NMM_OPTIONS": keys}


def _is_allocator_frame(f: Frame) -> bool:
    module = os.path.basename(f.module)
    name = f.inlined or f.function
    return (name.startswith(("nmm_", "_nmm", "__libc_malloc", "__libc_free"))
            or name in _ALLOC_FUNCTIONS or name.startswith(("operator new", "operator delete"))
            or module.startswith("libnmm") or "/allocator/src/" in f.file
            or f.file.endswith(_ALLOCATOR_FILES))


def _report_frame(f: Frame) -> ReportFrame:
    return ReportFrame(function=f.inlined or f.function, file=f.file, line=f.line,
                       module=os.path.basename(f.module), offset=f.offset)


def user_frames(frames: Sequence[Frame], limit: int = MAX_FRAMES) -> tuple[ReportFrame, ...]:
    """The first ``limit`` frames from the first one that is not the allocator's (every
    frame if all of them are)."""
    start = next((i for i, f in enumerate(frames) if not _is_allocator_frame(f)), 0)
    return tuple(_report_frame(f) for f in frames[start:start + limit])


def _stack_frames(stack: Stack | None) -> tuple[ReportFrame, ...]:
    return user_frames(stack.frames) if stack is not None else ()


class _Reader:
    def __init__(self) -> None:
        self.errors: list[LoggedError] = []
        self.groups: list[LoggedLeakGroup] = []
        self.totals: dict[str, list[int]] = {}
        self.notes: list[str] = []
        self.more_notes = 0
        self.dropped_errors = 0
        self.dropped_groups = 0
        self.total_bytes = 0
        self.processes = 0

    def note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)
        else:
            self.more_notes += 1

    def read_file(self, path: Path) -> None:
        room = MAX_TOTAL_BYTES - self.total_bytes
        if room <= 0:
            self.note(f"{path.name}: not read (the trial's logs passed {MAX_TOTAL_BYTES} bytes)")
            return
        want = min(MAX_FILE_BYTES, room)
        try:
            with path.open("rb") as fh:
                data = fh.read(want + 1)
        except OSError as exc:
            self.note(f"{path.name}: cannot read it: {exc.strerror or exc}")
            return
        cut = len(data) > want
        data = data[:want]
        self.total_bytes += len(data)
        self.processes += 1
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: "" for a whole file
        if cut:
            self.note(f"{path.name}: read only its first {want} bytes; the rest was left out")
        elif tail.strip():
            self.note(f"{path.name}: its last line was cut short (the process died while "
                      "writing it, or something else wrote there); left out")
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                self.parse_line(path.name, number, raw)

    def parse_line(self, name: str, number: int, raw: bytes) -> None:
        from allocator.reportlog import ErrorReport, LeakReport, parse_report

        try:
            report = parse_report(json.loads(raw.decode("utf-8", errors="replace")))
        except (json.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as exc:
            why = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)[:120]
            self.note(f"{name}:{number}: not an NMM report ({why}); left out")
            return
        if isinstance(report, ErrorReport):
            self.add_error(report)
        elif isinstance(report, LeakReport):
            self.add_leaks(report)

    def add_error(self, r: ErrorReport) -> None:
        if len(self.errors) >= MAX_ERRORS:
            self.dropped_errors += 1
            return
        self.errors.append(LoggedError(
            pid=r.pid, kind=r.kind, thread=r.thread, seq=r.seq, address=r.address,
            size=r.size, extent=r.extent, stack=user_frames(r.stack),
            alloc=_stack_frames(r.alloc), free=_stack_frames(r.free)))

    def add_leaks(self, r: LeakReport) -> None:
        for category, counted in (("definitely_lost", r.definitely_lost),
                                  ("indirectly_lost", r.indirectly_lost),
                                  ("still_reachable", r.still_reachable),
                                  ("suppressed", r.suppressed)):
            total = self.totals.setdefault(category, [0, 0])
            total[0] += counted.blocks
            total[1] += counted.bytes
        for g in r.groups:
            if len(self.groups) >= MAX_LEAK_GROUPS:
                self.dropped_groups += 1
                continue
            # a sampled stack, else the site's own frame (the allocating call)
            frames = next((user_frames(s.frames) for s in g.stacks if s.frames),
                          user_frames([g.site_frame]) if g.site_frame else ())
            self.groups.append(LoggedLeakGroup(pid=r.pid, category=g.category, site=g.site,
                                               blocks=g.blocks, bytes=g.bytes,
                                               frames=frames))

    def result(self, files: int) -> ReportLog:
        notes = list(self.notes)
        if self.more_notes:
            notes.append(f"... and {self.more_notes} more problem(s) with the log")
        if files > MAX_FILES:
            notes.append(f"{files - MAX_FILES} of {files} log files not read "
                         f"(at most {MAX_FILES})")
        return ReportLog(processes=self.processes, errors=tuple(self.errors),
                         errors_dropped=self.dropped_errors, leak_groups=tuple(self.groups),
                         leak_groups_dropped=self.dropped_groups,
                         leak_totals={k: (v[0], v[1]) for k, v in self.totals.items()},
                         notes=tuple(notes))


def log_files(directory: Path) -> list[Path]:
    """A trial directory's report logs, by pid."""
    def pid(path: Path) -> int:
        middle = path.name[len(LOG_PREFIX) + 1:-len(".json")]
        return int(middle) if middle.isdigit() else -1

    return sorted((p for p in directory.glob(f"{LOG_PREFIX}.*.json") if pid(p) >= 0), key=pid)


def read_report_logs(directory: Path) -> ReportLog | None:
    """The reports every process of a trial wrote under ``directory`` (None when none
    wrote any), bounded (``MAX_*``); what could not be read is a note, never a raise."""
    try:
        files = log_files(directory)
    except OSError as exc:
        return ReportLog(notes=(f"cannot list the report logs in {directory}: {exc}",))
    if not files:
        return None
    reader = _Reader()
    for path in files[:MAX_FILES]:
        try:
            reader.read_file(path)
        except Exception as exc:  # a harness bug reading one file must not lose the trial
            reader.note(f"{path.name}: {type(exc).__name__}: {exc}")
    return reader.result(len(files))


def frame_text(frame: ReportFrame) -> str:
    """``function file:line`` (``function+0x1c (module)`` without debug info)."""
    name = frame.function or "??"
    if frame.file:
        return f"{name} {frame.file}:{frame.line}"
    return f"{name}+{frame.offset:#x} ({frame.module})" if frame.module else name


def short_path(path: str, keep: int = 2) -> str:
    """The last ``keep`` parts of a source path (``native/workload.c``)."""
    parts = Path(path).parts
    return str(Path(*parts[-keep:])) if len(parts) > keep else path


def site_of(frames: Iterable[ReportFrame], fallback: str = "") -> str:
    """Where a leak group or an error report points, as ``function file:line`` (short
    path): the first of its frames (already past the allocator's) with a source line,
    the program's own code, rather than a C library or loader frame without one (the
    dynamic loader allocating a thread's TLS for pthread_create); else the first frame;
    ``fallback`` (the allocator's own site text) when no frame was captured."""
    frames = list(frames)
    for f in [*(f for f in frames if f.file), *frames[:1]]:
        short = f.model_copy(update={"file": short_path(f.file)}) if f.file else f
        return frame_text(short)
    return fallback or "(no site recorded)"
