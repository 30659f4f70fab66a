"""The Dask-overhead tool's arithmetic and its refusal of bad arguments (the lead runs
the measurement itself on a quiet machine: `python -m harness.dask_overhead`)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from harness.dask_overhead import Mode, Sample, main, stop_groups


def test_per_trial_cost_is_the_slope_and_overhead_is_slot_time_not_in_trials() -> None:
    mode = Mode("dask", slots=2)
    # 1 s to start, 0.05 s per trial; each trial's child ran 0.08 s of the 2 slots' time
    for n in (40, 160, 40, 160):
        mode.samples.append(Sample(n, 1.0 + 0.05 * n, 0.08 * n))
    assert mode.per_trial_slope([40, 160]) == pytest.approx(0.05)
    assert mode.median_wall(160) == pytest.approx(9.0)
    # (2 x (1 + 0.05 n) - 0.08 n) / n at n = 40 and 160: 0.07 and 0.0325, median 0.05125
    assert mode.overhead_per_trial() == pytest.approx(0.05125)
    assert Mode("local", 2).per_trial_slope([40]) is None


@pytest.mark.parametrize("args", [["--trials", "0,10"], ["--workers", "0"], ["--rounds", "0"],
                                  ["--trials", ","]])
def test_bad_arguments_are_refused_before_anything_starts(args: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2


def test_stopping_the_cluster_kills_what_ignores_sigterm_and_reaps_it() -> None:
    """A cluster process that ignores SIGTERM is SIGKILLed after the grace and waited for:
    nothing is left a zombie (the tool once killed it and never reaped it)."""
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time; "
         "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
         "time.sleep(600)"], stdout=subprocess.PIPE, start_new_session=True)
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                              start_new_session=True)
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        stop_groups([polite, stubborn], grace_s=0.5)
        # returncode is set only by a wait that reaped the process
        assert stubborn.returncode == -signal.SIGKILL
        assert polite.returncode == -signal.SIGTERM
    finally:
        for proc in (stubborn, polite):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if stubborn.stdout is not None:
            stubborn.stdout.close()
