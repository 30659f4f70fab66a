"""Alignment x size: every power-of-two alignment the C library accepts, at every
level, through the three ways into NMM: the C API (tests/c/preload/align_grid.c
linked with libnmm.a), the Python binding, and the preload library
(tests/c/preload/align_libc.c's aligned_alloc, posix_memalign, memalign, valloc
and pvalloc, run under glibc too for the same answer). Alignments above the page
size used to be refused (issue 11).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from _nmm_c import compile_program, nmm_lines, preload_path, run

from allocator import Block, DoubleFree, Heap, InvalidArgument, OutOfMemory

LEVELS = ("off", "standard", "paranoid")
SIZES = (0, 1, 15, 16, 17, 100, 4095, 4096, 4097, 65536, 131072, 200_000, (1 << 20) + 3)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("align")
    return {
        "align_grid": compile_program("align_grid.c", out, link_nmm=True),
        "align_libc": compile_program("align_libc.c", out, link_nmm=False),
    }


@pytest.mark.parametrize("level", LEVELS)
def test_c_api_grid(programs: dict[str, Path], level: str) -> None:
    out = run([str(programs["align_grid"]), level])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "grid ok: 650 blocks"
    assert nmm_lines(out.stderr) == []


@pytest.mark.parametrize("level", LEVELS)
def test_binding_grid(level: str) -> None:
    with Heap(level=level) as heap:
        for shift in range(25):
            alignment = 1 << shift
            for i, size in enumerate(SIZES):
                block = heap.aligned_alloc(alignment, size)
                assert block.address % alignment == 0, (alignment, size)
                assert block.usable_size >= size
                fill = bytes([(shift * 16 + i) % 251 + 1]) * size
                block.view[:] = fill
                grown = heap.realloc(block, size + 100)
                assert bytes(grown.view[:size]) == fill, (alignment, size)
                heap.free(grown)
        for bad in (0, 3, 24, 4097, 3 << 20):
            with pytest.raises(InvalidArgument):
                heap.aligned_alloc(bad, 64)
        for huge in (1 << 47, 1 << 63):
            with pytest.raises(OutOfMemory):
                heap.aligned_alloc(huge, 64)
        assert heap.stats().live_blocks == 0
        assert heap.validate().clean
        assert heap.events() == []


def test_libc_grid_under_glibc(programs: dict[str, Path]) -> None:
    out = run([str(programs["align_libc"])])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("grid ok: ")


@pytest.mark.parametrize("level", LEVELS)
def test_libc_grid_under_the_preload_library(programs: dict[str, Path], level: str) -> None:
    plain = run([str(programs["align_libc"])])
    out = run([str(programs["align_libc"])], preload=preload_path(), options=f"level={level}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == plain.stdout
    assert nmm_lines(out.stderr) == []


@pytest.mark.parametrize("options", [{"level": "standard"}, {"level": "paranoid"},
                                     {"level": "off", "tracking": 1}])
def test_second_free_of_an_aligned_block_after_another_thread_allocated(
    options: dict[str, object],
) -> None:
    """An aligned block freed, another thread allocating the same class, the same
    pointer freed again: a double free, and the other thread's block is not the freed
    one and stays its own. (The freed block used to go onto the shared slab stack: the
    other thread got that very block, and the second free freed it without a word.)"""
    with Heap(**options) as heap:  # type: ignore[arg-type]
        first = heap.aligned_alloc(64, 40)
        address = first.address
        heap.free(first)
        taken: list[Block] = []
        other = threading.Thread(target=lambda: taken.append(heap.aligned_alloc(64, 40)))
        other.start()
        other.join()
        (block,) = taken
        assert block.address != address
        block.view[:] = b"\x5a" * 40
        with pytest.raises(DoubleFree):
            heap.free(address)
        assert [e.kind for e in heap.events()] == ["double_free"]
        assert bytes(block.view) == b"\x5a" * 40
        heap.free(block)
        assert heap.validate().clean
        assert heap.live_blocks == 0
