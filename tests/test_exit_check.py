"""The exit check (exit_check=1; on by default at paranoid): damage that never
reaches free() is reported when the heap ends, through the usual choke point and
policy, before the leak report.

Through the preload library: tests/c/preload/misuse.c damages a block (an
overflow past a live block, a write to a quarantined one) and exits at once; the
last lines say what was damaged (record), or the process dies with SIGABRT after
that one line (abort). tests/c/preload/exit_busy.c exits while other threads are
still allocating: nothing may be reported. Through the binding: Heap.exit_check()
and Heap.close(). The misuse table (test_misuse.py) has the exit_only_* rows.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from _nmm_c import compile_program, nmm_lines, preload_path, run

from allocator import Corrupted, Heap


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exit")
    return {name: compile_program(f"{name}.c", out, link_nmm=False)
            for name in ("misuse", "exit_busy")}


SITE = r"make_block\+0x[0-9a-f]+ \(misuse\)"
# (options, case) -> the one line expected at exit (None: nothing)
EXIT_CASES = {
    ("level=standard", "exit_overflow"): None,  # exit_check is off by default at standard
    ("level=standard:exit_check=1", "exit_overflow"): rf"overflow at 0x[0-9a-f]+ size 40 "
    rf"\(1 byte past the 40-byte block\) alloc site {SITE}",
    ("level=standard:exit_check=1", "exit_uaf"): None,  # nothing is poisoned at standard
    ("level=paranoid", "exit_overflow"): rf"overflow at 0x[0-9a-f]+ size 40 "
    rf"\(1 byte past the 40-byte block\) alloc site {SITE}",
    ("level=paranoid", "exit_uaf"): rf"use_after_free at 0x[0-9a-f]+ "
    rf"\(byte 3 of the freed block changed\) alloc site {SITE}",
    ("level=paranoid:exit_check=0", "exit_overflow"): None,
    ("level=paranoid:exit_check=0", "exit_uaf"): None,
    ("level=off:exit_check=1", "exit_overflow"): None,  # no canary at off
}


@pytest.mark.parametrize(("options", "case"), sorted(EXIT_CASES))
def test_damage_nothing_frees_is_reported_at_exit(
    programs: dict[str, Path], options: str, case: str
) -> None:
    out = run([str(programs["misuse"]), case], preload=preload_path(),
              options=f"{options}:tracking=1:exitcode=0")  # the status is the program's
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "survived"
    lines = [line for line in nmm_lines(out.stderr) if not line.startswith("nmm: leak report")]
    expected = EXIT_CASES[(options, case)]
    if expected is None:
        assert lines == []
        return
    (line,) = lines
    assert re.match(rf"^nmm: {expected} \(thread \d+\)$", line), line
    # before the leak report: the run's last lines say what was damaged
    report = out.stderr.find("nmm: leak report")
    assert report < 0 or out.stderr.index(line) < report


@pytest.mark.parametrize("case", ["exit_overflow", "exit_uaf"])
def test_policy_abort_stops_the_exit_with_one_line(programs: dict[str, Path], case: str) -> None:
    out = run([str(programs["misuse"]), case], preload=preload_path(),
              options="level=paranoid:policy=abort")
    assert out.returncode == -signal.SIGABRT, (out.returncode, out.stderr)
    (line,) = nmm_lines(out.stderr)
    kind = "overflow" if case == "exit_overflow" else "use_after_free"
    assert line.startswith(f"nmm: {kind} at 0x")


@pytest.mark.parametrize("options", ["level=paranoid", "level=standard:exit_check=1"])
def test_threads_still_allocating_at_exit_are_no_false_positive(
    programs: dict[str, Path], options: str
) -> None:
    """Blocks other threads are handing out, poisoning or resizing while the exit
    check runs look damaged for a moment; none may be reported."""
    for _ in range(8):
        out = run([str(programs["exit_busy"]), "3"], preload=preload_path(), options=options)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "done"
        assert nmm_lines(out.stderr) == []


# ------------------------------------------------------------------ the binding


@pytest.mark.parametrize("level", ["standard", "paranoid"])
def test_exit_check_reports_once_and_the_heap_goes_on(level: str) -> None:
    with Heap(level=level) as heap:
        live = heap.alloc(100)
        live.unsafe_write(100, bytes([live.unsafe_read(100, 1)[0] ^ 0xFF]))
        freed = heap.alloc(200)
        heap.free(freed)
        freed.unsafe_write(7, b"\x00")
        large = heap.alloc(300_000)
        large.unsafe_write(-1, bytes([large.unsafe_read(-1, 1)[0] ^ 0xFF]))
        result = heap.exit_check()
        found = sorted((e.kind, e.address, e.detail) for e in result.events)
        expected = [("overflow", live.address, 100), ("underflow", large.address, 1)]
        if level == "paranoid":
            expected.append(("use_after_free", freed.address, 7))
        assert found == sorted(expected)
        assert result.problems == len(expected)
        assert heap.exit_check().clean  # reported once
        for block in (live, large):  # already reported: retired quietly
            with pytest.raises(Corrupted):
                heap.free(block)
        assert heap.events() == list(result.events)  # nothing new
        with heap.alloc(64) as again:
            again.view[:] = b"\x01" * 64
        assert heap.validate().clean


def test_close_runs_the_exit_check_when_asked() -> None:
    heap = Heap(level="standard", exit_check=True)
    block = heap.alloc(50)
    block.unsafe_write(50, bytes([block.unsafe_read(50, 1)[0] ^ 0x01]))
    heap.close()
    (event,) = heap.events()
    assert (event.kind, event.address, event.size) == ("overflow", block.address, 50)
    quiet = Heap(level="standard")  # off by default at standard
    block = quiet.alloc(50)
    block.unsafe_write(50, bytes([block.unsafe_read(50, 1)[0] ^ 0x01]))
    quiet.close()
    assert quiet.events() == []
