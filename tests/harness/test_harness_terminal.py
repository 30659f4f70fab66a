"""``nmm-chaos`` in a CI log, a pipe and an 80-column terminal: a table with no wrapped
cell, failing trials first and passing ones in one line, replay commands that paste,
--quiet, --json with the run's paths, --version, a broken pipe, progress on stderr."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

HERE = Path(__file__).resolve().parent
#: the installed console script, run as a user would
SCRIPT = Path(sys.executable).parent / "nmm-chaos"
PLAN = """
schema_version = 1
name = "tiny"
seeds = 6
timeout_s = 30
[workload]
ops = 100
[[faults]]
kind = "double_free"
"""


def fake(mode: str) -> str:
    return shlex.join([sys.executable, str(HERE / "fake_driver.py"), mode])


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
        **kwargs) -> subprocess.CompletedProcess[str]:
    """The real script in a child, stdout and stderr pipes (no terminal), 80 columns."""
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm", **(env or {})}
    env.pop("FORCE_COLOR", None)
    if "stdout" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, text=True, timeout=300,
                          **kwargs)


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(PLAN)
    return path


def table_rows(out: str) -> list[str]:
    """The table's lines: from its header to the first line that is not a row."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["seed", "target"])
    rows = []
    for ln in lines[start:]:
        if not (ln.split()[:2] == ["seed", "target"] or re.match(r"^\s*\d+\s+\w+:", ln)):
            break
        rows.append(ln)
    return rows


