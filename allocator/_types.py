"""Plain value types the binding returns: frozen dataclasses of ints, strs and tuples.

No cffi here (only ``_binding.py`` touches it); ``Stats`` is made in
``_binding.py`` because its field list comes from the compiled header.
"""

from __future__ import annotations

from dataclasses import dataclass

Site = tuple[str, int]
"""An allocation or free site: (file, line)."""

# nmm_invalid_reason_t, for Event.reason (nmm.h is the source; numbers are stable).
INVALID_REASONS: dict[int, str] = {
    0: "unknown",
    1: "wild",
    2: "foreign_heap",
    3: "interior",
    4: "unmapped",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One detection the allocator recorded (nmm_event_t).

    ``kind`` is the C name (``"double_free"``, ``"overflow"``, ...); ``detail`` is
    kind-specific (the invalid-pointer reason, or the offset of the damage);
    ``seq`` numbers the heap's events from 1; ``op_count`` is the number of heap
    operations done when it was detected; sites are ``(file, line)`` or None.
    """

    kind: str
    address: int
    size: int
    detail: int
    seq: int
    op_count: int
    alloc_site: Site | None
    free_site: Site | None
    thread_id: int

    @property
    def reason(self) -> str | None:
        """For invalid_free / invalid_realloc: why the pointer was invalid."""
        if self.kind in ("invalid_free", "invalid_realloc"):
            return INVALID_REASONS.get(self.detail, "unknown")
        return None


@dataclass(frozen=True, slots=True)
class ClassStats:
    """Counters of one size class (nmm_class_stats_t); block_size includes the
    header and canary."""

    block_size: int
    allocs: int
    frees: int
    live: int
    slabs: int
    free_blocks: int


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """What ``Heap.validate()`` found: the number of problems and the events the
    sweep emitted for them (also returned later by ``Heap.events()``)."""

    problems: int
    events: tuple[Event, ...]

    @property
    def clean(self) -> bool:
        """True when the sweep found nothing wrong."""
        return self.problems == 0
