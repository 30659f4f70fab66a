"""nmm_validate against corrupted books (tests/c/validate_corrupt.c reaches into the
heap's private structures): every kind of inconsistency is reported with its own
freelist_corrupt detail, and a corrupted list is walked a bounded number of steps, so
validate returns (the subprocess timeout would catch a loop) instead of hanging."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "allocator" / "src"
INCLUDE = ROOT / "allocator" / "include"
PROGRAM = Path(__file__).resolve().parent / "c" / "validate_corrupt.c"

#: case -> the freelist_corrupt detail it must produce (core.h VALIDATE_*)
CASES = {
    "empty_cycle": 8, "nempty": 11, "retained": 12, "list_flag": 10, "unlinked": 11, "lane": 9,
    "quar_twice": 13, "quar_lost": 14, "quar_bytes": 15, "limit": 16, "live_count": 17,
    "large_count": 17, "bin": 19, "released": 18, "past_bump": 20,
}


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("validate") / "validate_corrupt"
    arch = ["-msse4.2"] if platform.machine() == "x86_64" else []
    sources = sorted(p for p in SRC.glob("*.c") if not p.name.endswith("_shim.c"))
    cmd = ["gcc", "-std=gnu11", "-O1", "-g", "-pthread", *arch, "-I", str(INCLUDE),
           "-I", str(SRC), str(PROGRAM), *map(str, sources), "-o", str(exe), "-ldl", "-lm"]
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-4000:]
    return exe


@pytest.mark.parametrize(("case", "detail"), sorted(CASES.items()))
def test_validate_reports_each_corruption_of_the_books(program: Path, case: str,
                                                       detail: int) -> None:
    out = subprocess.run([str(program), case], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"},
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.startswith(f"ok {case} details=")
    details = {int(d) for d in out.stdout.split("details=")[1].split(",") if d.strip()}
    assert detail in details
