"""Hunt, replay and shrink on the chaos build (issue 9): a hunt finds a mutant and saves
an artifact whose identity is in the journal before the trial runs; replay brings the
same signature back every time and says where a changed trial's schedule diverged; the
CLI refuses bad input with one line; shrink writes a small plan whose witness reads as
operations and switches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.chaos import (
    Artifact,
    ChaosError,
    Schedule,
    hunt,
    pct_guarantee,
    replay,
    with_mutant,
)
from harness.cli import main
from harness.identity import build_id
from harness.loader import load_plan
from tests.chaos.conftest import ROOT

PLANS = ROOT / "chaos_plans" / "mutants"


def _hunt_artifact(tmp_path: Path, mutant: str) -> Path:
    out = tmp_path / f"{mutant}.json"
    code = main(["hunt", str(PLANS / f"{mutant}.toml"), "--mutant", mutant,
                 "--max-seeds", "12", "--artifact", str(out)])
    assert code == 0
    return out


def test_hunt_finds_a_mutant_and_replay_brings_the_signature_back(tmp_path, capsys) -> None:
    path = _hunt_artifact(tmp_path, "lock_inversion")
    said = capsys.readouterr().out
    assert "FOUND lock_inversion with mutant lock_inversion: seed" in said
    assert "signature: deadlock / deadlock / " in said
    assert "witness:" in said and " blocked at " in said
    artifact = Artifact.load(path)
    assert artifact.identity["build"] == "chaos" and artifact.identity["build_id"]
    assert artifact.identity["scheduler"]["kind"] in ("pct", "pos", "surw", "random")
    assert artifact.schedule is not None and artifact.schedule.steps > 0
    assert main(["replay", str(path), "--times", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count(": same (deadlock") == 3 and "REPRODUCED: 3/3" in out


def test_replay_of_a_changed_trial_reports_the_divergence_step(tmp_path) -> None:
    path = _hunt_artifact(tmp_path, "xfree_unsync")
    artifact = Artifact.load(path)
    doc = json.loads(path.read_text())
    doc["plan"]["workload"]["ops"] += 7  # the code (here: the workload) changed
    path.write_text(json.dumps(doc))
    result = replay(Artifact.load(path), 1)
    run = result.runs[0]
    assert run.diverged_at is not None
    assert artifact.schedule is not None and 1 <= run.diverged_at <= artifact.schedule.steps + 1


@pytest.mark.parametrize("content, said", [
    ("not json", "not a chaos artifact (not JSON"),
    ('{"x": 1}', "not a chaos artifact (no artifact_version)"),
    ('{"artifact_version": 99}', "artifact_version 99; this nmm-chaos reads version 1"),
    ('{"artifact_version": 1, "identity": {}}', "damaged chaos artifact"),
])
def test_replay_and_shrink_refuse_a_bad_artifact_in_one_line(tmp_path, capsys, content,
                                                             said) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    for cmd in ("replay", "shrink"):
        assert main([cmd, str(bad)]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1


def test_hunt_refuses_an_unknown_mutant_naming_the_known_ones(capsys) -> None:
    assert main(["hunt", str(PLANS / "xfree_unsync.toml"), "--mutant", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown mutant; expected one of" in err and "refill_unlocked" in err


def test_hunt_that_finds_nothing_says_so(capsys) -> None:
    # no mutant: the plan passes every seed
    assert main(["hunt", str(PLANS / "stats_racy.toml"), "--max-seeds", "3",
                 "--strategy", "random"]) == 1
    assert "NOT FOUND stats_racy: 3 seeds (random) passed" in capsys.readouterr().out


def test_the_schedule_trace_round_trips_and_a_long_one_loads() -> None:
    runs = tuple((i % 3, 1 + i % 5) for i in range(400_000))
    sched = Schedule(3, "random", runs)
    assert sched.steps > 1_000_000
    again = Schedule.from_bytes(sched.to_bytes())
    assert again == sched and again.preemptions == len(runs) - 1
    with pytest.raises(ChaosError, match="truncated"):
        Schedule.from_bytes(sched.to_bytes()[:-1] + b"\x80")


def test_the_pct_guarantee_is_one_over_n_k_to_the_d_minus_1() -> None:
    p, runs = pct_guarantee(3, 1000, 3)
    assert p == pytest.approx(1 / (3 * 1000 ** 2))
    assert runs == pytest.approx(3 * 1000 ** 2 * 2.9957, rel=1e-3)
    assert pct_guarantee(2, 50, 1) == (0.5, 5)


def test_the_identity_is_in_the_journal_before_the_trial_starts(tmp_path) -> None:
    plan = with_mutant(load_plan(PLANS / "canary_late.toml"), "canary_late")
    journal = tmp_path / "hunt.jsonl"
    found = hunt(plan, strategy="random", max_seeds=2, journal=journal)
    assert found.found is not None
    lines = [json.loads(ln) for ln in journal.read_text().splitlines()]
    assert lines[0]["type"] == "trial_start" and lines[0]["identity"]["seed"] == plan.seed
    assert "mutant=canary_late" in lines[0]["identity"]["nmm_options"]
    assert lines[1]["type"] == "trial_end" and lines[1]["signature"]["kind"] == "fault overflow"


def test_shrink_writes_a_small_plan_with_a_readable_witness(tmp_path, capsys) -> None:
    path = _hunt_artifact(tmp_path, "xfree_unsync")
    doc = json.loads(path.read_text())
    hunted = doc["identity"]
    doc["identity"] = {**hunted, "build_id": "0" * 16}  # hunted on an older build
    path.write_text(json.dumps(doc))
    assert replay(Artifact.load(path), 1).build_changed
    out = tmp_path / "regressions"
    assert main(["shrink", str(path), "--budget", "100", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    plan_path = next(out.glob("*.toml"))
    small = load_plan(plan_path)
    assert small.workload.ops_per_worker <= 20
    shrunk = Artifact.load(next(out.glob("*.artifact.json")))
    assert shrunk.signature == Artifact.load(path).signature
    assert any(" op " in ln and "free(b" in ln for ln in shrunk.witness)
    # (finished or stopped by its budget: how far 100 s gets depends on the machine's load;
    # the plan above is small either way)
    assert "witness:" in said and ("DONE after" in said or "STOPPED (budget" in said)
    # the shrunk artifact names the build its trial ran on (replay: no "code changed"),
    # its own plan and seed, and the trial it was shrunk from
    assert shrunk.identity["build_id"] == build_id("chaos")
    assert shrunk.identity["plan_hash"] == shrunk.plan_model().plan_hash()
    assert shrunk.identity["seed"] == shrunk.seed
    assert shrunk.identity["shrunk_from"] == {
        "artifact": str(path), "plan": hunted["plan"], "plan_hash": hunted["plan_hash"],
        "seed": hunted["seed"], "build_id": "0" * 16}
    assert main(["replay", str(next(out.glob("*.artifact.json"))), "--times", "2"]) == 0
    assert "code changed" not in capsys.readouterr().out
