"""Fixtures for the chaos build's tests: up-to-date drivers of both flavors, and a
helper that runs one driver trial and parses its JSON lines.

The drivers ``pip install -e .`` built are used when they are newer than every source
they are made from; otherwise the sources are compiled into a temporary directory with
the flavor's defines, so the tests always exercise the code in the tree.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "harness" / "native"
SRC = ROOT / "allocator" / "src"
INCLUDE = ROOT / "allocator" / "include"
BUILT = ROOT / "harness" / "_native"


def mutant_names() -> list[str]:
    """The mutants chaos.h lists (its NMM_MUTANTS X-macro), in order."""
    text = (SRC / "chaos.h").read_text()
    body = text[text.index("#define NMM_MUTANTS(X)"):text.index("NMM_MUTANT_ENUM_")]
    return re.findall(r"\bX\((\w+),", body)


def _sources() -> list[Path]:
    alloc = [p for p in SRC.glob("*.c") if not p.name.endswith("_shim.c")]
    return sorted(NATIVE.glob("*.c")) + sorted(alloc)


def _newest_input() -> float:
    inputs = [*_sources(), *NATIVE.glob("*.h"), *SRC.glob("*.h"), *INCLUDE.glob("*.h")]
    return max(p.stat().st_mtime for p in inputs)


def _driver(tmp: Path, name: str, defines: Sequence[str]) -> Path:
    built = BUILT / name
    if built.is_file() and built.stat().st_mtime >= _newest_input():
        return built
    out = tmp / name
    cmd = ["gcc", "-std=gnu11", "-O2", "-g", "-pthread", "-Wall", "-Wextra",
           "-fvisibility=hidden", *[f"-D{d}" for d in defines], "-I", str(INCLUDE),
           "-I", str(SRC), *map(str, _sources()), "-lm", "-ldl", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"cannot build {name}:\n{proc.stderr[-4000:]}")
    return out


@pytest.fixture(scope="session")
def chaos_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An up-to-date nmm-driver_chaos (NMM_CHAOS: the scheduler and the mutants)."""
    return _driver(tmp_path_factory.mktemp("chaos"), "nmm-driver_chaos", ["NMM_CHAOS"])


@pytest.fixture(scope="session")
def release_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An up-to-date production nmm-driver."""
    return _driver(tmp_path_factory.mktemp("release"), "nmm-driver", [])


@dataclass(frozen=True)
class Run:
    """A finished driver child: its JSON lines, exit code and stderr."""

    returncode: int
    lines: tuple[dict[str, Any], ...]
    stderr: str

    def one(self, kind: str) -> dict[str, Any]:
        found = [ln for ln in self.lines if ln.get("type") == kind]
        assert len(found) == 1, (kind, self.returncode, self.stderr[-2000:])
        return found[0]


#: a small controlled trial: 3 workers, cross-thread frees, a short live set
SMALL = ["--threads", "3", "--ops", "300", "--live", "16", "--cross", "0.3",
         "--progress-every", "0"]


@pytest.fixture
def run_driver() -> Callable[..., Run]:
    def run(driver: Path, *args: str, timeout: float = 120) -> Run:
        proc = subprocess.run([str(driver), "run", *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        lines = tuple(json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{"))
        return Run(proc.returncode, lines, proc.stderr)
    return run
