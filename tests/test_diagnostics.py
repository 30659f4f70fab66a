"""Reports a person can act on (issue 12): the buggy program of tests/c/preload/bugs.c,
built with -g, under the preload library. Every error report names the source line
of the call that found the bug, of the allocation and (for a freed block) of the
free, with thread ids; in-process through a symbolizer child, and offline through
``python -m allocator symbolize`` on a log written without one. The leak report at
exit tells blocks still reachable (a global, a thread-local, another thread's stack)
from blocks definitely lost; suppressions silence exactly their match; the exit
status says whether anything was found; and the JSON log carries all of it.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from _nmm_c import PROGRAMS, compile_program, nmm_lines, preload_path, require_tool, run

SOURCE = PROGRAMS / "bugs.c"
TRACKED = "tracking=1:stacks=1"


def line_of(marker: str) -> int:
    """The line of bugs.c whose comment carries ``@marker``."""
    for number, text in enumerate(SOURCE.read_text().splitlines(), start=1):
        if re.search(rf"/\* @{re.escape(marker)}(?:[: ]|\*/)", text):
            return number
    raise AssertionError(f"no @{marker} in {SOURCE}")


@pytest.fixture(scope="module")
def bugs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_program("bugs.c", tmp_path_factory.mktemp("bugs"), link_nmm=False)


@pytest.fixture(scope="module")
def symbolizer() -> str:
    """A symbolizer on PATH (llvm-symbolizer[-N] or addr2line): the in-process naming of
    file:line needs one; CI installs llvm-14 and binutils."""
    from allocator.symbolize import SYMBOLIZERS

    for name in SYMBOLIZERS:
        found = shutil.which(name)
        if found:
            return found
    return require_tool("llvm-symbolizer")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int


@dataclass(frozen=True)
class Report:
    summary: str
    sections: dict[str, tuple[int, list[Frame]]]  # title -> (thread, frames)


_FRAME = re.compile(r"^    #\d+ 0x[0-9a-f]+ in (?P<function>[\w.?]+)(?:\+0x[0-9a-f]+)?"
                    r"(?: (?P<file>\S+?):(?P<line>\d+)(?::\d+)?)? \(\S+\+0x[0-9a-f]+\)$")
_SECTION = re.compile(r"^  (detected|freed|allocated) by thread (\d+) here:$")


def reports(text: str) -> list[Report]:
    """The error reports in a stderr or log text (leak reports left out)."""
    found: list[Report] = []
    current: list[Frame] | None = None
    for line in text.splitlines():
        if line.startswith("nmm: ") and not line.startswith("nmm: leak report"):
            found.append(Report(line, {}))
            current = None
        elif found and (m := _SECTION.match(line)):
            current = []
            found[-1].sections[m[1]] = (int(m[2]), current)
        elif current is not None and (f := _FRAME.match(line)):
            current.append(Frame(f["function"], f["file"] or "", int(f["line"] or 0)))
    return found


def lines_of(frames: list[Frame], depth: int = 2) -> list[tuple[str, str, int]]:
    return [(f.function, Path(f.file).name, f.line) for f in frames[:depth]]


def thread_of(summary: str) -> int:
    m = re.search(r"\(thread (\d+)\)$", summary)
    assert m, summary
    return int(m[1])


def run_bugs(bugs: Path, case: str, options: str, **kw: object) -> tuple[int, str, str]:
    out = run([str(bugs), case], preload=preload_path(), options=options, **kw)  # type: ignore[arg-type]
    return out.returncode, out.stdout, out.stderr


# ------------------------------------------------------------------ error reports

#: per case: the summary line's pattern, then the expected first two frames of each stack
#: (function, file, marker of the line), and which cases need paranoid's quarantine
CASES = {
    "overflow": (
        r"^nmm: overflow at 0x[0-9a-f]+ size 24 \(1 byte past the 24-byte block\) ",
        {"detected": [("release", "free"), ("main", "detect-overflow")],
         "allocated": [("make_block", "alloc"), ("main", "call-alloc-overflow")]},
    ),
    "double_free": (
        r"^nmm: double_free at 0x[0-9a-f]+ size 48 ",
        {"detected": [("release", "free"), ("main", "bug-double-free")],
         "freed": [("release", "free"), ("main", "first-free")],
         "allocated": [("make_block", "alloc"), ("main", "call-alloc-double")]},
    ),
    "use_after_free": (
        r"^nmm: use_after_free at 0x[0-9a-f]+ size 48 "
        r"\(bytes 8\.\.11 of the freed 48-byte block changed\) ",
        {"freed": [("release", "free"), ("main", "free-uaf")],
         "allocated": [("make_block", "alloc"), ("main", "call-alloc-uaf")]},
    ),
}


def expected_frames(spec: list[tuple[str, str]]) -> list[tuple[str, str, int]]:
    return [(function, "bugs.c", line_of(marker)) for function, marker in spec]


def check_report(text: str, case: str) -> Report:
    pattern, stacks = CASES[case]
    (report,) = reports(text)
    assert re.match(pattern, report.summary), report.summary
    for title, spec in stacks.items():
        assert title in report.sections, (title, text)
        assert lines_of(report.sections[title][1]) == expected_frames(spec), (title, text)
    if case != "use_after_free":  # found later, by whichever call pushed it out
        assert set(report.sections) == set(stacks), text
    tid = thread_of(report.summary)
    assert all(thread == tid for thread, _ in report.sections.values()), text
    return report


@pytest.mark.parametrize(
    ("case", "level"),
    [(case, level) for case in sorted(CASES) for level in ("paranoid", f"standard:{TRACKED}")
     if case != "use_after_free" or level == "paranoid"],  # poison is paranoid's
)
def test_every_report_names_the_lines_of_the_bug_the_allocation_and_the_free(
    bugs: Path, symbolizer: str, case: str, level: str
) -> None:
    """At paranoid every block's stacks are recorded; at standard those of sampled
    blocks (stacks=1 samples all). In-process: a symbolizer child names file:line."""
    code, stdout, stderr = run_bugs(bugs, case, f"level={level}")
    assert stdout.strip() == "survived"
    assert code == 23, stderr  # exitcode: a detection was recorded
    check_report(stderr, case)


def test_a_free_in_another_thread_names_both_threads(bugs: Path, symbolizer: str) -> None:
    code, _, stderr = run_bugs(bugs, "thread_double_free", f"level=standard:{TRACKED}")
    assert code == 23, stderr
    (report,) = reports(stderr)
    detected, freed, allocated = (report.sections[t] for t in ("detected", "freed", "allocated"))
    assert lines_of(detected[1]) == expected_frames([("release", "free"),
                                                     ("main", "bug-thread-double-free")])
    assert lines_of(freed[1]) == expected_frames([("release", "free"),
                                                  ("freeing_thread", "thread-free")])
    assert lines_of(allocated[1]) == expected_frames([("make_block", "alloc"),
                                                      ("allocator_thread", "thread-alloc")])
    main_thread = thread_of(report.summary)
    assert detected[0] == main_thread
    assert len({main_thread, freed[0], allocated[0]}) == 3  # three different threads


@pytest.mark.parametrize("case", sorted(CASES))
def test_offline_symbolize_names_the_same_lines(
    bugs: Path, symbolizer: str, tmp_path: Path, case: str
) -> None:
    """Written without a symbolizer (symbolize=0: function+offset and module+offset
    only), the log gets the same file:line from ``python -m allocator symbolize``."""
    prefix = tmp_path / "nmm"
    code, _, stderr = run_bugs(bugs, case, f"level=paranoid:symbolize=0:log_path={prefix}")
    assert code == 23 and stderr == "", stderr  # the report went to the log only
    (log,) = tmp_path.glob("nmm.*")
    raw = log.read_text()
    assert not re.search(r"bugs\.c:\d+", raw), raw  # no line numbers yet
    assert re.search(r" in release\+0x[0-9a-f]+ \(/\S+/bugs\+0x[0-9a-f]+\)$", raw, re.M), raw
    out = run([sys.executable, "-m", "allocator", "symbolize", str(log)])
    assert out.returncode == 0, out.stderr
    check_report(out.stdout, case)


def test_symbolize_reads_standard_input_and_says_when_it_cannot(tmp_path: Path) -> None:
    line = "    #0 0x10 in ?? (/nonexistent/module+0x10)\n"
    out = run([sys.executable, "-m", "allocator", "symbolize"], stdin=line)
    assert out.returncode == 0, out.stderr
    assert out.stdout == line  # nothing known of it: unchanged
    missing = run([sys.executable, "-m", "allocator", "symbolize", str(tmp_path / "no.log")])
    assert missing.returncode == 1
    assert "no.log: cannot read it" in missing.stderr
    nothing = run([sys.executable, "-m", "allocator", "symbolize", "--symbolizer",
                   "no-such-symbolizer", "-"], stdin=line)
    assert nothing.returncode == 1 and "no symbolizer" in nothing.stderr


def test_json_log_carries_every_report_with_its_frames(
    bugs: Path, symbolizer: str, tmp_path: Path
) -> None:
    from allocator.reportlog import ErrorReport, LeakReport, read_logs

    prefix = tmp_path / "nmm"
    code, _, stderr = run_bugs(bugs, "double_free",
                               f"level=paranoid:{TRACKED}:log_path={prefix}:log_format=json")
    assert code == 23 and stderr == "", stderr
    assert not list(tmp_path.glob("nmm.[0-9]*[0-9]"))  # json only: no text file
    (logs,) = read_logs(prefix).values()
    error, leaks = logs
    assert isinstance(error, ErrorReport) and isinstance(leaks, LeakReport)
    assert (error.kind, error.size) == ("double_free", 48)
    assert error.alloc is not None and error.free is not None
    where = [(f.function, Path(f.file).name, f.line) for f in error.alloc.frames[:2]]
    assert where == expected_frames([("make_block", "alloc"), ("main", "call-alloc-double")])
    assert [f.line for f in error.free.frames[:2]] == [line_of("free"), line_of("first-free")]
    assert [f.line for f in error.stack[:2]] == [line_of("free"), line_of("bug-double-free")]
    assert error.alloc.thread == error.free.thread == error.thread
    assert all(f.module.endswith("/bugs") for f in error.stack[:2])
    assert leaks.definitely_lost.blocks == 0  # the program freed what it allocated


# ------------------------------------------------------------------ leaks


def leak_summary(text: str) -> dict[str, tuple[int, int]]:
    m = re.search(r"^nmm: leak report: (.*) \(pid \d+\)$", text, re.M)
    assert m, text
    found = re.findall(r"(\d+) bytes? in (\d+) blocks? ([a-z ]+?)(?:,|$)", m[1])
    return {what: (int(nbytes), int(blocks)) for nbytes, blocks, what in found}


def test_a_block_a_global_keeps_is_still_reachable_only_the_real_leak_is_lost(
    bugs: Path, symbolizer: str
) -> None:
    code, stdout, stderr = run_bugs(bugs, "leaks", f"level=standard:{TRACKED}")
    assert stdout.strip() == "survived"
    assert code == 23, stderr  # exitcode: a block was lost
    summary = leak_summary(stderr)
    assert summary["definitely lost"] == (40, 1), stderr
    assert summary["indirectly lost"] == (0, 0)
    lost = re.findall(r"^  definitely lost: (\d+) bytes in \d+ blocks? allocated at (\w+)", stderr,
                      re.M)
    assert lost == [("40", "make_lost")], stderr
    assert re.search(r"^  still reachable: 100 bytes in 1 block allocated at make_kept\+", stderr,
                     re.M), stderr
    (stack,) = re.findall(r"^    stack of 1 block \(thread \d+\):\n((?:    #.*\n)+)", stderr, re.M)
    frames = [_FRAME.match(ln) for ln in stack.splitlines()]
    got = [(f["function"], Path(f["file"] or "").name, int(f["line"] or 0)) for f in frames[:2]
           if f]
    assert got == expected_frames([("make_lost", "alloc-lost"), ("main", "call-lost")])


def test_a_large_lost_block_pointing_into_itself_is_definitely_lost(
    bugs: Path, symbolizer: str
) -> None:
    """A block's pointer into itself keeps nothing alive, also for a block the scan
    reads through process_vm_readv (over 64 KiB): the 40-byte block only it holds
    is lost indirectly, the big one definitely."""
    code, stdout, stderr = run_bugs(bugs, "self_ref", f"level=standard:{TRACKED}")
    assert stdout.strip() == "survived" and code == 23, stderr
    summary = leak_summary(stderr)
    assert summary["definitely lost"] == (100 * 1024, 1), stderr
    assert summary["indirectly lost"] == (40, 1), stderr


def test_roots_are_globals_thread_locals_and_other_threads_stacks(
    bugs: Path, symbolizer: str, tmp_path: Path
) -> None:
    """Another thread, still running at exit, holds a block in a local variable only:
    it is paused and its stack (and registers) scanned, as LSan's stop-the-world."""
    from allocator.reportlog import read_logs

    prefix = tmp_path / "nmm"
    code, stdout, stderr = run_bugs(bugs, "roots",
                                    f"level=standard:{TRACKED}:log_path={prefix}:log_format=json")
    assert stdout.strip() == "survived" and code == 23, stderr
    (logs,) = read_logs(prefix).values()
    (leaks,) = logs
    by_site = {g.site.split("+")[0]: g.category for g in leaks.groups}
    assert by_site["make_lost"] == "definitely_lost"
    for kept in ("make_kept", "make_tls", "make_on_stack"):
        assert by_site[kept] == "still_reachable", (kept, by_site)
    assert leaks.definitely_lost.blocks == 1 and leaks.indirectly_lost.blocks == 0


