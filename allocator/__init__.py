"""NMM, the nmm-chaos memory manager, from Python.

    from allocator import Heap
    with Heap(level="standard") as heap, heap.alloc(64) as block:
        block.view[:5] = b"hello"

``Heap`` wraps one NMM heap; ``Block`` is a live allocation; misuse raises an
``NmmError`` subclass carrying the allocator's ``Event``. See README.md.
"""

from __future__ import annotations

from allocator._binding import STATS_FIELDS, Block, Heap, RawHeap, Stats, preload_path
from allocator._types import ClassStats, Event, ValidationResult
from allocator.errors import (
    Corrupted,
    DoubleFree,
    HeapClosed,
    InvalidArgument,
    InvalidPointer,
    Mismatch,
    NmmError,
    OutOfMemory,
    ReallocFreed,
)

__all__ = [
    "STATS_FIELDS",
    "Block",
    "ClassStats",
    "Corrupted",
    "DoubleFree",
    "Event",
    "Heap",
    "HeapClosed",
    "InvalidArgument",
    "InvalidPointer",
    "Mismatch",
    "NmmError",
    "OutOfMemory",
    "RawHeap",
    "ReallocFreed",
    "Stats",
    "ValidationResult",
    "preload_path",
]
