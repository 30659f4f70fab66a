"""Offline symbolization of NMM reports: ``python -m allocator symbolize [LOG]``.

asan_symbolize's job for NMM's logs. A report names each frame by its module and
offset, ``(/path/to/module+0x11c2)``; when it was written without a source location
(``symbolize=0``, no symbolizer on that machine, or a module whose line table lives
in a separate debug package, which the in-process symbolizer leaves alone to stay
fast) this adds ``file:line:column``, and the function name where the report had
none, from ``llvm-symbolizer`` (or ``addr2line``) run over those modules here.
Frames of text reports and of JSON-lines reports are both filled in; every other
line passes through unchanged. Offsets are already those of the call instruction,
so nothing is adjusted.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocator.errors import ReportLogError

#: symbolizers tried in order when none is named
SYMBOLIZERS = ("llvm-symbolizer", *(f"llvm-symbolizer-{v}" for v in range(19, 12, -1)),
               "addr2line")

_FRAME = re.compile(r"^(?P<head>\s*#\d+ 0x[0-9a-f]+ in )(?P<body>.*?)"
                    r" \((?P<module>/[^()]*)\+0x(?P<offset>[0-9a-f]+)\)$")
_LOCATION = re.compile(r" \S+:\d+(?::\d+)?$")


@dataclass(frozen=True, slots=True)
class Location:
    """What a symbolizer says of one address: the innermost function and its line."""

    function: str
    file: str
    line: int
    column: int


Key = tuple[str, int]  # (module path, offset)


def find_symbolizer(name: str | None = None) -> str:
    """The symbolizer to run: ``name`` (a path or a program on PATH), else the first of
    ``SYMBOLIZERS`` on PATH. ``ReportLogError`` when there is none."""
    for candidate in (name,) if name else SYMBOLIZERS:
        found = shutil.which(candidate)
        if found:
            return found
    wanted = name or " or ".join(("llvm-symbolizer", "addr2line"))
    raise ReportLogError(f"no symbolizer: {wanted} is not on PATH (Debian: apt-get install "
                         "llvm or binutils; or name one with --symbolizer)")


def _parse_location(text: str) -> tuple[str, int, int] | None:
    text = text.split(" (discriminator")[0]
    parts = text.rsplit(":", 2)
    numbers = [p for p in parts[1:] if p.isdigit()]
    if len(parts) < 2 or not numbers or parts[0] in ("", "??"):
        return None
    if len(numbers) == 2:
        return parts[0], int(numbers[0]), int(numbers[1])
    return text.rsplit(":", 1)[0], int(numbers[0]), 0


def _run(argv: list[str], stdin: str) -> str:
    try:
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=600,
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReportLogError(f"cannot run {argv[0]}: {exc}") from None
    return out.stdout


def locate(keys: Iterable[Key], symbolizer: str) -> dict[Key, Location]:
    """Source locations of (module, offset) pairs; pairs the symbolizer knows nothing
    of are left out."""
    wanted = sorted(set(keys))
    found: dict[Key, Location] = {}
    if not wanted:
        return found
    if "addr2line" not in Path(symbolizer).name:
        request = "".join(f'"{module}" {offset:#x}\n' for module, offset in wanted)
        blocks = _run([symbolizer, "--inlining=true", "--demangle"], request).split("\n\n")
        for key, block in zip(wanted, blocks, strict=False):
            lines = block.strip("\n").splitlines()
            if len(lines) >= 2 and (where := _parse_location(lines[1])):
                found[key] = Location(lines[0] if lines[0] != "??" else "", *where)
        return found
    for module in sorted({m for m, _ in wanted}):
        offsets = [o for m, o in wanted if m == module]
        out = _run([symbolizer, "-f", "-C", "-e", module],
                   "".join(f"{o:#x}\n" for o in offsets)).splitlines()
        for i, offset in enumerate(offsets):
            if 2 * i + 1 < len(out) and (where := _parse_location(out[2 * i + 1])):
                fn = out[2 * i]
                found[(module, offset)] = Location(fn if fn != "??" else "", *where)
    return found


def _json_frames(obj: Any) -> Iterator[dict[str, Any]]:
    """Every frame object of a decoded report (error stacks, leak group stacks)."""
    if isinstance(obj, dict):
        if "pc" in obj and "module" in obj and "offset" in obj:
            yield obj
            return
        for value in obj.values():
            yield from _json_frames(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _json_frames(value)


def _wants(frame: dict[str, Any]) -> Key | None:
    if frame.get("file") or not frame.get("module"):
        return None
    try:
        return str(frame["module"]), int(str(frame["offset"]), 16)
    except ValueError:
        return None


def symbolize_text(text: str, symbolizer: str) -> str:
    """The log with every frame that lacks a location given one (text and JSON lines)."""
    lines = text.splitlines(keepends=True)
    keys: list[Key] = []
    decoded: dict[int, Any] = {}
    for i, line in enumerate(lines):
        if line.lstrip().startswith("{"):
            try:
                decoded[i] = json.loads(line)
            except json.JSONDecodeError:
                continue
            keys += [k for f in _json_frames(decoded[i]) if (k := _wants(f))]
        elif (m := _FRAME.match(line.rstrip("\n"))) and not _LOCATION.search(m["body"]):
            keys.append((m["module"], int(m["offset"], 16)))
    found = locate(keys, symbolizer)
    out: list[str] = []
    for i, line in enumerate(lines):
        if i in decoded:
            for frame in _json_frames(decoded[i]):
                key = _wants(frame)
                if key and key in found:
                    where = found[key]
                    frame.update(file=where.file, line=where.line, column=where.column)
                    if not frame.get("function") and where.function:
                        frame["function"] = where.function
            end = "\n" if line.endswith("\n") else ""
            out.append(json.dumps(decoded[i], separators=(",", ":")) + end)
            continue
        m = _FRAME.match(line.rstrip("\n"))
        key = (m["module"], int(m["offset"], 16)) if m else None
        if m is None or key not in found or _LOCATION.search(m["body"]):
            out.append(line)
            continue
        where = found[key]
        body = m["body"]
        if body == "??" and where.function:
            body = where.function
        column = f":{where.column}" if where.column else ""
        end = "\n" if line.endswith("\n") else ""
        out.append(f"{m['head']}{body} {where.file}:{where.line}{column} "
                   f"({m['module']}+0x{m['offset']}){end}")
    return "".join(out)


def symbolize_file(path: str | None, symbolizer: str | None = None) -> str:
    """``symbolize_text`` of a file (``None`` or ``"-"``: standard input)."""
    import sys

    program = find_symbolizer(symbolizer)
    if path in (None, "-"):
        return symbolize_text(sys.stdin.read(), program)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ReportLogError(f"{path}: cannot read it: {exc.strerror}") from None
    return symbolize_text(text, program)
