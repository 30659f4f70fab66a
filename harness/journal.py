"""The append-only trial journal: one JSON line per finished trial, flushed and fsynced,
and before each trial starts a ``trial_start`` line with its identity
(``harness.identity``), so a trial that kills the machine is still replayable.

Owns the ``journal.jsonl`` file of one run. A trial with a ``trial_start`` line and no
record did not finish: a resume runs it (once; its record then completes it). A SIGKILL
of the runner loses at most the trials in flight (their identities stay); a torn last
line (the runner died mid-write) is detected, reported as a warning and cut off before
appending resumes — never fatal.
Thread-safe: runner worker threads append concurrently through one lock.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.errors import JournalError
from harness.records import TrialRecord

JOURNAL_NAME = "journal.jsonl"
#: the ``type`` of the line written before a trial starts (records have no ``type``)
TRIAL_START = "trial_start"


@dataclass
class JournalContents:
    """What a journal holds: its records (first occurrence per key) and any warnings."""

    records: list[TrialRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: byte length of the intact prefix (everything up to the last complete line)
    intact_bytes: int = 0
    #: the identity of every trial a ``trial_start`` line announced, by key (the last)
    started: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def keys(self) -> set[str]:
        """Trial keys already recorded."""
        return {r.key for r in self.records}

    @property
    def unfinished(self) -> dict[str, dict[str, Any]]:
        """Trials that started and left no record (the run died, or the machine, during
        them), by key: their identities, in the order they started."""
        done = self.keys
        return {k: ident for k, ident in self.started.items() if k not in done}


def start_line(key: str, identity: dict[str, Any]) -> bytes:
    """The ``trial_start`` line of a trial about to run."""
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return (json.dumps({"type": TRIAL_START, "key": key, "at": now, "identity": identity},
                       separators=(",", ":")) + "\n").encode()


def _start_of(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    """(key, identity) of a ``trial_start`` line; None for anything else."""
    if b'"type"' not in raw[:40]:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if (not isinstance(doc, dict) or doc.get("type") != TRIAL_START
            or not isinstance(doc.get("key"), str) or not isinstance(doc.get("identity"), dict)):
        return None
    return doc["key"], doc["identity"]


def read_journal(path: str | Path) -> JournalContents:
    """Read every intact record; torn or invalid lines become warnings, not errors."""
    p = Path(path)
    contents = JournalContents()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return contents
    except OSError as exc:
        raise JournalError(f"{p}: cannot read journal: {exc.strerror}") from None
    seen: set[str] = set()
    offset = 0
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        is_last = number == len(lines)
        if is_last:
            if raw.strip():
                contents.warnings.append(
                    f"{p}:{number}: torn last line ({len(raw)} bytes, no newline) skipped; "
                    "that trial will run again")
            break
        offset += len(raw) + 1
        if not raw.strip():
            contents.intact_bytes = offset
            continue
        start = _start_of(raw)
        if start is not None:
            contents.started.pop(start[0], None)  # keep the order of the latest start
            contents.started[start[0]] = start[1]
            contents.intact_bytes = offset
            continue
        try:
            record = TrialRecord.model_validate_json(raw)
        except ValidationError as exc:
            contents.warnings.append(f"{p}:{number}: unreadable journal line skipped "
                                     f"({exc.error_count()} problem(s))")
            contents.intact_bytes = offset
            continue
        contents.intact_bytes = offset
        if record.key in seen:
            contents.warnings.append(f"{p}:{number}: trial {record.key} recorded twice; "
                                     "the first record is kept")
            continue
        seen.add(record.key)
        contents.records.append(record)
    return contents


class Journal:
    """An open journal that appends one fsynced line per trial."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        existing = read_journal(self.path)
        self.warnings = existing.warnings
        self.records = existing.records
        self.unfinished = existing.unfinished
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        size = os.fstat(fd).st_size
        if size > existing.intact_bytes:
            os.ftruncate(fd, existing.intact_bytes)  # cut the torn tail off
        os.lseek(fd, 0, os.SEEK_END)
        self._fd = fd

    @property
    def done_keys(self) -> set[str]:
        """Keys of trials this journal already holds."""
        return {r.key for r in self.records}

    def start(self, key: str, identity: dict[str, Any]) -> None:
        """Write (and fsync) the ``trial_start`` line of the trial ``key`` before it runs."""
        with self._lock:
            self._write(start_line(key, identity))

    def append(self, record: TrialRecord) -> None:
        """Write one record as one line with one write(2), then fsync."""
        line = (json.dumps(record.model_dump(mode="json"), separators=(",", ":")) + "\n")
        with self._lock:
            self._write(line.encode())
            self.records.append(record)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (further appends fail)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
