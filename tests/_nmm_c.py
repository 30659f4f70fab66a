"""Build and run the small C (and C++) programs of the periphery tests
(tests/c/preload/*.c, *.cpp).

Programs are compiled once per test session (per xdist worker) into a temporary
directory, either against the static ``allocator/_native/libnmm.a`` (programs that
call the NMM API) or against nothing at all (programs that only call malloc and
are run under ``LD_PRELOAD``). The native artifacts come from ``pip install -e .``;
a missing one is a failure with the command that builds it, never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "allocator" / "_native"
PROGRAMS = Path(__file__).resolve().parent / "c" / "preload"
INCLUDE = ROOT / "allocator" / "include"

# -O0, frame pointers and exported symbols: the reports name functions by dladdr
# and the misuse in the programs must not be optimised away.
DEBUG_FLAGS = ["-O0", "-g", "-fno-omit-frame-pointer", "-fno-builtin", "-rdynamic", "-pthread"]


def native_artifact(name: str) -> Path:
    """A file under allocator/_native, or a test failure saying how to build it."""
    path = NATIVE / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `pip install -e .` (or `make native`)")
    return path


def preload_path() -> Path:
    """libnmm_preload.so, as `python -m allocator preload-path` reports it."""
    out = subprocess.run(
        [sys.executable, "-m", "allocator", "preload-path"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode == 0 and out.stdout.strip():
        path = Path(out.stdout.strip())
        if path.exists():
            return path
    return native_artifact("libnmm_preload.so")


def require_tool(name: str) -> str:
    """Path of an external program; missing is a skip locally, a failure under CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it with apt-get)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_driver() -> list[str]:
    """The built nmm-driver command; missing is a skip locally (of the calling test,
    or of the whole module at import), a failure under CI (the package build makes it)."""
    from harness.errors import DriverNotFound
    from harness.runner import driver_command

    try:
        return driver_command()
    except DriverNotFound as exc:  # pragma: no cover - the package build makes it
        if os.environ.get("CI"):
            raise
        pytest.skip(f"native driver not built: {exc}", allow_module_level=True)


def compile_program(source: str, out_dir: Path, *, link_nmm: bool) -> Path:
    """Compile tests/c/preload/<source> into out_dir; returns the executable."""
    src = PROGRAMS / source
    exe = out_dir / src.stem
    compiler = ["g++", "-std=c++17"] if src.suffix == ".cpp" else ["gcc", "-std=gnu11"]
    cmd = [*compiler, *DEBUG_FLAGS, "-I", str(INCLUDE), str(src), "-o", str(exe)]
    if link_nmm:
        cmd[-2:-2] = [str(native_artifact("libnmm.a"))]
        cmd += ["-ldl", "-lm"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"compiling {src.name} failed:\n{' '.join(cmd)}\n{result.stderr}")
    return exe


def run(
    argv: list[str],
    *,
    preload: Path | None = None,
    options: str | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 300,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a program, optionally under the preload library with NMM_OPTIONS."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "NMM_OPTIONS")}
    if preload is not None:
        env["LD_PRELOAD"] = str(preload)
    if options is not None:
        env["NMM_OPTIONS"] = options
    if extra_env:
        env.update(extra_env)
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        input=stdin,
        timeout=timeout,
        check=False,
    )


def nmm_lines(stderr: str) -> list[str]:
    """The lines NMM wrote to stderr."""
    return [line for line in stderr.splitlines() if line.startswith("nmm:")]