@pytest.mark.parametrize("first_seed", ["1", str((1 << 64) - 7)])
def test_piped_at_80_columns_one_line_per_failing_trial_passes_in_one_line(
        tmp_path, plan, first_seed):
    done = cli("run", str(plan), "--seed", first_seed, "--out", str(tmp_path / "r"),
               "--driver", fake("oddmiss"), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    out = done.stdout
    rows = table_rows(out)
    assert all(len(ln) <= 80 for ln in rows), rows
    seeds = [int(first_seed) + i for i in range(6)]
    failing = [s for s in seeds if s % 2]
    # the header and one row per failing trial, each whole on its line: no cell wrapped
    assert len(rows) == 1 + len(failing)
    for row, seed in zip(rows[1:], failing, strict=True):
        assert row.split()[:4] == [str(seed), "nmm:standard", "missed", "0/1"]
    passing = [s for s in seeds if not s % 2]
    assert f"3 trials passed (seeds {', '.join(map(str, passing))})" in out
    assert "Traceback" not in out + done.stderr


def test_failures_print_their_replay_command_which_pastes(tmp_path, plan):
    """The replay line names the script by absolute path (it is not on PATH), repeats
    --driver, and run from another directory replays just that trial."""
    done = cli("run", str(plan), "--out", str(tmp_path / "r"), "--driver", fake("oddmiss"),
               cwd=tmp_path)
    assert done.returncode == 1
    blocks = done.stdout[done.stdout.index("3 failing trials:"):].splitlines()
    assert blocks[1] == "seed 1 (nmm:standard): missed"
    assert blocks[2] == "  fault 0 double_free: missed (expected detected): no detection"
    replay = blocks[3]
    assert replay.startswith(f"  replay: {SCRIPT} run {plan} --driver ")
    assert replay.endswith("--seed 1 --seeds 1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = subprocess.run(replay.removeprefix("  replay: ") + " --out out", shell=True,
                           cwd=elsewhere, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert again.returncode == 1, again.stderr
    assert again.stdout.splitlines()[-1].startswith("FAIL tiny: 0/1 trials passed, 1 failed")
    # the same command in the report
    (run_dir,) = (tmp_path / "r").iterdir()
    doc = json.loads((run_dir / "result.json").read_text())
    assert doc["failures"][0]["replay"] == replay.removeprefix("  replay: ")


def test_verdict_line_comes_last(tmp_path, plan):
    done = cli("run", str(plan), "--out", str(tmp_path / "r"), "--driver", fake("detect"),
               cwd=tmp_path)
    assert done.returncode == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    lines = done.stdout.splitlines()
    assert lines == ["6 trials passed (seeds 1-6)", "detections (trials detected/reached):",
                     "  double_free  nmm:standard 6/6",
                     f"PASS tiny: 6/6 trials passed; report {run_dir / 'summary.md'}"]


def test_verbose_lists_every_trial(tmp_path, plan, capsys):
    code = main(["run", str(plan), "--out", str(tmp_path / "r"), "--driver",
                 fake("oddmiss"), "-v"])
    assert code == 1
    rows = table_rows(capsys.readouterr().out)
    assert [r.split()[0] for r in rows[1:]] == ["1", "3", "5", "2", "4", "6"]
    assert [r.split()[-1] for r in rows[1:]] == ["FAIL"] * 3 + ["pass"] * 3


def test_quiet_prints_only_the_verdict_line(tmp_path, plan):
    done = cli("run", str(plan), "--out", str(tmp_path / "r"), "--driver", fake("oddmiss"),
               "--quiet", cwd=tmp_path)
    assert done.returncode == 1
    (run_dir,) = (tmp_path / "r").iterdir()
    assert done.stdout == (
        f"FAIL tiny: 3/6 trials passed, 3 failed; report {run_dir / 'summary.md'}\n")
    assert done.stderr == ""


def test_verbose_and_quiet_together_is_bad_input(plan, capsys):
    assert main(["run", str(plan), "-v", "-q"]) == 2
    assert "error: --verbose and --quiet: give one or the other" in capsys.readouterr().err


def test_json_names_the_run_directory_and_reports(tmp_path, plan, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(plan), "--out", "rel", "--driver", fake("detect"), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    (run_dir,) = (tmp_path / "rel").iterdir()
    assert doc["run_dir"] == str(run_dir)
    assert doc["reports"] == {"json": str(run_dir / "result.json"),
                              "markdown": str(run_dir / "summary.md"),
                              "junit": str(run_dir / "junit.xml"),
                              "html": str(run_dir / "report.html")}
    assert (run_dir / "journal.jsonl").is_file()
    # one report: what --json prints is the result.json on disk, plus where things are
    report = {k: v for k, v in doc.items() if k not in ("run_dir", "reports")}
    assert report == json.loads((run_dir / "result.json").read_text())
    assert report["kind"] == "nmm-chaos-report" and report["summary"]["trials"] == 6


def test_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"nmm-chaos {version('nmm-chaos')}\n"


@pytest.mark.parametrize(("mode", "code"), [("detect", 0), ("oddmiss", 1)])
def test_a_closed_pipe_ends_quietly_with_the_verdicts_code(tmp_path, plan, mode, code):
    """``nmm-chaos run ... | head`` exited 1 (a failed trial's code) with a traceback-ish
    'Exception ignored' on stderr when head went away."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write is EPIPE
    try:
        done = cli("run", str(plan), "--out", str(tmp_path / "r"), "--driver", fake(mode),
                   "-v", cwd=tmp_path, stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert done.returncode == code, done.stderr
    assert done.stderr == ""
    (run_dir,) = (tmp_path / "r").iterdir()
    assert (run_dir / "summary.md").is_file()  # the reports were written before printing


@pytest.mark.parametrize("args", [["--help"], ["plans", "list"], ["--version"]])
def test_other_commands_into_a_closed_pipe_exit_0_quietly(tmp_path, args):
    read, write = os.pipe()
    os.close(read)
    try:
        done = cli(*args, cwd=tmp_path, stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (0, "")


def test_not_on_a_terminal_progress_lines_go_to_stderr_every_10_s(tmp_path, plan):
    """A run that lasts past 10 s writes a status line to stderr. The run is held open
    (seeds above 1 wait for a gate file) until the line has come, however long that
    takes, so no timing decides the test."""
    gate = tmp_path / "gate"
    env = {**os.environ, "COLUMNS": "80", "FAKE_DRIVER_GATE": f"1:{gate}"}
    runner = subprocess.Popen(
        [str(SCRIPT), "run", str(plan), "--seeds", "3", "--jobs", "1", "--out",
         str(tmp_path / "r"), "--driver", fake("gated")], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert runner.stderr is not None
        line = runner.stderr.readline()
    finally:
        gate.touch()
        out, err = runner.communicate(timeout=300)
    assert re.fullmatch(r"tiny: 1/3 trials \(33%\), 0 failed, [\d.]+ s per trial, "
                        r"\d+m?\d+s left, 1\ds elapsed\n", line), line
    assert runner.returncode == 0, err
    assert out.splitlines()[-1].startswith("PASS tiny: 3/3 trials passed")


def test_a_plans_validate_typo_gets_a_suggestion(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('schema_version = 1\n[[faults]]\nkind = "double_free"\ncuont = 2\n')
    assert main(["plans", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: faults.0.cuont: unknown key; expected one of: bytes, count, fail, " \
           "kind, rate, skip, variant; did you mean 'count'?" in err


def test_a_refused_resume_of_an_older_run_directory_reads_its_result_json(
        tmp_path, plan, capsys):
    """A run.json from before it kept the plan: the keys come from result.json."""
    assert main(["run", str(plan), "--out", str(tmp_path / "r"), "--driver",
                 fake("detect"), "-q"]) == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    del meta["plan"]
    (run_dir / "run.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["run", str(plan), "--resume", str(run_dir), "--driver", fake("detect"),
                 "--set", "faults.0.count=2", "--set", "target.level=paranoid"]) == 2
    err = capsys.readouterr().err
    assert "\n  faults.0.count: was (unset), now 2\n" in err
    assert '\n  target.level: was "standard", now "paranoid"\n' in err


def test_compare_into_a_closed_pipe_exits_with_its_verdict(tmp_path, plan):
    """compare's table is printed by rich, whose own broken-pipe handler exits 1; a
    regression must still read 1 and no regression 0."""
    for name, mode in (("good", "detect"), ("bad", "oddmiss")):
        assert main(["run", str(plan), "--out", str(tmp_path / name), "--driver",
                     fake(mode), "-q"]) in (0, 1)
    (good,), (bad,) = (tmp_path / "good").iterdir(), (tmp_path / "bad").iterdir()
    # bad -> good: a table of improvements, no regression
    for old, new, code in ((good, bad, 1), (bad, good, 0)):
        read, write = os.pipe()
        os.close(read)
        try:
            done = cli("compare", str(old), str(new), cwd=tmp_path, stdout=write,
                       stderr=subprocess.PIPE)
        finally:
            os.close(write)
        assert (done.returncode, done.stderr) == (code, "")


def test_campaign_and_compare_piped_at_80_columns_print_whole_lines(tmp_path, plan):
    """The campaign's detection matrix and compare's changes, piped: one line per fault
    row (per change), every cell whole; a boxed table there wrapped '16/16 (4' and
    'missed)' onto separate lines and cut the targets' names."""
    dirs = []
    for mode in ("detect", "miss"):
        done = cli("campaign", str(plan), "--targets", "nmm,glibc", "--levels",
                   "off,standard,paranoid", "--driver", fake(mode), "--out",
                   str(tmp_path / mode), "-q", cwd=tmp_path)
        assert done.returncode == (0 if mode == "detect" else 1), done.stderr
        assert "┃" not in done.stdout and "│" not in done.stdout
        lines = done.stdout.splitlines()
        assert lines[0] == "detections (trials detected/reached):"
        want = "6/6" if mode == "detect" else "0/6 (6 missed)"
        assert lines[1] == (f"  double_free  nmm:off {want}; nmm:standard {want}; "
                            f"nmm:paranoid {want}; malloc:glibc {want}")
        (d,) = (tmp_path / mode).iterdir()
        dirs.append(d)
    done = cli("compare", str(dirs[0]), str(dirs[1]), cwd=tmp_path)
    assert done.returncode == 1
    assert "REGRESSION double_free @ nmm:paranoid: 6/6 -> 0/6 (6 missed) (newly missed)" \
        in done.stdout.splitlines()
