"""Reports from real small campaigns: the JSON against its schema, the HTML page in
headless Chromium, Markdown, JUnit, a report over several runs with trends, and compare
on identical runs and on a planted regression."""

from __future__ import annotations

import io
import json
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from harness.cli import main
from harness.journal import JOURNAL_NAME
from harness.robustness import SCHEMA_PATH

#: four seeds of two faults, two threads of 3000 ops with progress lines
PLAN = {"faults": ("double_free", "overflow"), "seeds": 4, "ops": 3000,
        "workload": {"threads": 2, "progress_every": 200}}


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(doc)


@pytest.fixture(scope="module")
def real_campaign(tmp_path_factory, plan_text) -> Path:
    """A small real campaign: the native driver, NMM at two levels and glibc."""
    from _nmm_c import require_driver

    require_driver()
    tmp = tmp_path_factory.mktemp("campaign")
    plan = tmp / "plan.toml"
    plan.write_text(plan_text(**PLAN))
    code = main(["campaign", str(plan), "--targets", "nmm,glibc", "--levels",
                 "standard,paranoid", "--split-faults", "--out", str(tmp / "r"), "-q"])
    assert code == 0
    (run_dir,) = (tmp / "r").iterdir()
    return run_dir


def test_real_report_is_schema_valid_with_matrix_rates_and_replays(real_campaign):
    doc = json.loads((real_campaign / "result.json").read_text())
    validate(doc)
    assert doc["targets"] == ["nmm:standard", "nmm:paranoid", "malloc:glibc"]
    cell = doc["matrix"]["double_free"]["nmm:paranoid"]
    assert (cell["detected"], cell["reached"], cell["class"]) == (4, 4, "detected")
    assert cell["first_diagnostic"].startswith("double_free event")
    glibc = doc["matrix"]["double_free"]["malloc:glibc"]
    assert glibc["outcomes"] == {"detected-abort": 4}
    assert "double free" in glibc["first_diagnostic"]
    assert doc["matrix"]["overflow"]["malloc:glibc"]["class"] == "missed"
    assert doc["throughput_ops_per_s"]["nmm:paranoid"]["n"] == 8
    assert set(doc["op_latency_ns"]["nmm:paranoid"]) >= {"p50", "p99", "max"}
    failure = next(f for f in doc["failures"] if f["target"] == "malloc:glibc")
    assert not failure["gating"] and "--set target=malloc:glibc" in failure["replay"]
    assert doc["environment"]["driver"]["build_id"]
    md = (real_campaign / "summary.md").read_text()
    assert "| overflow | 4/4 | 4/4 | 0/4 (4 missed) |" in md
    assert "replay: `" in md
    suites = ET.fromstring((real_campaign / "junit.xml").read_text())
    assert sum(int(s.get("tests")) for s in suites) == len(doc["trials"])
    assert all(s.get("failures") == "0" for s in suites)  # comparison failures: skipped


def test_html_report_opens_in_chromium_with_matrix_and_charts(real_campaign):
    from _browser import open_page

    html = real_campaign / "report.html"
    text = html.read_text()
    assert "<script" not in text and "http://" not in text.replace(
        "https://json-schema", "")  # self-contained: nothing to fetch
    page = open_page(html, {
        "verdict": "document.getElementById('verdict').textContent",
        "matrix_cells": "document.querySelectorAll('#detection-matrix td').length",
        "green_cells": "document.querySelectorAll('#detection-matrix td.detected').length",
        "images": "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])",
    })
    assert page.errors == []
    # the browser's whole group went with it, and its profile with them
    import psutil

    assert page.profile and not Path(page.profile).exists()
    assert not [p.pid for p in psutil.process_iter(["cmdline"])
                if any(page.profile in arg for arg in p.info["cmdline"] or ())]
    assert page.probes["verdict"].startswith("PASS")
    assert page.probes["matrix_cells"] == 2 * 3
    assert page.probes["green_cells"] >= 3
    images = page.probes["images"]
    titles = {alt for alt, _, _ in images}
    assert {"Throughput over time, per trial", "RSS over time, per trial",
            "Operation latency percentiles"} <= titles
    assert all(complete and width > 50 for _, complete, width in images)
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(page.screenshot), format="png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.05  # not a blank page
    assert len({tuple(p) for p in pixels[::20, ::20, :3].reshape(-1, 3).tolist()}) > 10