@pytest.mark.parametrize(
    ("pattern", "silenced"),
    [
        ("make_lost", True),
        ("^make_lost$", True),
        ("make_l*t", True),
        ("*lost", True),
        ("bugs.c", True),   # the source file of a frame
        ("bugs", True),     # the module
        ("^lost", False),
        ("make_lost$x", False),
        ("make_kept", False),
    ],
)
def test_a_suppression_silences_exactly_its_match(
    bugs: Path, tmp_path: Path, pattern: str, silenced: bool
) -> None:
    supp = tmp_path / "supp.txt"
    supp.write_text(f"# known leaks\n\nleak:{pattern}\n")
    code, _, stderr = run_bugs(bugs, "leaks", f"level=standard:{TRACKED}:suppressions={supp}")
    if silenced:
        assert code == 0 and nmm_lines(stderr) == [], stderr  # nothing lost is left
    else:
        assert code == 23, stderr
        assert leak_summary(stderr)["definitely lost"] == (40, 1), stderr


def test_suppressed_blocks_are_counted_in_the_log(bugs: Path, tmp_path: Path) -> None:
    supp = tmp_path / "supp.txt"
    supp.write_text("leak:make_lost\n")
    prefix = tmp_path / "nmm"
    code, _, stderr = run_bugs(bugs, "leaks",
                               f"level=standard:{TRACKED}:suppressions={supp}:log_path={prefix}")
    assert code == 0 and stderr == "", stderr
    (log,) = tmp_path.glob("nmm.*")
    summary = leak_summary(log.read_text())
    assert summary["suppressed"] == (40, 1)
    assert summary["definitely lost"] == (0, 0)


