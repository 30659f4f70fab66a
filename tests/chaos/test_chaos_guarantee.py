"""PCT's guarantee where a user looks (issue 9): `nmm-chaos run` of a plan under pct states
1/(n k^(d-1)) and the runs for 95% confidence in its summary and in every report format,
with k the steps the trials really took; and `hunt --calibrate-k` takes pct's k from its
first trial instead of the driver's guess of threads * ops * 10 (off by default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.chaos import TrialRun, hunt, pct_guarantee
from harness.cli import main
from harness.loader import load_plan
from tests.chaos.conftest import ROOT

PLAN = ROOT / "chaos_plans" / "mutants" / "stats_racy.toml"  # run without its mutant
PCT = ["--set", "scheduler.kind=pct", "--set", "scheduler.depth=2",
       "--set", "workload.ops=60"]


def test_run_under_pct_states_the_guarantee_in_its_summary_and_reports(tmp_path: Path,
                                                                      capsys) -> None:
    code = main(["run", str(PLAN), *PCT, "--seeds", "3", "--jobs", "1",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    (run_dir,) = tmp_path.iterdir()
    doc = json.loads((run_dir / "result.json").read_text())
    (g,) = doc["pct_guarantee"]
    steps = [t["sched"]["steps"] for t in _results(run_dir)]
    assert len(steps) == 3 and g["steps"] == max(steps) and g["trials"] == 3
    assert g["threads"] == 2 and g["depth"] == 2
    assert g["planned_k"] == 2 * 60 * 10  # the driver's guess, shown beside what ran
    p, runs = pct_guarantee(2, max(steps), 2)
    assert g["p_per_run"] == pytest.approx(p) and g["runs_for_95"] == runs
    sentence = (f"n=2 threads, k={max(steps)} steps and depth d=2, each run hits a depth-2 "
                f"bug with probability at least 1/(n*k^(d-1)) = {p:.3g}; {runs:,} runs "
                "give 95% confidence")
    assert sentence in out
    assert sentence in (run_dir / "summary.md").read_text()
    assert sentence in (run_dir / "report.html").read_text()


def test_a_run_not_under_pct_states_no_guarantee(tmp_path: Path, capsys) -> None:
    code = main(["run", str(PLAN), "--set", "workload.ops=60", "--seeds", "1",
                 "--out", str(tmp_path)])
    assert code == 0
    assert "PCT guarantee" not in capsys.readouterr().out
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "result.json").read_text())["pct_guarantee"] == []


def _results(run_dir: Path) -> list[dict]:
    lines = [json.loads(ln) for ln in (run_dir / "journal.jsonl").read_text().splitlines()]
    return [ln["observation"]["result"] for ln in lines if ln.get("type") != "trial_start"]


@pytest.mark.parametrize("calibrate", [True, False])
def test_hunt_calibrates_pct_k_on_its_first_trial(calibrate: bool) -> None:
    plan = load_plan(PLAN, ["workload.ops=60"])
    runs: list[TrialRun] = []
    hunt(plan, strategy="pct", depth=2, max_seeds=3, calibrate=calibrate,
         on_trial=lambda n, seed, kind, run: runs.append(run))
    ks = [r.record.observation.result.sched["k"] for r in runs]
    first_steps = runs[0].record.observation.result.sched["steps"]
    assert ks[0] == 2 * 60 * 10
    if calibrate:
        assert ks[1:] == [first_steps, first_steps] and first_steps != ks[0]
    else:
        assert ks == [ks[0]] * 3
