"""The nmm-chaos CLI: exit codes (0 pass, 1 a trial failed, 2 bad input), error messages
without tracebacks, reports written, --help everywhere."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from harness.cli import main
from harness.invocation import command_line

PLANS = Path(__file__).resolve().parent.parent.parent / "chaos_plans"
PLAN = """
schema_version = 1
seeds = 2
timeout_s = 10
[workload]
ops = 100
[[faults]]
kind = "double_free"
"""


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["plans", "--help"],
                                  ["plans", "validate", "--help"], ["plans", "list", "-h"]])
def test_help_everywhere(args, capsys):
    code, out, _ = run(args, capsys)
    assert code == 0
    assert "Usage: nmm-chaos" in out


def test_run_passing_plan_exits_0_and_writes_reports(tmp_path, write_plan, fake_driver,
                                                     capsys):
    plan = write_plan(PLAN)
    code, out, _ = run(["run", str(plan), "--out", str(tmp_path / "r"), "--driver",
                        shlex.join(fake_driver("detect"))], capsys)
    assert code == 0
    run_dirs = list((tmp_path / "r").iterdir())
    assert len(run_dirs) == 1
    doc = json.loads((run_dirs[0] / "result.json").read_text())
    assert doc["report_version"] == 3 and doc["verdict"]["status"] == "pass"
    assert doc["summary"]["trials"] == 2 and doc["summary"]["passed"] == 2
    assert doc["matrix"]["double_free"]["nmm:standard"]["detected"] == 2
    assert (run_dirs[0] / "report.html").is_file() and (run_dirs[0] / "junit.xml").is_file()
    assert "2/2 trials passed" in (run_dirs[0] / "summary.md").read_text()
    assert out.splitlines()[-1] == (
        f"PASS plan: 2/2 trials passed; report {run_dirs[0] / 'summary.md'}")


def test_run_failing_trial_exits_1(tmp_path, write_plan, fake_driver, capsys):
    code, out, _ = run(["run", str(write_plan(PLAN)), "--out", str(tmp_path), "--driver",
                        shlex.join(fake_driver("miss"))], capsys)
    assert code == 1
    assert "FAIL" in out


def test_run_json_prints_the_document(tmp_path, write_plan, fake_driver, capsys):
    code, out, _ = run(["run", str(write_plan(PLAN)), "--out", str(tmp_path), "--json",
                        "--seeds", "3", "--seed", "10", "--driver",
                        shlex.join(fake_driver("detect"))], capsys)
    assert code == 0
    doc = json.loads(out)
    assert [t["seed"] for t in doc["trials"]] == [10, 11, 12]


def test_expectation_override_from_the_command_line(tmp_path, write_plan, fake_driver,
                                                    capsys):
    code, _, _ = run(["run", str(write_plan(PLAN)), "--out", str(tmp_path), "--set",
                      'expect.outcome=["missed"]', "--driver",
                      shlex.join(fake_driver("miss"))], capsys)
    assert code == 0


def test_bad_plan_exits_2_with_file_and_key(tmp_path, write_plan, capsys):
    bad = write_plan("schema_version = 1\n[workload]\nthreads = 0\n")
    code, out, err = run(["run", str(bad), "--out", str(tmp_path)], capsys)
    assert code == 2
    assert f"{bad}: workload.threads: given 0; expected greater than or equal to 1" in err
    assert "Traceback" not in err + out


def test_bad_override_exits_2(tmp_path, write_plan, fake_driver, capsys):
    code, _, err = run(["run", str(write_plan(PLAN)), "--set", "workload.threads=lots",
                        "--driver", shlex.join(fake_driver("detect"))], capsys)
    assert code == 2
    assert "--set workload.threads=lots: workload.threads: given 'lots'" in err


def test_missing_plan_file_exits_2(tmp_path, capsys):
    code, _, err = run(["run", str(tmp_path / "nope.toml")], capsys)
    assert code == 2
    assert "nope.toml: no such plan file" in err


def test_unknown_option_exits_2(capsys):
    code, _, err = run(["run", "--frobnicate", "x.toml"], capsys)
    assert code == 2
    assert "No such option" in err and "--frobnicate" in err


def test_an_unknown_scheduler_kind_exits_2_naming_the_kinds(write_plan, capsys):
    plan = write_plan('schema_version = 1\n[scheduler]\nkind = "fifo"\n')
    code, _, err = run(["run", str(plan)], capsys)
    assert code == 2
    assert "scheduler.kind" in err and "'pct'" in err and "'surw'" in err


def test_resume_of_a_non_run_directory_exits_2(tmp_path, write_plan, fake_driver, capsys):
    code, _, err = run(["run", str(write_plan(PLAN)), "--resume", str(tmp_path), "--driver",
                        shlex.join(fake_driver("detect"))], capsys)
    assert code == 2
    assert "not a run directory" in err


def test_resume_with_out_exits_2_naming_both(tmp_path, write_plan, capsys):
    code, _, err = run(["run", str(write_plan(PLAN)), "--resume", str(tmp_path), "--out",
                        str(tmp_path / "elsewhere")], capsys)
    assert code == 2
    assert "--out" in err and "--resume" in err
    assert not (tmp_path / "elsewhere").exists()


def test_jobs_with_the_python_engine_exits_2(write_plan, capsys):
    code, _, err = run(["run", str(write_plan(PLAN)), "--engine", "python", "-j", "4"], capsys)
    assert code == 2
    assert "--jobs: given 4" in err


def test_missing_driver_exits_2(monkeypatch, tmp_path, write_plan, capsys):
    monkeypatch.setenv("NMM_CHAOS_DRIVER", str(tmp_path / "no-driver"))
    code, _, err = run(["run", str(write_plan(PLAN)), "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert f"error: native driver not found at {tmp_path / 'no-driver'}" in err
    assert not (tmp_path / "r").exists()


def test_plans_validate_shipped_plans(capsys):
    code, out, _ = run(["plans", "validate"], capsys)
    assert code == 0
    assert "smoke.toml" in out and "plans valid" in out


def test_plans_validate_reports_every_bad_plan(write_plan, capsys):
    good = write_plan("schema_version = 1\n", "good.toml")
    bad = write_plan("schema_version = 1\nseeds = 0\n", "bad.toml")
    code, out, err = run(["plans", "validate", str(good), str(bad)], capsys)
    assert code == 2
    assert "FAIL" in err and "bad.toml: seeds: given 0" in err
    assert "1/2 plans valid" in out


def test_plans_list(capsys):
    code, out, _ = run(["plans", "list", str(PLANS / "smoke.toml")], capsys)
    assert code == 0
    assert "nmm:paranoid" in out


def test_plans_list_of_a_missing_or_invalid_plan_exits_2(tmp_path, write_plan, capsys):
    """It exited 0 with an 'invalid' row, and 0 with an empty table for an empty directory."""
    code, out, err = run(["plans", "list", str(tmp_path / "nope.toml"),
                          str(write_plan("schema_version = 1\n"))], capsys)
    assert code == 2
    assert "invalid" in out and "plan.toml" in out
    assert f"1 invalid plan(s); `{command_line('plans', 'validate')}` says why" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(["plans", "list", str(tmp_path / "empty")], capsys)
    assert code == 2 and f"error: no plans found under {tmp_path / 'empty'}" in err


def test_unwritable_out_directory_exits_2(tmp_path, write_plan, fake_driver, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run(["run", str(write_plan(PLAN)), "--out", str(blocker / "sub"),
                        "--driver", shlex.join(fake_driver("detect"))], capsys)
    assert code == 2
    assert err.startswith("error: --out ") and "Not a directory" in err


def test_empty_out_exits_2(write_plan, fake_driver, capsys):
    code, _, err = run(["run", str(write_plan(PLAN)), "--out", "", "--driver",
                        shlex.join(fake_driver("detect"))], capsys)
    assert code == 2 and "error: --out: given an empty path" in err


@pytest.mark.parametrize(("driver", "message"), [
    ("/nonexistent/nmm-driver --fast", "/nonexistent/nmm-driver: no such executable"),
    ("", "--driver: given an empty command"),
    ('"unclosed', "No closing quotation"),
])
def test_driver_that_cannot_run_exits_2_before_any_trial(tmp_path, write_plan, driver,
                                                          message, capsys):
    """Not a run of crashed trials (exit 1) or a traceback: bad input, exit 2."""
    code, out, err = run(["run", str(write_plan(PLAN)), "--out", str(tmp_path / "r"),
                          "--driver", driver], capsys)
    assert code == 2
    assert err.startswith("error: --driver") and message in err
    assert "Traceback" not in out + err and not (tmp_path / "r").exists()


def test_driver_with_the_python_engine_exits_2(tmp_path, write_plan, fake_driver, capsys):
    """It was silently ignored: the user's driver never ran."""
    code, _, err = run(["run", str(write_plan(PLAN)), "--engine", "python", "--out",
                        str(tmp_path), "--driver", shlex.join(fake_driver("detect"))], capsys)
    assert code == 2 and "error: --driver: the python engine runs no driver" in err


