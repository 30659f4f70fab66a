"""The Python driver: the same kind of op stream as the native driver, one op per call
through the ``allocator`` binding, producing the same records for the oracle.

Slower than the native driver but easy to extend; the hypothesis state machine drives
it op by op. Workers are
logical: they take turns on the calling thread, a few hundred ops at a time (``CHUNK``).
Each worker's op stream is a pure function of (seed, worker): its own
``random.Random(f"{seed}:{worker}")`` yields 32-bit draws, exactly three per op (see
``PyDriver._turn``), made in batches. Ops are alloc, free (maybe handed to another
worker) and realloc (``REALLOC_SHARE`` of the ops on a live slot, as the native
driver's default). Workload ops use the heap's address-level handle
(``allocator.RawHeap``): each alloc, free or realloc is one call into the allocator
that also writes or checks the block's id-derived pattern. Misuse goes
through the binding's deliberately unsafe paths (``RawHeap.unsafe_write``, freeing raw
addresses) so the allocator itself, not the binding, has to detect it. Runs in-process,
so only ``policy = "record"`` is allowed (an abort would end the caller).
"""

from __future__ import annotations

import functools
import math
import random
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from harness.errors import PlanError, UnsupportedFeature
from harness.plan import Fault, NmmTarget, Plan
from harness.records import DetailLine, EventLine, FaultLine, Observation, ResultLine

_WILD_BASE = 0x0000_1000_0000_0000
#: the byte a uaf_read fault writes where it will read, before the free: reading it
#: back means the freed block still held its data (native driver: UAF_READ_MARK)
_UAF_READ_MARK = 0x5A
#: largest block the Python driver damages in place (see PyDriver.inject)
SMALL_BLOCK = 4096
#: fault kinds only the isolated native driver performs: a zero-size write kills the
#: process at paranoid, a copy past a block needs a source buffer outside the heap, a
#: block kept damaged to the end needs the driver's kept set
NATIVE_ONLY_FAULTS = ("memcpy_overflow", "exit_only_overflow", "zero_size_write", "corrupt_meta")
#: ops a worker runs before the next one takes its turn (frees handed to a worker wait
#: at most this long); big enough that a turn's setup costs nothing per op
CHUNK = 256
#: a size is looked up by the top SIZE_BITS of a draw: ranges' weights resolve to 2**-16
SIZE_BITS = 16
#: share of the ops on a live slot that realloc its block (the native driver's --realloc)
REALLOC_SHARE = 0.05
_DRAW_BATCH = 8192  # draws a worker's PRNG makes at a time (at least)
_U32 = next(code for code in "IL" if array(code).itemsize == 4)  # array type of a draw


def _flip(data: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in data)


@functools.lru_cache(maxsize=64)
def size_table(ranges: tuple[tuple[int, int, float], ...]) -> tuple[int, ...]:
    """Sizes by draw: 2**SIZE_BITS entries, each range getting a share of them by its
    weight (at least one entry, so no range of a plan is never drawn), and entry j of a
    range's ``count`` the size at quantile (j + 1/2) / count of its log-uniform spread
    (``lo`` for a range of one size)."""
    n = 1 << SIZE_BITS
    total = sum(w for _, _, w in ranges)
    counts = [max(1, round(w / total * n)) for _, _, w in ranges]
    counts[counts.index(max(counts))] += n - sum(counts)  # rounding goes to the largest
    table: list[int] = []
    exp = math.exp
    for (lo, hi, _), count in zip(ranges, counts, strict=True):
        if hi <= lo:
            table.extend([lo] * count)
            continue
        log_lo = math.log(max(lo, 1))
        step = (math.log(hi + 1) - log_lo) / count
        base = log_lo + step / 2
        table += [min(hi, max(lo, int(exp(base + step * j)))) for j in range(count)]
    return tuple(table)


def _u32_batches(rng: random.Random) -> Iterator[array[int]]:
    """The PRNG's 32-bit outputs in order, a batch at a time (``randbytes`` takes them
    in order, little-endian), so the draws do not depend on the batch sizes."""
    while True:
        batch = array(_U32, rng.randbytes(4 * _DRAW_BATCH))
        if sys.byteorder == "big":
            batch.byteswap()
        yield batch


