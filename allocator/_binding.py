"""The only module that touches cffi: Heap and Block over the NMM C API.

Everything public here returns ints, bytes, memoryviews and frozen dataclasses,
never cdata. C statuses become exceptions through one table (``STATUS_ERRORS``).
cffi releases the GIL around every C call, so Python threads allocate in
parallel; the Python-side bookkeeping (live blocks by address) relies only on
single dict operations, which the GIL makes atomic. Blocks are freed
explicitly (``free``, ``with``, ``Heap.close``), never by the garbage collector.
Addresses cross the boundary as ints through the ``nmmpy_*`` shims compiled
into the extension (allocator/build.py), which saves a cdata cast per call.
``RawHeap`` is the address-level face for drivers' hot loops: no Block objects,
and the drivers' fill pattern written and checked in C inside the same call.
"""

from __future__ import annotations

import dataclasses
import errno as errno_codes
import json
import operator
import sys
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType, MethodType, TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from allocator._nmm_cffi import ffi, lib
from allocator._types import ClassStats, Event, Site, ValidationResult
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

STATUS_ERRORS: dict[int, type[NmmError]] = {
    lib.NMM_E_DOUBLE_FREE: DoubleFree,
    lib.NMM_E_INVALID_POINTER: InvalidPointer,
    lib.NMM_E_CORRUPTED: Corrupted,
    lib.NMM_E_NOMEM: OutOfMemory,
    lib.NMM_E_INVALID_ARGUMENT: InvalidArgument,
    lib.NMM_E_REALLOC_FREED: ReallocFreed,
    lib.NMM_E_MISMATCH: Mismatch,
}
"""C status -> exception class: the one mapping."""

_MAX_ADDRESS = 2**64 - 1
_UNSIZED = 2**64 - 1  # NMM_UNSIZED: a delete that gives no size
# statuses after which the block is gone: retired, already free, or freed anyway
_GONE = frozenset({lib.NMM_E_CORRUPTED, lib.NMM_E_DOUBLE_FREE, lib.NMM_E_MISMATCH})
_CHARP = ffi.typeof("char *")
_ERR_LEN = 512
_DRAIN_BATCH = 256

# ------------------------------------------------------------------ statistics

_STATS_META = {"size", "version", "class_count", "reserved0", "classes"}
STATS_FIELDS: tuple[str, ...] = tuple(
    name for name, _ in ffi.typeof("nmm_stats_t").fields if name not in _STATS_META
)
"""Heap-wide counter names, in header order (from the NMM_STATS_FIELDS X-macro)."""


class _StatsBase:
    """Behaviour shared by every Stats snapshot; the fields are the header's."""

    classes: tuple[ClassStats, ...]

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> int: ...

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (classes as a list of dicts)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in STATS_FIELDS}
        out["classes"] = [dataclasses.asdict(c) for c in self.classes]
        return out


Stats = dataclasses.make_dataclass(
    "Stats",
    [(name, int) for name in STATS_FIELDS] + [("classes", tuple[ClassStats, ...])],
    bases=(_StatsBase,),
    frozen=True,
    namespace={
        "__module__": __name__,
        "__doc__": "A snapshot of nmm_stats: one int per counter of the header's "
        "NMM_STATS_FIELDS, plus per-size-class counters in ``classes``.",
    },
)

# ------------------------------------------------------------------ sites

_SITES: dict[tuple[str, int], int] = {}  # (file, line) -> site id
_FILE_BUFFERS: dict[str, Any] = {}  # kept for the life of the process: C keeps the pointer
# id(code object) -> (the code object, {bytecode offset: site id}). Keyed by the
# code object's identity and the instruction offset because computing f_lineno or
# hashing a code object costs microseconds in a large function; holding the code
# object keeps its id from being reused.
_SITE_CACHE: dict[int, tuple[CodeType, dict[int, int]]] = {}


def _intern_site(file: str, line: int) -> int:
    site = _SITES.get((file, line))
    if site is not None:
        return site
    buf = _FILE_BUFFERS.get(file)
    if buf is None:
        buf = _FILE_BUFFERS.setdefault(file, ffi.new("char[]", file.encode(errors="replace")))
    site = int(lib.nmm_site(ffi.NULL, buf, line))
    _SITES[(file, line)] = site
    return site


