"""NMM's JSON report logs in trials: the engine points log_path at the trial's directory,
reads what NMM wrote (error reports with frames, leak reports by site) into the record,
and the reports show it: leaks by site and each failure's first frames, in result.json,
summary.md and report.html. Real small runs of the native driver; a corrupt log is a
note, never a lost trial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from harness.cli import main
from harness.journal import JOURNAL_NAME, read_journal
from harness.records import Observation, TrialRecord, Verdict
from harness.reportlogs import read_report_logs
from harness.robustness import SCHEMA_PATH, LoadedRun, build_report, render_markdown

PLAN = """
schema_version = 1
seeds = 2
timeout_s = 60
[target]
level = "paranoid"
[workload]
threads = 2
ops = 2000
progress_every = 500
"""


def validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(doc)


def run_dir(out: Path) -> Path:
    (only,) = out.iterdir()
    return only


@pytest.fixture(scope="module")
def driver() -> None:
    from _nmm_c import require_driver

    require_driver()


def test_leak_sites_of_nmm_as_the_process_malloc_show_in_json_markdown_and_html(
        tmp_path: Path, driver: None) -> None:
    """NMM preloaded with tracking (nmm-preload-tracking) writes its leak report at exit
    to the trial's log; the record keeps its groups, and every report lists them by the
    first frame outside the allocator, function file:line, with blocks, bytes and seeds."""
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    code = main(["run", str(plan), "--set", "target=malloc:nmm-preload-tracking",
                 "--out", str(tmp_path / "r")])
    assert code == 0
    out = run_dir(tmp_path / "r")
    records = read_journal(out / JOURNAL_NAME).records
    assert len(records) == 2
    for r in records:
        log = r.observation.report_log
        assert log is not None and log.processes == 1 and log.notes == ()
        assert log.leak_groups, "the leak report at exit has its groups"
        assert all(g.frames for g in log.leak_groups)
        # the stderr of a trial whose reports went to the log holds no leak report
        assert "leak" not in r.observation.stderr_tail.lower()
    doc = json.loads((out / "result.json").read_text())
    validate(doc)
    sites = doc["leak_sites"]
    assert sites, "leaks by site"
    site = sites[0]
    assert site["trials"] == 2 and site["seeds"] == [1, 2]
    assert site["blocks"] > 0 and site["bytes"] > 0
    function, where = site["site"].split(" ", 1)
    assert function and where.startswith("native/") and ":" in where, site["site"]
    assert all(t["report_log"]["leak_groups"] >= 1 for t in doc["trials"])
    md = (out / "summary.md").read_text()
    assert "## Leaks by site" in md and f"`{site['site']}`" in md
    html = (out / "report.html").read_text()
    assert 'id="leak-sites"' in html and site["site"] in html


def test_nmm_preloaded_keeps_the_childs_own_exit_status(tmp_path: Path, driver: None) -> None:
    """NMM's malloc replacement exits 23 after a record-mode detection (LSan's
    convention, for a program run by hand); a trial is judged by the report lines and
    the child's own status, so the engine keeps that status (exitcode=0): a double free
    NMM reported and survived is no longer a "crash" of the driver."""
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN + '[[faults]]\nkind = "double_free"\n')
    main(["run", str(plan), "--set", "seeds=1", "--set", "target=malloc:nmm-preload-standard",
          "--out", str(tmp_path / "r")])
    (record,) = read_journal(run_dir(tmp_path / "r") / JOURNAL_NAME).records
    assert record.observation.exit_code == 0, record.observation.stderr_tail
    assert "nmm: double_free at " in record.observation.stderr_tail
    assert record.verdict.outcome != "crashed", record.verdict


def test_nmm_preloaded_detections_are_credited_to_their_faults(tmp_path: Path,
                                                              driver: None) -> None:
    """The driver cannot drain a preloaded NMM's events; the oracle reads its report log
    and matches each report to the fault at its address: detected, not missed."""
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN + '[[faults]]\nkind = "double_free"\n[[faults]]\nkind = "overflow"\n')
    code = main(["run", str(plan), "--set", "seeds=1",
                 "--set", "target=malloc:nmm-preload-standard", "--out", str(tmp_path / "r")])
    (record,) = read_journal(run_dir(tmp_path / "r") / JOURNAL_NAME).records
    assert [f.outcome for f in record.verdict.faults] == ["detected", "detected"], \
        record.verdict.reasons
    assert {(f.kind, f.event_kind) for f in record.verdict.faults} == {
        ("double_free", "double_free"), ("overflow", "overflow")}
    assert record.verdict.passed and code == 0, record.verdict.reasons


def test_a_targets_own_exitcode_is_kept() -> None:
    """exitcode=0 comes before the target's own NMM_OPTIONS, the log keys after them."""
    from harness.reportlogs import with_log

    env = with_log({"NMM_OPTIONS": "level=standard:exitcode=7"}, Path("/tmp/t"))
    keys = env["NMM_OPTIONS"].split(":")
    assert keys[0] == "exitcode=0" and keys.index("exitcode=7") > 0
    assert keys[-3:] == ["log_path=/tmp/t/nmm", "log_format=json", "log_summary=1"]
    assert with_log({}, Path("/tmp/a:b")) == {"NMM_OPTIONS": "exitcode=0"}


