"""The append-only trial journal: one JSON line per finished trial, flushed and fsynced.

Owns the ``journal.jsonl`` file of one run. A SIGKILL of the runner loses at most
the trials in flight; a torn last line (the runner died mid-write) is detected,
reported as a warning and cut off before appending resumes — never fatal.
Thread-safe: runner worker threads append concurrently through one lock.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from harness.errors import JournalError
from harness.records import TrialRecord

JOURNAL_NAME = "journal.jsonl"


@dataclass
class JournalContents:
    """What a journal holds: its records (first occurrence per key) and any warnings."""

    records: list[TrialRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: byte length of the intact prefix (everything up to the last complete line)
    intact_bytes: int = 0

    @property
    def keys(self) -> set[str]:
        """Trial keys already recorded."""
        return {r.key for r in self.records}


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

    def append(self, record: TrialRecord) -> None:
        """Write one record as one line with one write(2), then fsync."""
        line = (json.dumps(record.model_dump(mode="json"), separators=(",", ":")) + "\n")
        data = line.encode()
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
            self.records.append(record)

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
