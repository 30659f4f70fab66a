"""The Python binding's behaviour: blocks, sizes, alignment, realloc, misuse through
the binding, options, limit, contraction, threads, events and introspection."""

from __future__ import annotations

import gc
import importlib.util
import json
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

import allocator
from allocator import (
    STATS_FIELDS,
    Block,
    Corrupted,
    DoubleFree,
    Event,
    Heap,
    HeapClosed,
    InvalidArgument,
    InvalidPointer,
    Mismatch,
    NmmError,
    OutOfMemory,
    ReallocFreed,
)

LEVELS = ("off", "standard", "paranoid")
ROOT = Path(__file__).resolve().parent.parent
MakeHeap = Callable[..., Heap]


def _line_of(marker: str) -> int:
    """The line number in this file of the line ending with `# <marker>`."""
    for number, line in enumerate(Path(__file__).read_text().splitlines(), 1):
        if line.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(marker)


# ------------------------------------------------------------------ blocks


@pytest.mark.parametrize("level", LEVELS)
def test_alloc_write_read_free(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level)
    sizes = [0, 1, 15, 16, 17, 64, 100, 1000, 4096, 8192, 8193, 100_000, 1 << 20]
    blocks = [heap.alloc(n) for n in sizes]
    for i, block in enumerate(blocks):
        assert isinstance(block, Block)
        assert block.size == sizes[i]
        assert len(block.view) == sizes[i]
        assert block.address % 16 == 0
        assert block.usable_size >= block.size
        assert heap.usable_size(block) == block.usable_size
        if level == "off":  # no header at off: the allocator knows the class size only
            assert block.size <= heap.requested_size(block) <= block.usable_size
        else:
            assert heap.requested_size(block) == block.size
        block.view[:] = bytes([i + 1]) * block.size
    assert len({b.address for b in blocks}) == len(blocks)  # zero-size blocks are distinct too
    for i, block in enumerate(blocks):
        assert bytes(block.view) == bytes([i + 1]) * block.size
        heap.free(block)
        assert block.freed
    s = heap.stats()
    assert s.allocs == s.frees == len(sizes)
    assert s.live_blocks == 0 and s.live_bytes == 0
    assert heap.validate().clean
    assert heap.events() == []


def test_block_is_a_context_manager(make_heap: MakeHeap) -> None:
    heap = make_heap()
    with heap.alloc(48) as block:
        block.view[:3] = b"abc"
        assert heap.live_blocks == 1
    assert block.freed
    assert heap.live_blocks == 0
    assert heap.stats().frees == 1
    with pytest.raises(InvalidPointer):
        block.view  # noqa: B018 - the access itself must raise
    with pytest.raises(InvalidPointer):
        block.usable_size  # noqa: B018
    with pytest.raises(DoubleFree) as info:
        heap.free(block)  # the Python-side guard: never reaches the allocator
    assert info.value.status == 0 and info.value.event is None


def test_view_is_released_on_free(make_heap: MakeHeap) -> None:
    heap = make_heap()
    block = heap.alloc(32)
    view = block.view
    view[0] = 7
    heap.free(block)
    with pytest.raises(ValueError):
        view[0]


@pytest.mark.parametrize("level", LEVELS)
def test_calloc_is_zeroed(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level)
    for n, size in [(1, 1), (10, 100), (3, 4096), (100, 1000)]:
        dirty = heap.alloc(n * size)
        dirty.view[:] = b"\xff" * (n * size)
        heap.free(dirty)
        block = heap.calloc(n, size)
        assert block.size == n * size
        assert bytes(block.view) == bytes(n * size)
        heap.free(block)


@pytest.mark.parametrize("level", LEVELS)
def test_realloc_keeps_contents(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level)
    block = heap.alloc(10)
    content = b"0123456789"
    block.view[:] = content
    for i, size in enumerate([20, 200, 5000, 9000, 70_000, 3000, 5, 64]):
        old = block
        block = heap.realloc(block, size)
        assert old.freed and not block.freed and block.size == size
        kept = content[:size]
        assert bytes(block.view[: len(kept)]) == kept
        content = kept + bytes([i]) * (size - len(kept))
        block.view[:] = content
    grown = heap.realloc(block, 100)
    assert bytes(grown.view[:64]) == content
    fresh = heap.realloc(None, 33)
    assert fresh.size == 33
    zero = heap.realloc(fresh, 0)  # frees and returns a zero-size block
    assert fresh.freed and zero.size == 0
    heap.free(zero)
    heap.free(grown)
    s = heap.stats()
    assert s.live_blocks == 0 and s.allocs == s.frees
    assert heap.validate().clean and heap.events() == []


