"""Compiles tests/cpp/test_nmm_hpp.cpp against nmm.hpp and libnmm.a, with and without
ASan+UBSan, and runs it: proves unique_block ownership and nmm::allocator<T> in STL
containers (the program's own CHECKs are the assertions)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import allocator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LIBNMM_A = allocator.preload_path().parent / "libnmm.a"


@pytest.mark.parametrize(
    "flags",
    [["-O1"], ["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]],
    ids=["plain", "asan-ubsan"],
)
def test_nmm_hpp(tmp_path: Path, flags: list[str]) -> None:
    exe = tmp_path / "test_nmm_hpp"
    build = subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-g",
            *flags,
            f"-I{ROOT / 'allocator' / 'include'}",
            str(HERE / "test_nmm_hpp.cpp"),
            str(LIBNMM_A),
            "-pthread",
            "-o",
            str(exe),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert run.stdout.strip() == "ok"
    assert "runtime error" not in run.stderr  # UBSan reports