class _Worker:
    """One logical worker: its draws, its live slots and the frees handed to it.

    A slot is three parallel entries (address, requested size, block id); address 0
    means empty. Block ids are ``worker << 40 | n`` for the worker's n-th block (as the
    native driver numbers them), and the key of the block's fill pattern (``RawHeap``).
    Flat lists of ints, so the hot loop makes no objects of its own.
    """

    __slots__ = ("_batches", "_draws", "_pos", "addr", "block", "inbox", "index",
                 "next_id", "op", "size")

    def __init__(self, index: int, rng: random.Random, live: int) -> None:
        self.index = index
        self._batches = _u32_batches(rng)
        self._draws: array[int] = array(_U32)
        self._pos = 0
        self.addr: list[int] = [0] * live
        self.size: list[int] = [0] * live
        self.block: list[int] = [0] * live
        self.next_id = index << 40
        self.op = 0
        #: (address, size, block id) of blocks other workers handed over to be freed here
        self.inbox: list[tuple[int, int, int]] = []

    def take(self, n: int) -> array[int]:
        """The next ``n`` draws of this worker's stream."""
        draws, pos = self._draws, self._pos
        while len(draws) - pos < n:
            draws = draws[pos:] + next(self._batches)
            pos = 0
        self._draws, self._pos = draws, pos + n
        return draws[pos:pos + n]


@dataclass(frozen=True)
class PlannedFault:
    """One fault instance placed by the seed: which spec, worker, op index and slot."""

    id: int
    spec: Fault
    worker: int
    op: int
    slot: int