def _one_run(tmp_path, plan, driver, *extra):
    code = main(["run", str(plan), "--out", str(tmp_path / "r"), "--driver", driver, *extra])
    assert code == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    return run_dir


@pytest.mark.parametrize("change", [["--set", "workload.ops=200"], ["--engine", "python"]])
def test_resume_of_another_plan_exits_2_and_changes_nothing(tmp_path, write_plan, fake_driver,
                                                            change, capsys):
    driver = shlex.join(fake_driver("detect"))
    run_dir = _one_run(tmp_path, write_plan(PLAN), driver)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    capsys.readouterr()
    with_driver = [] if "python" in change else ["--driver", driver]
    code, out, err = run(["run", str(write_plan(PLAN)), "--resume", str(run_dir),
                          *with_driver, *change], capsys)
    assert code == 2
    assert f"error: --resume {run_dir}: that run is plan 'plan' with other settings" in err
    # each key that differs, with the run's value and this command's
    assert ("\n  workload.ops: was 100, now 200\n" if "python" not in change
            else '\n  engine: was "native", now "python"\n') in err
    assert err.count("\n  ") == 1  # that key alone
    assert "only --seed/--seeds may change" in err and "Traceback" not in out + err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_resume_with_more_seeds_of_the_same_plan_keeps_the_first_run_json(
        tmp_path, write_plan, fake_driver, capsys):
    driver = shlex.join(fake_driver("detect"))
    plan = write_plan(PLAN)
    run_dir = _one_run(tmp_path, plan, driver)
    first = (run_dir / "run.json").read_text()
    code, _, _ = run(["run", str(plan), "--seeds", "3", "--resume", str(run_dir), "--driver",
                      driver], capsys)
    assert code == 0
    assert (run_dir / "run.json").read_text() == first
    doc = json.loads((run_dir / "result.json").read_text())
    assert doc["summary"]["trials"] == 3


