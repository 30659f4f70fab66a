"""The demo behind ``make run`` (until the chaos engine takes over): a seeded
churn workload and a pair benchmark through the Python binding at each
detection level, then the heap's stats. Measures; asserts nothing."""

from __future__ import annotations

import math
import random
import time

from rich.console import Console
from rich.table import Table

from allocator._binding import Block, Heap

LEVELS = ("off", "standard", "paranoid")


def _churn(heap: Heap, rng: random.Random, ops: int, live_max: int = 1000) -> int:
    """Random alloc/free with a per-block fill pattern checked before free.
    Returns the number of pattern mismatches (0 unless the allocator is broken)."""
    live: list[tuple[Block, int]] = []
    bad = 0
    for _ in range(ops):
        if live and (len(live) >= live_max or rng.random() < 0.5):
            block, tag = live.pop(rng.randrange(len(live)))
            n = min(block.size, 16)
            if bytes(block.view[:n]) != bytes([tag]) * n:
                bad += 1
            heap.free(block)
        else:
            size = int(math.exp(rng.uniform(math.log(16), math.log(4096))))
            block = heap.alloc(size)
            tag = rng.randrange(256)
            n = min(size, 16)
            block.view[:n] = bytes([tag]) * n
            live.append((block, tag))
    for block, _ in live:
        heap.free(block)
    return bad


def _pairs(heap: Heap, count: int) -> float:
    """Nanoseconds per alloc(64)+free pair through the binding."""
    start = time.perf_counter_ns()
    for _ in range(count):
        heap.free(heap.alloc(64))
    return (time.perf_counter_ns() - start) / count


def run(seed: int = 1, ops: int = 200_000) -> int:
    """Run the demo and print a table; returns 1 if anything went wrong."""
    console = Console()
    rows: dict[str, list[str]] = {}
    failed = False
    for level in LEVELS:
        with Heap(level=level) as heap:
            rng = random.Random(seed)
            t0 = time.perf_counter()
            bad = _churn(heap, rng, ops)
            rate = ops / (time.perf_counter() - t0)
            ns = _pairs(heap, ops // 4)
            result = heap.validate()
            events = heap.events()
            s = heap.stats()
            failed |= bad != 0 or not result.clean or bool(events) or s.live_blocks != 0
            for name, value in [
                ("churn ops/s (binding)", f"{rate:,.0f}"),
                ("ns per 64 B pair (binding)", f"{ns:,.0f}"),
                ("allocs", f"{s.allocs:,}"),
                ("frees", f"{s.frees:,}"),
                ("peak bytes", f"{s.peak_bytes:,}"),
                ("peak mapped bytes", f"{s.peak_mapped_bytes:,}"),
                ("slabs mapped / returned", f"{s.slabs_mapped:,} / {s.slabs_returned:,}"),
                ("cache hits / misses", f"{s.cache_hits:,} / {s.cache_misses:,}"),
                ("events", str(len(events))),
                ("validate", "clean" if result.clean else f"{result.problems} problems"),
                ("pattern errors", str(bad)),
            ]:
                rows.setdefault(name, []).append(value)
    table = Table(title=f"NMM through the Python binding: seed {seed}, {ops:,} churn ops per level")
    table.add_column("")
    for level in LEVELS:
        table.add_column(f"level={level}", justify="right")
    for name, values in rows.items():
        table.add_row(name, *values)
    console.print(table)
    if failed:
        console.print("[red]demo found problems (see the table)[/red]")
    return 1 if failed else 0