def _frame_site(frame: FrameType) -> int:
    """The site id of a frame's current line (cached by code object and offset)."""
    code = frame.f_code
    entry = _SITE_CACHE.get(id(code))
    if entry is None:
        entry = _SITE_CACHE.setdefault(id(code), (code, {}))
    site = entry[1].get(frame.f_lasti)
    if site is None:
        site = entry[1][frame.f_lasti] = _intern_site(code.co_filename, frame.f_lineno or 0)
    return site


def _caller_site(depth: int = 2) -> int:
    """The site id of the Python frame ``depth`` levels above this call."""
    return _frame_site(sys._getframe(depth))


def _site_info(site: int) -> Site | None:
    if site == 0:
        return None
    file = ffi.new("const char **")
    line = ffi.new("int *")
    if lib.nmm_site_info(site, file, line) != lib.NMM_OK or file[0] == ffi.NULL:
        return None
    return (ffi.string(file[0]).decode(errors="replace"), int(line[0]))


# ------------------------------------------------------------------ helpers


def _event_from_c(ev: Any) -> Event:
    return Event(
        kind=ffi.string(lib.nmm_event_kind_str(ev.kind)).decode(),
        address=int(ev.address),
        size=int(ev.size),
        detail=int(ev.detail),
        seq=int(ev.seq),
        op_count=int(ev.op_count),
        alloc_site=_site_info(ev.alloc_site),
        free_site=_site_info(ev.free_site),
        thread_id=int(ev.thread_id),
        extra=int(ev.extra),
    )


def _status_text(status: int) -> str:
    return str(ffi.string(lib.nmm_status_str(status)).decode())


def _size_arg(name: str, value: int) -> int:
    if type(value) is int and 0 <= value <= _MAX_ADDRESS:  # the fast path
        return value
    try:
        n = operator.index(value)
    except TypeError:
        raise InvalidArgument(f"{name} must be an int, got {type(value).__name__}") from None
    if n < 0 or n > _MAX_ADDRESS:
        raise InvalidArgument(f"{name} must be in 0..2**64-1, got {n}")
    return n


def _option_value(key: str, value: object) -> str:
    if isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, int | str):
        text = str(value)
    else:
        raise InvalidArgument(
            f"option {key!r}: expected str, int or bool, got {type(value).__name__}"
        )
    if ":" in text:
        raise InvalidArgument(f"option {key!r}: value {text!r} may not contain ':'")
    return text


def _read_report(produce: Callable[[Any, int], int]) -> str:
    """Call an snprintf-style report function until the buffer was big enough."""
    need = int(produce(ffi.NULL, 0))
    while True:
        buf = ffi.new("char[]", need + 1)
        got = int(produce(buf, need + 1))
        if got <= need:
            return str(ffi.string(buf, got).decode(errors="replace"))
        need = got


def _unsafe_start(address: int, offset: int, n: int) -> int:
    start = address + operator.index(offset)
    if start < 0 or start + n > _MAX_ADDRESS:
        raise InvalidArgument(f"offset {offset} puts the access outside the address space")
    return start


def _unsafe_write(address: int, offset: int, data: bytes | bytearray | memoryview) -> None:
    """The one unchecked write: ``data`` at ``address + offset`` (misuse on purpose)."""
    start = _unsafe_start(address, offset, len(data))
    ffi.memmove(ffi.cast(_CHARP, start), bytes(data), len(data))


def _unsafe_read(address: int, offset: int, n: int) -> bytes:
    """The one unchecked read: ``n`` bytes at ``address + offset``."""
    start = _unsafe_start(address, offset, _size_arg("n", n))
    return bytes(ffi.buffer(ffi.cast(_CHARP, start), n))


# ------------------------------------------------------------------ Block


