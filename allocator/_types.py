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
    5: "freed",
}

# nmm_family_t: what makes a block (index 0) and what must free it (index 1).
FAMILIES: dict[int, tuple[str, str]] = {
    0: ("malloc", "free"),
    1: ("new", "delete"),
    2: ("new[]", "delete[]"),
}


@dataclass(frozen=True, slots=True)
class Event:
    """One detection the allocator recorded (nmm_event_t).

    ``kind`` is the C name (``"double_free"``, ``"overflow"``, ...); ``detail`` and
    ``extra`` are kind-specific (the invalid-pointer reason, the offsets of the
    first and last damaged bytes of an overflow or a use after free, the families
    of a mismatch; see nmm.h's event kinds);
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
    extra: int = 0

    @property
    def reason(self) -> str | None:
        """For invalid_free / invalid_realloc / invalid_pointer: why the pointer
        was invalid."""
        if self.kind in ("invalid_free", "invalid_realloc", "invalid_pointer"):
            return INVALID_REASONS.get(self.detail, "unknown")
        return None

    @property
    def families(self) -> tuple[str, str] | None:
        """For alloc_dealloc_mismatch: what made the block and what freed it,
        e.g. ``("new", "free")``."""
        if self.kind != "alloc_dealloc_mismatch":
            return None
        made, freed = FAMILIES.get(self.detail & 0xFF), FAMILIES.get(self.detail >> 8 & 0xFF)
        return (made[0], freed[1]) if made and freed else None

    @property
    def delete_size(self) -> int | None:
        """For delete_size_mismatch: the size the sized delete gave (None: none)."""
        if self.kind != "delete_size_mismatch" or self.detail == 0xFFFFFFFF:
            return None
        return self.detail

    @property
    def alignments(self) -> tuple[int, int] | None:
        """For delete_size_mismatch: the block's alignment and the delete's (16 for
        the default)."""
        if self.kind != "delete_size_mismatch":
            return None
        return 1 << ((self.extra & 0xFF) or 4), 1 << ((self.extra >> 8 & 0xFF) or 4)


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
