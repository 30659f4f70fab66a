"""Exceptions raised by the NMM binding, one tree rooted at ``NmmError``.

    NmmError
    ├── DoubleFree                          free of a block that is already free
    ├── InvalidPointer                      not the start of a live block of this heap
    ├── Corrupted                           header, guard or canary damaged (block retired)
    ├── ReallocFreed                        realloc of a block that was already freed
    ├── Mismatch (also ValueError)          freed by the wrong call (free of a new'd block,
    │                                       delete of new[], a wrong sized/aligned delete);
    │                                       the block was freed anyway
    ├── OutOfMemory (also MemoryError)      OS, limit_bytes or an injected failure
    ├── InvalidArgument (also ValueError)   bad size, alignment, option or fail-point spec
    ├── HeapClosed (also ValueError)        the heap was closed (like I/O on a closed file)
    └── ReportLogError (also ValueError)    a report log that cannot be read or symbolized
                                            (allocator.reportlog, allocator.symbolize)

Each C status maps to one class through ``STATUS_ERRORS`` in ``_binding.py``.
When the allocator recorded a detection for the failing call, the exception
carries it as ``.event``; ``.status`` is the C status number (0 when the error
was raised on the Python side, e.g. a Block used after it was freed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from allocator._types import Event


class NmmError(Exception):
    """Root of every error the NMM binding raises on purpose."""

    def __init__(self, message: str, *, status: int = 0, event: Event | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.event = event


class DoubleFree(NmmError):
    """The block was already freed (or sits in quarantine)."""


class InvalidPointer(NmmError):
    """The address is not the start of a live block of this heap (wild, stack,
    interior or another heap's block)."""


class Corrupted(NmmError):
    """The block's header, head guard or tail canary was damaged; the allocator
    retired it and will never hand it out again."""


class ReallocFreed(NmmError):
    """realloc was asked to resize a block that had been freed."""


class Mismatch(NmmError, ValueError):
    """A block was freed by a call of another family (``free`` of a ``new``'d block,
    ``delete`` of a ``new[]``'d one, ...: ``alloc_dealloc_mismatch``) or by a sized or
    aligned delete that does not match it (``delete_size_mismatch``). The block was
    freed all the same."""


class OutOfMemory(NmmError, MemoryError):
    """Allocation failed: the OS refused, limit_bytes was reached, or a fail
    point injected the failure. The heap is intact and usable."""


class InvalidArgument(NmmError, ValueError):
    """A size, alignment, option or fail-point spec was rejected; the message
    names what and why."""


class HeapClosed(NmmError, ValueError):
    """The heap was closed; its blocks are gone."""


__all__ = [
    "Corrupted",
    "DoubleFree",
    "HeapClosed",
    "InvalidArgument",
    "InvalidPointer",
    "Mismatch",
    "NmmError",
    "OutOfMemory",
    "ReallocFreed",
]


class ReportLogError(NmmError, ValueError):
    """An NMM report log that cannot be read (the file, the line and why), or no
    symbolizer to name its frames with."""