class Block:
    """A live block of a Heap: ``address``, ``size`` (what was asked for),
    ``usable_size`` and ``view``, a writable memoryview of exactly ``size`` bytes.

    Using a freed block (``view``, ``usable_size``, freeing it again through the
    Block) raises; ``unsafe_write``/``unsafe_read`` deliberately bypass every
    check to exercise misuse (out of bounds, negative offsets, after free).
    A Block is a context manager that frees it on exit.
    """

    __slots__ = ("_freed", "_heap", "_view", "address", "size")

    def __init__(self, heap: Heap, address: int, size: int) -> None:
        self._heap = heap
        self.address = address
        self.size = size
        self._view: memoryview | None = None
        self._freed = False

    @property
    def heap(self) -> Heap:
        """The heap this block came from."""
        return self._heap

    @property
    def freed(self) -> bool:
        """True once the block was freed, reallocated away, retired or its heap closed."""
        return self._freed

    def _check_live(self, what: str) -> None:
        if self._freed:
            raise InvalidPointer(f"{what}: block 0x{self.address:x} was freed")

    @property
    def view(self) -> memoryview:
        """A writable memoryview of the block's ``size`` bytes (released on free)."""
        self._check_live("view")
        if self._view is None:
            ptr = ffi.cast(_CHARP, self.address)
            self._view = memoryview(ffi.buffer(ptr, self.size))
        return self._view

    @property
    def usable_size(self) -> int:
        """Bytes usable at the address (>= size), as the allocator reports it."""
        self._check_live("usable_size")
        return self._heap.usable_size(self.address)

    def free(self) -> None:
        """Free the block (same as ``heap.free(block)``)."""
        self._heap._free(self, _caller_site())

    def unsafe_write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``address + offset`` with no bounds or liveness check.

        For misuse tests only: offsets outside [0, size), negative offsets and
        writes after free are all allowed and may corrupt the heap on purpose.
        """
        _unsafe_write(self.address, offset, data)

    def unsafe_read(self, offset: int, n: int) -> bytes:
        """Read ``n`` bytes at ``address + offset`` with no bounds or liveness check."""
        return _unsafe_read(self.address, offset, n)

    def _mark_freed(self) -> None:
        self._freed = True
        view, self._view = self._view, None
        if view is not None:
            try:
                view.release()
            except BufferError:  # someone exported it further; nothing more we can do
                pass

    def __enter__(self) -> Block:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._freed and not self._heap.closed:
            self._heap._free(self, _caller_site())

    def __repr__(self) -> str:
        state = "freed" if self._freed else "live"
        return f"<Block 0x{self.address:x} size={self.size} {state}>"


# ------------------------------------------------------------------ Heap


class Heap:
    """An NMM heap: allocate, free, inspect; a context manager that destroys it.

    ``level`` is ``"off"``, ``"standard"`` or ``"paranoid"``; ``policy`` is
    ``"record"`` (misuse raises, the process goes on) or ``"abort"`` (one line
    on stderr, then SIGABRT); ``limit_bytes`` caps the bytes handed out. Other
    keyword arguments are NMM_OPTIONS keys (``quarantine="4M"``,
    ``tracking=True``, ``fail="alloc@every3"``, ...), parsed by the allocator's
    own option parser, so an unknown key or bad value raises InvalidArgument
    naming it.
    """

    def __init__(
        self,
        level: str = "off",
        policy: str = "record",
        limit_bytes: int | None = None,
        **options: object,
    ) -> None:
        self._ptr: Any = None
        self._live: dict[int, Block] = {}
        self._raws: dict[int, RawHeap] = {}  # site id -> the handle made there
        self._pending: list[Event] = []
        pairs: dict[str, object] = {"level": level, "policy": policy}
        if limit_bytes is not None:
            pairs["limit"] = _size_arg("limit_bytes", limit_bytes)
        pairs.update(options)
        self.options = ":".join(f"{k}={_option_value(k, v)}" for k, v in pairs.items())
        cfg = ffi.new("nmm_config_t *")
        lib.nmm_config_init(cfg)
        err = ffi.new("char[]", _ERR_LEN)
        status = lib.nmm_config_parse(cfg, self.options.encode(), err, _ERR_LEN)
        if status != lib.NMM_OK:
            message = ffi.string(err).decode(errors="replace") or _status_text(status)
            raise InvalidArgument(message, status=status)
        ptr = lib.nmm_heap_create(cfg)
        if ptr == ffi.NULL:
            code = ffi.errno
            raise STATUS_ERRORS[
                lib.NMM_E_INVALID_ARGUMENT if code == errno_codes.EINVAL else lib.NMM_E_NOMEM
            ](f"nmm_heap_create failed: errno {code}")
        self._ptr = ptr
        self._exit_check = bool(cfg.exit_check)
        self.level = level
        self.policy = policy

    # -------------------------------------------------------------- lifecycle

    @property
    def closed(self) -> bool:
        """True after close(): the heap and all its blocks are gone."""
        return self._ptr is None

    def close(self) -> None:
        """Destroy the heap and everything in it. Idempotent. Blocks still live
        are released with it and marked freed. With ``exit_check`` on, the exit
        sweep runs first and what it finds stays readable with ``events()``."""
        ptr = self._ptr
        if ptr is None:
            return
        if self._exit_check:
            lib.nmm_exit_check(ptr)
            self._drain()
        self._ptr = None
        for block in list(self._live.values()):
            block._mark_freed()
        self._live.clear()
        for raw in self._raws.values():
            raw._detach()
        lib.nmm_heap_destroy(ptr)

    def __enter__(self) -> Heap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: lib may already be gone
            pass

    def _heap(self) -> Any:
        ptr = self._ptr
        if ptr is None:
            raise HeapClosed("the heap is closed")
        return ptr

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._live)} live blocks"
        return f"<Heap {self.options} {state}>"

    # -------------------------------------------------------------- allocation

    def alloc(self, size: int) -> Block:
        """Allocate ``size`` bytes (contents undefined). Raises OutOfMemory."""
        # The hot path of the Python driver: kept flat on purpose.
        heap = self._ptr
        if heap is None:
            raise HeapClosed("the heap is closed")
        if type(size) is not int or not 0 <= size <= _MAX_ADDRESS:
            size = _size_arg("size", size)
        frame = sys._getframe(1)
        entry = _SITE_CACHE.get(id(frame.f_code))
        site = entry[1].get(frame.f_lasti) if entry is not None else None
        if site is None:
            site = _frame_site(frame)
        address = lib.nmmpy_alloc(heap, size, site)
        if not address:
            self._raise(self._failure_status(), f"alloc({size})", None)
        block = Block(self, address, size)
        self._live[address] = block
        return block

    def calloc(self, count: int, size: int) -> Block:
        """Allocate ``count * size`` zeroed bytes; an overflowing product raises."""
        c, n = _size_arg("count", count), _size_arg("size", size)
        address = lib.nmmpy_calloc(self._heap(), c, n, _caller_site())
        return self._adopt(address, c * n, "calloc", c, n)

    def aligned_alloc(self, alignment: int, size: int) -> Block:
        """Allocate ``size`` bytes aligned to ``alignment``: any power of two
        (anything else raises InvalidArgument; one above 2**46, which no mapping
        can hold, OutOfMemory)."""
        a, n = _size_arg("alignment", alignment), _size_arg("size", size)
        address = lib.nmmpy_aligned_alloc(self._heap(), a, n, _caller_site())
        return self._adopt(address, n, "aligned_alloc", a, n)

    def realloc(self, block: Block | int | None, size: int) -> Block:
        """Resize a block, keeping its first min(old, new) bytes; returns the new
        Block and marks the old one freed. ``None`` allocates. On OutOfMemory the
        old block is untouched; a freed block raises ReallocFreed."""
        n = _size_arg("size", size)
        heap = self._heap()
        site = _caller_site()
        if block is None:
            return self._adopt(lib.nmmpy_alloc(heap, n, site), n, "alloc", n)
        old, address = self._resolve(block, "realloc")
        if old is not None and old._freed and old._heap is self:
            raise ReallocFreed(f"realloc: block 0x{address:x} was already freed")
        mine = self._live.pop(address, None)
        new_address = lib.nmmpy_realloc(heap, address, n, site)
        if not new_address:
            status = self._failure_status()
            if status == lib.NMM_E_NOMEM and mine is not None:
                self._live.setdefault(address, mine)  # the old block is still valid
            elif mine is not None and status in (lib.NMM_E_CORRUPTED, lib.NMM_E_REALLOC_FREED):
                mine._mark_freed()
            elif mine is not None:
                self._live.setdefault(address, mine)
            self._raise(status, f"realloc(0x{address:x}, {n})", address)
        if mine is not None:
            mine._mark_freed()
        return self._adopt(new_address, n, "realloc", address, n)

    def free(self, block: Block | int) -> None:
        """Free a Block or a raw address. Misuse (double, invalid, foreign-heap
        or corrupted block) raises the matching NmmError; the heap stays valid."""
        frame = sys._getframe(1)
        entry = _SITE_CACHE.get(id(frame.f_code))
        site = entry[1].get(frame.f_lasti) if entry is not None else None
        self._free(block, _frame_site(frame) if site is None else site)

    def _free(self, block: Block | int, site: int) -> None:
        heap = self._ptr
        if heap is None:
            raise HeapClosed("the heap is closed")
        if type(block) is Block and block._heap is self:
            if block._freed:
                raise DoubleFree(f"free: block 0x{block.address:x} was already freed")
            address = block.address
        else:
            address = self._resolve(block, "free")[1]
        mine = self._live.pop(address, None)
        if mine is not None:
            mine._freed = True
            if mine._view is not None:
                mine._mark_freed()
        status = lib.nmmpy_free(heap, address, site)
        if status == lib.NMM_OK:
            return
        if mine is not None and status not in _GONE:
            # Still live in the allocator's eyes (e.g. rejected as invalid): keep it usable.
            mine._freed = False
            self._live.setdefault(address, mine)
        self._raise(status, f"free(0x{address:x})", address)

    # -------------------------------------------------------------- C++'s new and delete

    def new(self, size: int, *, array: bool = False, alignment: int = 0) -> Block:
        """C++'s ``operator new`` (``array=True``: ``new[]``; ``alignment``: the
        ``std::align_val_t`` form). At standard and above the block remembers it,
        so ``free`` of it, or the wrong ``delete``, is reported (Mismatch)."""
        n, a = _size_arg("size", size), _size_arg("alignment", alignment)
        family = lib.NMM_FAMILY_NEW_ARRAY if array else lib.NMM_FAMILY_NEW
        address = lib.nmmpy_alloc_as(self._heap(), family, n, a, _caller_site())
        return self._adopt(address, n, "new[]" if array else "new", n)

    def delete(
        self,
        block: Block | int,
        *,
        array: bool = False,
        size: int | None = None,
        alignment: int = 0,
    ) -> None:
        """C++'s ``operator delete`` (``array=True``: ``delete[]``; ``size``: the sized
        form; ``alignment``: the aligned form). A block that is not a live one
        raises as ``free`` does; at standard and above a block of another family
        (malloc'd, or new vs new[]) and a size or alignment other than the
        block's raise Mismatch, after the block was freed all the same."""
        heap = self._heap()
        site = _caller_site()
        old, address = self._resolve(block, "delete")
        if old is not None and old._freed and old._heap is self:
            raise DoubleFree(f"delete: block 0x{address:x} was already freed")
        n = _UNSIZED if size is None else _size_arg("size", size)
        a = _size_arg("alignment", alignment)
        family = lib.NMM_FAMILY_NEW_ARRAY if array else lib.NMM_FAMILY_NEW
        mine = self._live.pop(address, None)
        status = lib.nmmpy_free_as(heap, address, family, n, a, site)
        if mine is not None:
            if status in _GONE or status == lib.NMM_OK:
                mine._mark_freed()
            else:
                self._live.setdefault(address, mine)
        if status != lib.NMM_OK:
            self._raise(status, f"delete{'[]' if array else ''}(0x{address:x})", address)

    def copy(self, dst: Block | int, src: Block | int, n: int) -> int:
        """``memmove(dst, src, n)``, checked as the preload library's ``memcpy`` is
        (``nmm_copy``): at standard and above a range that starts in a live block
        and runs past its requested size, or starts before it, is reported before
        anything is copied; the copy is then clamped to the block (an overflow)
        or skipped (an underflow) and Corrupted raised. Returns the bytes copied
        (``n`` when nothing was wrong)."""
        heap = self._heap()
        to = self._resolve(dst, "copy")[1]
        frm = self._resolve(src, "copy")[1]
        n = _size_arg("n", n)
        copied = int(lib.nmmpy_copy(heap, to, frm, n, _caller_site()))
        if copied != n:
            self._raise(lib.NMM_E_CORRUPTED, f"copy(0x{to:x}, 0x{frm:x}, {n})", None)
        return copied

    # -------------------------------------------------------------- queries

    def usable_size(self, block: Block | int, *, strict: bool = False) -> int:
        """Bytes usable at a block (>= its size); 0 if it is not a live block.
        ``strict=True`` is ``malloc_usable_size``'s contract as NMM checks it: a
        pointer that is not a live block's start is reported (invalid_pointer)
        and raises InvalidPointer."""
        _, address = self._resolve(block, "usable_size")
        heap = self._heap()
        if not strict:
            return int(lib.nmmpy_usable_size(heap, address))
        self._drain()
        n = int(lib.nmmpy_usable_size_checked(heap, address, _caller_site()))
        for event in self._drain():
            if event.kind == "invalid_pointer" and event.address == address:
                raise InvalidPointer(
                    f"usable_size(0x{address:x}): not a live block ({event.reason})",
                    status=lib.NMM_E_INVALID_POINTER,
                    event=event,
                )
        return n

    def requested_size(self, block: Block | int) -> int:
        """The size asked for when a live block was allocated; 0 if not live."""
        _, address = self._resolve(block, "requested_size")
        return int(lib.nmmpy_requested_size(self._heap(), address))

    @property
    def live_blocks(self) -> int:
        """Blocks this Heap object handed out and that are not freed yet (as Blocks:
        what a ``RawHeap`` hands out is counted by ``stats()`` only)."""
        return len(self._live)

    def raw(self) -> RawHeap:
        """The address-level handle on this heap for hot loops (see ``RawHeap``); its
        allocations are attributed to the line that called ``raw()``."""
        self._heap()  # a closed heap has no handle to give
        site = _caller_site()
        handle = self._raws.get(site)
        if handle is None:
            handle = self._raws.setdefault(site, RawHeap(self, site))
        return handle

    # -------------------------------------------------------------- introspection

    def stats(self) -> Any:
        """A frozen ``Stats`` snapshot (one int per NMM_STATS_FIELDS counter, and
        per-class counters in ``classes``)."""
        out = ffi.new("nmm_stats_t *")
        out.size = ffi.sizeof("nmm_stats_t")
        status = lib.nmm_stats_get(self._heap(), out)
        if status != lib.NMM_OK:
            self._raise(status, "stats", None)
        if out.version != lib.NMM_STATS_VERSION:
            raise NmmError(
                f"nmm_stats version {out.version} but the binding was built for "
                f"{lib.NMM_STATS_VERSION}: rebuild with `pip install -e .`"
            )
        classes = tuple(
            ClassStats(
                block_size=int(c.block_size),
                allocs=int(c.allocs),
                frees=int(c.frees),
                live=int(c.live),
                slabs=int(c.slabs),
                free_blocks=int(c.free_blocks),
            )
            for c in out.classes[0 : min(out.class_count, lib.NMM_MAX_CLASSES)]
        )
        values = {name: int(getattr(out, name)) for name in STATS_FIELDS}
        return Stats(**values, classes=classes)

    def events(self) -> list[Event]:
        """Every detection recorded since the previous call, oldest first
        (including those already attached to exceptions or validation results)."""
        self._drain()
        pending, self._pending = self._pending, []
        return pending

    def validate(self) -> ValidationResult:
        """Run the full integrity sweep; returns the problem count and the events
        it emitted."""
        heap = self._heap()
        self._drain()
        problems = int(lib.nmm_validate(heap))
        return ValidationResult(problems=problems, events=tuple(self._drain()))

    def exit_check(self) -> ValidationResult:
        """Run the exit sweep now (nmm_exit_check: every live header and canary, at
        paranoid every freed block's poison; safe while other threads allocate);
        returns the problem count and the events it emitted."""
        heap = self._heap()
        self._drain()
        problems = int(lib.nmm_exit_check(heap))
        return ValidationResult(problems=problems, events=tuple(self._drain()))

    def report(self) -> dict[str, Any]:
        """The diagnostic report (nmm_report_json) as a dict."""
        heap = self._heap()
        data: dict[str, Any] = json.loads(
            _read_report(lambda b, c: lib.nmm_report_json(heap, b, c))
        )
        return data

    def leaks(self) -> Any:
        """Live blocks grouped by site (and stack), largest first, as parsed JSON."""
        heap = self._heap()
        return json.loads(_read_report(lambda b, c: lib.nmm_leaks_report(heap, 1, b, c)))

    def leaks_text(self) -> str:
        """The leak report as text."""
        heap = self._heap()
        return _read_report(lambda b, c: lib.nmm_leaks_report(heap, 0, b, c))

    def set_failpoint(self, spec: str) -> None:
        """Arm (or with ``NAME@off`` disarm) fail points: ``NAME@TERM[,TERM...]``
        joined by ';' (see nmm_failpoint_set). A bad spec raises InvalidArgument."""
        heap = self._heap()
        err = ffi.new("char[]", _ERR_LEN)
        status = lib.nmm_failpoint_set(heap, spec.encode(), err, _ERR_LEN)
        if status != lib.NMM_OK:
            message = ffi.string(err).decode(errors="replace") or _status_text(status)
            raise STATUS_ERRORS.get(status, NmmError)(message, status=status)

    # -------------------------------------------------------------- internals

    def _resolve(self, block: Block | int, what: str) -> tuple[Block | None, int]:
        if type(block) is Block:
            return block, block.address
        if isinstance(block, Block):
            return block, block.address
        try:
            address = operator.index(block)
        except TypeError:
            raise InvalidArgument(
                f"{what}: expected a Block or an int address, got {type(block).__name__}"
            ) from None
        if not 0 <= address <= _MAX_ADDRESS:
            raise InvalidArgument(f"{what}: address {address} is outside 0..2**64-1")
        return self._live.get(address), address

    def _adopt(self, address: int, size: int, call: str, *args: int) -> Block:
        if not address:
            self._raise(self._failure_status(), f"{call}{args}", None)
        block = Block(self, address, size)
        self._live[address] = block
        return block

    @staticmethod
    def _failure_status() -> int:
        """Why the last allocation call on this thread returned NULL."""
        code = ffi.errno
        status = int(lib.nmm_last_status())
        if status == lib.NMM_OK:
            status = lib.NMM_E_INVALID_ARGUMENT if code == errno_codes.EINVAL else lib.NMM_E_NOMEM
        return status

    def _drain(self) -> list[Event]:
        """Move recorded events from C into the pending list; return the new ones."""
        heap = self._ptr
        if heap is None:
            return []
        new: list[Event] = []
        buf = ffi.new("nmm_event_t[]", _DRAIN_BATCH)
        while True:
            n = int(lib.nmm_events_drain(heap, buf, _DRAIN_BATCH))
            new.extend(_event_from_c(buf[i]) for i in range(n))
            if n < _DRAIN_BATCH:
                break
        self._pending.extend(new)
        return new

    def _raise(self, status: int, what: str, address: int | None) -> NoReturn:
        new = self._drain()
        event = None
        for ev in reversed(new):
            if address is None or ev.address == address:
                event = ev
                break
        cls = STATUS_ERRORS.get(status, NmmError)
        detail = f" ({event.kind} at 0x{event.address:x})" if event is not None else ""
        raise cls(f"{what}: {_status_text(status)}{detail}", status=status, event=event)


# ------------------------------------------------------------------ RawHeap


class RawHeap:
    """Address-level access to a Heap for drivers' hot loops (``Heap.raw()``).

    Ints in, ints out: no Block objects, no memoryviews, no per-call site lookup
    (every allocation is attributed to where ``raw()`` was called). The hot calls
    are the C shims bound to this handle (allocator/build.py ``RAW_CALLS``),
    so each is one C call with no Python frame around it, and none of them raises
    for a failure; they follow the C API's conventions instead:

    - ``alloc(size)`` and ``alloc_pattern(size, key)`` return the address, or 0 on
      failure (then call ``raise_alloc_failure(size)`` at once for the exception
      ``Heap.alloc`` would have raised). ``alloc_pattern`` also writes ``key``'s
      pattern into the block.
    - ``free(address)`` returns the ``nmm_status`` of the free (0 = OK;
      ``STATUS_ERRORS`` maps the others), or ``HEAP_CLOSED``.
    - ``free_pattern(address, size, key)`` first checks that the live block of
      ``size`` bytes at ``address`` still carries ``key``'s pattern, then frees it:
      the status, with ``PATTERN_BAD`` or-ed in when the pattern was damaged.
    - ``realloc(address, size)`` and ``realloc_pattern(address, old_size, size,
      old_key, key)`` return the new address, or 0 on failure (the old block is
      untouched; ``raise_alloc_failure(size, "realloc")`` says why).
      ``realloc_pattern`` checks the old block's pattern before the call and the
      head both sizes keep after it, then writes ``key``'s pattern.

    Every damaged pattern ``free_pattern`` and ``realloc_pattern`` find is counted
    in ``pattern_errors``.

    Arguments are converted by C rules: a non-int or an out-of-range int raises
    TypeError or OverflowError. The pattern of a key is the little-endian bytes of
    ``(key + 1) * 0x9E3779B97F4A7C15 mod 2**64`` repeated over the block's first and
    its last ``PATTERN_EDGE`` bytes (the whole block when it is at most twice that);
    a block is only read once the allocator confirmed it live and at least the
    claimed size. What a RawHeap hands out is not tracked as a Block:
    ``Heap.free(address)`` and ``Heap.realloc(address, n)`` accept it and
    ``Heap.close()`` releases it; after the close every call here fails cleanly.
    """

    __slots__ = ("_c", "_heap", "alloc", "alloc_pattern", "free", "free_pattern", "realloc",
                 "realloc_pattern", "site")

    #: bytes at each end of a block that carry the pattern
    PATTERN_EDGE: int = int(lib.NMMPY_PATTERN_EDGE)
    #: bit set in ``free_pattern``'s result when the block no longer carried its pattern
    PATTERN_BAD: int = int(lib.NMMPY_PATTERN_BAD)
    #: what ``free``/``free_pattern`` return once the heap is closed
    HEAP_CLOSED: int = int(lib.NMMPY_HEAP_CLOSED)

    alloc: Callable[[int], int]
    alloc_pattern: Callable[[int, int], int]
    free: Callable[[int], int]
    free_pattern: Callable[[int, int, int], int]
    realloc: Callable[[int, int], int]
    realloc_pattern: Callable[[int, int, int, int, int], int]

    def __init__(self, heap: Heap, site: int) -> None:
        c = ffi.new("nmmpy_raw_t *")
        c.heap = heap._heap()
        c.site = site
        self._c = c  # owns the struct the bound calls point at
        self._heap = heap
        self.site = site
        self.alloc = MethodType(lib.nmmpy_raw_alloc, c)
        self.alloc_pattern = MethodType(lib.nmmpy_raw_alloc_pattern, c)
        self.free = MethodType(lib.nmmpy_raw_free, c)
        self.free_pattern = MethodType(lib.nmmpy_raw_free_pattern, c)
        self.realloc = MethodType(lib.nmmpy_raw_realloc, c)
        self.realloc_pattern = MethodType(lib.nmmpy_raw_realloc_pattern, c)

    @property
    def heap(self) -> Heap:
        """The heap this handle allocates from."""
        return self._heap

    @property
    def closed(self) -> bool:
        """True once the heap was closed."""
        return bool(self._c.heap == ffi.NULL)

    @property
    def pattern_errors(self) -> int:
        """Damaged patterns ``free_pattern`` and ``realloc_pattern`` found so far."""
        return int(self._c.pattern_errors)

    def _detach(self) -> None:
        """Called by Heap.close() before the heap is destroyed."""
        self._c.heap = ffi.NULL

    def raise_alloc_failure(self, size: int, call: str = "alloc") -> NoReturn:
        """Raise what made this thread's last allocation (or realloc) return 0, as
        ``Heap.alloc`` would have (OutOfMemory, ReallocFreed, HeapClosed, ...)."""
        if self.closed:
            raise HeapClosed("the heap is closed")
        self._heap._raise(Heap._failure_status(), f"{call}({size})", None)

    def check_pattern(self, address: int, size: int, key: int) -> bool:
        """Whether ``address`` is a live block of at least ``size`` bytes that still
        carries ``key``'s pattern."""
        return bool(lib.nmmpy_raw_check_pattern(self._c, address, size, key))

    def unsafe_write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``address`` with no bounds or liveness check (misuse on
        purpose, like ``Block.unsafe_write``)."""
        _unsafe_write(address, 0, data)

    def unsafe_read(self, address: int, n: int) -> bytes:
        """Read ``n`` bytes at ``address`` with no bounds or liveness check."""
        return _unsafe_read(address, 0, n)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<RawHeap of {self._heap.options} site={self.site} {state}>"


def preload_path() -> Path:
    """Absolute path of libnmm_preload.so (for LD_PRELOAD)."""
    return Path(__file__).resolve().parent / "_native" / "libnmm_preload.so"


def options_help() -> None:
    """Write the allocator's option table to stdout (fd 1)."""
    sys.stdout.flush()
    lib.nmm_options_help(1)
