"""A test double for the native driver's child process: speaks PROTOCOL.md's JSON lines.

Usage: python fake_driver.py MODE run [driver options]. MODE picks the behaviour:
detect (every fault reported), miss (none reported), fp (an event with no fault),
crash (SIGSEGV after a fault, no diagnostic), abort (an ``nmm:`` line then SIGABRT),
hang (never finishes), garbage (non-JSON noise around a good trial), gated (detect,
but with ``FAKE_DRIVER_GATE=N:PATH`` in the environment a trial whose seed is above N
first waits until the file PATH exists: a run then stops at a known point, for
kill-and-resume tests), exit3 (exits 3 without a result line), stall / stall_final
(a heartbeat whose progress stops, in the workload / in the validate phase), oddmiss (miss on odd
seeds, detect on even ones: a run with both failing and passing trials), killparent
(detect, but first SIGKILL its parent, a campaign worker, unless the file
FAKE_DRIVER_MARKS/<seed> exists, which it creates: the retry of the trial then
succeeds), killparent-always (SIGKILL its parent every time).
The real path through ``nmm-driver`` is tested separately end to end.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

#: longest a gated trial waits for its gate (so a forgotten child still ends)
GATE_WAIT_S = 300.0

EVENT_FOR = {"double_free": "double_free", "invalid_free": "invalid_free",
             "overflow": "overflow", "underflow": "underflow", "uaf_write": "use_after_free",
             "uaf_read": "use_after_free", "realloc_freed": "realloc_freed"}


def emit(obj: dict) -> None:
    os.write(1, (json.dumps(obj) + "\n").encode())


def parse(argv: list[str]) -> dict:
    opts: dict = {"faults": [], "seed": 0, "threads": 2, "ops": 1000}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--fault":
            opts["faults"].append(argv[i + 1])
            i += 2
        elif arg in ("--seed", "--threads", "--ops"):
            opts[arg[2:]] = int(argv[i + 1])
            i += 2
        elif arg == "--no-check":
            i += 1
        elif arg.startswith("--"):
            i += 2
        else:
            i += 1
    return opts


def main() -> int:
    mode = sys.argv[1]
    opts = parse(sys.argv[3:])
    if mode == "oddmiss":
        mode = "miss" if opts["seed"] % 2 else "detect"
    faults = []
    for spec in opts["faults"]:
        kind, *kv = spec.split(":")
        params = dict(p.split("=", 1) for p in kv)
        for _ in range(int(params.get("count", 1))):
            faults.append((kind, params.get("variant", "")))
    if not mode.startswith("stall"):
        emit({"type": "start", "protocol": 2, "seed": opts["seed"], "threads": opts["threads"],
              "ops": opts["ops"], "target": "nmm", "faults_planned": len(faults),
              "pid": os.getpid()})
    if mode == "hang":
        time.sleep(3600)
    if mode in ("stall", "stall_final"):
        # a heartbeat that promised beats: ops move a little, then nothing moves
        # (stall: during the workload; stall_final: in the validate phase after it)
        emit({"type": "start", "protocol": 2, "beat_ms": 50, "seed": opts["seed"],
              "faults_planned": len(faults), "pid": os.getpid()})
        for i in range(5):
            emit({"type": "beat", "phase": "ops", "ops": i * 100, "step": 0, "t_ms": i * 50})
            time.sleep(0.05)
        phase = "validate" if mode == "stall_final" else "ops"
        while True:  # beats go on (the heartbeat thread is fine), progress does not
            emit({"type": "beat", "phase": phase, "ops": 400, "step": 0, "t_ms": 0})
            time.sleep(0.05)
    if mode.startswith("killparent"):
        mark = Path(os.environ.get("FAKE_DRIVER_MARKS", ".")) / str(opts["seed"])
        if mode == "killparent-always" or not mark.exists():
            mark.touch()
            os.kill(os.getppid(), signal.SIGKILL)
            return 0
        mode = "detect"
    if mode == "gated":
        free, _, gate = os.environ["FAKE_DRIVER_GATE"].partition(":")
        if opts["seed"] > int(free):
            give_up = time.monotonic() + GATE_WAIT_S
            while not Path(gate).exists() and time.monotonic() < give_up:
                time.sleep(0.01)
    if mode == "garbage":
        os.write(1, b"this is not json\n[1,2]\n{\"type\":\"mystery\"}\n")
    if mode in ("fp",):
        faults = []
    base = 0x7F0000001000 + (opts["seed"] % 1000) * 0x10000
    total = opts["threads"] * opts["ops"]
    seq = injected = events = 0
    for fid, (kind, variant) in enumerate(faults):
        address = 0 if kind == "alloc_failure" else base + fid * 0x100
        op = 100 + fid * 10
        emit({"type": "fault", "id": fid, "kind": kind, "variant": variant, "worker": 0,
              "op": op, "address": hex(address), "size": 48, "seq": seq,
              "bytes": 1 if kind in ("overflow", "underflow", "uaf_write") else 0,
              "offset": 48 if kind == "overflow" else -1 if kind == "underflow" else 0})
        if mode == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if mode == "abort":
            os.write(2, f"nmm: {EVENT_FOR.get(kind, kind)} at {hex(address)} "
                        "(alloc site fake.c:1)\n".encode())
            signal.signal(signal.SIGABRT, signal.SIG_DFL)
            os.abort()
        caught = mode in ("detect", "gated", "garbage")
        done: dict = {"type": "fault_done", "id": fid, "status": -1}
        if kind in ("double_free", "invalid_free", "overflow", "underflow", "realloc_freed"):
            done["status"] = 3 if caught else 0
        elif kind == "uaf_read":
            done.update(read=0xDB if caught else 0x5A, was=0x5A)
        elif kind == "alloc_failure":
            done.update(armed=True, injected_before=injected)
            injected += 3 if mode != "miss" else 0
        emit(done)
        if caught and kind in EVENT_FOR and kind != "uaf_read":
            seq += 1
            events += 1
            detail = 48 if kind == "overflow" else 1 if kind == "underflow" else 0
            emit({"type": "event", "kind": EVENT_FOR[kind], "address": hex(address),
                  "size": 48, "detail": detail, "seq": seq, "op_count": op * 2,
                  "alloc_site": 0, "free_site": 0, "thread": 1, "driver_op": op + 3})
    if mode == "fp":
        events += 1
        emit({"type": "event", "kind": "overflow", "address": hex(base), "size": 32,
              "seq": 1, "driver_op": 5})
    if mode == "exit3":
        return 3
    emit({"type": "progress", "ops": total // 2, "faults": len(faults), "events": 0,
          "pattern_errors": 0})
    # a consistent protocol-2 result: the driver's books, the heap's counters and the
    # walks agree (100 allocs, 10 live at the end of the workload, none after teardown)
    emit({"type": "result", "ops": total, "worker_ops": [opts["ops"]] * opts["threads"],
          "elapsed_ns": 1_000_000, "faults": len(faults), "events": events,
          "pattern_errors": 0, "alloc_failures": injected,
          "latency_ns": {"p50": 30, "p99": 90, "p999": 400, "max": 1200, "samples": 100},
          "stats_before": {"allocs": 100, "frees": 90, "live_blocks": 10},
          "walk": {"blocks": 10, "bytes": 480, "unknown": 0, "missing": 0,
                   "size_mismatch": 0},
          "counts": {"allocs": 100, "frees": 100, "reallocs": 0, "reallocs_moved": 0,
                     "dropped": 0, "live_blocks": 10, "live_bytes": 480},
          "stats": {"allocs": 100, "frees": 100, "live_blocks": 0, "live_bytes": 0,
                    "events": events, "events_dropped": 0, "alloc_failures": injected,
                    "injected_failures": injected},
          "walk_after": {"blocks": 0, "bytes": 0},
          "validate_problems": 0, "leaked_blocks": 0, "exit": "ok"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