@pytest.mark.parametrize("level", LEVELS)
def test_aligned_alloc(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level)
    for shift in range(4, 17):  # 16 .. 64 KiB, past the page size
        alignment = 1 << shift
        for size in (1, alignment - 1, alignment, 3 * alignment + 5):
            block = heap.aligned_alloc(alignment, size)
            assert block.address % alignment == 0
            assert block.usable_size >= size
            block.view[:] = b"\x5a" * size
            heap.free(block)
    for bad in (0, 3, 24, (1 << 20) + 1):
        with pytest.raises(InvalidArgument):
            heap.aligned_alloc(bad, 64)
    with pytest.raises(OutOfMemory):  # a power of two no mapping can hold
        heap.aligned_alloc(1 << 47, 64)
    assert heap.stats().live_blocks == 0
    assert heap.validate().clean and heap.events() == []


@pytest.mark.parametrize("level", LEVELS)
def test_new_and_delete_in_every_matching_form(make_heap: MakeHeap, level: str) -> None:
    """C++'s forms through the binding: each block freed by its own kind of delete
    (plain, array, sized, aligned, sized and aligned) is no misuse at any level,
    small, aligned and large alike; and a usable_size(strict=True) of a live block
    answers as the plain one."""
    heap = make_heap(level=level)
    for size in (0, 1, 64, 5000, 300_000):
        for array in (False, True):
            block = heap.new(size, array=array)
            block.view[:] = b"\x11" * size
            assert heap.usable_size(block, strict=True) == heap.usable_size(block) >= size
            heap.delete(block, array=array)
            heap.delete(heap.new(size, array=array), array=array, size=size)
            for alignment in (32, 4096, 1 << 16):
                block = heap.new(size, array=array, alignment=alignment)
                assert block.address % alignment == 0
                heap.delete(block, array=array, alignment=alignment)
                block = heap.new(size, array=array, alignment=alignment)
                heap.delete(block, array=array, size=size, alignment=alignment)
    # an alignment up to the default (16) is the default
    heap.delete(heap.new(10, alignment=8), alignment=16)
    assert heap.events() == []
    assert heap.validate().clean
    assert heap.stats().live_blocks == 0


def test_mismatch_events_say_what_made_and_freed_the_block(make_heap: MakeHeap) -> None:
    heap = make_heap(level="standard")
    with pytest.raises(Mismatch) as info:
        heap.delete(heap.new(24, array=True))
    assert info.value.event is not None and info.value.event.families == ("new[]", "delete")
    block = heap.new(24, alignment=256)
    with pytest.raises(Mismatch) as info:
        heap.delete(block, size=20)
    event = info.value.event
    assert event is not None and event.kind == "delete_size_mismatch"
    assert (event.size, event.delete_size, event.alignments) == (24, 20, (256, 16))
    assert block.freed  # freed all the same
    with pytest.raises(DoubleFree):
        heap.delete(block)
    assert heap.validate().clean and heap.stats().live_blocks == 0


def test_unsafe_read_write_in_bounds(make_heap: MakeHeap) -> None:
    heap = make_heap(level="standard")
    block = heap.alloc(64)
    block.unsafe_write(10, b"hello")
    assert bytes(block.view[10:15]) == b"hello"
    assert block.unsafe_read(10, 5) == b"hello"
    heap.free(block)
    assert heap.validate().clean


# ------------------------------------------------------------------ misuse through the binding


@pytest.mark.parametrize("level", LEVELS)
def test_double_free_of_an_address(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level)
    block = heap.alloc(64)
    address = block.address
    heap.free(address)
    assert block.freed  # the Heap knew the address belonged to this Block
    with pytest.raises(DoubleFree) as info:
        heap.free(address)
    assert isinstance(info.value, NmmError)
    event = info.value.event
    assert isinstance(event, Event)
    assert event.kind == "double_free" and event.address == address
    assert [e.kind for e in heap.events()] == ["double_free"]
    _assert_still_usable(heap)


