"""--exit-leaks: the trial runs on the default heap (NMM_OPTIONS), leaks blocks on purpose
after its teardown checks, and reads the heap's own leak report at exit back into an
exit_report line, which the oracle holds against what it leaked."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import pytest

from harness._isolate import run_child
from harness.oracle import ODD_SITE_FILE, ODD_SITE_LINE, json_text_of, judge
from harness.plan import Plan


def _plan(level: str, options: dict[str, object], **workload: object) -> Plan:
    return Plan.model_validate({"schema_version": 1,
                                "target": {"kind": "nmm", "level": level, "options": options},
                                "workload": {"threads": 2, "ops": 4000, "exit_leaks": 12,
                                             **workload},
                                "faults": [{"kind": "double_free"}]})


def _run(driver: Path, level: str, options: str, *extra: str) -> tuple[Any, Any]:
    argv = [str(driver), "run", "--target", "nmm", "--nmm-options",
            f"level={level}:policy=record:{options}", "--seed", "3", "--threads", "2",
            "--ops", "4000", "--exit-leaks", "12", "--fault", "double_free",
            "--progress-every", "0", *extra]
    obs = run_child(argv, 120.0, env={"PATH": "/usr/bin:/bin"})
    return obs, obs.exit_report


def _report_files_left(pid: int) -> list[str]:
    """The trial's report files still under /tmp (other trials' directories come and go
    while we look: a glob over them can fail with FileNotFoundError)."""
    left = []
    for d in Path("/tmp").iterdir():
        if d.name.startswith("nmm-exit-"):
            try:
                left += [n for n in os.listdir(d) if n.startswith(f"nmm.{pid}")]
            except (FileNotFoundError, NotADirectoryError):
                pass
    return left


@pytest.mark.parametrize("level", ["off", "standard", "paranoid"])
def test_the_heaps_exit_report_lists_exactly_the_blocks_leaked(driver: Path, level: str) -> None:
    obs, report = _run(driver, level, "tracking=1:stacks=1")
    assert obs.result is not None and obs.result.exit_leaks is not None
    leaked = obs.result.exit_leaks
    # blocks 2 and 10 of the 12 are chained (pointed to only by lost blocks 0 and 8)
    assert leaked["blocks"] == 12 and leaked["suppressed_blocks"] == 3
    assert leaked["indirect_blocks"] == 2 and leaked["held_threads"] == 0
    assert isinstance(report, dict) and report["json"] and report["text_names_lost"]
    assert report["definitely_lost"] == {"blocks": 7, "bytes": leaked["bytes"]
                                         - leaked["suppressed_bytes"]
                                         - leaked["indirect_bytes"]}
    assert report["indirectly_lost"] == {"blocks": 2, "bytes": leaked["indirect_bytes"]}
    assert report["suppressed"] == {"blocks": 3, "bytes": leaked["suppressed_bytes"]}
    assert report["still_reachable"] == {"blocks": 0, "bytes": 0}
    # block 4's site has a file name the JSON report must escape and clean: parsed, it
    # is the oracle's own decoding of the same bytes
    assert leaked["odd_blocks"] == 1
    assert report["odd_site"] == f"{json_text_of(ODD_SITE_FILE)}:{ODD_SITE_LINE}"
    # block 6, made in a signal handler: its stack goes on past the signal frame
    assert leaked["signal_blocks"] == 1 and report["text_signal_stack_whole"] is True
    assert obs.exit_code == 0  # exitcode=0: the leaks are on purpose
    verdict = judge(_plan(level, {"tracking": 1, "stacks": "1"}), obs)
    assert verdict.passed, verdict.reasons
    # the log directory the driver made for the report is gone
    assert not _report_files_left(obs.start["pid"])
    # the signal handler's stack cut at the signal frame: the trial fails
    report["text_signal_stack_whole"] = False
    verdict = judge(_plan(level, {"tracking": 1, "stacks": "1"}), obs)
    assert not verdict.passed and any("signal frame" in r for r in verdict.reasons)
    report["text_signal_stack_whole"] = True
    # the odd site's name passed through raw (an invalid byte kept): the trial fails
    saved = report["odd_site"]
    report["odd_site"] = saved.replace("\ufffd", "\udcff", 1)
    verdict = judge(_plan(level, {"tracking": 1, "stacks": "1"}), obs)
    assert not verdict.passed and any("odd file name" in r for r in verdict.reasons)
    report["odd_site"] = saved
    # the chained blocks counted definitely lost (no indirect pass): the trial fails
    report["definitely_lost"] = {"blocks": 9, "bytes": leaked["bytes"]
                                 - leaked["suppressed_bytes"]}
    report["indirectly_lost"] = {"blocks": 0, "bytes": 0}
    verdict = judge(_plan(level, {"tracking": 1, "stacks": "1"}), obs)
    assert not verdict.passed and any("indirectly_lost" in r for r in verdict.reasons)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="--exit-held parks in rbx")
@pytest.mark.parametrize("level", ["off", "paranoid"])
def test_blocks_held_in_a_parked_threads_register_are_still_reachable(
        driver: Path, level: str) -> None:
    """Two threads park until exit holding one block each in rbx alone: the heap's exit
    scan finds them only by stopping the threads and reading their saved registers
    (roots.c's stop handler). With symbolizer=addr2line, a frame of the lost blocks' stack
    names their allocation by file:line (the addr2line fallback)."""
    obs, report = _run(driver, level, "tracking=1:stacks=1", "--exit-held", "2",
                       "--exit-symbolizer", "addr2line")
    plan = _plan(level, {"tracking": 1, "stacks": "1"}, exit_held=2,
                 exit_symbolizer="addr2line")
    leaked = obs.result.exit_leaks
    assert leaked["held_started"] == 2 and leaked["held_blocks"] == 2
    assert report["still_reachable"] == {"blocks": 2, "bytes": leaked["held_bytes"]}
    assert report["text_frame_has_line"] is True
    # block 7's site is a code address: the JSON report symbolizes it as a frame
    assert leaked["pc_blocks"] == 1 and report["json_site_frame"] is True
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons
    # each way the report could be wrong there fails the trial
    lost = dict(report["definitely_lost"])
    for key, value in (("still_reachable", {"blocks": 0, "bytes": 0}),
                       ("definitely_lost", {"blocks": lost["blocks"] + 2,
                                            "bytes": lost["bytes"] + leaked["held_bytes"]}),
                       ("text_frame_has_line", False), ("json_site_frame", False)):
        saved = report[key]
        report[key] = value
        verdict = judge(plan, obs)
        assert not verdict.passed, key
        report[key] = saved
    # a plan that parks threads judged on a driver that parked none
    leaked.update({"held_threads": 0, "held_started": 0, "held_blocks": 0, "held_bytes": 0})
    verdict = judge(plan, obs)
    assert not verdict.passed and any("parks 2 thread(s)" in r for r in verdict.reasons)


def test_exit_held_and_symbolizer_need_exit_leaks(driver: Path) -> None:
    for extra in (["--exit-held", "2"], ["--exit-symbolizer", "addr2line"]):
        bad = run_child([str(driver), "run", "--target", "nmm", *extra], 60.0,
                        env={"PATH": "/usr/bin:/bin"})
        assert bad.exit_code == 2 and f"{extra[0]}: needs --exit-leaks" in bad.stderr_tail
    bad = run_child([str(driver), "run", "--target", "nmm", "--exit-leaks", "4",
                     "--exit-symbolizer", "a:b"], 60.0, env={"PATH": "/usr/bin:/bin"})
    assert bad.exit_code == 2 and "without ':'" in bad.stderr_tail
    bad = run_child([str(driver), "run", "--target", "nmm", "--exit-leaks", "4",
                     "--exit-held", "17"], 60.0, env={"PATH": "/usr/bin:/bin"})
    assert bad.exit_code == 2 and "--exit-held" in bad.stderr_tail
    with pytest.raises(ValueError, match="exit_held"):
        Plan.model_validate({"schema_version": 1, "target": {"kind": "nmm"},
                             "workload": {"exit_held": 2}})
    with pytest.raises(ValueError, match="exit_symbolizer"):
        Plan.model_validate({"schema_version": 1, "target": {"kind": "nmm"},
                             "workload": {"exit_leaks": 4, "exit_symbolizer": "a:b"}})


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
    # the damaged ones still counted lost (blocks 2 and 10 are chained: indirectly lost)
    assert report["definitely_lost"]["blocks"] == 7
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


def test_the_oracles_json_text_keeps_valid_utf8_and_replaces_each_invalid_byte() -> None:
    assert json_text_of(b"a\xc3\xa9\xf0\x9f\x98\x80") == "a\u00e9\U0001f600"
    # a lead byte cut short, an overlong '/', a surrogate, past U+10FFFF: one U+FFFD a byte
    assert json_text_of(b"\xc3(") == "\ufffd("
    assert json_text_of(b"\xc0\xaf") == "\ufffd" * 2
    assert json_text_of(b"\xed\xa0\x80") == "\ufffd" * 3
    assert json_text_of(b"\xf4\x90\x80\x80") == "\ufffd" * 4


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_each_suppression_shape_suppresses_exactly_its_function(driver: Path, seed: int) -> None:
    """The seed picks the suppressed function's pattern (plain, anchored at both ends,
    stars with whitespace and a CR around it, anchors with a star); decoys that nearly
    match the lost blocks' frames are in every file and must match none."""
    argv = [str(driver), "run", "--target", "nmm", "--nmm-options",
            "level=standard:policy=record:tracking=1:stacks=1", "--seed", str(seed),
            "--threads", "1", "--ops", "500", "--exit-leaks", "8", "--progress-every", "0"]
    obs = run_child(argv, 120.0, env={"PATH": "/usr/bin:/bin"})
    leaked, report = obs.result.exit_leaks, obs.exit_report
    assert report["suppressed"] == {"blocks": 2, "bytes": leaked["suppressed_bytes"]}
    assert report["definitely_lost"]["blocks"] == 8 - 2 - leaked["indirect_blocks"]
