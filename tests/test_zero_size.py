"""Zero-size blocks (issue 11): at paranoid ``malloc(0)`` is a distinct address in
a reserved PROT_NONE area (hardened_malloc's approach), so reading or writing
it faults and the SIGSEGV handler names it ("write of a zero-size block
allocated at ...") before the process dies; below paranoid it is a block of the
smallest class whose canary starts at offset 0, so a write is an overflow
reported at its free. Through the binding and under the preload library
(tests/c/preload/zero_size.c).
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from _nmm_c import compile_program, nmm_lines, preload_path, run

from allocator import DoubleFree, Heap, Mismatch, OutOfMemory


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_program("zero_size.c", tmp_path_factory.mktemp("zero"), link_nmm=False)


@pytest.fixture(scope="module")
def preload() -> Path:
    return preload_path()


def test_zero_size_blocks_at_paranoid_live_outside_the_slabs() -> None:
    with Heap(level="paranoid") as heap:
        blocks = [heap.alloc(0) for _ in range(300)]
        addresses = {b.address for b in blocks}
        assert len(addresses) == 300 and all(a % 16 == 0 for a in addresses)
        small = heap.alloc(1)
        assert all(abs(a - small.address) > 1 << 20 for a in addresses)  # not a slab block
        stats = heap.stats()
        assert stats.live_blocks == 301 and stats.allocs == 301
        assert heap.usable_size(blocks[0], strict=True) == 0
        assert heap.requested_size(blocks[0]) == 0
        grown = heap.realloc(blocks[0], 40)
        grown.view[:] = b"\x07" * 40
        heap.free(heap.realloc(grown, 0))
        heap.free(blocks[1])
        with pytest.raises(DoubleFree):
            heap.free(blocks[1].address)
        new = heap.new(0)
        with pytest.raises(Mismatch):  # operator new's zero-size block, freed by free
            heap.free(new)
        for block in blocks[2:]:
            heap.free(block)
        heap.free(small)
        events = heap.events()
        assert [e.kind for e in events] == ["double_free", "alloc_dealloc_mismatch"]
        assert heap.validate().clean
        stats = heap.stats()
        assert stats.live_blocks == 0 and stats.allocs == stats.frees


@pytest.mark.parametrize("level", ["off", "standard"])
def test_zero_size_blocks_below_paranoid_are_slab_blocks(level: str) -> None:
    with Heap(level=level) as heap:
        a, b = heap.alloc(0), heap.alloc(0)
        small = heap.alloc(1)
        assert a.address != b.address
        assert abs(a.address - small.address) < 1 << 24  # in the slab region
        for block in (a, b, small):
            heap.free(block)
        assert heap.events() == []


@pytest.mark.parametrize("level", ["off", "standard", "paranoid"])
def test_realloc_to_zero_that_cannot_make_the_block_leaves_the_old_one(level: str) -> None:
    """realloc(p, 0) frees p and returns a zero-size block; when none can be made (a fail
    point here, or the limit) it returns NULL and p is the caller's as it was, as for any
    size. It used to free p first: the caller, told NOMEM, later freed p a second time."""
    with Heap(level=level) as heap:
        block = heap.alloc(48)
        block.view[:] = bytes(range(48))
        heap.set_failpoint("alloc@every1")
        with pytest.raises(OutOfMemory, match="realloc"):
            heap.realloc(block, 0)
        heap.set_failpoint("alloc@off")
        assert bytes(block.view) == bytes(range(48))
        assert heap.stats().live_blocks == 1
        zero = heap.realloc(block, 0)
        assert heap.requested_size(zero) == (16 if level == "off" else 0)  # off: the room
        assert heap.stats().live_blocks == 1
        heap.free(zero)
        assert heap.events() == []
        assert heap.stats().live_blocks == 0


@pytest.mark.parametrize("level", ["off", "standard", "paranoid"])
def test_zero_size_blocks_under_the_preload_library(
    program: Path, preload: Path, level: str
) -> None:
    out = run([str(program), "ok"], preload=preload, options=f"level={level}:exit_check=1")
    assert out.returncode == 0, out.stdout + out.stderr
    usable = 16 if level == "off" else 0  # the smallest class's room; checked: what was asked
    assert out.stdout.splitlines() == [f"usable {usable}", "ok", "survived"]
    assert nmm_lines(out.stderr) == []


@pytest.mark.parametrize("policy", ["record", "abort"])
@pytest.mark.parametrize("access", ["write", "read"])
def test_touching_a_zero_size_block_at_paranoid_is_named_then_faults(
    program: Path, preload: Path, access: str, policy: str
) -> None:
    out = run([str(program), access], preload=preload, options=f"level=paranoid:policy={policy}")
    assert out.returncode == -signal.SIGSEGV, (out.returncode, out.stdout, out.stderr)
    assert out.stdout.splitlines() == ["usable 0", "ok"]
    (line,) = nmm_lines(out.stderr)
    assert re.match(
        rf"^nmm: {access} of a zero-size block allocated at make_zero\+0x[0-9a-f]+ "
        r"\(zero_size\) \(block 0x[0-9a-f]+\) \(thread \d+\)$",
        line,
    ), line


def test_writing_a_zero_size_block_at_standard_is_an_overflow(program: Path, preload: Path) -> None:
    out = run([str(program), "write"], preload=preload, options="level=standard")
    assert out.returncode == 23, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["usable 0", "ok", "survived"]
    (line,) = nmm_lines(out.stderr)
    assert line.startswith("nmm: overflow at 0x") and "(1 byte past the 0-byte block)" in line


@pytest.mark.parametrize("level", ["standard", "paranoid"])
def test_double_free_of_a_zero_size_block(program: Path, preload: Path, level: str) -> None:
    out = run([str(program), "double_free"], preload=preload, options=f"level={level}")
    assert out.returncode == 23, out.stdout + out.stderr
    assert out.stdout.splitlines() == ["usable 0", "ok", "survived"]
    (line,) = nmm_lines(out.stderr)
    assert line.startswith("nmm: double_free at 0x"), line


# ------------------------------------------------------------------ signal stacks


@pytest.mark.parametrize(("level", "expected"), [("paranoid", "yes"), ("standard", "no")])
def test_every_thread_that_allocates_gets_an_alternate_signal_stack(
    preload: Path, tmp_path: Path, level: str, expected: str
) -> None:
    """Once the SIGSEGV handler is installed (guard pages or zero-size blocks:
    paranoid), each thread's first allocation gives it an alternate signal stack,
    so a fault on a thread that ran off its own stack still reaches the handler."""
    program = compile_program("thread_altstack.c", tmp_path, link_nmm=False)
    out = run([str(program)], preload=preload, options=f"level={level}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"thread {i}: altstack {expected}" for i in range(1, 5)]
