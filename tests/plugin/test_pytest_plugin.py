"""The pytest plugin through pytester: plans collected as ``plan.toml::seed[N]`` items,
the --chaos-* options in their own group, markers, xdist, JUnit XML, a failing trial's
message, and nothing collected where no plan was asked for."""

from __future__ import annotations

import shlex
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "harness" / "fake_driver.py"
PLAN = """
schema_version = 1
name = "tiny"
seed = 1003
seeds = 2
timeout_s = 30
markers = {markers}
[workload]
ops = 100
[[faults]]
kind = "double_free"
"""


def fake(mode: str) -> str:
    return shlex.join([sys.executable, str(FAKE), mode])


@pytest.fixture
def plans(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pytester tree with chaos_plans/tiny.toml and a plain test; CI unset."""
    monkeypatch.delenv("CI", raising=False)
    directory = pytester.mkdir("chaos_plans")
    (directory / "tiny.toml").write_text(PLAN.format(markers='["smoke"]'))
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    return directory


def test_plans_are_collected_as_one_item_per_seed(pytester, plans):
    result = pytester.runpytest("--collect-only", "-q", "chaos_plans")
    assert result.ret == 0
    assert [ln for ln in result.outlines if "::" in ln] == [
        "chaos_plans/tiny.toml::seed[1003]", "chaos_plans/tiny.toml::seed[1004]"]


def test_a_run_without_plan_paths_collects_no_plan(pytester, plans):
    """Only .toml files in a chaos_plans directory, or under --chaos-plans, are plans:
    ``pytest test_plain.py`` (a project's own suite) and other TOML files are untouched."""
    other = pytester.mkdir("other")
    (other / "x.toml").write_text(PLAN.format(markers="[]"))
    result = pytester.runpytest("--collect-only", "-q", "test_plain.py", "other")
    assert result.ret == 0
    assert [ln for ln in result.outlines if "::" in ln] == ["test_plain.py::test_plain"]
    result = pytester.runpytest("--collect-only", "-q", "test_plain.py",
                                "--chaos-plans", "other")
    assert [ln for ln in result.outlines if "::" in ln] == [
        "test_plain.py::test_plain", "other/x.toml::seed[1003]", "other/x.toml::seed[1004]"]
    assert result.ret == 0
    # a TOML file that is not a plan, under --chaos-plans: a collection error that says so
    (other / "config.toml").write_text("[tool.x]\n")
    result = pytester.runpytest("--collect-only", "-q", "--chaos-plans", "other/config.toml")
    result.stdout.fnmatch_lines(["*config.toml: tool: unknown key*"])


def test_chaos_plans_ini_option_adds_plans_to_a_bare_pytest(pytester, plans):
    pytester.makeini("[pytest]\ntestpaths = test_plain.py\nchaos_plans = chaos_plans\n")
    result = pytester.runpytest("--collect-only", "-q")
    assert [ln for ln in result.outlines if "::" in ln] == [
        "test_plain.py::test_plain", "chaos_plans/tiny.toml::seed[1003]",
        "chaos_plans/tiny.toml::seed[1004]"]


def test_a_missing_chaos_plans_path_is_a_usage_error(pytester, plans):
    result = pytester.runpytest("--chaos-plans", "nowhere")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--chaos-plans / chaos_plans: *nowhere: no such file or "
                                 "directory*"])


def test_options_are_in_their_own_group(pytester):
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    group = text[text.index("nmm-chaos plans as tests:"):]
    group = group[:group.index("\n\n")]
    for option in ("--chaos-plans=PATH", "--chaos-seeds=N", "--chaos-target=TARGET",
                   "--chaos-level=", "--chaos-set=KEY=VALUE", "--chaos-driver=CMD"):
        assert option in group, option


def test_passing_trials_pass(pytester, plans):
    result = pytester.runpytest("chaos_plans", "--chaos-driver", fake("detect"))
    result.assert_outcomes(passed=2)


def test_chaos_seeds_sets_the_trials_per_plan(pytester, plans):
    result = pytester.runpytest("--collect-only", "-q", "chaos_plans", "--chaos-seeds", "3")
    assert [ln for ln in result.outlines if "::" in ln][-1] == "chaos_plans/tiny.toml::seed[1005]"