def test_python_engine_bad_target_option_exits_2(tmp_path, write_plan, capsys):
    plan = write_plan(PLAN + "[target]\noptions = { frob = 1 }\n")
    code, out, err = run(["run", str(plan), "--engine", "python", "--out", str(tmp_path)],
                         capsys)
    assert code == 2
    assert f"error: {plan}: target.options.frob: unknown key 'frob'" in err
    assert "Traceback" not in out + err and not list(tmp_path.glob("*/run.json"))


def test_readme_documents_every_command_and_option():
    """Each nmm-chaos command and each of its long options is named in README.md."""
    import click

    from harness.cli import cli

    readme = (PLANS.parent / "README.md").read_text()

    def walk(group: click.Group, prefix: str):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from walk(command, f"{prefix} {name}")
            else:
                yield f"{prefix} {name}", command

    missing = []
    for path, command in walk(cli, "nmm-chaos"):
        if path not in readme:
            missing.append(path)
        for param in command.params:
            missing += [f"{path} {opt}" for opt in param.opts
                        if opt.startswith("--") and opt != "--help" and opt not in readme]
    assert not missing


@pytest.mark.parametrize(("args", "option"), [(["--seeds", "100001"], "'--seeds'"),
                                              (["--seed", str(1 << 64)], "'--seed'")])