def test_an_abort_failure_shows_its_error_reports_frames(tmp_path: Path, driver: None) -> None:
    """An NMM heap in the driver (policy=abort) writes its error report to the trial's
    log too: stderr keeps the one-line summary (the oracle's diagnostic), the record the
    frames, and the failure row names where the fault was performed and the block
    allocated."""
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN + '[[faults]]\nkind = "double_free"\n')
    code = main(["run", str(plan), "--set", "seeds=1", "--set",
                 'target={kind = "nmm", level = "paranoid", policy = "abort", options = {}}',
                 "--out", str(tmp_path / "r")])
    assert code == 1  # the plan expects "detected": the abort fails it
    out = run_dir(tmp_path / "r")
    (record,) = read_journal(out / JOURNAL_NAME).records
    assert record.verdict.outcome == "detected-abort"
    diag = [ln for ln in record.observation.stderr_tail.splitlines() if ln.strip()]
    assert diag[-1].startswith("nmm: double_free at ") and "detected by" not in \
        record.observation.stderr_tail
    log = record.observation.report_log
    assert log is not None and [e.kind for e in log.errors] == ["double_free"]
    doc = json.loads((out / "result.json").read_text())
    validate(doc)
    report = doc["failures"][0]["report"]
    assert report["kind"] == "double_free"
    assert report["frames"][0].startswith("faults_inject native/faults.c:")
    assert report["allocated_at"].startswith("op_alloc native/workload.c:")
    assert report["freed_at"] is not None
    md = (out / "summary.md").read_text()
    assert f"double_free at `{report['frames'][0]}`" in md
    html = (out / "report.html").read_text()
    assert report["frames"][0] in html and report["allocated_at"] in html


def test_a_heap_of_its_own_writes_its_leak_report_to_log_path(tmp_path: Path) -> None:
    """log_path is a process key: it applies to heaps a program makes itself (the
    driver's), whose nmm_heap_destroy writes the tracking leak report to the log (it
    went to stderr, whatever log_path said), and a process that never made the default
    heap reads it too."""
    from allocator.reportlog import LeakReport, read_logs

    prefix = tmp_path / "nmm"
    code = ("from allocator import Heap\n"
            "h = Heap(level='standard', tracking=True)\n"
            "b = h.alloc(100)\n"
            "h.close()\n")
    env = {**os.environ, "NMM_OPTIONS": f"log_path={prefix}:log_format=json"}
    env.pop("LD_PRELOAD", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "leak" not in proc.stderr.lower(), proc.stderr
    logs = read_logs(prefix)
    assert len(logs) == 1
    (reports,) = logs.values()
    leaks = [r for r in reports if isinstance(r, LeakReport)]
    assert len(leaks) == 1
    lost = leaks[0]
    total = lost.lost.blocks + lost.still_reachable.blocks
    assert total == 1 and lost.lost.bytes + lost.still_reachable.bytes == 100
    # without log_path the same program says so on stderr, as before
    env.pop("NMM_OPTIONS")
    plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=120, check=False)
    assert "leak" in plain.stderr.lower(), plain.stderr