def test_an_unreadable_suppressions_file_is_named(bugs: Path, tmp_path: Path) -> None:
    code, _, stderr = run_bugs(bugs, "leaks",
                               f"level=standard:{TRACKED}:suppressions={tmp_path}/none.txt")
    assert code == 23
    assert f"nmm: suppressions: cannot read '{tmp_path}/none.txt'" in stderr


@pytest.mark.parametrize(
    ("case", "options", "expected"),
    [
        ("leaks", "exitcode=0", 0),       # the program's own status
        ("leaks", "exitcode=7", 7),
        ("leaks", "leaks=0", 0),          # no leak report: nothing found
        ("overflow", "exitcode=0", 0),
        ("overflow", "exitcode=9", 9),
        ("clean", "", 0),                 # nothing found: the program's own status
    ],
)
def test_exitcode_is_honoured(bugs: Path, case: str, options: str, expected: int) -> None:
    code, stdout, stderr = run_bugs(bugs, case, f"level=standard:{TRACKED}:{options}")
    assert stdout.strip() == "survived"
    assert code == expected, stderr
    if "leaks=0" in options or case == "clean":
        assert nmm_lines(stderr) == [], stderr


def test_log_path_keeps_stderr_clean(
    bugs: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "nmm"
    code, _, stderr = run_bugs(bugs, "leaks", f"level=standard:{TRACKED}:log_path={prefix}")
    assert code == 23 and stderr == ""
    (log,) = tmp_path.glob("nmm.*")
    assert leak_summary(log.read_text())["definitely lost"] == (40, 1)
