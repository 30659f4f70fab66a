"""Checked bulk copies (issue 11): the preload library's memcpy, memmove, memset,
strcpy, strncpy, strcat, stpcpy and their _FORTIFY_SOURCE forms report a range
that starts in a heap block and runs past its requested size (overflow) or
starts before it (underflow), with the exact reach and the call, before anything
is copied; with policy=record the call goes on clamped to the block or skipped,
and says which (tests/c/preload/copy_checks.c, one case per run). The same check
through the C API and the binding is ``nmm_copy`` / ``Heap.copy``.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from _nmm_c import compile_program, nmm_lines, preload_path, run

from allocator import Corrupted, Heap

# case: (kind, block size, reach in words, call, bytes asked, record: "clamped to N" |
#        "skipped", bytes of the block the clamped call changed)
CASES: dict[str, tuple[str, int, str, str, int, str, int]] = {
    "memcpy": ("overflow", 100, "8 bytes past", "memcpy writing", 108, "clamped to 100", 100),
    "memcpy_mid": ("overflow", 100, "1 byte past", "memcpy writing", 2, "clamped to 1", 1),
    "memcpy_aligned": ("overflow", 100, "8 bytes past", "memcpy writing", 108, "clamped to 100",
                       100),
    "memcpy_aligned_stale": ("overflow", 100, "8 bytes past", "memcpy writing", 108,
                             "clamped to 100", 100),
    "memcpy_at_end": ("overflow", 100, "1 byte past", "memcpy writing", 1, "skipped", 0),
    "memmove_same": ("overflow", 100, "5 bytes past", "memmove writing", 95, "clamped to 90", 20),
    "memmove_same_src": ("overflow", 100, "5 bytes past", "memmove reading", 95,
                         "clamped to 90", 20),
    "memcpy_new": ("overflow", 100, "8 bytes past", "memcpy writing", 108, "clamped to 100", 100),
    "memcpy_src_same_slab": ("overflow", 100, "8 bytes past", "memcpy reading", 100,
                             "clamped to 92", 92),
    "memcpy_src_head": ("underflow", 100, "4 bytes before", "memcpy reading", 8, "skipped", 0),
    "memcpy_wrap": ("overflow", 100, "4294967195 bytes past", "memcpy writing",
                    2**64 - 1, "clamped to 99", 99),
    "memcpy_src": ("overflow", 50, "10 bytes past", "memcpy reading", 60, "clamped to 50", 50),
    "memmove": ("overflow", 100, "8 bytes past", "memmove writing", 58, "clamped to 50", 50),
    "memset": ("overflow", 100, "1 byte past", "memset writing", 101, "clamped to 100", 100),
    "memset_under": ("underflow", 100, "4 bytes before", "memset writing", 20, "skipped", 0),
    "strcpy": ("overflow", 24, "10 bytes past", "strcpy writing", 34, "clamped to 24", 24),
    "stpcpy": ("overflow", 24, "10 bytes past", "stpcpy writing", 34, "clamped to 24", 24),
    "strncpy": ("overflow", 24, "6 bytes past", "strncpy writing", 30, "clamped to 24", 24),
    "strcat": ("overflow", 24, "14 bytes past", "strcat writing", 34, "clamped to 20", 24),
    "memcpy_chk": ("overflow", 100, "8 bytes past", "memcpy writing", 108, "clamped to 100", 100),
    "strcpy_chk": ("overflow", 24, "10 bytes past", "strcpy writing", 34, "clamped to 24", 24),
}


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_program("copy_checks.c", tmp_path_factory.mktemp("copies"), link_nmm=False)


@pytest.fixture(scope="module")
def preload() -> Path:
    return preload_path()


def _line(case: str, record: bool) -> str:
    kind, size, reach, call, asked, action, _ = CASES[case]
    what = f" by {call} {asked} byte{'s' if asked != 1 else ''}" + (f", {action}" if record else "")
    return (
        rf"^nmm: {kind} at 0x[0-9a-f]+ size {size} \({re.escape(reach)} the {size}-byte block\)"
        rf"{re.escape(what)} call site main\+0x[0-9a-f]+ \(copy_checks\) \(thread \d+\)$"
    )


@pytest.mark.parametrize("level", ["standard", "paranoid"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_copy_past_a_block_is_reported_before_it_happens_and_clamped(
    program: Path, preload: Path, case: str, level: str
) -> None:
    out = run([str(program), case], preload=preload, options=f"level={level}:policy=record")
    assert out.returncode == 23, out.stdout + out.stderr  # a detection was recorded
    (line,) = nmm_lines(out.stderr)  # the clamped call damaged nothing its free finds
    assert re.match(_line(case, record=True), line), line
    changed = CASES[case][6]
    assert out.stdout.splitlines() == [f"changed {changed}", "survived"]


@pytest.mark.parametrize("case", ["memcpy", "memset_under", "strcpy", "strncpy", "memcpy_chk"])
def test_copy_past_a_block_with_policy_abort_stops_before_the_copy(
    program: Path, preload: Path, case: str
) -> None:
    out = run([str(program), case], preload=preload, options="level=standard:policy=abort")
    assert out.returncode == -signal.SIGABRT, (out.returncode, out.stdout, out.stderr)
    assert "survived" not in out.stdout and "changed" not in out.stdout
    (line,) = nmm_lines(out.stderr)
    assert re.match(_line(case, record=False), line), line


@pytest.mark.parametrize("level", ["off", "standard", "paranoid"])
def test_copies_inside_blocks_report_nothing(program: Path, preload: Path, level: str) -> None:
    """Every call at the exact edges of blocks of many sizes, to and from the
    stack, fortified forms with the exact object size: nothing to report."""
    out = run([str(program), "clean"], preload=preload, options=f"level={level}:exit_check=1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == "clean\n"
    assert nmm_lines(out.stderr) == []


@pytest.mark.parametrize("level", ["standard", "paranoid"])
def test_copies_from_a_freed_block_are_not_reported_by_the_copy_check(
    program: Path, preload: Path, level: str
) -> None:
    """A freed block's old header still reads as its size: a read within it (the
    inline fit) and one past it (the whole check, which finds the block not live)
    are both let through, as before the inline fit."""
    out = run([str(program), "freed"], preload=preload, options=f"level={level}:policy=record")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["changed 1", "survived"]
    assert nmm_lines(out.stderr) == []


def test_level_off_does_not_check_copies(program: Path, preload: Path) -> None:
    out = run([str(program), "memcpy"], preload=preload, options="level=off")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["changed 100", "survived"]
    assert nmm_lines(out.stderr) == []


@pytest.mark.parametrize("case", ["memcpy", "memset", "strcpy"])
def test_copy_check_option_turns_the_check_on_and_off(
    program: Path, preload: Path, case: str
) -> None:
    """copy_check=1 (the default, given explicitly here) reports the copy before it
    happens; copy_check=0 lets the C library's routine overflow the block, which
    only the canary's check at its free then sees (no line names the call)."""
    on = run([str(program), case], preload=preload,
             options="level=standard:policy=record:copy_check=1")
    (line,) = nmm_lines(on.stderr)
    assert re.match(_line(case, record=True), line), line
    off = run([str(program), case], preload=preload,
              options="level=standard:policy=record:copy_check=0")
    assert off.returncode == 23, off.stdout + off.stderr  # the free's detection
    lines = nmm_lines(off.stderr)
    assert lines, off.stderr
    assert not any(" by " in ln and " writing " in ln for ln in lines), lines
    assert all(ln.startswith("nmm: overflow at ") for ln in lines), lines
    assert off.stdout.splitlines()[-1] == "survived"


