"""Finding and spawning the native driver ``nmm-driver`` (see harness/native/PROTOCOL.md).

``driver_path()`` finds the executable that ``pip install -e .`` builds; the argv
helpers build ``run`` and ``bench`` command lines for a ``Target``; ``run_json``
runs one driver child to completion and parses its JSON lines. Nothing here prints.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness._peers import Target
from harness.errors import DriverNotFound

#: Overrides where the driver is looked for (a path to an ``nmm-driver`` executable).
DRIVER_ENV = "NMM_CHAOS_DRIVER"

_DEFAULT = Path(__file__).resolve().parent / "_native" / "nmm-driver"


def default_driver_path() -> Path:
    """Where ``pip install -e .`` puts the driver: ``harness/_native/nmm-driver``."""
    return _DEFAULT


def driver_path() -> Path:
    """The driver executable: ``$NMM_CHAOS_DRIVER`` if set, else the built one.

    Raises ``DriverNotFound`` naming the path and how to build it.
    """
    override = os.environ.get(DRIVER_ENV)
    path = Path(override) if override else _DEFAULT
    if not path.is_file() or not os.access(path, os.X_OK):
        how = (f"${DRIVER_ENV} points at it" if override
               else "run `pip install -e .` (or `make run`) to build it")
        raise DriverNotFound(f"native driver not found at {path}; {how}")
    return path


def trial_argv(target: Target, *, seed: int = 1, threads: int = 2, ops: int = 100_000,
               extra: Sequence[str] = (), driver: Path | None = None) -> list[str]:
    """``nmm-driver run`` for one trial of ``target``; ``extra`` are more run options."""
    return [str(driver or driver_path()), "run", *target.driver_args(), "--seed", str(seed),
            "--threads", str(threads), "--ops", str(ops), *extra]


def bench_argv(kernel: str, target: Target, *, threads: int | None = None,
               ops: int | None = None, repeat: int | None = None,
               driver: Path | None = None) -> list[str]:
    """``nmm-driver bench KERNEL`` for ``target``; None leaves the kernel's default."""
    argv = [str(driver or driver_path()), "bench", kernel, *target.driver_args()]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if ops is not None:
        argv += ["--ops", str(ops)]
    if repeat is not None:
        argv += ["--repeat", str(repeat)]
    return argv


def spawn(argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a driver child with stdout and stderr piped (text), stdin closed."""
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(env) if env is not None else None)


@dataclass(frozen=True)
class DriverRun:
    """A finished driver child: its JSON lines, exit status and stderr tail."""

    argv: tuple[str, ...]
    lines: tuple[dict[str, Any], ...]
    returncode: int | None  # None: killed by the timeout
    stderr_tail: str
    bad_lines: int = 0

    @property
    def ok(self) -> bool:
        """Exit status 0."""
        return self.returncode == 0

    def last(self, type_: str) -> dict[str, Any] | None:
        """The last line of the given ``type``, if any."""
        found: dict[str, Any] | None = None
        for line in self.lines:
            if line.get("type") == type_:
                found = line
        return found

    def failure(self) -> str:
        """A one-line description of why the child did not finish cleanly."""
        if self.returncode is None:
            return "timeout"
        tail = self.stderr_tail.strip().splitlines()[-1:] or [""]
        if self.returncode < 0:
            how = f"killed by signal {-self.returncode}"
        else:
            how = f"exit {self.returncode}"
        return f"{how}: {tail[0]}" if tail[0] else how


def run_json(argv: Sequence[str], env: Mapping[str, str] | None = None,
             timeout_s: float = 300.0) -> DriverRun:
    """Run a driver child to completion (killed after ``timeout_s``) and parse its
    stdout as JSON lines; lines that are not JSON objects are counted, not raised."""
    proc = spawn(argv, env)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        rc = None
    lines: list[dict[str, Any]] = []
    bad = 0
    for raw in out.splitlines():
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(obj, dict):
            lines.append(obj)
        else:
            bad += 1
    return DriverRun(tuple(argv), tuple(lines), rc, err[-4000:], bad)
