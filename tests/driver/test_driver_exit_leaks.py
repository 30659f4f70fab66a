"""--exit-leaks: the trial runs on the default heap (NMM_OPTIONS), leaks blocks on purpose
after its teardown checks, and reads the heap's own leak report at exit back into an
exit_report line, which the oracle holds against what it leaked."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness._isolate import run_child
from harness.oracle import judge
from harness.plan import Plan


def _plan(level: str, options: dict[str, object]) -> Plan:
    return Plan.model_validate({"schema_version": 1,
                                "target": {"kind": "nmm", "level": level, "options": options},
                                "workload": {"threads": 2, "ops": 4000, "exit_leaks": 12},
                                "faults": [{"kind": "double_free"}]})


def _run(driver: Path, level: str, options: str) -> tuple[object, object]:
    argv = [str(driver), "run", "--target", "nmm", "--nmm-options",
            f"level={level}:policy=record:{options}", "--seed", "3", "--threads", "2",
            "--ops", "4000", "--exit-leaks", "12", "--fault", "double_free",
            "--progress-every", "0"]
    obs = run_child(argv, 120.0, env={"PATH": "/usr/bin:/bin"})
    return obs, obs.exit_report


@pytest.mark.parametrize("level", ["off", "standard", "paranoid"])
def test_the_heaps_exit_report_lists_exactly_the_blocks_leaked(driver: Path, level: str) -> None:
    obs, report = _run(driver, level, "tracking=1:stacks=1")
    assert obs.result is not None and obs.result.exit_leaks is not None
    leaked = obs.result.exit_leaks
    assert leaked["blocks"] == 12 and leaked["suppressed_blocks"] == 3
    assert isinstance(report, dict) and report["json"] and report["text_names_lost"]
    assert report["definitely_lost"] == {"blocks": 9, "bytes": leaked["bytes"]
                                         - leaked["suppressed_bytes"]}
    assert report["suppressed"] == {"blocks": 3, "bytes": leaked["suppressed_bytes"]}
    assert obs.exit_code == 0  # exitcode=0: the leaks are on purpose
    verdict = judge(_plan(level, {"tracking": 1, "stacks": "1"}), obs)
    assert verdict.passed, verdict.reasons
    # the log directory the driver made for the report is gone
    assert not list(Path("/tmp").glob(f"nmm-exit-*/nmm.{obs.start['pid']}*"))


def test_no_leak_report_at_exit_fails_the_trial(driver: Path) -> None:
    """Without tracking the heap keeps no sites and makes no leak report at exit."""
    obs, report = _run(driver, "standard", "tracking=0")
    assert isinstance(report, dict) and not report["json"]
    verdict = judge(_plan("standard", {"tracking": 0}), obs)
    assert not verdict.passed
    assert any("no leak report came at exit" in r for r in verdict.reasons), verdict.reasons


#: one bad piece per kind of value (and an unknown key), then help: exitleaks.toml's
BAD = ["nosuch=1", "level=max", "policy=maybe", "quarantine=lots", "sweep=-1",
       "tracking=perhaps", "stacks=1/x", "fail=bogus@", "exitcode=300", "log_format=xml",
       "guard", "mutant=nosuch", "help"]


def test_bad_nmm_options_are_named_and_ignored_and_the_rest_applies(driver: Path) -> None:
    """The pieces go first in the default heap's NMM_OPTIONS: each bad one is named on
    stderr and ignored, every good key after them applies (tracking, leaks, log_path,
    exitcode=0: the exit report and the exit status show it), help prints the table."""
    argv = [str(driver), "run", "--target", "nmm", "--nmm-options",
            "level=standard:policy=record:tracking=1:stacks=1", "--seed", "3", "--threads",
            "2", "--ops", "4000", "--exit-leaks", "12", "--bad-options", ":".join(BAD),
            "--progress-every", "0"]
    obs = run_child(argv, 120.0, env={"PATH": "/usr/bin:/bin"})
    assert obs.exit_code == 0, obs.stderr_tail  # exitcode=300 ignored, exitcode=0 applied
    plan = Plan.model_validate({"schema_version": 1,
                                "target": {"kind": "nmm", "level": "standard",
                                           "options": {"tracking": 1, "stacks": "1"}},
                                "workload": {"threads": 2, "ops": 4000, "exit_leaks": 12,
                                             "bad_options": BAD}})
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons
    assert "bad value '-1' for key 'sweep'" in obs.stderr_tail
    # the same trial judged as if one more piece were bad: a good key is not refused
    stricter = plan.model_copy(update={"workload": plan.workload.model_copy(
        update={"bad_options": [*BAD, "retain=1M"]})})
    assert not judge(stricter, obs).passed
    # the driver takes them only for the default heap
    bad = run_child([str(driver), "run", "--target", "nmm", "--bad-options", "nosuch=1"],
                    60.0, env={"PATH": "/usr/bin:/bin"})
    assert bad.exit_code == 2 and "--bad-options: needs --exit-leaks" in bad.stderr_tail


def test_exit_leaks_need_the_nmm_target(driver: Path) -> None:
    obs = run_child([str(driver), "run", "--target", "malloc", "--exit-leaks", "4"], 60.0,
                    env={"PATH": "/usr/bin:/bin"})
    assert obs.exit_code == 2 and "--exit-leaks: applies to --target nmm only" in obs.stderr_tail


@pytest.mark.parametrize(("level", "check"), [("standard", "exit_check=1"), ("paranoid", ""),
                                              ("standard", ""), ("off", "exit_check=1")])
def test_the_exit_check_names_the_blocks_damaged_before_the_exit(driver: Path, level: str,
                                                                  check: str) -> None:
    """--exit-damage: every other lost block gets the byte past its end flipped (small
    and large), at paranoid a freed block a byte of its poison; the exit check (on at
    paranoid, or exit_check=1) names each in the report at exit, at its address, and
    the leak report still counts every leaked block. Without the exit check (standard
    by default) nothing is named; at off nothing is damaged."""
    argv = [str(driver), "run", "--target", "nmm", "--nmm-options",
            f"level={level}:policy=record:tracking=1:stacks=1" + (f":{check}" if check else ""),
            "--seed", "3", "--threads", "2", "--ops", "4000", "--exit-leaks", "12",
            "--exit-damage", "--progress-every", "0"]
    obs = run_child(argv, 120.0, env={"PATH": "/usr/bin:/bin"})
    assert obs.exit_code == 0, obs.stderr_tail
    assert obs.result is not None and obs.result.exit_leaks is not None
    leaked = obs.result.exit_leaks
    damaged, freed = leaked["damaged"], leaked["freed_written"]
    # leaked blocks 0, 3, 8 and 11 of the 12 (3 and 11 large): i % 8 is 0 or 3
    assert len(damaged) == (0 if level == "off" else 4)
    assert (freed is not None) == (level == "paranoid")
    report = obs.exit_report
    assert isinstance(report, dict) and report["suppressed"]["blocks"] == 3
    assert report["definitely_lost"]["blocks"] == 9  # the damaged ones still counted lost
    named = {(e["kind"], int(e["address"], 16)) for e in report["exit_errors"]}
    want = {("overflow", int(a, 16)) for a in damaged} | (
        {("use_after_free", int(freed, 16))} if freed else set())
    assert named == (want if level == "paranoid" or check else set())
    options: dict[str, object] = {"tracking": 1, "stacks": "1"}
    if check:
        options["exit_check"] = 1
    p = _plan(level, options)
    p = p.model_copy(update={"workload": p.workload.model_copy(update={"exit_damage": True}),
                             "faults": []})
    verdict = judge(p, obs)
    assert verdict.passed, verdict.reasons


def test_exit_damage_needs_exit_leaks(driver: Path) -> None:
    obs = run_child([str(driver), "run", "--target", "nmm", "--exit-damage"], 60.0,
                    env={"PATH": "/usr/bin:/bin"})
    assert obs.exit_code == 2 and "--exit-damage: needs --exit-leaks" in obs.stderr_tail