def test_copy_check_is_in_the_options_help(preload: Path) -> None:
    out = run(["/bin/true"], preload=preload, options="help")
    assert re.search(r"^\s*copy_check\b.*\b1\b", out.stdout + out.stderr, re.M), out.stderr


# ------------------------------------------------------------------ nmm_copy / Heap.copy


@pytest.mark.parametrize("level", ["standard", "paranoid"])
def test_heap_copy_reports_overflow_and_underflow_and_clamps(level: str) -> None:
    with Heap(level=level) as heap:
        dst, src = heap.alloc(100), heap.alloc(200)
        src.view[:] = b"x" * 200
        assert heap.copy(dst, src, 100) == 100  # exactly the block: fine
        assert heap.events() == []
        dst.view[:] = b"." * 100
        with pytest.raises(Corrupted) as info:
            heap.copy(dst.address + 40, src, 68)
        event = info.value.event
        assert event is not None
        assert (event.kind, event.address, event.size) == ("overflow", dst.address, 100)
        assert (event.detail, event.extra) == (100, 107)  # the first and last bytes outside
        assert bytes(dst.view) == b"." * 40 + b"x" * 60  # clamped to the block's end
        with pytest.raises(Corrupted) as info:
            heap.copy(dst.address - 3, src, 10)
        event = info.value.event
        assert event is not None
        assert (event.kind, event.address, event.detail) == ("underflow", dst.address, 3)
        assert bytes(dst.view) == b"." * 40 + b"x" * 60  # skipped
        small = heap.alloc(10)
        with pytest.raises(Corrupted) as info:  # reading past the source
            heap.copy(dst, small, 16)
        event = info.value.event
        assert event is not None and (event.kind, event.address) == ("overflow", small.address)
        raised = heap.events()
        assert [e.kind for e in raised] == ["overflow", "underflow", "overflow"]
        for block in (dst, src, small):
            heap.free(block)  # nothing was damaged: no more events
        assert heap.events() == [] and heap.validate().clean


def test_heap_copy_at_level_off_is_a_plain_copy() -> None:
    with Heap(level="off") as heap:
        dst, src = heap.alloc(100), heap.alloc(100)
        src.view[:] = b"y" * 100
        assert heap.copy(dst, src, 100) == 100
        assert bytes(dst.view) == b"y" * 100
        assert heap.events() == []
