"""A target that hangs has its remaining trials skipped (``skipped-hanging``), in a
campaign and in a run, instead of each waiting out its watchdog; a target that hangs
only now and then, or on one fault only, keeps running its other trials."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from harness.cli import main
from harness.hangstop import SKIPPED_HANGING, HangStop
from harness.journal import JOURNAL_NAME
from harness.records import Observation, TrialRecord, Verdict

#: six seeds of three faults, a stall called a hang after half a second
PLAN = {"faults": ("double_free", "overflow", "invalid_free"), "seeds": 6, "seed": 1,
        "timeout_s": 60, "hang_s": 0.5}


def _record(seed: int, outcome: str, passed: bool = False) -> TrialRecord:
    return TrialRecord(key=f"k{seed}", plan="p", plan_hash="h", seed=seed, target="t",
                       observation=Observation(),
                       verdict=Verdict(outcome=outcome, passed=passed))


def test_a_row_stops_after_two_hangs_and_the_target_after_two_rows() -> None:
    stop = HangStop()
    stop.note("nmm:off", "a", _record(1, "hang"))
    assert stop.why_skip("nmm:off", "a") is None  # one hang is not yet a pattern
    stop.note("nmm:off", "a", _record(2, "hang"))
    why = stop.why_skip("nmm:off", "a")
    assert why is not None and "hung in 2 trial(s) of a (seeds 1, 2)" in why
    assert stop.why_skip("nmm:off", "b") is None      # one row only: the others still run
    assert stop.why_skip("nmm:standard", "a") is None  # another target is not touched
    stop.note("nmm:off", "b", _record(3, "hang"))
    stop.note("nmm:off", "b", _record(4, "hang"))
    why = stop.why_skip("nmm:off", "c")
    assert why is not None and "nmm hung in 4 trial(s), in a on nmm:off, b on nmm:off" in why
    # NMM's levels are one library: its other levels stop too; another allocator does not
    assert stop.why_skip("nmm:paranoid+abort", "a") is not None
    assert stop.why_skip("malloc:jemalloc", "a") is None


def test_trials_that_finish_otherwise_keep_the_row_and_target_running() -> None:
    stop = HangStop()
    for seed, outcome, passed in [(1, "detected", True), (2, "missed", False),
                                  (3, "hang", False), (4, "hang", False)]:
        stop.note("malloc:mimalloc", "double_free", _record(seed, outcome, passed))
    assert stop.why_skip("malloc:mimalloc", "double_free") is None  # 2 hangs, 2 others
    stop.note("malloc:mimalloc", "double_free", _record(5, "hang"))
    assert stop.why_skip("malloc:mimalloc", "double_free") is not None
    # one row hanging (a peer looping on double frees) with the rest fine: the rest runs
    for seed in range(6, 12):
        stop.note("malloc:mimalloc", "overflow", _record(seed, "detected", True))
    stop.note("malloc:mimalloc", "uaf", _record(12, "hang"))
    stop.note("malloc:mimalloc", "uaf", _record(13, "hang"))
    assert stop.why_skip("malloc:mimalloc", "uaf") is not None
    assert stop.why_skip("malloc:mimalloc", "overflow") is None
    # a plan that expects its hang passed: finished otherwise, never a reason to stop
    stop = HangStop()
    for seed in range(5):
        stop.note("t", "r", _record(seed, "hang", passed=True))
    assert stop.why_skip("t", "r") is None


def test_an_nmm_that_hangs_at_one_level_only_keeps_its_other_levels() -> None:
    stop = HangStop()
    for seed in range(6):
        stop.note("nmm:off", "a", _record(seed, "detected", True))
    for row in ("a", "b"):
        for seed in (10, 11):
            stop.note("nmm:paranoid", row, _record(seed, "hang"))
    assert stop.why_skip("nmm:paranoid", "a") is not None      # its hanging rows stop
    assert stop.why_skip("nmm:paranoid", "c") is None          # 4 hangs, 6 fine: not all
    assert stop.why_skip("nmm:off", "b") is None


def _journal(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / JOURNAL_NAME).read_text().splitlines()]
    return [r for r in lines if "verdict" in r]  # records, not trial_start lines


def test_a_campaign_skips_a_hanging_targets_trials_after_four_hangs(
        tmp_path, write_plan, fake_driver, capsys) -> None:
    """3 fault rows x 6 seeds against a driver that stalls in every trial, one worker:
    two hangs per row stop the row, two stopped rows the target: 4 trials run."""
    plan = write_plan(**PLAN)
    code = main(["campaign", str(plan), "--workers", "1", "-q", "--split-faults",
                 "--driver", shlex.join(fake_driver("stall")), "--out", str(tmp_path / "r")])
    assert code == 1
    (run_dir,) = (tmp_path / "r").iterdir()
    records = _journal(run_dir)
    outcomes = [r["verdict"]["outcome"] for r in records]
    assert len(records) == 18 and outcomes.count("hang") == 4
    assert outcomes.count(SKIPPED_HANGING) == 14
    assert all(not r["verdict"]["passed"] for r in records)
    skipped = [r for r in records if r["verdict"]["outcome"] == SKIPPED_HANGING]
    assert all(r["observation"].get("argv", []) == [] for r in skipped)  # never run
    assert any("nmm hung in 4 trial(s)" in r["verdict"]["reasons"][0] for r in skipped)
    summary = (run_dir / "summary.md").read_text()
    assert SKIPPED_HANGING in summary
    capsys.readouterr()


def test_a_campaign_of_a_target_that_does_not_hang_skips_nothing(
        tmp_path, write_plan, fake_driver, capsys) -> None:
    plan = write_plan(**PLAN)
    main(["campaign", str(plan), "--workers", "1", "-q", "--split-faults",
          "--driver", shlex.join(fake_driver("detect")), "--out", str(tmp_path / "r")])
    (run_dir,) = (tmp_path / "r").iterdir()
    outcomes = [r["verdict"]["outcome"] for r in _journal(run_dir)]
    assert len(outcomes) == 18 and SKIPPED_HANGING not in outcomes
    capsys.readouterr()


def test_a_run_skips_the_rest_once_its_first_trials_hang(
        tmp_path, write_plan, fake_driver, capsys) -> None:
    plan = write_plan(**{**PLAN, "seeds": 8})
    code = main(["run", str(plan), "-j", "1", "-q",
                 "--driver", shlex.join(fake_driver("stall")), "--out", str(tmp_path / "r")])
    assert code == 1
    (run_dir,) = (tmp_path / "r").iterdir()
    outcomes = [r["verdict"]["outcome"] for r in _journal(run_dir)]
    assert outcomes.count("hang") == 2 and outcomes.count(SKIPPED_HANGING) == 6
    capsys.readouterr()
