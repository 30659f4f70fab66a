"""Each worker's op stream is a pure function of (seed, worker): byte-for-byte."""

from __future__ import annotations

import subprocess
from pathlib import Path


def stream(driver: Path, *args: str) -> str:
    proc = subprocess.run([str(driver), "stream", *args], capture_output=True, text=True,
                          check=True)
    return proc.stdout


BASE = ("--threads", "3", "--ops", "5000", "--count", "2000", "--sizes", "16-1024:3,4096-65536:1",
        "--cross", "0.25", "--fault", "double_free:count=4", "--fault", "overflow:bytes=8:count=3")


def test_same_seed_reproduces_byte_for_byte(driver: Path) -> None:
    a = stream(driver, "--seed", "42", "--worker", "1", *BASE)
    b = stream(driver, "--seed", "42", "--worker", "1", *BASE)
    assert a == b
    ops = [line for line in a.splitlines() if not line.startswith("fault ")]
    assert len(ops) == 2000
    kinds = {line.split()[1] for line in ops}
    assert kinds == {"alloc", "free", "realloc"}


def test_other_seed_or_worker_gives_another_stream(driver: Path) -> None:
    a = stream(driver, "--seed", "42", "--worker", "1", *BASE)
    assert stream(driver, "--seed", "43", "--worker", "1", *BASE) != a
    assert stream(driver, "--seed", "42", "--worker", "2", *BASE) != a


def test_fault_placement_is_part_of_the_stream(driver: Path) -> None:
    lines = [stream(driver, "--seed", "7", "--worker", str(w), *BASE) for w in range(3)]
    faults = [line for text in lines for line in text.splitlines() if line.startswith("fault ")]
    assert len(faults) == 7  # 4 double frees + 3 overflows, spread over the workers
    ids = sorted(int(f.split()[1].removeprefix("id=")) for f in faults)
    assert ids == list(range(7))
    for f in faults:
        op = int(next(p for p in f.split() if p.startswith("op=")).removeprefix("op="))
        assert 5000 // 8 <= op < 5000


def test_slot_occupancy_is_consistent(driver: Path) -> None:
    """A free or realloc only ever names a slot that an earlier alloc filled."""
    text = stream(driver, "--seed", "9", "--live", "50", "--count", "3000")
    live: set[str] = set()
    for line in text.splitlines():
        if line.startswith("fault "):
            continue
        _, kind, slot, *_ = line.split()
        if kind == "alloc":
            assert slot not in live
            live.add(slot)
        else:
            assert slot in live
            if kind == "free":
                live.remove(slot)