def test_report_of_many_runs_has_trends_and_compare_gates(tmp_path, write_plan,
                                                         fake_driver, capsys):
    plan = write_plan(**{**PLAN, "seeds": 3})
    dirs = []
    for n, mode in enumerate(("detect", "detect", "miss")):
        out = tmp_path / f"night{n}"
        code, _, _ = run(["campaign", str(plan), "--driver", shlex.join(fake_driver(mode)),
                          "--out", str(out), "-q"], capsys)
        assert code == (1 if mode == "miss" else 0)
        (d,) = out.iterdir()
        dirs.append(d)
    code, out, _ = run(["report", *map(str, dirs), "--out", str(tmp_path / "week")], capsys)
    assert code == 0 and "FAIL" in out
    doc = json.loads((tmp_path / "week" / "result.json").read_text())
    validate(doc)
    assert len(doc["runs"]) == 3
    assert doc["trends"]["detection"]["double_free"]["nmm:paranoid"] == [1.0, 1.0, 0.0]
    assert doc["trends"]["failed"] == [0, 0, 3]
    assert "Detection rates below 100% over runs" in (tmp_path / "week" /
                                                     "report.html").read_text()
    # identical runs: exit 0; the missing night: exit 1, naming what regressed
    code, out, _ = run(["compare", str(dirs[0]), str(dirs[1])], capsys)
    assert code == 0 and "no regression" in out
    code, out, _ = run(["compare", str(dirs[1]), str(dirs[2])], capsys)
    assert code == 1
    assert "REGRESSION" in out and "double_free" in out and "newly missed" in out
    # a report file works as well as a directory
    code, _, _ = run(["compare", str(dirs[0] / "result.json"), str(dirs[2])], capsys)
    assert code == 1


def _plant_throughput(src: Path, dst: Path, factor: float) -> None:
    """A copy of a campaign whose trials ran at ``factor`` x 1 M ops/s, give or take 4%
    (a run's own spread: trial i of a target at +0..4%)."""
    dst.mkdir()
    for name in ("campaign.json", "environment.json"):
        if (src / name).exists():
            (dst / name).write_text((src / name).read_text())
    lines = []
    for i, line in enumerate((src / JOURNAL_NAME).read_text().splitlines()):
        rec = json.loads(line)
        rec["ops_per_s"] = 1e6 * factor * (1 + 0.01 * (i % 5))
        lines.append(json.dumps(rec))
    (dst / JOURNAL_NAME).write_text("\n".join(lines) + "\n")


def test_compare_flags_a_throughput_drop_beyond_the_noise_only(real_campaign, tmp_path,
                                                               capsys):
    for name, factor in (("base", 1.0), ("same", 1.0), ("bit-slower", 0.99),
                         ("slower", 0.8)):
        _plant_throughput(real_campaign, tmp_path / name, factor)
    code, out, _ = run(["compare", str(tmp_path / "base"), str(tmp_path / "same")], capsys)
    assert code == 0
    code, out, _ = run(["compare", str(tmp_path / "base"), str(tmp_path / "bit-slower")],
                       capsys)
    assert code == 0, out  # 1% is inside the runs' own spread
    code, out, _ = run(["compare", str(tmp_path / "base"), str(tmp_path / "slower")], capsys)
    assert code == 1
    assert "throughput" in out and "median fell 20%" in out


def test_report_of_a_run_directory_and_bad_sources(tmp_path, write_plan, fake_driver, capsys):
    plan = write_plan(**{**PLAN, "seeds": 2})
    code = main(["run", str(plan), "--driver", shlex.join(fake_driver("detect")), "--out",
                 str(tmp_path / "r")])
    assert code == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    code, out, _ = run(["report", str(run_dir)], capsys)
    assert code == 0 and "report.html" in out
    doc = json.loads((run_dir / "result.json").read_text())
    validate(doc)
    assert doc["runs"][0]["kind"] == "run" and doc["summary"]["trials"] == 2
    code, _, err = run(["report", str(tmp_path)], capsys)
    assert code == 2 and "no journal.jsonl" in err