@pytest.mark.parametrize("level", LEVELS)
def test_double_free_of_a_large_block(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level)
    address = heap.alloc(1 << 20).address
    heap.free(address)
    with pytest.raises(DoubleFree):
        heap.free(address)
    _assert_still_usable(heap)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("interior", "interior"),
        ("wild", "wild"),
        ("foreign", "foreign_heap"),
        ("large_interior", "interior"),
    ],
)
def test_invalid_free(make_heap: MakeHeap, level: str, variant: str, reason: str) -> None:
    heap = make_heap(level=level)
    other = make_heap(level=level)
    keep = heap.alloc(256)
    keep.view[:] = b"k" * 256
    if variant == "interior":
        address = keep.address + 16
    elif variant == "large_interior":
        address = heap.alloc(1 << 20).address + 4096
    elif variant == "wild":
        address = 0x10  # far below any mapping
    else:
        address = other.alloc(256).address
    with pytest.raises(InvalidPointer) as info:
        heap.free(address)
    event = info.value.event
    assert event is not None and event.kind == "invalid_free" and event.address == address
    assert event.reason == reason
    assert bytes(keep.view) == b"k" * 256  # nothing behind the pointer was touched
    assert not keep.freed
    _assert_still_usable(heap)
    assert other.validate().clean


def test_foreign_block_object_is_rejected(make_heap: MakeHeap) -> None:
    heap, other = make_heap(level="standard"), make_heap(level="standard")
    block = other.alloc(100)
    with pytest.raises(InvalidPointer):
        heap.free(block)
    assert not block.freed
    other.free(block)  # still owned by its own heap
    assert other.validate().clean


@pytest.mark.parametrize("level", LEVELS)
def test_realloc_of_a_freed_block(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level)
    block = heap.alloc(64)
    address = block.address
    heap.free(block)
    with pytest.raises(ReallocFreed):
        heap.realloc(block, 128)  # Python-side guard
    with pytest.raises(ReallocFreed) as info:
        heap.realloc(address, 128)  # reaches the allocator
    assert info.value.event is not None and info.value.event.kind == "realloc_freed"
    _assert_still_usable(heap)


def test_calloc_overflow_and_huge_requests(make_heap: MakeHeap) -> None:
    heap = make_heap(level="standard")
    with pytest.raises(OutOfMemory) as info:
        heap.calloc(1 << 62, 16)
    assert isinstance(info.value, MemoryError)
    with pytest.raises(OutOfMemory):
        heap.alloc(1 << 62)
    with pytest.raises(OutOfMemory):
        heap.realloc(heap.alloc(8), 1 << 62)
    with pytest.raises(InvalidArgument):
        heap.alloc(-1)
    with pytest.raises(InvalidArgument):
        heap.free("0x1234")  # type: ignore[arg-type]
    assert heap.stats().alloc_failures >= 3
    _assert_still_usable(heap)


def _assert_still_usable(heap: Heap) -> None:
    blocks = [heap.alloc(n) for n in (16, 64, 1000, 10_000, 200_000)]
    for b in blocks:
        b.view[:] = b"\x42" * b.size
    for b in blocks:
        assert bytes(b.view) == b"\x42" * b.size
        heap.free(b)
    assert heap.validate().problems == 0


# ------------------------------------------------------------------ lifecycle, options


def test_close_is_idempotent_and_releases_blocks() -> None:
    heap = Heap()
    block = heap.alloc(100)
    with heap:
        pass
    assert heap.closed and block.freed
    heap.close()
    with pytest.raises(HeapClosed):
        heap.alloc(1)
    with pytest.raises(HeapClosed):
        heap.stats()


def test_unknown_option_is_a_clear_error() -> None:
    with pytest.raises(InvalidArgument, match="no_such_key"):
        Heap(no_such_key=1)
    with pytest.raises(InvalidArgument, match="level"):
        Heap(level="extreme")
    with pytest.raises(InvalidArgument, match="may not contain"):
        Heap(fail="alloc@p0.5:x")


def test_options_are_passed_to_the_parser(make_heap: MakeHeap) -> None:
    heap = make_heap(
        level="paranoid",
        policy="record",
        limit_bytes=1 << 30,
        quarantine="1M",
        tracking=True,
        events=64,
    )
    assert (
        heap.options
        == "level=paranoid:policy=record:limit=1073741824:quarantine=1M:tracking=1:events=64"
    )
    report = heap.report()
    assert isinstance(report, dict)


# ------------------------------------------------------------------ limit, contraction


