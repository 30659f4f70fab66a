"""A failure as a witness a person can read: the operations that ran, in the order the
controlled scheduler ran them, each named with its worker, op index and block
(``T1 op 9 free(b3)``), and the thread switches between them, with the yield point a
worker was preempted at when it lost the CPU in the middle of an operation. A deadlock
or hang ends with each blocked worker's unfinished op (or its exit), the lock it waits
for and the locks it holds.

The evidence: the failing trial run once more, following its schedule, with the driver's
``--op-log`` (each finished op: worker, op index, step; each preemption: worker, step,
yield point), and each worker's op stream from ``nmm-driver stream`` (a pure function of
seed and worker). Blocks are labelled ``b1, b2, ...`` in the order they were allocated.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness._driver import driver_args

if TYPE_CHECKING:
    from harness.chaos import TrialRun
    from harness.plan import Plan

#: ops shown before the failure when the trial is long (a shrunk one shows all)
TAIL_OPS = 12
#: blocks a fork child allocates and checks (harness/native/workload.c)
FORK_CHILD_BLOCKS = 64
_STREAM = re.compile(r"^(\d+) (alloc|free|realloc) slot=(\d+)(?: size=(\d+))?(?:.*cross=(\d))?")


@dataclass(frozen=True)
class OpEvent:
    worker: int
    op: int
    step: int


@dataclass(frozen=True)
class Preemption:
    worker: int
    step: int
    where: str


def is_operation(line: str) -> bool:
    """Whether a witness line is an operation: an allocator call of a worker or a fork
    (not a switch, a blocked worker's listing or the elision line)."""
    return line.startswith("T") and (" op " in line or " fork " in line)


def operations(plan: Plan) -> int:
    """The operations a plan's trial runs: every worker's allocator calls and worker
    0's forks (a witness's operations are these, in order)."""
    w = plan.workload
    counts = w.worker_ops or [w.ops_per_worker] * w.threads
    return sum(counts) + (counts[0] // w.fork_every if w.fork_every else 0)


def parse_op_log(text: str) -> tuple[list[OpEvent], list[Preemption]]:
    ops, pre = [], []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if parts[0] == "O" and len(parts) >= 4:
            ops.append(OpEvent(int(parts[1]), int(parts[2]), int(parts[3])))
        elif parts[0] == "P" and len(parts) >= 4:
            pre.append(Preemption(int(parts[1]), int(parts[2]), parts[3]))
    return ops, pre


def _streams(plan: Plan, seed: int, counts: dict[int, int], driver: str) -> dict[int, list[str]]:
    """Each worker's first ops, from ``nmm-driver stream`` (same options as the trial)."""
    args = driver_args(plan, seed)[1:]  # drop "run"
    keep: list[str] = []
    skip = {"--scheduler", "--depth", "--sched-steps", "--pos-p", "--max-steps",
            "--progress-every", "--duration", "--worker-ops"}  # run's, not stream's
    i = 0
    while i < len(args):
        if args[i] in skip:
            i += 2
            continue
        keep.append(args[i])
        i += 1
    out: dict[int, list[str]] = {}
    for worker, count in counts.items():
        proc = subprocess.run([driver, "stream", *keep, "--worker", str(worker),
                               "--count", str(count + 1)], capture_output=True, text=True,
                              check=False)
        out[worker] = proc.stdout.splitlines()
    return out


def witness_lines(plan: Plan, run: TrialRun, *, limit: int = TAIL_OPS) -> list[str]:
    """The readable witness of a failing controlled trial (empty for a free-running one,
    whose interleaving was not recorded)."""
    if not plan.scheduler.controlled or run.schedule is None or not run.argv:
        return []
    from harness.chaos import _TracedEngine

    with tempfile.TemporaryDirectory(prefix="nmm-witness-") as tmp:
        trace = Path(tmp) / "in.trace"
        trace.write_bytes(run.schedule.to_bytes())
        log = Path(tmp) / "ops.log"
        engine = _TracedEngine(["--schedule-in", str(trace), "--op-log", str(log)])
        engine.run(plan, run.record.seed)
        if not log.is_file():
            return []
        ops, preemptions = parse_op_log(log.read_text())
    driver = run.argv[0]
    counts: dict[int, int] = {}
    for ev in ops:
        counts[ev.worker] = max(counts.get(ev.worker, 0), ev.op)
    stop = run.record.observation.sched_stop
    for t in (stop or {}).get("threads", ()):  # a blocked worker's unfinished op too
        if t.get("state") == "blocked":
            worker = int(t.get("worker", 0))
            counts[worker] = max(counts.get(worker, 0), int(t.get("ops", 0)))
    streams = _streams(plan, run.record.seed, counts, driver)
    w = plan.workload
    return render(ops, preemptions, streams, limit=limit, stop=stop, threads=w.threads,
                  fork_every=w.fork_every,
                  worker_ops=list(w.worker_ops or [w.ops_per_worker] * w.threads))


def _blocked_line(thread: dict[str, Any], describe: Callable[..., str],
                  worker_ops: list[int] | None, fork_every: int) -> str:
    """``T0 op 3 free(b2), unfinished: blocked at ... waiting for ..., holding ...``: the
    op a blocked worker was inside (or its exit, after its last op)."""
    worker, done = int(thread.get("worker", 0)), int(thread.get("ops", 0))
    holds = ", ".join(h.get("lock", "?") for h in thread.get("holds", ())) or "nothing"
    where = (f"blocked at {thread.get('waiting_at')} waiting for "
             f"{thread.get('waiting_for')}, holding {holds}")
    if worker_ops is not None and worker < len(worker_ops) and done >= worker_ops[worker]:
        return f"T{worker} exiting after its last op: {where}"
    inside = f"op {done} {describe(worker, done, done=False)}"
    if fork_every and worker == 0 and (done + 1) % fork_every == 0:
        inside += f" (or fork {(done + 1) // fork_every} after it)"
    return f"T{worker} {inside}, unfinished: {where}"


def render(ops: list[OpEvent], preemptions: list[Preemption], streams: dict[int, list[str]],
           *, limit: int = TAIL_OPS, stop: dict[str, Any] | None = None,
           threads: int = 2, fork_every: int = 0,
           worker_ops: list[int] | None = None) -> list[str]:
    """Witness lines from an op log and the workers' streams. A fork (worker 0, after
    every ``fork_every`` ops, before it yields) is an operation of its own: the child
    allocates FORK_CHILD_BLOCKS blocks, checks their patterns and frees them. A worker
    the scheduler found blocked (``stop``: deadlock, hang) ends the witness with the op
    it was inside (its ``ops`` finished ones are in the log; ``worker_ops`` says how many
    it had, so one past its last is its exit), where it waits and what it holds."""
    labels: dict[tuple[int, int], str] = {}   # (worker, slot) -> block label
    counter = 0
    lines: list[str] = []
    last_step: dict[int, int] = {}
    by_worker_pre: dict[int, list[Preemption]] = {}
    for p in preemptions:
        by_worker_pre.setdefault(p.worker, []).append(p)
    prev_worker = None

    def describe(worker: int, index: int, *, done: bool = True) -> str:
        """Op ``index`` (0-based) of a worker's stream; a finished alloc gets the next
        block label, a finished free takes its block's label out of use."""
        nonlocal counter
        text = streams.get(worker, [])
        m = _STREAM.match(text[index]) if 0 <= index < len(text) else None
        if m is None:
            return "op"
        kind, slot = m.group(2), int(m.group(3))
        key = (worker, slot)
        if kind == "alloc":
            if not done:
                return f"alloc({m.group(4)})"
            counter += 1
            labels[key] = f"b{counter}"
            return f"alloc({m.group(4)}) -> {labels[key]}"
        if kind == "realloc":
            return f"realloc({labels.get(key, '?')}, {m.group(4)})"
        block = labels.pop(key, "?") if done else labels.get(key, "?")
        return (f"hand {block} to T{(worker + 1) % threads} to free"
                if m.group(5) == "1" else f"free({block})")

    for ev in ops:
        desc = describe(ev.worker, ev.op - 1)
        begin = last_step.get(ev.worker, 0)
        inside = [p for p in by_worker_pre.get(ev.worker, ()) if begin < p.step <= ev.step]
        if prev_worker is not None and prev_worker != ev.worker:
            lines.append(f"   -- switch to T{ev.worker}")
        note = ""
        if inside:
            points = list(dict.fromkeys(p.where for p in inside))
            points.sort(key=lambda w: not w.startswith("mutant."))  # the bug's window first
            where = ", ".join(points[:3]) + (", ..." if len(points) > 3 else "")
            note = f"   (preempted {len(inside)}x inside it, at {where})"
        lines.append(f"T{ev.worker} op {ev.op - 1} {desc}{note}")
        if fork_every and ev.worker == 0 and ev.op % fork_every == 0:
            lines.append(f"T0 fork {ev.op // fork_every}: the child allocates "
                         f"{FORK_CHILD_BLOCKS} blocks, checks and frees them")
        last_step[ev.worker] = ev.step
        prev_worker = ev.worker
    if stop is not None:
        for t in stop.get("threads", ()):
            if t.get("state") == "blocked":
                lines.append(_blocked_line(t, describe, worker_ops, fork_every))
    ops_shown = [ln for ln in lines if is_operation(ln)]
    if len(ops_shown) > limit:
        cut = 0
        seen = 0
        for i in range(len(lines) - 1, -1, -1):
            if is_operation(lines[i]):
                seen += 1
                if seen == limit:
                    cut = i
                    break
        lines = [f"... {len(ops_shown) - limit} earlier ops", *lines[cut:]]
    return lines
