"""Run a plan's trials: supervise them in parallel through an engine, stream each
record into the journal, and stop cleanly on an interrupt.

Owns the worker-thread pool (one thread runs one trial at a time) and the resume logic
(trials already journaled are skipped). How a trial runs is the engine's business
(``harness.engine``). Must not print (callbacks report progress) and must not let one
trial's crash or hang end the run. Callbacks are invoked from worker threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from harness import interrupts
from harness._driver import driver_args, driver_command
from harness._isolate import LineCallback, kill_running_children
from harness.engine import Engine, get_engine, make_record, run_trial, trial_key
from harness.hangstop import HangStop, skipped_record
from harness.identity import trial_identity
from harness.journal import Journal
from harness.plan import Plan
from harness.records import TrialRecord

__all__ = ["RecordCallback", "RunResult", "check_runnable", "driver_args", "driver_command",
           "make_record", "replay_overrides", "run_plan", "run_trial", "trial_key"]

RecordCallback = Callable[[TrialRecord], None]

#: longest the main thread blocks waiting for trials before it lets signal handlers run
SIGNAL_POLL_S = 0.1


def replay_overrides(plan: Plan, record: TrialRecord) -> list[str]:
    """The ``--set`` overrides (beyond ``--seed``) that make a run of ``plan`` replay
    ``record`` op for op: for a ``duration_s`` trial, the op count each worker reached
    (``workload.worker_ops``); nothing for an ``ops`` trial, which replays from its seed.
    A timed trial that died before its result line has no counts to pin (empty)."""
    result = record.observation.result
    if not plan.workload.timed or result is None or not result.worker_ops:
        return []
    return ["workload.worker_ops=[" + ",".join(str(n) for n in result.worker_ops) + "]"]


@dataclass
class RunResult:
    """The records of a run: those run now plus those a resumed journal already held."""

    plan: Plan
    records: list[TrialRecord] = field(default_factory=list)
    skipped: int = 0
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        """Whether every trial held its expectations (and the run was not interrupted)."""
        return not self.interrupted and all(r.verdict.passed for r in self.records)


def check_runnable(plan: Plan, engine: str | Engine = "native") -> None:
    """Raise (``UnsupportedFeature``) for a valid plan this engine cannot run here: an
    unknown or missing peer, a feature the Python driver lacks. Runs nothing."""
    get_engine(engine).check(plan)


def run_plan(plan: Plan, *, seeds: Iterable[int] | None = None, jobs: int | None = None,
             command: Sequence[str] | None = None, journal: Journal | None = None,
             on_record: RecordCallback | None = None,
             on_line: LineCallback | None = None,
             engine: str | Engine = "native", overrides: Sequence[str] = ()) -> RunResult:
    """Run every trial of ``plan`` (``seeds`` defaults to the plan's), ``jobs`` at a time
    (default: the CPU count; always one for an in-process engine).

    ``engine`` is an ``Engine`` or its name (``native``, ``python``, ...); ``command`` a
    driver command for an engine that runs one. Trials already in ``journal`` are skipped
    and their records reused; each trial's identity (``harness.identity``, with the
    ``overrides`` the plan was loaded with) is journaled before it starts, so one that
    started and left no record (the run or the machine died) runs again on a resume.
    Checks the plan can run (driver present, supported features) before starting any
    trial.
    """
    eng = get_engine(engine, command=command)
    eng.check(plan)
    all_seeds = list(seeds) if seeds is not None else plan.trial_seeds()
    result = RunResult(plan=plan)
    done: dict[str, TrialRecord] = {}
    if journal is not None:
        done = {r.key: r for r in journal.records}
    todo: list[int] = []
    for seed in all_seeds:
        key = eng.key(plan, seed)
        if key in done:
            result.records.append(done[key])
            result.skipped += 1
        else:
            todo.append(seed)
    workers = 1 if eng.in_process else max(1, jobs if jobs else (os.cpu_count() or 1))
    lock = threading.Lock()
    # Set before the run's children are killed on an interrupt: a trial that ends after
    # it was ended by us, not by the allocator, and must run again on --resume.
    stopping = threading.Event()
    # an allocator that hangs in every trial has the rest skipped, not each run into
    # its watchdog (harness.hangstop)
    hangs = HangStop()
    label = plan.target.label
    for record in result.records:
        hangs.note(label, plan.name, record)

    def one(seed: int) -> TrialRecord:
        with lock:
            why = hangs.why_skip(label, plan.name)
        if why is not None:  # never started: no trial_start line
            record = skipped_record(key=eng.key(plan, seed), plan=plan.name,
                                    plan_hash=plan.plan_hash(), seed=seed, target=label,
                                    driver=eng.name, why=why)
        else:
            if journal is not None:
                journal.start(eng.key(plan, seed), trial_identity(plan, seed, overrides,
                                                                  eng.name))
            record = eng.run(plan, seed, on_line=on_line, stop=stopping)
        if stopping.is_set():
            return record  # not journaled: the interrupt cut it short
        if journal is not None:
            journal.append(record)
        with lock:
            hangs.note(label, plan.name, record)
            result.records.append(record)
        if on_record is not None:
            on_record(record)
        return record

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trial")
    pending: set[Future[TrialRecord]] = set()

    def settle(limit: int) -> None:
        """Wait until at most ``limit`` trials are pending, re-raising a trial's error.

        Waits in short slices: Python runs a signal handler only between bytecodes, so
        a Ctrl-C or SIGTERM that lands just before the main thread blocks (or on another
        thread) would otherwise wait for the next trial to end, which for a hung trial
        is its watchdog, by when that trial had been judged and journaled."""
        nonlocal pending
        while len(pending) > limit:
            with interrupts.deferred():  # Ctrl-C raised in a lock's wait would break it
                finished, pending = wait(pending, timeout=SIGNAL_POLL_S,
                                         return_when=FIRST_COMPLETED)
            interrupts.raise_if_requested()
            for fut in finished:
                fut.result()

    try:
        for seed in todo:
            pending.add(pool.submit(one, seed))
            settle(workers * 2 - 1)
        settle(0)
    except BaseException:
        result.interrupted = True
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        kill_running_children()
        raise
    pool.shutdown(wait=True)
    order = {s: i for i, s in enumerate(all_seeds)}
    result.records.sort(key=lambda r: order.get(r.seed, len(order)))
    return result