@pytest.mark.parametrize("level", LEVELS)
def test_limit_fails_cleanly_and_recovers(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level, limit_bytes=1 << 20)
    blocks: list[Block] = []
    with pytest.raises(OutOfMemory):
        for _ in range(10_000):  # 40 MB asked against a 1 MiB limit
            blocks.append(heap.alloc(4000))
    s = heap.stats()
    assert s.alloc_failures >= 1
    assert 0 < s.live_bytes <= 1 << 20
    assert len(blocks) >= (1 << 20) // 8192  # the limit is not hit absurdly early
    with pytest.raises(OutOfMemory):
        heap.alloc(2 << 20)
    for b in blocks[: len(blocks) // 2]:
        heap.free(b)
    again = [heap.alloc(4000) for _ in range(len(blocks) // 4)]  # recovered
    for b in again + blocks[len(blocks) // 2 :]:
        heap.free(b)
    assert heap.stats().live_blocks == 0
    assert heap.validate().clean


def test_contraction_returns_memory_to_the_os(make_heap: MakeHeap) -> None:
    process = psutil.Process()
    gc.collect()
    heap = make_heap(level="off")
    before = process.memory_info().rss
    blocks = [heap.alloc(2048) for _ in range(100_000)]  # ~200 MB of small blocks
    for b in blocks:
        b.unsafe_write(0, b"\x01")
        b.unsafe_write(1024, b"\x01")  # touch every page
    peak = process.memory_info().rss
    assert peak - before > 150 << 20
    mapped_peak = heap.stats().mapped_bytes
    for b in blocks:
        heap.free(b)
    del blocks
    gc.collect()
    after = process.memory_info().rss
    s = heap.stats()
    assert s.slabs_returned > 0
    assert s.mapped_bytes < mapped_peak // 4
    # RSS falls back by most of what the blocks took (Python's own objects stay).
    assert after - before < (peak - before) // 2, (before, peak, after)


# ---------------------------------------------------- large blocks: mapping cache, mremap

MiB = 1 << 20


def _flip_byte(block: Block, offset: int) -> None:
    """Change the byte at block + offset, whatever it holds: the canary is keyed per
    heap, so writing a fixed byte would match it one run in 256 and go unseen."""
    block.unsafe_write(offset, bytes([block.unsafe_read(offset, 1)[0] ^ 0xFF]))


def _is_mapped(address: int) -> bool:
    """Whether address lies in any mapping of this process (/proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                return True
    return False


@pytest.mark.parametrize("level", ("off", "standard"))
def test_freed_large_mapping_is_reused_by_a_fitting_block(make_heap: MakeHeap, level: str) -> None:
    """Below paranoid a freed large block's mapping stays mapped (still counted in
    mapped_bytes) and the next large block that fits takes it: the same address
    and the old pages, not fresh zero pages from the kernel."""
    heap = make_heap(level=level)
    block = heap.alloc(MiB)
    address = block.address
    block.view[:] = b"\xab" * MiB
    mapped = heap.stats().mapped_bytes
    heap.free(block)
    assert heap.stats().mapped_bytes == mapped  # kept for reuse, not unmapped
    again = heap.alloc(MiB - 1000)  # fits the cached mapping
    assert again.address == address
    assert again.unsafe_read(4096, 16) == b"\xab" * 16  # the same pages, not faulted in again
    s = heap.stats()
    assert s.mapped_bytes == mapped and s.peak_mapped_bytes == mapped
    assert s.live_bytes >= MiB - 1000 and s.large_allocs == 2
    heap.free(again)
    assert heap.validate().clean and heap.events() == []


@pytest.mark.parametrize("level", ("off", "standard"))
def test_calloc_on_a_reused_large_mapping_is_zeroed(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level)
    block = heap.alloc(2 * MiB)
    address = block.address
    block.view[:] = b"\xcd" * (2 * MiB)
    heap.free(block)
    zeroed = heap.calloc(4, MiB // 2)
    assert zeroed.address == address  # reused ...
    assert bytes(zeroed.view) == bytes(2 * MiB)  # ... and cleared
    heap.free(zeroed)


def test_a_too_large_or_too_small_mapping_is_not_reused(make_heap: MakeHeap) -> None:
    heap = make_heap(level="standard")
    block = heap.alloc(4 * MiB)
    address = block.address
    heap.free(block)
    small = heap.alloc(MiB)  # would waste more than half the cached mapping
    big = heap.alloc(8 * MiB)  # does not fit it
    assert address not in (small.address, big.address)
    fits = heap.alloc(3 * MiB)
    assert fits.address == address
    for b in (small, big, fits):
        heap.free(b)
    assert heap.validate().clean


@pytest.mark.parametrize("level", ("off", "standard"))
def test_realloc_grows_into_the_slack_of_a_reused_mapping(make_heap: MakeHeap, level: str) -> None:
    """A smaller block on a cached mapping keeps the rest of it (bounded): a
    realloc growing within it stays in place, maps nothing, moves nothing, and
    the block counts (usable size, live bytes, limit) only what it asked for."""
    heap = make_heap(level=level)
    heap.free(heap.alloc(700_000))
    mapped = heap.stats().mapped_bytes
    block = heap.alloc(150_000)
    assert heap.stats().mapped_bytes == mapped  # the cached mapping, not a new one
    assert block.usable_size < 160_000 and heap.stats().live_bytes < 160_000
    pattern = bytes(i % 253 for i in range(150_000))
    block.view[:] = pattern
    grown = heap.realloc(block, 650_000)
    assert grown.address == block.address
    assert bytes(grown.view[:150_000]) == pattern
    s = heap.stats()
    assert s.mapped_bytes == mapped and s.peak_mapped_bytes == mapped
    assert 650_000 <= s.live_bytes < 660_000
    assert heap.validate().clean
    if level == "standard":  # the canary moved to the new end
        _flip_byte(grown, grown.size)
        with pytest.raises(Corrupted):
            heap.free(grown)
    else:
        heap.free(grown)


def test_freed_large_mapping_is_not_reused_at_paranoid(make_heap: MakeHeap) -> None:
    """At paranoid the freed mapping stays PROT_NONE in the quarantine: the next
    block of the same size gets another one."""
    heap = make_heap(level="paranoid")
    block = heap.alloc(MiB)
    mapped = heap.stats().mapped_bytes
    heap.free(block)
    assert heap.stats().mapped_bytes == mapped  # quarantined
    again = heap.alloc(MiB)
    assert again.address != block.address
    assert heap.stats().mapped_bytes == 2 * mapped
    heap.free(again)


def test_freed_large_mapping_is_unmapped_with_guard_pages(make_heap: MakeHeap) -> None:
    heap = make_heap(level="standard", guard_pages=1)
    base = heap.stats().mapped_bytes
    block = heap.alloc(MiB)
    heap.free(block)
    assert heap.stats().mapped_bytes == base  # unmapped at free, as before
    assert not _is_mapped(block.address)


def test_use_after_free_of_a_large_block_is_still_caught_at_paranoid() -> None:
    """A large block freed at paranoid stays PROT_NONE even when a block of the
    same size follows: writing into it is named and kills the process."""
    code = textwrap.dedent(
        """
        from allocator import Heap
        heap = Heap(level="paranoid")
        block = heap.alloc(1 << 20)
        heap.free(block)
        heap.alloc(1 << 20)
        print("written", flush=True)
        block.unsafe_write(100, b"x")
        print("not reached", flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGSEGV, out.stderr
    assert out.stdout == "written\n"
    assert re.search(r"^nmm: use after free of large block at 0x[0-9a-f]+ ", out.stderr,
                     re.M), out.stderr


@pytest.mark.parametrize("level", ("off", "standard"))
def test_large_mapping_cache_is_bounded(make_heap: MakeHeap, level: str) -> None:
    """At most 8 mappings and at most retain_bytes are kept; the rest is unmapped."""
    heap = make_heap(level=level)
    base = heap.stats().mapped_bytes
    blocks = [heap.alloc(200_000 + 4096 * i) for i in range(20)]  # 20 distinct live sizes
    for b in blocks:
        heap.free(b)
    assert heap.stats().mapped_bytes - base <= 8 * (200_000 + 4096 * 20 + 8192)
    rng = random.Random(7)
    for _ in range(60):  # many distinct sizes, up to 8 MiB: bounded by retain_bytes (16M)
        b = heap.alloc(rng.randrange(200_000, 8 * MiB))
        heap.free(b)
    assert heap.stats().mapped_bytes - base <= 16 * MiB
    small = make_heap(level=level, retain_bytes=MiB)
    base = small.stats().mapped_bytes
    for n in (300_000, 400_000, 500_000, 2 * MiB):
        small.free(small.alloc(n))
    assert small.stats().mapped_bytes - base <= MiB
    none = make_heap(level=level, retain_bytes=0)
    base = none.stats().mapped_bytes
    none.free(none.alloc(MiB))
    assert none.stats().mapped_bytes == base


def test_large_mapping_cache_keeps_rss_bounded(make_heap: MakeHeap) -> None:
    process = psutil.Process()
    heap = make_heap(level="standard")
    rng = random.Random(11)
    before = process.memory_info().rss
    for _ in range(80):  # 80 touched blocks of 1-8 MiB, ~360 MB in all
        n = rng.randrange(MiB, 8 * MiB)
        b = heap.alloc(n)
        b.view[:] = bytes(n)  # every page touched
        heap.free(b)
    gc.collect()
    growth = process.memory_info().rss - before
    assert growth < 48 * MiB, growth  # the cache (16M) plus noise, not the 360 MB


@pytest.mark.parametrize("level", LEVELS)
def test_heap_close_unmaps_cached_large_mappings(level: str) -> None:
    heap = Heap(level=level)
    addresses = []
    for n in (300_000, MiB, 3 * MiB):
        b = heap.alloc(n)
        addresses.append(b.address)
        heap.free(b)
    if level != "paranoid":  # cached: still mapped (paranoid: partly quarantined)
        assert all(_is_mapped(a) for a in addresses)
    heap.close()
    assert not any(_is_mapped(a) for a in addresses)


@pytest.mark.parametrize("level", LEVELS)
def test_double_free_of_a_large_block_whose_mapping_was_reused(make_heap: MakeHeap,
                                                                level: str) -> None:
    """A cached mapping keeps its free record: freeing it again is a double free;
    once a new block took the address, that block owns it (as with small blocks)."""
    heap = make_heap(level=level)
    address = heap.alloc(MiB).address
    heap.free(address)
    with pytest.raises(DoubleFree) as info:
        heap.free(address)
    assert info.value.event is not None and info.value.event.address == address
    with pytest.raises(InvalidPointer) as inside:  # inside the freed mapping: not a block
        heap.free(address + 8192)
    assert inside.value.event is not None
    # Cached or unmapped: no block there (as when it was unmapped at every free);
    # quarantined (paranoid): inside a known mapping.
    assert inside.value.event.reason == ("interior" if level == "paranoid" else "wild")
    again = heap.alloc(MiB)
    heap.free(again)  # no false positive on the reused address
    with pytest.raises(DoubleFree):
        heap.free(again.address)
    assert [e.kind for e in heap.events()] == ["double_free", "invalid_free", "double_free"]
    _assert_still_usable(heap)


@pytest.mark.parametrize("level", LEVELS)
def test_large_realloc_keeps_contents_and_canary(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level)
    block = heap.alloc(300_000)
    pattern = bytes(i % 251 for i in range(300_000))
    block.view[:] = pattern
    grown = heap.realloc(block, 5 * MiB)
    assert block.freed and grown.size == 5 * MiB
    assert bytes(grown.view[:300_000]) == pattern
    grown.view[300_000:] = b"\x11" * (5 * MiB - 300_000)  # all of it is writable
    shrunk = heap.realloc(grown, 200_000)
    assert bytes(shrunk.view) == pattern[:200_000]
    assert heap.validate().clean
    heap.free(shrunk)
    s = heap.stats()
    assert s.live_blocks == 0 and s.live_bytes == 0 and s.allocs == s.frees
    assert heap.events() == []
    if level == "off":
        return
    # The canary sits at the new end: one byte past it is an overflow.
    block = heap.alloc(300_000)
    grown = heap.realloc(block, 3 * MiB + 5)
    _flip_byte(grown, grown.size)
    with pytest.raises(Corrupted) as info:
        heap.free(grown)
    assert info.value.event is not None and info.value.event.kind == "overflow"
    assert info.value.event.address == grown.address


def test_large_realloc_resizes_the_mapping_instead_of_copying(make_heap: MakeHeap) -> None:
    """Below paranoid, growing a large block never holds the old and the new
    block at once (allocate-copy-free would: peak >= old + new)."""
    heap = make_heap(level="standard")
    block = heap.alloc(4 * MiB)
    block.view[:] = b"\x5a" * (4 * MiB)
    grown = heap.realloc(block, 8 * MiB)
    assert bytes(grown.view[: 4 * MiB]) == b"\x5a" * (4 * MiB)
    s = heap.stats()
    assert s.peak_bytes < 9 * MiB and s.peak_mapped_bytes < 9 * MiB, s
    assert s.live_blocks == 1 and s.live_bytes >= 8 * MiB
    heap.free(grown)


@pytest.mark.parametrize("level", LEVELS)
def test_large_realloc_past_the_limit_fails_and_keeps_the_block(make_heap: MakeHeap,
                                                                 level: str) -> None:
    heap = make_heap(level=level, limit_bytes=4 * MiB)
    block = heap.alloc(2 * MiB)
    block.view[:] = b"\x77" * (2 * MiB)
    before = heap.stats()
    with pytest.raises(OutOfMemory):
        heap.realloc(block, 8 * MiB)
    after = heap.stats()
    assert not block.freed and bytes(block.view) == b"\x77" * (2 * MiB)
    assert after.alloc_failures == before.alloc_failures + 1
    assert after.live_bytes == before.live_bytes
    if level == "paranoid":  # allocate-copy-free: old and new together must fit
        heap.free(block)
    else:  # resized in place: only the new size counts
        grown = heap.realloc(block, 3 * MiB)
        assert bytes(grown.view[: 2 * MiB]) == b"\x77" * (2 * MiB)
        with pytest.raises(OutOfMemory):  # the limit counts the grown block
            heap.alloc(2 * MiB)
        heap.free(grown)
    assert heap.stats().live_bytes == 0
    heap.free(heap.alloc(3 * MiB))  # all of it is available again
    assert heap.validate().clean and heap.events() == []


# ------------------------------------------------------------------ threads


@pytest.mark.parametrize("level", LEVELS)
def test_threads_allocate_in_parallel(make_heap: MakeHeap, level: str) -> None:
    heap = make_heap(level=level)
    handoff: list[Block] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    addresses_seen: list[set[int]] = []

    def worker(seed: int) -> None:
        try:
            rng = random.Random(seed)
            live: list[tuple[Block, int]] = []
            seen: set[int] = set()
            for _ in range(5000):
                if live and rng.random() < 0.45:
                    block, tag = live.pop(rng.randrange(len(live)))
                    assert bytes(block.view) == bytes([tag]) * block.size
                    if rng.random() < 0.3:
                        with lock:
                            handoff.append(block)  # freed by another thread
                    else:
                        heap.free(block)
                else:
                    block = heap.alloc(rng.choice([16, 48, 64, 200, 1000, 5000]))
                    tag = seed * 16 + rng.randrange(16)
                    block.view[:] = bytes([tag % 256]) * block.size
                    live.append((block, tag % 256))
                    seen.add(block.address)
                with lock:
                    theirs = handoff.pop() if handoff and rng.random() < 0.5 else None
                if theirs is not None:
                    heap.free(theirs)
            for block, _ in live:
                heap.free(block)
            addresses_seen.append(seen)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for block in handoff:
        heap.free(block)
    s = heap.stats()
    assert s.allocs == s.frees
    assert s.live_blocks == 0 and s.live_bytes == 0
    assert heap.validate().clean
    assert heap.events() == []


# ------------------------------------------------------------------ introspection


def test_stats_fields_come_from_the_header() -> None:
    spec = importlib.util.spec_from_file_location(
        "nmm_build_for_test", ROOT / "allocator" / "build.py"
    )
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert STATS_FIELDS == tuple(name for name, _ in build.stats_fields())
    assert {"allocs", "frees", "live_blocks", "peak_bytes"} <= set(STATS_FIELDS)


def test_stats_snapshot_is_frozen_and_tracks_peak(make_heap: MakeHeap) -> None:
    heap = make_heap(level="standard")
    blocks = [heap.alloc(100) for _ in range(50)]
    s1 = heap.stats()
    for b in blocks:
        heap.free(b)
    s2 = heap.stats()
    assert s1.live_blocks == 50 and s1.live_bytes >= 5000
    assert s2.live_blocks == 0 and s2.peak_bytes >= s1.live_bytes
    with pytest.raises(AttributeError):
        s2.allocs = 0
    assert sum(c.allocs for c in s1.classes) == s1.allocs
    assert any(c.live == 50 for c in s1.classes)
    d = s2.as_dict()
    assert json.loads(json.dumps(d))["allocs"] == 50


def test_events_name_the_python_sites(make_heap: MakeHeap) -> None:
    heap = make_heap(level="standard", tracking=True)
    block = heap.alloc(40)  # alloc-site
    address = block.address
    heap.free(block)
    with pytest.raises(DoubleFree) as info:
        heap.free(address)  # free-site
    event = info.value.event
    assert event is not None
    assert event.alloc_site == (__file__, _line_of("alloc-site"))
    assert event.free_site == (__file__, _line_of("free-site"))
    assert event.seq >= 1 and event.op_count >= 2 and event.thread_id > 0
    assert event.size == 40


def test_failpoint_through_the_binding(make_heap: MakeHeap) -> None:
    heap = make_heap(level="standard", seed=7)
    heap.set_failpoint("alloc@every2")
    outcomes = []
    for _ in range(10):
        try:
            heap.free(heap.alloc(64))
            outcomes.append("ok")
        except OutOfMemory:
            outcomes.append("fail")
    assert outcomes.count("fail") == 5
    assert heap.stats().injected_failures == 5
    heap.set_failpoint("alloc@off")
    heap.free(heap.alloc(64))
    with pytest.raises(InvalidArgument):
        heap.set_failpoint("no.such.point@p0.5")
    assert heap.validate().clean


def test_leaks_report_names_the_site(make_heap: MakeHeap) -> None:
    heap = make_heap(tracking=True, stacks="0")
    leaked = [heap.alloc(300) for _ in range(3)]  # leak-site
    text = heap.leaks_text()
    assert f"{Path(__file__).name}:{_line_of('leak-site')}" in text
    data: Any = heap.leaks()
    assert json.dumps(data).count(str(_line_of("leak-site"))) >= 1
    for b in leaked:
        heap.free(b)


# ------------------------------------------------------------------ native artifacts


def test_preload_path_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "allocator", "preload-path"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = Path(out)
    assert path.is_absolute() and path.name == "libnmm_preload.so" and path.is_file()
    assert path == allocator.preload_path()
    helptext = subprocess.run(
        [sys.executable, "-m", "allocator", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "preload-path" in helptext


def test_native_libraries_export_only_the_contract() -> None:
    spec = importlib.util.spec_from_file_location(
        "nmm_build_exports", ROOT / "allocator" / "build.py"
    )
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    native = allocator.preload_path().parent
    lib_symbols = build.exported_symbols(native / "libnmm.so")
    header = (ROOT / "allocator" / "include" / "nmm.h").read_text()
    declared = set(re.findall(r"NMM_API\s+[^;(]*?\b(nmm_\w+)\s*\(", header))
    assert {"nmm_alloc", "nmm_free", "nmm_heap_create", "nmm_stats_get"} <= declared
    assert declared <= lib_symbols, declared - lib_symbols
    assert build.unexpected_exports(native / "libnmm.so", preload=False) == set()
    preload_symbols = build.exported_symbols(native / "libnmm_preload.so")
    assert {
        "malloc",
        "free",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "malloc_usable_size",
    } <= preload_symbols
    assert build.unexpected_exports(native / "libnmm_preload.so", preload=True) == set()
    assert (native / "libnmm.a").stat().st_size > 0


def test_c_calls_release_the_gil(make_heap: MakeHeap) -> None:
    """With the interpreter's switch interval made huge, another Python thread can
    only run while this one is inside a C call that released the GIL: it does."""
    heap = make_heap(level="standard")
    blocks = [heap.alloc(64) for _ in range(20_000)]  # so validate() has work to do
    progress = 0
    stop = threading.Event()
    started = threading.Event()

    def spinner() -> None:
        nonlocal progress
        started.set()
        while not stop.is_set():
            progress += 1
            time.sleep(0)  # hand the GIL back at once (the switch interval is huge)

    old = sys.getswitchinterval()
    thread = threading.Thread(target=spinner)
    thread.start()
    started.wait()
    sys.setswitchinterval(1000.0)
    try:
        # The spinner runs only if the OS schedules it while a call is in C, which a
        # loaded machine may not do for many calls in a row: call until it has run
        # (a held GIL never lets it run, however long this goes on).
        calls, ran = 0, 0
        deadline = time.monotonic() + 60
        while not ran and time.monotonic() < deadline:
            before = progress
            heap.validate()
            ran = progress - before
            calls += 1
    finally:
        sys.setswitchinterval(old)
        stop.set()
        thread.join()
    assert ran, f"no other thread ran during {calls} C calls: the GIL was held"
    for b in blocks:
        heap.free(b)