def _record(log_dir: Path) -> TrialRecord:
    obs = Observation(exit_code=0, report_log=read_report_logs(log_dir))
    return TrialRecord(key="k:7", plan="p", plan_hash="h", seed=7, target="nmm:standard",
                       observation=obs, verdict=Verdict(outcome="clean", passed=True))


def test_a_corrupt_report_log_is_a_clear_note_and_the_trial_keeps_its_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = {"type": "leaks", "pid": 5, "definitely_lost": {"blocks": 1, "bytes": 24},
            "indirectly_lost": {"blocks": 0, "bytes": 0},
            "still_reachable": {"blocks": 0, "bytes": 0},
            "suppressed": {"blocks": 0, "bytes": 0},
            "groups": [{"category": "definitely_lost", "site": "x.c:3", "blocks": 1,
                        "bytes": 24, "stacks": [{"blocks": 1, "thread": 9, "frames": [
                            {"pc": "0x1", "module": "/usr/lib/libnmm.so", "offset": "0x10",
                             "function": "nmm_alloc", "function_offset": 4, "file": "",
                             "line": 0, "column": 0},
                            {"pc": "0x2", "module": "/bin/prog", "offset": "0x20",
                             "function": "make_leak", "function_offset": 8,
                             "file": "/src/app/leak.c", "line": 12, "column": 3}]}]}]}
    (tmp_path / "nmm.5.json").write_text(
        json.dumps(good) + "\n" + "{this is not json}\n" + '{"type": "error", "pid": 5}\n'
        + '{"type": "leaks", "pid": 5, "defin')  # cut short by a kill
    (tmp_path / "nmm.6.json").write_bytes(b"\xff\xfe\x00garbage\n")
    (tmp_path / "nmm.notapid.json").write_text("ignored: not a log of a process\n")
    log = read_report_logs(tmp_path)
    assert log is not None and log.processes == 2
    notes = "\n".join(log.notes)
    assert "nmm.5.json:2: not an NMM report" in notes
    assert "nmm.5.json:3: not an NMM report (missing key" in notes
    assert "nmm.5.json: its last line was cut short" in notes
    assert "nmm.6.json:1: not an NMM report" in notes
    # what could be read is kept, from the first frame outside the allocator
    (group,) = log.leak_groups
    assert [f.function for f in group.frames] == ["make_leak"]
    assert log.leak_totals["definitely_lost"] == (1, 24)

    # the record round-trips through the journal format and reports show the notes
    record = TrialRecord.model_validate_json(_record(tmp_path).model_dump_json())
    doc = build_report([LoadedRun(id="r", kind="run", path="", records=[record])])
    validate(doc)
    assert doc["leak_sites"][0]["site"] == "make_leak app/leak.c:12"
    md = render_markdown(doc)
    assert "seed 7 on nmm:standard: report log: nmm.5.json: its last line was cut short" in md
    from harness.html import render_html

    html = render_html(doc, [LoadedRun(id="r", kind="run", path="", records=[record])])
    assert 'id="report-log-notes"' in html and "nmm.6.json:1: not an NMM report" in html

    # bounds: a file past MAX_FILE_BYTES is read in part, and says so
    import harness.reportlogs as reportlogs

    monkeypatch.setattr(reportlogs, "MAX_FILE_BYTES", 64)
    cut = read_report_logs(tmp_path)
    assert cut is not None
    assert any("read only its first 64 bytes" in n for n in cut.notes)

    # no log at all: nothing to record
    empty = tmp_path / "empty"
    empty.mkdir()
    assert read_report_logs(empty) is None