def test_a_failing_trial_says_each_faults_outcome_the_diagnostic_and_the_replay(
        pytester, plans):
    """The fake driver's abort mode writes an ``nmm:`` line and aborts: the allocator
    stopped the process (detected-abort) where the plan expects detected."""
    result = pytester.runpytest("chaos_plans", "--chaos-driver", fake("abort"),
                                "--chaos-seeds", "1", "--chaos-level", "paranoid")
    result.assert_outcomes(failed=1)
    replay = shlex.join([str(Path(sys.executable).parent / "nmm-chaos"), "run",
                         "chaos_plans/tiny.toml", "--driver", fake("abort"),
                         "--set", "target.level=paranoid", "--seed", "1003", "--seeds", "1"])
    result.stdout.fnmatch_lines([
        "seed 1003 (nmm:paranoid): detected-abort",
        "  fault 0 double_free: detected-abort (expected detected)*",
        "  diagnostic: nmm: double_free at 0x*",
        f"  replay: {replay}",
        "FAILED chaos_plans/tiny.toml::seed[[]1003] - seed 1003 (nmm:paranoid): detected*",
    ])
    assert "Traceback" not in result.stdout.str()


def test_markers_select_plans(pytester, plans):
    (plans / "long.toml").write_text(PLAN.format(markers='["slow"]').replace("tiny", "long"))
    args = ["--collect-only", "-q", "--strict-markers", "chaos_plans", "test_plain.py"]
    result = pytester.runpytest(*args, "-m", "not slow")
    assert [ln for ln in result.outlines if "::" in ln] == [
        "chaos_plans/tiny.toml::seed[1003]", "chaos_plans/tiny.toml::seed[1004]",
        "test_plain.py::test_plain"]
    result = pytester.runpytest(*args, "-m", "slow")
    assert [ln for ln in result.outlines if "::" in ln] == [
        "chaos_plans/long.toml::seed[1003]", "chaos_plans/long.toml::seed[1004]"]
    result = pytester.runpytest(*args, "-m", "not chaos")
    assert [ln for ln in result.outlines if "::" in ln] == ["test_plain.py::test_plain"]
    result = pytester.runpytest(*args, "-m", "smoke")
    assert [ln for ln in result.outlines if "::" in ln] == [
        "chaos_plans/tiny.toml::seed[1003]", "chaos_plans/tiny.toml::seed[1004]"]


def test_a_bad_plan_is_a_collection_error_naming_file_and_key(pytester, plans):
    (plans / "bad.toml").write_text("schema_version = 1\n[workload]\nthraeds = 2\n")
    result = pytester.runpytest("chaos_plans")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting chaos_plans/bad.toml*",
                                 "*bad.toml: workload.thraeds: unknown key; *; did you mean "
                                 "'threads'?"])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(("ci", "outcome"), [("", "skipped"), ("1", "failed")])
def test_a_peer_that_is_not_installed_skips_on_a_laptop_and_fails_in_ci(
        pytester, plans, monkeypatch, ci, outcome):
    if ci:
        monkeypatch.setenv("CI", ci)
    result = pytester.runpytest("chaos_plans", "--chaos-target", "malloc:nonexistent",
                                "--chaos-seeds", "1", "-rs")
    result.assert_outcomes(**{outcome: 1})
    assert "target.peer: unknown target 'nonexistent'" in result.stdout.str()


def test_xdist_spreads_trials_and_junit_xml_records_them(pytester, plans):
    junit = pytester.path / "junit.xml"
    other = pytester.mkdir("other")  # --chaos-plans reaches the workers too
    (other / "x.toml").write_text(PLAN.format(markers="[]").replace("tiny", "x"))
    result = pytester.runpytest_subprocess(
        "-n", "2", "chaos_plans", "--chaos-plans", "other", "--chaos-seeds", "4",
        "--junitxml", str(junit), "--chaos-driver", fake("oddmiss"), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=4)
    assert "[gw0]" in result.stdout.str() or "[gw1]" in result.stdout.str()
    testcases = list(ET.parse(junit).getroot().iter("testcase"))
    assert sorted(c.get("classname") for c in testcases) == (
        ["chaos_plans.tiny.toml"] * 4 + ["other.x.toml"] * 4)
    cases = {c.get("name"): c for c in testcases if c.get("classname") != "other.x.toml"}
    assert sorted(cases) == [f"seed[{s}]" for s in range(1003, 1007)]
    for seed in (1003, 1005):  # odd seeds miss
        failure = cases[f"seed[{seed}]"].find("failure")
        assert failure is not None
        message = failure.get("message") or ""
        assert message.startswith(f"seed {seed} (nmm:standard): missed\n"
                                  "  fault 0 double_free: missed (expected detected)")
        assert f"--seed {seed} --seeds 1" in message
    for seed in (1004, 1006):
        assert cases[f"seed[{seed}]"].find("failure") is None


def test_a_shipped_plan_runs_on_the_real_driver(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    shutil.copytree(REPO / "chaos_plans", pytester.path / "chaos_plans",
                    ignore=shutil.ignore_patterns("regressions"))
    result = pytester.runpytest("chaos_plans/double_free.toml", "--chaos-seeds", "2",
                                "--chaos-set", "workload.ops=2000", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["chaos_plans/double_free.toml::seed[[]100] PASSED*"])