def test_a_file_that_is_not_a_journal_is_refused_and_nothing_is_written(tmp_path,
                                                                        write_plan, capsys):
    plan = write_plan(**PLAN)
    for args in (["report", str(plan)], ["compare", str(plan), str(plan)]):
        code, out, err = run(args, capsys)
        assert code == 2 and "Traceback" not in out + err
        assert err.strip() == (f"error: {plan}: not a trial journal (line 1 is not a trial "
                               "record); expected a run or campaign directory, or its "
                               "journal.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.toml"]


def test_compare_refuses_an_empty_run_and_flags_what_new_no_longer_runs(
        tmp_path, write_plan, fake_driver, capsys):
    both = write_plan(name="both.toml", **{**PLAN, "seeds": 2})
    one = write_plan(name="one.toml", **{**PLAN, "seeds": 2, "faults": ["double_free"]})
    dirs = []
    for plan in (both, one):
        out = tmp_path / plan.stem
        code, _, _ = run(["campaign", str(plan), "--driver",
                          shlex.join(fake_driver("detect")), "--out", str(out), "-q"], capsys)
        assert code == 0
        (d,) = out.iterdir()
        dirs.append(d)
    # the overflow row is gone from NEW: a gate must not pass because it was dropped
    code, out, _ = run(["compare", str(dirs[0]), str(dirs[1])], capsys)
    assert code == 1 and "overflow" in out and "not run in NEW" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / JOURNAL_NAME).write_text("")
    code, out, err = run(["compare", str(dirs[0]), str(empty)], capsys)
    assert code == 2 and "NEW" in err and "no trials recorded; nothing to compare" in err


def test_report_of_the_same_run_twice_is_refused(tmp_path, write_plan, fake_driver, capsys):
    plan = write_plan(**{**PLAN, "seeds": 1})
    code, _, _ = run(["run", str(plan), "--driver", shlex.join(fake_driver("detect")),
                      "--out", str(tmp_path / "r"), "-q"], capsys)
    assert code == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    code, _, err = run(["report", str(run_dir), str(run_dir / JOURNAL_NAME), "--out",
                          str(tmp_path / "week")], capsys)
    assert code == 2 and err.strip() == (f"error: {run_dir / JOURNAL_NAME}: the same run as "
                                         f"{run_dir}; give each run once")
    assert not (tmp_path / "week").exists()


def test_a_fault_never_reached_leaves_its_row_to_the_fault_that_was():
    """An abort-policy trial: fault 0 aborted the process, fault 1 (same row) was injected
    while it died. The cell is 1/1 detected, not "1 missed" nor "not reached"."""
    from harness.records import FaultVerdict, Observation, TrialRecord, Verdict
    from harness.robustness import LoadedRun, build_report, cell_text

    def record(seed: int, second: str) -> TrialRecord:
        faults = (FaultVerdict(id=0, kind="double_free", outcome="detected-abort",
                               allowed=("detected", "detected-abort")),
                  FaultVerdict(id=1, kind="double_free", outcome=second,
                               allowed=("detected", "detected-abort")))
        passed = all(f.ok for f in faults)
        return TrialRecord(key=f"k:{seed}", plan="p", plan_hash="h", seed=seed,
                           target="nmm:paranoid+abort", observation=Observation(),
                           verdict=Verdict(outcome="detected-abort", passed=passed,
                                           faults=faults))

    runs = [LoadedRun(id="r", kind="run", path="", records=[record(1, "not-reached"),
                                                             record(2, "missed")])]
    doc = build_report(runs)
    validate(doc)
    cell = doc["matrix"]["double_free"]["nmm:paranoid+abort"]
    assert (cell["detected"], cell["reached"]) == (1, 2)
    assert cell_text(cell) == "1/2 (1 missed)"
    assert cell["faults_injected"] == 3 and doc["summary"]["faults_injected"] == 3
    assert [f["seed"] for f in doc["failures"]] == [2]
