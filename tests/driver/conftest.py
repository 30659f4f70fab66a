"""Fixtures for the native driver tests: find the built nmm-driver or build one.

The driver built by ``pip install -e .`` is used when it is newer than every source
it is made from; otherwise the sources are compiled into a temporary directory with
the same flags, so the tests always exercise the code in the tree.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "harness" / "native"
SRC = ROOT / "allocator" / "src"
INCLUDE = ROOT / "allocator" / "include"
BUILT = ROOT / "harness" / "_native" / "nmm-driver"


def _sources() -> list[Path]:
    alloc = [p for p in SRC.glob("*.c") if not p.name.endswith("_shim.c")]
    return sorted(NATIVE.glob("*.c")) + sorted(alloc)


def _newest_input() -> float:
    inputs = [*_sources(), *NATIVE.glob("*.h"), *SRC.glob("*.h"), *INCLUDE.glob("*.h")]
    return max(p.stat().st_mtime for p in inputs)


@pytest.fixture(scope="session")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to an up-to-date nmm-driver executable."""
    if BUILT.is_file() and BUILT.stat().st_mtime >= _newest_input():
        return BUILT
    out = tmp_path_factory.mktemp("driver") / "nmm-driver"
    cmd = ["gcc", "-std=gnu11", "-O2", "-g", "-pthread", "-Wall", "-Wextra",
           "-fvisibility=hidden", "-I", str(INCLUDE), "-I", str(SRC),
           *map(str, _sources()), "-lm", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"cannot build nmm-driver:\n{proc.stderr[-4000:]}")
    return out


@dataclass(frozen=True)
class Trial:
    """A finished driver child: parsed JSON lines, exit code, stderr."""

    returncode: int
    lines: tuple[dict[str, Any], ...]
    stdout: str
    stderr: str

    def of(self, type_: str) -> list[dict[str, Any]]:
        """Every line of one type, in order."""
        return [line for line in self.lines if line["type"] == type_]

    @property
    def result(self) -> dict[str, Any]:
        """The result line (the test fails if there is none)."""
        results = self.of("result")
        assert results, f"no result line; exit {self.returncode}; stderr: {self.stderr[-2000:]}"
        return results[-1]


def run_driver(driver: Path, args: Sequence[str], env: dict[str, str] | None = None,
               timeout: float = 120.0) -> Trial:
    """Run the driver with ``args`` and parse every stdout line as JSON."""
    child_env = {k: v for k, v in os.environ.items()
                 if k not in ("LD_PRELOAD", "NMM_OPTIONS", "MALLOC_CHECK_")}
    child_env.update(env or {})
    proc = subprocess.run([str(driver), *args], capture_output=True, text=True,
                          timeout=timeout, env=child_env, check=False)
    lines = tuple(json.loads(line) for line in proc.stdout.splitlines() if line.strip())
    return Trial(proc.returncode, lines, proc.stdout, proc.stderr)


@pytest.fixture
def run(driver: Path) -> Iterator[Any]:
    """``run(*args)`` runs the driver and returns a ``Trial``."""

    def _run(*args: str, env: dict[str, str] | None = None) -> Trial:
        return run_driver(driver, args, env)

    yield _run