def plan_faults(plan: Plan, seed: int) -> list[PlannedFault]:
    """Place the plan's faults at seeded (worker, op, slot) positions, in op order."""
    rng = random.Random(f"faults:{seed}")
    ops = plan.workload.ops_per_worker
    lo, span = (ops // 8, max(1, ops * 3 // 4)) if ops >= 8 else (0, max(1, ops))
    placed: list[PlannedFault] = []
    for spec in plan.faults:
        for _ in range(spec.resolved_count(plan.total_ops)):
            placed.append(PlannedFault(id=len(placed), spec=spec,
                                       worker=rng.randrange(plan.workload.threads),
                                       op=lo + rng.randrange(span),
                                       slot=rng.randrange(plan.workload.live)))
    placed.sort(key=lambda f: (f.op, f.worker, f.id))  # the order run() injects them in
    return placed


class PyDriver:
    """One trial's op streams against an ``allocator.Heap``, recorded like the native driver.

    Use ``run()`` for a whole trial, or ``step``/``inject``/``finish`` to drive it by hand.
    Workload ops go through the heap's address-level handle (``Heap.raw()``): one call
    into the allocator per op, the block's pattern written or checked in that same call.
    """

    @staticmethod
    def check_plan(plan: Plan) -> None:
        """Raise UnsupportedFeature for a plan this driver cannot run (a malloc target,
        policy abort, a timed or op-pinned workload)."""
        if not isinstance(plan.target, NmmTarget):
            raise UnsupportedFeature("the Python driver drives NMM heaps only")
        if plan.target.policy != "record":
            raise UnsupportedFeature("the Python driver runs in-process: policy must be "
                                     "'record' (use the native driver for 'abort')")
        if plan.target.process_options:
            raise UnsupportedFeature("the Python driver runs in-process: target."
                                     "process_options (NMM_OPTIONS of a process of its own) "
                                     "needs the native driver (--engine native)")
        if plan.workload.duration_s is not None or plan.workload.worker_ops is not None:
            raise UnsupportedFeature("the Python driver runs workload.ops per worker; "
                                     "workload.duration_s and workload.worker_ops need the "
                                     "native driver (--engine native)")
        w = plan.workload
        changed = [name for name, value, default in (
            ("realloc", w.realloc, 0.05), ("calloc", w.calloc, 0.04),
            ("aligned", w.aligned, 0.04), ("calloc_count", w.calloc_count, 1),
            ("edge_every", w.edge_every, 0), ("exit_leaks", w.exit_leaks, 0),
            ("bad_options", w.bad_options, []), ("exit_held", w.exit_held, 0),
            ("exit_symbolizer", w.exit_symbolizer, None))
            if value != default]
        if changed:
            raise UnsupportedFeature(f"the Python driver runs its own op mix: workload."
                                     f"{changed[0]} needs the native driver (--engine native)")
        for fault in plan.faults:
            if fault.kind in NATIVE_ONLY_FAULTS:
                raise UnsupportedFeature(f"the Python driver runs in-process: {fault.kind} "
                                         "needs the native driver (--engine native)")
            if fault.skip is not None or fault.variant == "last":
                raise UnsupportedFeature(f"the Python driver damages a block's edge or first/"
                                         f"middle byte only: {fault.kind} with skip or "
                                         "variant 'last' needs the native driver")

    def __init__(self, plan: Plan, seed: int, *,
                 heap_factory: Callable[..., Any] | None = None) -> None:
        self.check_plan(plan)
        import allocator

        self._allocator = allocator
        factory = heap_factory or allocator.Heap
        target = plan.target
        assert isinstance(target, NmmTarget)  # check_plan refused every other kind
        options: dict[str, Any] = dict(target.options)
        try:
            self.heap = factory(level=target.level, policy="record", **options)
        except allocator.InvalidArgument as exc:  # the allocator's parser names the key
            raise PlanError(f"target.options: {exc}") from None
        self._raw = self.heap.raw()
        self._foreign: Any = None
        self.plan = plan
        self.seed = seed
        w = plan.workload
        self._check_on = w.check
        self._cross = w.cross
        self._sizes = size_table(tuple((r.lo, r.hi, float(r.weight)) for r in w.sizes))
        self.workers = [_Worker(i, random.Random(f"{seed}:{i}"), w.live)
                        for i in range(w.threads)]
        self._line = 0
        self.faults: list[FaultLine] = []
        self.events: list[EventLine] = []
        self._damaged_before_fault = 0  # pattern errors found by inject's own checks
        #: pattern and status errors, each naming its block (the oracle matches them
        #: to injected damage by address)
        self.details: list[DetailLine] = []
        self._last_seq = 0  # the latest event seq drained (drains follow every fault)
        self.alloc_failures = 0
        self.unexpected_status = 0
        self.ops = 0
        self._t0 = time.perf_counter_ns()
        self.result: ResultLine | None = None

    # ------------------------------------------------------------------ ops

    @property
    def pattern_errors(self) -> int:
        """Live blocks found not carrying their fill pattern (by a free, a realloc, or
        the check before an overflow is injected)."""
        return self._raw.pattern_errors + self._damaged_before_fault

    def _alloc_into(self, worker: _Worker, i: int, size: int) -> bool:
        """Allocate (and fill) a block into ``worker``'s slot ``i``; False if the
        allocator ran out of memory (counted)."""
        raw = self._raw
        block_id = worker.next_id
        address = raw.alloc_pattern(size, block_id) if self._check_on else raw.alloc(size)
        if not address:
            try:
                raw.raise_alloc_failure(size)
            except self._allocator.OutOfMemory:
                self.alloc_failures += 1
                return False
        worker.next_id = block_id + 1
        worker.addr[i], worker.size[i], worker.block[i] = address, size, block_id
        return True

    def _release(self, address: int, size: int, block_id: int) -> None:
        """Check and free a workload block, counting what was wrong with it."""
        raw = self._raw
        result = raw.free_pattern(address, size, block_id) if self._check_on else raw.free(address)
        if result:
            self._count(result, address, size)

    def _detail(self, **fields: Any) -> None:
        self._line += 1
        self.details.append(DetailLine(line=self._line, **fields))

    def _count(self, result: int, address: int, size: int) -> None:
        """Account a nonzero ``free``/``free_pattern`` result of the block at ``address``:
        a damaged pattern (counted by the raw handle itself; where in the block the
        handle does not say) and a refused free, each named in a detail line."""
        bad = self._raw.PATTERN_BAD
        if result & bad:
            self._detail(type="pattern_error", what="check", address=address, size=size,
                         offset=-1)
        if result & ~bad:
            self.unexpected_status += 1
            self._detail(type="status_error", call="free", address=address, size=size,
                         status=result & ~bad)

    def _realloc_failed(self, worker: _Worker, i: int, size: int) -> None:
        """A workload realloc returned 0: out of memory leaves the old block in its slot
        (counted as an allocation failure); any other refusal is an unexpected status
        and the block is no longer the workload's to free."""
        try:
            self._raw.raise_alloc_failure(size, "realloc")
        except self._allocator.OutOfMemory:
            self.alloc_failures += 1
        except self._allocator.NmmError as exc:
            self.unexpected_status += 1
            self._detail(type="status_error", call="realloc", address=worker.addr[i],
                         size=worker.size[i], status=int(getattr(exc, "status", 0) or 0))
            worker.addr[i] = 0

    def _churn(self, order: list[_Worker], rounds: int) -> None:
        """Run ``rounds`` ops of every worker in ``order``: they take turns of up to
        ``CHUNK`` ops, in order."""
        done = 0
        while done < rounds:
            n = min(CHUNK, rounds - done)
            for worker in order:
                self._turn(worker, n)
            done += n

    def _turn(self, worker: _Worker, ops: int) -> None:
        """Run ``ops`` ops of one worker: free what others handed it, then per op take
        three draws ``u, v, x``. The slot is ``u % live``. An empty slot gets a block of
        ``sizes[v >> (32 - SIZE_BITS)]`` bytes. A live slot's block is realloced to
        ``sizes[x >> (32 - SIZE_BITS)]`` bytes when ``v`` falls in the first
        ``REALLOC_SHARE`` of its range, else freed, or handed to worker
        ``(index + 1 + x % (workers - 1)) % workers`` when ``v`` falls in the next
        ``cross`` share of what is left.

        The hot loop of the driver: one raw call per op, everything bound to locals, and
        no Python object made per op beyond the numbers the calls return. (Other workers
        cannot hand this one anything during its turn, so its inbox is drained once.)
        """
        raw = self._raw
        check = self._check_on
        alloc, alloc_pattern = raw.alloc, raw.alloc_pattern
        free, free_pattern = raw.free, raw.free_pattern
        realloc, realloc_pattern = raw.realloc, raw.realloc_pattern
        count = self._count
        inbox = worker.inbox
        while inbox:
            a, n, b = inbox.pop()
            r = free_pattern(a, n, b) if check else free(a)
            if r:
                count(r, a, n)
        everyone = self.workers
        n_workers = len(everyone)
        index = worker.index
        realloc_cut = int(REALLOC_SHARE * 2**32)
        # realloc_cut <= v < cross_cut hands the block over (never with one worker)
        cross_cut = realloc_cut + int(self._cross * (2**32 - realloc_cut))
        if n_workers == 1:
            cross_cut = realloc_cut
        others = max(1, n_workers - 1)
        sizes_by_draw = self._sizes
        shift = 32 - SIZE_BITS
        addrs, sizes, blocks = worker.addr, worker.size, worker.block
        n_slots = len(addrs)
        next_id = worker.next_id
        it = iter(worker.take(3 * ops))
        try:
            for u, v, x in zip(it, it, it, strict=True):
                i = u % n_slots
                a = addrs[i]
                if not a:
                    n = sizes_by_draw[v >> shift]
                    a = alloc_pattern(n, next_id) if check else alloc(n)
                    if not a:
                        try:
                            raw.raise_alloc_failure(n)
                        except self._allocator.OutOfMemory:
                            self.alloc_failures += 1
                            continue
                elif v >= realloc_cut:
                    addrs[i] = 0
                    if v < cross_cut:
                        other = (index + 1 + x % others) % n_workers
                        everyone[other].inbox.append((a, sizes[i], blocks[i]))
                        continue
                    r = free_pattern(a, sizes[i], blocks[i]) if check else free(a)
                    if r:
                        count(r, a, sizes[i])
                    continue
                else:
                    n = sizes_by_draw[x >> shift]
                    if check:
                        seen = raw.pattern_errors
                        old = a
                        a = realloc_pattern(a, sizes[i], n, blocks[i], next_id)
                        if raw.pattern_errors != seen:
                            self._detail(type="pattern_error", what="realloc",
                                         address=a or old, source=old, size=sizes[i],
                                         offset=-1)
                    else:
                        a = realloc(a, n)
                    if not a:
                        self._realloc_failed(worker, i, n)
                        continue
                addrs[i] = a
                sizes[i] = n
                blocks[i] = next_id
                next_id += 1
        finally:
            worker.next_id = next_id
        worker.op += ops
        self.ops += ops

    def step(self, index: int) -> None:
        """Run one op of worker ``index``: free a slot's block (maybe via another worker),
        realloc it, or allocate into an empty slot; a worker first frees what others
        handed it."""
        self._turn(self.workers[index], 1)

    # ------------------------------------------------------------------ faults

    def _pick(self, worker: _Worker, start: int, max_size: int | None = None) -> int | None:
        """A live slot of ``worker`` at or after ``start`` (no larger than ``max_size``),
        or a fresh 64-byte block put into slot ``start``; None if that allocation failed."""
        n = len(worker.addr)
        for k in range(n):
            i = (start + k) % n
            if worker.addr[i] and (max_size is None or worker.size[i] <= max_size):
                return i
        i = start % n
        if not self._alloc_into(worker, i, 64):
            return None
        return i

    def _record_fault(self, fid: int, spec: Fault, worker: _Worker, variant: str,
                      address: int, size: int, bytes_: int | None,
                      offset: int | None = 0) -> None:
        """Write the fault line before the misuse, with the latest event seq (the events
        of everything before it, the legitimate free included, are drained first)."""
        self.drain(worker)
        self._line += 1
        self.faults.append(FaultLine(id=fid, kind=spec.kind, variant=variant,
                                     worker=worker.index, op=worker.op, address=address,
                                     size=size, bytes=bytes_, offset=offset,
                                     seq=self._last_seq, line=self._line))

    def _done(self, **fields: Any) -> None:
        """Fold what performing the last fault returned into its line (``fault_done``)."""
        self.faults[-1] = self.faults[-1].model_copy(update={"done": True, **fields})

    def _call_status(self, call: Callable[[], Any]) -> int:
        """The status a misused call returned (0: it was accepted)."""
        try:
            call()
        except self._allocator.NmmError as exc:
            return int(exc.status)
        return 0

    def inject(self, fid: int, spec: Fault, index: int, slot_hint: int = 0) -> None:
        """Perform one fault by worker ``index`` on (or near) slot ``slot_hint``, through
        the binding's unsafe paths (raw reads and writes, frees of raw addresses)."""
        raw = self._raw
        worker = self.workers[index]
        kind = spec.kind
        if kind == "alloc_failure":
            self._record_fault(fid, spec, worker, "", 0, 0, None, None)
            before = int(self.heap.stats().injected_failures)
            self.heap.set_failpoint(spec.fail or "alloc@every50,max20")
            self._done(status=-1, armed=True, injected_before=before)
        elif kind == "invalid_free":
            self._invalid_free(fid, spec, worker, slot_hint)
        elif kind in ("dealloc_mismatch", "sized_delete"):
            self._cxx_mismatch(fid, spec, worker, slot_hint)
        else:
            # damage only small blocks: a large block's neighbour may be a guard page, and
            # a hit there ends this process (the native driver, isolated, takes that risk)
            limit = SMALL_BLOCK if kind in ("overflow", "underflow", "uaf_write",
                                            "uaf_read") else None
            i = self._pick(worker, slot_hint, limit)
            if i is None:
                self._record_fault(fid, spec, worker, spec.variant or "", 0, 0, spec.bytes)
                self.drain(worker)
                return
            address, size, block_id = worker.addr[i], worker.size[i], worker.block[i]
            worker.addr[i] = 0
            if kind in ("overflow", "underflow"):
                n = spec.bytes or 1
                if self._check_on and not raw.check_pattern(address, size, block_id):
                    self._damaged_before_fault += 1
                    self._detail(type="pattern_error", what="check", address=address,
                                 size=size, offset=-1)
                start = address + size if kind == "overflow" else address - n
                self._record_fault(fid, spec, worker, "", address, size, n, start - address)
                raw.unsafe_write(start, _flip(raw.unsafe_read(start, n)))
                # freeing the damaged block is where standard detects it
                self._done(status=self._call_status(lambda: self.heap.free(address)))
            else:
                variant = spec.variant or ("first" if kind in ("uaf_write", "uaf_read") else "")
                offset = size // 2 if variant == "middle" else 0
                start = address + offset
                if kind == "uaf_read":  # a known byte where the read will land
                    if self._check_on and not raw.check_pattern(address, size, block_id):
                        self._damaged_before_fault += 1
                        self._detail(type="pattern_error", what="check", address=address,
                                     size=size, offset=-1)
                    raw.unsafe_write(start, bytes([_UAF_READ_MARK]))
                    result = raw.free(address)
                    if result:
                        self._count(result, address, size)
                else:
                    self._release(address, size, block_id)  # the legitimate free
                n = spec.bytes or 1
                damaged = n if kind == "uaf_write" else 1 if kind == "uaf_read" else None
                self._record_fault(fid, spec, worker, variant, address, size, damaged,
                                   offset if kind in ("uaf_write", "uaf_read") else 0)
                if kind == "double_free":
                    self._done(status=self._call_status(lambda: self.heap.free(address)))
                elif kind == "uaf_write":
                    raw.unsafe_write(start, _flip(raw.unsafe_read(start, n)))
                    self._done(status=-1)
                elif kind == "uaf_read":
                    self._done(status=-1, read=raw.unsafe_read(start, 1)[0],
                               was=_UAF_READ_MARK)
                elif kind == "realloc_freed":
                    def realloc_freed() -> None:
                        moved = self.heap.realloc(address, size + 16)
                        self.heap.free(moved)  # the target accepted it: give it back
                    self._done(status=self._call_status(realloc_freed))
        self.drain(worker)

    def _cxx_mismatch(self, fid: int, spec: Fault, worker: _Worker, slot_hint: int) -> None:
        """dealloc_mismatch and sized_delete as the native driver does them: a live
        malloc'd block deleted, or a fresh new'd block (the size of the block at the
        hint) freed by the wrong call, or deleted with a wrong size or no alignment."""
        heap = self.heap
        default = "malloc_delete" if spec.kind == "dealloc_mismatch" else "size"
        variant = spec.variant or default
        i = self._pick(worker, slot_hint)
        if i is None:
            self._record_fault(fid, spec, worker, variant, 0, 0, None)
            return
        size = worker.size[i]
        if variant == "malloc_delete":
            address, block_id = worker.addr[i], worker.block[i]
            if self._check_on and not self._raw.check_pattern(address, size, block_id):
                self._damaged_before_fault += 1
                self._detail(type="pattern_error", what="check", address=address,
                             size=size, offset=-1)
            worker.addr[i] = 0
        else:
            try:
                fresh = heap.new(size, array=variant == "new_array_delete",
                                 alignment=64 if variant == "alignment" else 0)
            except self._allocator.OutOfMemory:
                self.alloc_failures += 1
                self._record_fault(fid, spec, worker, variant, 0, 0, None)
                return
            address = fresh.address
        self._record_fault(fid, spec, worker, variant, address, size, None)
        calls: dict[str, Callable[[], Any]] = {
            "malloc_delete": lambda: heap.delete(address),
            "new_free": lambda: heap.free(address),
            "new_array_delete": lambda: heap.delete(address),
            "new_delete_array": lambda: heap.delete(address, array=True),
            "size": lambda: heap.delete(address, size=size + (spec.bytes or 1)),
            "alignment": lambda: heap.delete(address, size=size),
        }
        self._done(status=self._call_status(calls[variant]))

    def _invalid_free(self, fid: int, spec: Fault, worker: _Worker, slot_hint: int) -> None:
        nmm = self._allocator
        variant = spec.variant or "interior"
        address, size = 0, 0
        if variant == "interior":
            i = self._pick(worker, slot_hint)
            if i is not None:
                size = worker.size[i]
                address = worker.addr[i] + (16 if size >= 32 else max(1, size // 2))
        elif variant == "stack":
            # Python has no C stack frame to hand out: a live CPython object's address is
            # the nearest thing, memory that is not any NMM heap's
            anchor = bytearray(64)
            address = id(anchor) + 16
        elif variant == "wild":
            address = _WILD_BASE + fid * 65536 + 64
        else:
            if self._foreign is None:
                self._foreign = nmm.Heap(level="standard")
            foreign_block = self._foreign.alloc(64)
            address, size = foreign_block.address, 64
        self._record_fault(fid, spec, worker, variant, address, size, None)
        if address:
            self._done(status=self._call_status(lambda: self.heap.free(address)))

    # ------------------------------------------------------------------ records

    def drain(self, worker: _Worker | None = None) -> int:
        """Turn the heap's recorded events into event records; returns how many."""
        new = self.heap.events()
        op = worker.op if worker is not None else self.plan.workload.ops_per_worker
        for ev in new:
            self._last_seq = max(self._last_seq, ev.seq)
            self._line += 1
            self.events.append(EventLine(
                kind=ev.kind, address=ev.address, size=ev.size, detail=ev.detail, seq=ev.seq,
                op_count=ev.op_count, thread=ev.thread_id,
                worker=worker.index if worker is not None else -1, driver_op=op,
                line=self._line))
        return len(new)

    def finish(self) -> ResultLine:
        """Free every live block (checking patterns), sweep, and write the result record."""
        for worker in self.workers:
            while worker.inbox:
                self._release(*worker.inbox.pop())
            for i, address in enumerate(worker.addr):
                if address:
                    worker.addr[i] = 0
                    self._release(address, worker.size[i], worker.block[i])
        elapsed = time.perf_counter_ns() - self._t0
        problems = self.heap.validate().problems
        self.drain(None)
        stats = self.heap.stats()
        values = {k: v for k, v in stats.as_dict().items() if isinstance(v, int)}
        self.result = ResultLine(
            ops=self.ops, elapsed_ns=elapsed, faults=len(self.faults), events=len(self.events),
            pattern_errors=self.pattern_errors, alloc_failures=self.alloc_failures,
            stats=values, validate_problems=problems,
            leaked_blocks=int(values.get("live_blocks", 0)),
            unexpected_status=self.unexpected_status)
        return self.result

    def close(self) -> None:
        """Destroy the heaps."""
        self.heap.close()
        if self._foreign is not None:
            self._foreign.close()

    def observation(self) -> Observation:
        """What this trial produced, in the shape the oracle judges."""
        return Observation(argv=("pydriver", f"seed={self.seed}"), faults=tuple(self.faults),
                           events=tuple(self.events), result=self.result,
                           details=tuple(sorted(self.details, key=lambda d: d.line)),
                           exit_code=0 if self.result is not None else None,
                           wall_s=round((time.perf_counter_ns() - self._t0) / 1e9, 4))

    def run(self) -> Observation:
        """Run the whole trial: the workers' ops in turns, faults at their seeded ops
        (before the op of their worker at that index; every worker is at that op then)."""
        placed = plan_faults(self.plan, self.seed)  # sorted by (op, worker)
        ops = self.plan.workload.ops_per_worker
        workers = self.workers
        churn = self._churn
        op, k = 0, 0
        try:
            while op < ops:
                next_op = placed[k].op if k < len(placed) else ops
                if op < next_op:
                    churn(workers, next_op - op)  # up to the next fault, all at once
                    op = next_op
                    continue
                for worker in workers:
                    w = worker.index
                    while k < len(placed) and placed[k].op == op and placed[k].worker == w:
                        self.inject(placed[k].id, placed[k].spec, w, placed[k].slot)
                        k += 1
                    churn([worker], 1)
                while k < len(placed) and placed[k].op == op:
                    k += 1  # a worker index past the thread count (never placed so)
                op += 1
            self.finish()
            return self.observation()
        finally:
            self.close()


def run_python_trial(plan: Plan, seed: int) -> Observation:
    """One whole trial through the Python driver."""
    return PyDriver(plan, seed).run()