def test_seed_options_out_of_range_name_the_option_given(write_plan, args, option, capsys):
    """Not '--set seeds=100001', which the user did not type."""
    code, _, err = run(["run", str(write_plan(PLAN)), *args], capsys)
    assert code == 2
    assert f"Invalid value for {option}" in err and "--set" not in err


@pytest.mark.parametrize(("engine", "message"), [
    ("native", "target.peer: unknown target 'nonexist'"),
    ("python", "the Python driver drives NMM heaps only"),
])
def test_plan_the_engine_cannot_run_leaves_no_run_directory(tmp_path, write_plan, engine,
                                                            message, capsys):
    """An empty run directory (run.json, no trial) was left behind by every such attempt."""
    plan = write_plan(PLAN + '[target]\nkind = "malloc"\npeer = "nonexist"\n')
    code, _, err = run(["run", str(plan), "--engine", engine, "--out", str(tmp_path / "r")],
                       capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "r").exists()


def test_peer_whose_library_does_not_load_exits_2(tmp_path, write_plan, monkeypatch, capsys):
    """ld.so goes on with glibc's malloc: every trial would have judged glibc as the peer."""
    from harness import _peers

    lib = tmp_path / "libbroken.so"
    lib.write_text("not an ELF file")
    broken = _peers.Target("broken", "a damaged peer", "malloc", preload=(str(lib),))
    monkeypatch.setattr(_peers, "get_target", lambda name: broken)
    plan = write_plan('target = "malloc:broken"\n' + PLAN)
    code, _, err = run(["run", str(plan), "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert f"error: target.peer: broken: ERROR: ld.so: object '{lib}' from LD_PRELOAD" in err
    assert not (tmp_path / "r").exists()


def test_plan_name_cannot_put_the_run_directory_outside_out(tmp_path, write_plan, fake_driver,
                                                            capsys):
    """The run id embeds the plan's free-text name; '/' and '..' in it made directories."""
    out = tmp_path / "out" / "reports"
    plan = write_plan('name = "../../a/b c"\n' + PLAN)
    code, _, _ = run(["run", str(plan), "--out", str(out), "--driver",
                      shlex.join(fake_driver("detect"))], capsys)
    assert code == 0
    (run_dir,) = out.iterdir()
    assert "a_b_c" in run_dir.name
    assert (run_dir / "result.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "plan.toml"]


def test_a_new_run_never_joins_an_existing_run_directory(tmp_path):
    """Run ids are the second plus the pid: two runs in one second under a reused pid
    would have shared one journal. A taken name gets a suffix instead."""
    from harness.cli import _new_run_dir

    first = _new_run_dir(tmp_path / "r", "20261125-213521-smoke-9453")
    (first / "journal.jsonl").write_text("{}\n")
    second = _new_run_dir(tmp_path / "r", "20261125-213521-smoke-9453")
    third = _new_run_dir(tmp_path / "r", "20261125-213521-smoke-9453")
    assert [d.name for d in (first, second, third)] == [
        "20261125-213521-smoke-9453", "20261125-213521-smoke-9453-2",
        "20261125-213521-smoke-9453-3"]
    assert not any(second.iterdir()) and (first / "journal.jsonl").read_text() == "{}\n"
