"""The Dask-overhead tool's arithmetic and its refusal of bad arguments (the lead runs
the measurement itself on a quiet machine: `python -m harness.dask_overhead`)."""

from __future__ import annotations

import pytest

from harness.dask_overhead import Mode, Sample, main


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
