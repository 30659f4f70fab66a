"""The Python driver: the same kind of op stream as the native driver, one op per call
through the ``allocator`` binding, producing the same records for the oracle.

Slow but easy to extend; the hypothesis state machine drives it op by op. Workers are
logical: their streams are interleaved round-robin on the calling thread (each a pure
function of (seed, worker) through its own ``random.Random``). Misuse goes through the
binding's deliberately unsafe paths (``Block.unsafe_write``, freeing raw addresses) so
the allocator itself, not the binding, has to detect it. Runs in-process, so only
``policy = "record"`` is allowed (an abort would end the caller).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UnsupportedFeature
from harness.plan import Fault, MallocTarget, Plan
from harness.records import EventLine, FaultLine, Observation, ResultLine

_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
#: bytes at each end of a block that carry the fill pattern (the whole block if smaller)
PATTERN_EDGE = 16
_WILD_BASE = 0x0000_1000_0000_0000
#: largest block the Python driver damages in place (see PyDriver.inject)
SMALL_BLOCK = 4096


def _pattern(block_id: int, n: int) -> bytes:
    word = ((block_id + 1) * _GOLDEN & _MASK64).to_bytes(8, "little")
    return (word * (n // 8 + 1))[:n]


def _flip(data: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in data)


class _Slot:
    """A live block of the workload and the fill pattern it must still carry."""

    __slots__ = ("block", "block_id", "pat")

    def __init__(self, block: Any, block_id: int, pat: bytes) -> None:
        self.block = block
        self.block_id = block_id
        self.pat = pat


@dataclass
class _Worker:
    index: int
    rng: random.Random
    slots: list[_Slot | None]
    op: int = 0
    inbox: list[_Slot] = field(default_factory=list)


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
    """

    def __init__(self, plan: Plan, seed: int, *,
                 heap_factory: Callable[..., Any] | None = None) -> None:
        if isinstance(plan.target, MallocTarget):
            raise UnsupportedFeature("the Python driver drives NMM heaps only")
        if plan.target.policy != "record":
            raise UnsupportedFeature("the Python driver runs in-process: policy must be "
                                     "'record' (use the native driver for 'abort')")
        import allocator

        self._allocator = allocator
        factory = heap_factory or allocator.Heap
        options: dict[str, Any] = dict(plan.target.options)
        self.heap = factory(level=plan.target.level, policy="record", **options)
        self._foreign: Any = None
        self.plan = plan
        self.seed = seed
        w = plan.workload
        self._check_on = w.check
        self._cross = w.cross
        total = sum(r.weight for r in w.sizes)
        acc = 0.0
        #: (cumulative share, lo, hi, log lo, log span) per size range
        self._ranges: list[tuple[float, int, int, float, float]] = []
        for r in w.sizes:
            acc += r.weight / total
            log_lo = math.log(max(r.lo, 1))
            self._ranges.append((acc, r.lo, r.hi, log_lo, math.log(r.hi + 1) - log_lo))
        self.workers = [_Worker(i, random.Random(f"{seed}:{i}"), [None] * w.live)
                        for i in range(w.threads)]
        self._next_id = 0
        self._line = 0
        self.faults: list[FaultLine] = []
        self.events: list[EventLine] = []
        self.pattern_errors = 0
        self.alloc_failures = 0
        self.unexpected_status = 0
        self.ops = 0
        self._t0 = time.perf_counter_ns()
        self.result: ResultLine | None = None

    # ------------------------------------------------------------------ ops

    def _size(self, rng: random.Random) -> int:
        """A size drawn log-uniformly from a range picked by weight."""
        ranges = self._ranges
        entry = ranges[0]
        if len(ranges) > 1:
            r = rng.random()
            for entry in ranges:
                if r < entry[0]:
                    break
        _, lo, hi, log_lo, log_span = entry
        if hi <= lo:
            return lo
        return min(hi, max(lo, int(math.exp(log_lo + rng.random() * log_span))))

    def _check(self, slot: _Slot) -> None:
        if not self._check_on:
            return
        view = slot.block.view
        pat = slot.pat
        k = len(pat)
        n = len(view)
        if n <= 2 * PATTERN_EDGE:
            ok = view == pat
        else:
            ok = view[:k] == pat and view[n - k:] == pat
        if not ok:
            self.pattern_errors += 1

    def _alloc(self, worker: _Worker, size: int) -> _Slot | None:
        try:
            block = self.heap.alloc(size)
        except self._allocator.OutOfMemory:
            self.alloc_failures += 1
            return None
        block_id = self._next_id
        self._next_id = block_id + 1
        if not self._check_on:
            return _Slot(block, block_id, b"")
        view = block.view
        n = len(view)
        if n <= 2 * PATTERN_EDGE:
            pat = _pattern(block_id, n)
            view[:] = pat
        else:
            pat = _pattern(block_id, PATTERN_EDGE)
            view[:PATTERN_EDGE] = pat
            view[n - PATTERN_EDGE:] = pat
        return _Slot(block, block_id, pat)

    def _free(self, slot: _Slot) -> None:
        self._check(slot)
        try:
            self.heap.free(slot.block)
        except self._allocator.NmmError:
            self.unexpected_status += 1

    def step(self, index: int) -> None:
        """Run one op of worker ``index``: free a slot's block (maybe via another worker)
        or allocate into an empty slot; a worker first frees what others handed it."""
        worker = self.workers[index]
        while worker.inbox:
            self._free(worker.inbox.pop())
        rng = worker.rng
        slots = worker.slots
        i = int(rng.random() * len(slots))
        slot = slots[i]
        if slot is not None:
            slots[i] = None
            n_workers = len(self.workers)
            if n_workers > 1 and self._cross and rng.random() < self._cross:
                other = (index + 1 + int(rng.random() * (n_workers - 1))) % n_workers
                self.workers[other].inbox.append(slot)
            else:
                self._free(slot)
        else:
            slots[i] = self._alloc(worker, self._size(rng))
        worker.op += 1
        self.ops += 1

    # ------------------------------------------------------------------ faults

    def _pick(self, worker: _Worker, start: int, max_size: int | None = None
              ) -> tuple[int, _Slot] | None:
        n = len(worker.slots)
        for k in range(n):
            slot = worker.slots[(start + k) % n]
            if slot is not None and (max_size is None or slot.block.size <= max_size):
                return (start + k) % n, slot
        slot = self._alloc(worker, 64)
        if slot is None:
            return None
        worker.slots[start % n] = slot
        return start % n, slot

    def _record_fault(self, fid: int, spec: Fault, worker: _Worker, variant: str,
                      address: int, size: int, bytes_: int | None) -> None:
        self._line += 1
        self.faults.append(FaultLine(id=fid, kind=spec.kind, variant=variant,
                                     worker=worker.index, op=worker.op, address=address,
                                     size=size, bytes=bytes_, line=self._line))

    def inject(self, fid: int, spec: Fault, index: int, slot_hint: int = 0) -> None:
        """Perform one fault by worker ``index`` on (or near) slot ``slot_hint``."""
        nmm = self._allocator
        worker = self.workers[index]
        kind = spec.kind
        if kind == "alloc_failure":
            self._record_fault(fid, spec, worker, "", 0, 0, None)
            self.heap.set_failpoint(spec.fail or "alloc@every50,max20")
        elif kind == "invalid_free":
            self._invalid_free(fid, spec, worker, slot_hint)
        else:
            # damage only small blocks: a large block's neighbour may be a guard page, and
            # a hit there ends this process (the native driver, isolated, takes that risk)
            limit = SMALL_BLOCK if kind in ("overflow", "underflow", "uaf_write",
                                            "uaf_read") else None
            picked = self._pick(worker, slot_hint, limit)
            if picked is None:
                self._record_fault(fid, spec, worker, spec.variant or "", 0, 0, spec.bytes)
                self.drain(worker)
                return
            i, slot = picked
            block, address, size = slot.block, slot.block.address, slot.block.size
            worker.slots[i] = None
            if kind in ("overflow", "underflow"):
                n = spec.bytes or 1
                self._check(slot)
                self._record_fault(fid, spec, worker, "", address, size, n)
                offset = size if kind == "overflow" else -n
                block.unsafe_write(offset, _flip(block.unsafe_read(offset, n)))
                try:  # freeing the damaged block is where standard detects it
                    self.heap.free(address)
                except nmm.NmmError:
                    pass
            else:
                self._free(slot)  # the legitimate free
                variant = spec.variant or ("first" if kind in ("uaf_write", "uaf_read") else "")
                n = spec.bytes or 1
                self._record_fault(fid, spec, worker, variant, address, size,
                                   n if kind == "uaf_write" else None)
                offset = size // 2 if variant == "middle" else 0
                try:
                    if kind == "double_free":
                        self.heap.free(address)
                    elif kind == "uaf_write":
                        block.unsafe_write(offset, _flip(block.unsafe_read(offset, n)))
                    elif kind == "uaf_read":
                        block.unsafe_read(offset, 1)
                    elif kind == "realloc_freed":
                        moved = self.heap.realloc(address, size + 16)
                        self.heap.free(moved)  # the target accepted it: give it back
                except nmm.NmmError:
                    pass
        self.drain(worker)

    def _invalid_free(self, fid: int, spec: Fault, worker: _Worker, slot_hint: int) -> None:
        nmm = self._allocator
        variant = spec.variant or "interior"
        address, size = 0, 0
        if variant == "interior":
            picked = self._pick(worker, slot_hint)
            if picked is not None:
                block = picked[1].block
                address = block.address + (16 if block.size >= 32 else max(1, block.size // 2))
                size = block.size
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
            try:
                self.heap.free(address)
            except nmm.NmmError:
                pass

    # ------------------------------------------------------------------ records

    def drain(self, worker: _Worker | None = None) -> int:
        """Turn the heap's recorded events into event records; returns how many."""
        new = self.heap.events()
        op = worker.op if worker is not None else self.plan.workload.ops_per_worker
        for ev in new:
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
                self._free(worker.inbox.pop())
            for i, slot in enumerate(worker.slots):
                if slot is not None:
                    worker.slots[i] = None
                    self._free(slot)
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
                           exit_code=0 if self.result is not None else None,
                           wall_s=round((time.perf_counter_ns() - self._t0) / 1e9, 4))

    def run(self) -> Observation:
        """Run the whole trial: every worker's ops round-robin, faults at their seeded ops."""
        placed = plan_faults(self.plan, self.seed)  # sorted by op
        ops = self.plan.workload.ops_per_worker
        workers = range(len(self.workers))
        step = self.step
        k = 0
        try:
            for op in range(ops):
                next_op = placed[k].op if k < len(placed) else ops
                if op < next_op:
                    for w in workers:
                        step(w)
                    continue
                for w in workers:
                    while k < len(placed) and placed[k].op == op and placed[k].worker == w:
                        self.inject(placed[k].id, placed[k].spec, w, placed[k].slot)
                        k += 1
                    step(w)
                while k < len(placed) and placed[k].op == op:
                    k += 1  # a worker index past the thread count (never placed so)
            self.finish()
            return self.observation()
        finally:
            self.close()


def run_python_trial(plan: Plan, seed: int) -> Observation:
    """One whole trial through the Python driver."""
    return PyDriver(plan, seed).run()
