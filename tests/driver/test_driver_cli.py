"""A bad command line is exit 2 with one message naming the option and what was expected."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

CASES = [
    (["run", "--bogus", "1"], "unknown option '--bogus'"),
    (["run", "--threads", "0"], "--threads: expected an integer 1..1024"),
    (["run", "--threads", "two"], "--threads: expected an integer"),
    (["run", "--ops"], "--ops: missing value"),
    (["run", "--target", "tcmalloc"], "--target: expected 'nmm' or 'malloc'"),
    (["run", "--sizes", "100-10"], "--sizes: expected ranges lo-hi"),
    (["run", "--sizes", "16-64:zero"], "--sizes: weight"),
    (["run", "--cross", "1.5"], "--cross: expected a number 0..1"),
    (["run", "--fault", "explode"], "--fault: unknown kind 'explode'"),
    (["run", "--fault", "overflow:variant=stack"], "variant 'stack' not valid here"),
    (["run", "--fault", "overflow:size=3"], "unknown key 'size'"),
    (["run", "--fault", "double_free:count=0"], "--fault count: expected an integer"),
    # checked before the trial starts, not at injection time (which printed and exited 0)
    (["run", "--fault", "alloc_failure:fail=bogus"],
     "--fault alloc_failure: fail=bogus: bad value for key 'fail': fail point spec 'bogus'"),
    (["run", "--target", "malloc", "--fault", "alloc_failure"],
     "not applicable to --target malloc"),
    (["run", "--sample-every", "3"], "--sample-every: expected a power of two"),
    (["run", "--nmm-options", "level=loud"], "--nmm-options: "),
    # ignored before, while the start line echoed it as if it applied
    (["run", "--target", "malloc", "--nmm-options", "level=paranoid"],
     "--nmm-options: applies to --target nmm only"),
    (["bench", "pair64", "--nmm-options", "colour=red"], "--nmm-options: "),
    (["run", "--worker", "1"], "option --worker does not apply to 'run'"),
    (["run", "--duration", "0"], "--duration: expected seconds, a number > 0"),
    (["run", "--duration", "-1"], "--duration: expected seconds"),
    (["run", "--duration", "1s"], "--duration: expected seconds"),
    (["run", "--duration", "90000"], "--duration: expected seconds, a number > 0 and <= 86400"),
    (["stream", "--duration", "1"], "option --duration does not apply to 'stream'"),
    (["bench", "pair64", "--duration", "1"], "option --duration does not apply to 'bench'"),
    (["run", "--threads", "2", "--ops", "10", "--worker-ops", "5000"],
     "--worker-ops: expected 2 counts (one per --threads), got 1"),
    (["run", "--threads", "1", "--ops", "10", "--worker-ops", "50,50"], "expected 1 counts"),
    (["run", "--ops", "1000", "--threads", "2", "--worker-ops", "1000,999"],
     "--worker-ops: expected counts >= --ops (1000), got '999'"),
    (["run", "--threads", "1", "--worker-ops", "x"], "--worker-ops: expected counts"),
    (["run", "--threads", "1", "--ops", "10", "--worker-ops", "20", "--duration", "1"],
     "--worker-ops and --duration: give one"),
    (["stream", "--threads", "2", "--worker", "2"], "--worker: expected 0..1"),
    (["bench"], "bench: missing kernel name"),
    (["bench", "nonsense"], "bench: unknown kernel 'nonsense'"),
    (["bench", "pair64", "--live", "5"], "option --live does not apply to 'bench'"),
    (["explode"], "unknown command 'explode'"),
    ([], "missing command"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a) or "empty" for a, _ in CASES])
def test_bad_command_line_exits_2_with_a_message(driver: Path, args: list[str],
                                                 message: str) -> None:
    proc = subprocess.run([str(driver), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_help_exits_0(driver: Path) -> None:
    proc = subprocess.run([str(driver), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "nmm-driver run" in proc.stdout and "--fault" in proc.stdout
