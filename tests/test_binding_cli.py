"""`python -m allocator`: preload-path, options and the demo behind `make run`."""

from __future__ import annotations

import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "allocator", *args], capture_output=True, text=True, timeout=300
    )


def test_options_lists_every_key_the_heap_accepts() -> None:
    out = _run("options")
    assert out.returncode == 0, out.stderr
    keys = {line.split()[0] for line in out.stdout.splitlines()[2:] if line.strip()}
    assert {"level", "policy", "limit", "quarantine", "tracking", "fail"} <= keys


def test_demo_runs_clean_at_every_level() -> None:
    out = _run("demo", "--ops", "3000", "--seed", "5")
    assert out.returncode == 0, out.stdout + out.stderr
    for level in ("off", "standard", "paranoid"):
        assert f"level={level}" in out.stdout
    assert "problems" not in out.stdout


def test_unknown_command_is_a_usage_error() -> None:
    out = _run("frobnicate")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr and "Traceback" not in out.stderr


def test_demo_rejects_an_op_count_it_cannot_time() -> None:
    """--ops 0 divided by zero (a traceback) and negative counts printed negative rates."""
    for ops in ("0", "-5", "3", "many"):
        out = _run("demo", "--ops", ops)
        assert out.returncode == 2, ops
        assert "argument --ops: expected" in out.stderr and "Traceback" not in out.stderr
