"""make coverage (harness/coverage.py): the gcov build of nmm-driver, counters read back
per file and function, trials that die by a signal still counted, and the figure in
the campaign report (JSON, Markdown, HTML)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from harness import coverage as cov
from harness.robustness import SCHEMA_PATH, build_report, load_run, render_markdown


def test_summarize_counts_lines_branches_and_functions_never_entered() -> None:
    a = cov._FileCounts(lines={1: 5, 2: 0, 3: 1, 4: 0}, branches={(1, 0): 3, (1, 1): 0},
                        functions={"hot": (1, 5), "cold": (4, 0)})
    b = cov._FileCounts(lines={10: 1}, branches={}, functions={"one": (10, 1)})
    s = cov.summarize({"allocator/src/a.c": a, "allocator/src/b.c": b})
    assert (s["lines"], s["lines_covered"], s["line_percent"]) == (5, 3, 60.0)
    assert (s["branches"], s["branches_covered"], s["branch_percent"]) == (2, 1, 50.0)
    assert s["uncovered_functions"] == [{"file": "allocator/src/a.c", "function": "cold",
                                        "line": 4}]
    assert [f["line_percent"] for f in s["files"]] == [50.0, 100.0]


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cov")
    cov.build_driver(out)
    return out


def _trial(driver: Path, *args: str) -> int:
    return subprocess.run([str(driver), "run", "--seed", "3", "--threads", "1", "--ops", "3000",
                           "--progress-every", "0", *args], capture_output=True,
                          check=False).returncode


def test_the_gcov_driver_counts_what_a_trial_ran_and_nothing_else(build: Path) -> None:
    cov.reset_counters(build)
    assert cov.read_counters(build) == {}
    assert _trial(build / "nmm-driver", "--nmm-options", "level=standard") == 0
    files = cov.read_counters(build)
    assert set(files) <= {str(Path("allocator/src") / p.name)
                          for p in cov.SRC.glob("*") if p.suffix in (".c", ".h")}
    alloc = files["allocator/src/alloc.c"]
    assert alloc.functions["nmm_alloc"][1] > 0
    # no trial armed a fail point: the fail-point parser never ran
    fp = files["allocator/src/failpoint.c"]
    assert any(n == 0 for _, n in fp.functions.values())
    s = cov.summarize(files)
    assert 0 < s["line_percent"] < 100 and 0 < s["branch_percent"] < 100


def test_a_trial_that_aborts_still_leaves_its_counters(build: Path) -> None:
    cov.reset_counters(build)
    code = _trial(build / "nmm-driver", "--nmm-options", "level=standard:policy=abort",
                  "--fault", "double_free")
    assert code < 0 or code > 128  # died by SIGABRT after its one-line diagnostic
    files = cov.read_counters(build)
    entered = {name for c in files.values() for name, (_, n) in c.functions.items() if n}
    # the abort path ran and was counted: the diagnostic's formatting
    assert "events_format_line" in entered or "diag_write" in entered, sorted(entered)[:50]


def test_the_figure_is_in_the_campaign_report(tmp_path: Path) -> None:
    from harness.cli import main

    plan = tmp_path / "p.toml"
    plan.write_text("schema_version = 1\nseeds = 1\n[workload]\nops = 200\n")
    assert main(["campaign", str(plan), "--out", str(tmp_path / "out"), "-q"]) == 0
    (run_dir,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    a = cov._FileCounts(lines={1: 1, 2: 0}, branches={(1, 0): 1, (1, 1): 0},
                        functions={"f": (1, 1), "g": (2, 0)})
    doc = {"scope": "allocator/src", "stages": [
        {"plans": "smoke", "seeds": None, **{k: v for k, v in cov.summarize(
            {"allocator/src/a.c": a}).items() if k not in ("files", "uncovered_functions")}}],
        **cov.summarize({"allocator/src/a.c": a})}
    (run_dir / cov.COVERAGE_FILE).write_text(json.dumps(doc))
    cov._rewrite_report(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(result)
    assert result["coverage"]["line_percent"] == 50.0
    md = (run_dir / "summary.md").read_text()
    assert "Coverage of allocator/src by the chaos plans alone" in md and "| smoke |" in md
    assert "allocator/src/a.c:2 `g`" in md
    html = (run_dir / "report.html").read_text()
    assert 'id="coverage"' in html and "<code>g</code>" in html
    # a run without coverage.json has none, and says nothing about it
    (run_dir / cov.COVERAGE_FILE).unlink()
    bare = build_report([load_run(run_dir)])
    assert bare["coverage"] is None and "Coverage" not in render_markdown(bare)


def test_the_exit_report_after_the_symbolizer_is_counted(build: Path) -> None:
    """The exit leak report symbolizes its frames with addr2line (vfork + execve) before
    it classifies and writes them. gcc's --coverage turns execve into __gcov_execve,
    which dumps the counters first: in a vfork child that is the parent's memory, so
    they were marked written and nothing the process ran afterwards (the report itself)
    reached the .gcda."""
    cov.reset_counters(build)
    assert _trial(build / "nmm-driver", "--nmm-options",
                  "level=standard:policy=record:tracking=1:stacks=1", "--threads", "2",
                  "--exit-leaks", "12") == 0
    files = cov.read_counters(build)
    entered = {name for name, (_, n) in files["allocator/src/leakcheck.c"].functions.items()
               if n}
    assert {"leakcheck_run", "add_group_frames"} <= entered  # before the symbolizer
    assert {"classify", "report_text", "report_json", "emit"} <= entered, sorted(entered)


def test_what_a_fork_child_runs_is_counted(build: Path) -> None:
    """A trial's fork children allocate and free on the heap the fork copied; the heap's
    atfork child handlers reset its locks and caches. gcc's __gcov_fork zeroed the
    child's counters after those handlers ran and _exit wrote none: none of it counted."""
    cov.reset_counters(build)
    assert _trial(build / "nmm-driver", "--nmm-options", "level=standard",
                  "--fork-every", "500") == 0
    files = cov.read_counters(build)
    entered = {name for c in files.values() for name, (_, n) in c.functions.items() if n}
    assert {"heap_fork_child", "tcache_fork_child"} <= entered, sorted(
        n for n in entered if "fork" in n)


def test_the_gcov_driver_damages_the_books_and_the_hook_is_not_measured(build: Path) -> None:
    """corrupt_meta plans run under the coverage driver (it has the damage hook, as the
    chaos driver does): validate's list reports are counted, the hook's own lines are not
    part of the allocator's figure."""
    cov.reset_counters(build)
    assert _trial(build / "nmm-driver", "--nmm-options", "level=standard", "--threads", "2",
                  "--fault", "corrupt_meta:variant=list_cycle") == 0
    files = cov.read_counters(build)
    assert "allocator/src/chaos_corrupt.c" not in files
    validate = files["allocator/src/validate.c"]
    assert validate.functions["validate_freelist_problem"][1] >= 3
