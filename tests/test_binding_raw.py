"""RawHeap, the binding's address-level handle for drivers: the pattern it writes and
checks in C, its status results, and that it fails cleanly once its heap is closed."""

from __future__ import annotations

import os

import pytest

# The package build makes the binding: under CI its absence is a failure, not a skip.
allocator = (pytest.importorskip("allocator") if not os.environ.get("CI")
             else __import__("allocator"))

from allocator import Heap, RawHeap  # noqa: E402

GOLDEN = 0x9E3779B97F4A7C15
STATUS_OK, STATUS_DOUBLE_FREE, STATUS_INVALID_POINTER, STATUS_CORRUPTED = 0, 1, 2, 3


def expected_edges(key: int, size: int) -> dict[int, bytes]:
    """The documented pattern: offset -> bytes, per edge."""
    word = ((key + 1) * GOLDEN % 2**64).to_bytes(8, "little")
    edge = RawHeap.PATTERN_EDGE

    def run(n: int) -> bytes:
        return (word * (n // 8 + 1))[:n]

    if size <= 2 * edge:
        return {0: run(size)}
    return {0: run(edge), size - edge: run(edge)}


@pytest.fixture(params=["off", "standard", "paranoid"])
def heap(request: pytest.FixtureRequest):
    with Heap(level=request.param) as h:
        yield h


@pytest.mark.parametrize("size", [1, 7, 8, 9, 15, 16, 31, 32, 33, 100, 4096, 70000])
def test_alloc_pattern_writes_the_documented_bytes(heap: Heap, size: int) -> None:
    raw = heap.raw()
    key = 12345 + size
    address = raw.alloc_pattern(size, key)
    assert address
    for offset, data in expected_edges(key, size).items():
        assert raw.unsafe_read(address + offset, len(data)) == data
    assert raw.check_pattern(address, size, key)
    assert not raw.check_pattern(address, size, key + 1)
    assert raw.free_pattern(address, size, key) == STATUS_OK


@pytest.mark.parametrize("where", ["first", "head_edge_end", "tail_edge_start", "last"])
def test_free_pattern_reports_damage_at_either_edge_and_still_frees(heap: Heap,
                                                                    where: str) -> None:
    raw = heap.raw()
    size, edge = 200, RawHeap.PATTERN_EDGE
    offset = {"first": 0, "head_edge_end": edge - 1, "tail_edge_start": size - edge,
              "last": size - 1}[where]
    address = raw.alloc_pattern(size, 7)
    raw.unsafe_write(address + offset, bytes([raw.unsafe_read(address + offset, 1)[0] ^ 1]))
    assert not raw.check_pattern(address, size, 7)
    assert raw.free_pattern(address, size, 7) == RawHeap.PATTERN_BAD | STATUS_OK
    stats = heap.stats()
    assert stats.allocs == stats.frees == 1


def test_a_block_handed_out_twice_is_caught() -> None:
    """Two owners of one address: the second fill overwrites the first one's pattern."""
    with Heap(level="standard") as heap:
        raw = heap.raw()
        address = raw.alloc_pattern(64, 1)
        # what an allocator handing the same block out again would do to it
        raw.unsafe_write(address, raw.unsafe_read(raw.alloc_pattern(64, 2), 64))
        assert raw.free_pattern(address, 64, 1) == RawHeap.PATTERN_BAD


def test_free_results_are_statuses_and_never_read_a_dead_block() -> None:
    with Heap(level="standard") as heap:
        raw = heap.raw()
        address = raw.alloc_pattern(48, 3)
        assert raw.free_pattern(address, 48, 3) == STATUS_OK
        # freed: reported by the allocator, not as a pattern problem (the block is not read)
        assert raw.free_pattern(address, 48, 3) == STATUS_DOUBLE_FREE
        assert raw.free(address) == STATUS_DOUBLE_FREE
        assert not raw.check_pattern(address, 48, 3)
        other = raw.alloc(48)
        assert raw.free(other + 16) == STATUS_INVALID_POINTER
        # a claimed size beyond the block: not read, the free itself is fine
        assert raw.free_pattern(other, 1 << 20, 3) == STATUS_OK
        kinds = [e.kind for e in heap.events()]
        assert kinds.count("double_free") == 2 and len(kinds) == 3


def test_overflow_into_a_raw_block_is_detected_on_free() -> None:
    with Heap(level="standard") as heap:
        raw = heap.raw()
        address = raw.alloc_pattern(40, 9)
        # flip the first canary byte: a fixed byte equals the keyed canary's 1 time in 256
        raw.unsafe_write(address + 40, bytes([raw.unsafe_read(address + 40, 1)[0] ^ 0xFF]))
        assert raw.free_pattern(address, 40, 9) & ~RawHeap.PATTERN_BAD == STATUS_CORRUPTED
        (event,) = heap.events()
        assert event.address == address


def test_alloc_failure_returns_zero_and_raises_what_heap_alloc_would() -> None:
    with Heap(level="standard", fail="alloc@every2") as heap:
        raw = heap.raw()
        results = [raw.alloc_pattern(32, k) for k in range(4)]
        assert [bool(a) for a in results] == [True, False, True, False]
        raw.alloc(16)  # the failing call is the one asked about
        assert raw.alloc(16) == 0
        with pytest.raises(allocator.OutOfMemory):
            raw.raise_alloc_failure(16)
    with Heap(level="off", limit_bytes=1 << 20) as heap:
        raw = heap.raw()
        assert raw.alloc(1 << 24) == 0
        with pytest.raises(allocator.OutOfMemory):
            raw.raise_alloc_failure(1 << 24)


def test_bad_arguments_raise_instead_of_reaching_c(heap: Heap) -> None:
    raw = heap.raw()
    with pytest.raises(OverflowError):
        raw.alloc(-1)
    with pytest.raises(OverflowError):
        raw.alloc_pattern(16, 2**64)
    with pytest.raises(TypeError):
        raw.free("0x1000")  # type: ignore[arg-type]
    with pytest.raises(allocator.InvalidArgument):
        raw.unsafe_read(-64, 8)


def test_a_closed_heap_fails_every_call_cleanly() -> None:
    heap = Heap(level="standard")
    raw = heap.raw()
    address = raw.alloc_pattern(64, 1)
    heap.close()
    assert raw.closed
    assert raw.alloc(64) == 0 and raw.alloc_pattern(64, 1) == 0
    with pytest.raises(allocator.HeapClosed):
        raw.raise_alloc_failure(64)
    assert raw.free(address) == RawHeap.HEAP_CLOSED
    assert raw.free_pattern(address, 64, 1) == RawHeap.HEAP_CLOSED
    assert not raw.check_pattern(address, 64, 1)
    with pytest.raises(allocator.HeapClosed):
        heap.raw()


def test_raw_blocks_live_beside_blocks_and_are_attributed_to_the_raw_call() -> None:
    with Heap(level="standard") as heap:
        raw = heap.raw()  # the site of every allocation through this handle
        line = test_raw_blocks_live_beside_blocks_and_are_attributed_to_the_raw_call \
            .__code__.co_firstlineno + 2
        assert heap.raw() is not raw  # another line, another handle
        same = [heap.raw() for _ in range(2)]
        assert same[0] is same[1]
        block = heap.alloc(32)
        address = raw.alloc(32)
        assert heap.live_blocks == 1  # raw blocks are not Blocks
        assert heap.stats().live_blocks == 2
        heap.free(address)  # the Heap API accepts raw addresses
        with pytest.raises(allocator.DoubleFree) as info:
            heap.free(address)
        assert info.value.event is not None
        assert info.value.event.alloc_site == (__file__, line)
        moved = heap.realloc(raw.alloc(16), 64)  # and resizes them into Blocks
        assert moved.size == 64
        heap.free(moved)
        block.free()
        assert heap.stats().live_blocks == 0


@pytest.mark.parametrize(("old", "new"), [(100, 300), (300, 20), (24, 24), (8, 5000)])
def test_realloc_pattern_checks_the_old_block_and_fills_the_new(heap: Heap, old: int,
                                                                new: int) -> None:
    raw = heap.raw()
    address = raw.alloc_pattern(old, 5)
    moved = raw.realloc_pattern(address, old, new, 5, 6)
    assert moved and raw.pattern_errors == 0
    for offset, data in expected_edges(6, new).items():
        assert raw.unsafe_read(moved + offset, len(data)) == data
    # damage the old block's tail: found before the call, counted, the move still made
    raw.unsafe_write(moved + new - 1, bytes([raw.unsafe_read(moved + new - 1, 1)[0] ^ 8]))
    again = raw.realloc_pattern(moved, new, old, 6, 7)
    assert again and raw.pattern_errors == 1
    assert raw.check_pattern(again, old, 7)
    assert raw.free_pattern(again, old, 7) == STATUS_OK
    assert raw.pattern_errors == 1


def test_realloc_failures_return_zero_and_leave_the_block() -> None:
    with Heap(level="standard", limit_bytes=1 << 20) as heap:
        raw = heap.raw()
        address = raw.alloc_pattern(64, 1)
        assert raw.realloc_pattern(address, 64, 1 << 24, 1, 2) == 0
        with pytest.raises(allocator.OutOfMemory, match="realloc"):
            raw.raise_alloc_failure(1 << 24, "realloc")
        assert raw.check_pattern(address, 64, 1)  # untouched
        assert raw.free_pattern(address, 64, 1) == STATUS_OK
        assert raw.realloc(address, 32) == 0  # freed already
        with pytest.raises(allocator.ReallocFreed):
            raw.raise_alloc_failure(32, "realloc")
        assert raw.pattern_errors == 0
    assert raw.realloc(address, 32) == 0 and raw.realloc_pattern(address, 64, 32, 1, 2) == 0
