"""Model-based test: a hypothesis RuleBasedStateMachine drives a Heap and a Python
model of it (live blocks and their contents) through alloc / calloc / realloc /
aligned_alloc / free / write / read, at every detection level, and checks after
every step that contents, alignment, usable sizes and stats agree with the model."""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from allocator import Block, Heap

SIZES = st.one_of(
    st.integers(0, 256),
    st.integers(0, 256),
    st.integers(257, 9000),
    st.integers(9000, 150_000),
    # large blocks (above the 128 KiB class): mapping reuse, realloc by mremap
    st.integers(131_000, 1_200_000),
)
ALIGNMENTS = st.sampled_from([16, 32, 64, 128, 256, 1024, 4096, 8192, 1 << 16])


@dataclass
class Model:
    """What the heap should hold for one live block."""

    block: Block
    content: bytearray


class HeapMachine(RuleBasedStateMachine):
    """Heap vs model; subclasses fix the level."""

    level = "off"
    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        self.heap = Heap(level=self.level)
        self.live: dict[int, Model] = {}  # by id(Block)
        self.allocations = 0  # alloc/calloc/aligned_alloc calls that returned a block
        self.fill = 0

    def _pattern(self, size: int) -> bytearray:
        """(fill + i) % 256 for i < size."""
        self.fill = (self.fill + 37) % 251 + 1
        cycle = bytes(range(256))
        return bytearray((cycle * (size // 256 + 2))[self.fill : self.fill + size])

    def _adopt(self, block: Block, content: bytearray | None = None) -> Block:
        assert block.address % 16 == 0
        assert block.usable_size >= block.size
        if content is None:
            content = self._pattern(block.size)
            block.view[:] = content
        self.live[id(block)] = Model(block, content)
        return block

    @rule(target=blocks, size=SIZES)
    def alloc(self, size: int) -> Block:
        block = self.heap.alloc(size)
        self.allocations += 1
        assert block.size == size
        return self._adopt(block)

    @rule(
        target=blocks,
        count=st.integers(0, 64),
        size=st.one_of(st.integers(0, 2048), st.integers(2048, 16_384)),  # up to 1 MiB: large
    )
    def calloc(self, count: int, size: int) -> Block:
        block = self.heap.calloc(count, size)
        self.allocations += 1
        assert bytes(block.view) == bytes(count * size)
        return self._adopt(block, bytearray(count * size))

    @rule(target=blocks, alignment=ALIGNMENTS, size=SIZES)
    def aligned_alloc(self, alignment: int, size: int) -> Block:
        block = self.heap.aligned_alloc(alignment, size)
        self.allocations += 1
        assert block.address % alignment == 0
        return self._adopt(block)

    @rule(target=blocks, block=consumes(blocks), size=SIZES)
    def realloc(self, block: Block, size: int) -> Block:
        model = self.live.pop(id(block))
        new = self.heap.realloc(block, size)
        assert block.freed and new.size == size
        kept = model.content[:size]
        assert bytes(new.view[: len(kept)]) == bytes(kept)
        tail = self._pattern(size - len(kept))
        new.view[len(kept) :] = tail
        return self._adopt(new, kept + tail)

    @rule(block=consumes(blocks))
    def free(self, block: Block) -> None:
        model = self.live.pop(id(block))
        assert bytes(block.view) == bytes(model.content)
        self.heap.free(block)
        assert block.freed

    @precondition(lambda self: bool(self.live))
    @rule(block=blocks, data=st.data())
    def write(self, block: Block, data: st.DataObject) -> None:
        model = self.live[id(block)]
        if block.size == 0:
            return
        offset = data.draw(st.integers(0, block.size - 1))
        payload = data.draw(st.binary(min_size=1, max_size=min(64, block.size - offset)))
        block.view[offset : offset + len(payload)] = payload
        model.content[offset : offset + len(payload)] = payload

    @rule(block=blocks)
    def read(self, block: Block) -> None:
        assert bytes(block.view) == bytes(self.live[id(block)].content)

    @invariant()
    def stats_match_the_model(self) -> None:
        s = self.heap.stats()
        assert s.allocs - s.frees == s.live_blocks == len(self.live)
        assert s.allocs >= self.allocations
        requested = sum(m.block.size for m in self.live.values())
        usable = sum(m.block.usable_size for m in self.live.values())
        # live_bytes counts each block's footprint in its class (at standard the
        # header and canary too), so it bounds the usable bytes from above.
        assert s.live_bytes >= usable >= requested
        if self.level != "off":  # requested sizes are kept in headers at tracked levels
            assert s.requested_bytes == requested
        assert s.peak_bytes >= s.live_bytes
        assert sum(c.live for c in s.classes) <= s.live_blocks

    def teardown(self) -> None:
        try:
            for model in list(self.live.values()):
                assert bytes(model.block.view) == bytes(model.content)
                self.heap.free(model.block)
            s = self.heap.stats()
            assert s.live_blocks == 0 and s.live_bytes == 0
            assert self.heap.validate().clean
            assert self.heap.events() == []
        finally:
            self.heap.close()


class HeapMachineOff(HeapMachine):
    level = "off"


class HeapMachineStandard(HeapMachine):
    level = "standard"


class HeapMachineParanoid(HeapMachine):
    level = "paranoid"


_SETTINGS = settings(max_examples=40, stateful_step_count=40)
TestHeapModelOff = HeapMachineOff.TestCase
TestHeapModelOff.settings = _SETTINGS
TestHeapModelStandard = HeapMachineStandard.TestCase
TestHeapModelStandard.settings = _SETTINGS
TestHeapModelParanoid = HeapMachineParanoid.TestCase
TestHeapModelParanoid.settings = _SETTINGS
