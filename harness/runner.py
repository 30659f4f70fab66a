"""Run a plan's trials: build each driver command line, supervise children in parallel,
judge each trial and stream its record into the journal.

Owns the worker-thread pool (one thread supervises one child at a time) and trial keys.
Must not print (callbacks report progress) and must not let one trial's crash or hang
end the run. Callbacks are invoked from worker threads.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness._isolate import LineCallback, kill_running_children, run_child
from harness.errors import DriverNotFound, DriverUsageError, UnsupportedFeature
from harness.journal import Journal
from harness.oracle import judge
from harness.plan import MallocTarget, NmmTarget, Plan
from harness.pydriver import PyDriver
from harness.records import Observation, TrialRecord, Verdict

RecordCallback = Callable[[TrialRecord], None]

#: longest the main thread blocks waiting for trials before it lets signal handlers run
SIGNAL_POLL_S = 0.1
#: tries at starting a trial's child when fork fails for want of processes or memory
SPAWN_ATTEMPTS = 6


def driver_command() -> list[str]:
    """The native driver's command (``[path]``), or ``DriverNotFound`` saying how to build it."""
    try:
        from harness import _driver
    except ImportError:
        _driver = None  # type: ignore[assignment]
    path: Any = None
    if _driver is not None and hasattr(_driver, "driver_path"):
        try:
            path = _driver.driver_path()
        except Exception as exc:  # the driver module's own "not built" error
            raise DriverNotFound(f"native driver not found: {exc}") from None
    if path is None:
        candidate = Path(__file__).resolve().parent / "_native" / "nmm-driver"
        path = candidate if candidate.exists() else None
    if path is None or not Path(path).exists():
        raise DriverNotFound("native driver harness/_native/nmm-driver is not built; "
                             "run `pip install -e .` (or `make run`) first")
    return [str(path)]


def trial_key(plan: Plan, seed: int, driver: str = "native") -> str:
    """The journal key of one trial: plan hash, seed and target (and the driver if not
    the native one)."""
    suffix = "" if driver == "native" else f":{driver}"
    return f"{plan.plan_hash()}:{seed}:{plan.target.label}{suffix}"


def driver_args(plan: Plan, seed: int) -> list[str]:
    """The ``run`` arguments the native driver needs for one trial of ``plan`` (PROTOCOL.md)."""
    w = plan.workload
    target = plan.target
    args = ["run"]
    if isinstance(target, NmmTarget):
        args += ["--target", "nmm", "--nmm-options", target.nmm_options()]
    else:
        args += _peer(target).driver_args()
    args += ["--seed", str(seed), "--threads", str(w.threads), "--ops", str(w.ops_per_worker),
             "--sizes", w.sizes_spec(), "--live", str(w.live), "--cross", repr(w.cross),
             "--thread-churn", str(w.thread_churn), "--fork-every", str(w.fork_every),
             "--progress-every", str(w.progress_every)]
    if w.worker_ops is not None:  # a replay: the counts a duration trial recorded
        args += ["--worker-ops", ",".join(str(n) for n in w.worker_ops)]
    elif w.duration_s is not None:
        args += ["--duration", repr(w.duration_s)]
    if not w.check:
        args.append("--no-check")
    for fault in plan.faults:
        args += ["--fault", fault.driver_arg(plan.total_ops)]
    return args


def replay_overrides(plan: Plan, record: TrialRecord) -> list[str]:
    """The ``--set`` overrides (beyond ``--seed``) that make a run of ``plan`` replay
    ``record`` op for op: for a ``duration_s`` trial, the op count each worker reached
    (``workload.worker_ops``); nothing for an ``ops`` trial, which replays from its seed.
    A timed trial that died before its result line has no counts to pin (empty)."""
    result = record.observation.result
    if not plan.workload.timed or result is None or not result.worker_ops:
        return []
    return ["workload.worker_ops=[" + ",".join(str(n) for n in result.worker_ops) + "]"]


def _peer(target: MallocTarget) -> Any:
    """The installed peer allocator a ``malloc:<peer>`` target names (harness._peers)."""
    from harness import _peers

    try:
        peer = _peers.get_target(target.peer)
    except KeyError as exc:
        raise UnsupportedFeature(f"target.peer: {exc.args[0]}") from None
    if peer.driver_target != "malloc":
        raise UnsupportedFeature(f"target.peer: {target.peer!r} is an NMM heap; use "
                                 "kind = \"nmm\" with a level instead")
    if not peer.installed:
        raise UnsupportedFeature(f"target.peer: {target.peer} is not installed "
                                 f"(looked for {peer.missing})")
    return peer


def _check_preload(target: MallocTarget) -> None:
    """``UnsupportedFeature`` if the peer's library does not load: ld.so would go on with
    glibc's malloc, and every trial would judge glibc under the peer's name."""
    from harness import _peers

    problem = _peers.preload_problem(_peer(target))
    if problem:
        raise UnsupportedFeature(f"target.peer: {target.peer}: {problem}")


def child_env(plan: Plan) -> dict[str, str]:
    """The child's environment: ours, minus anything that would change the allocator,
    plus a foreign target's ``LD_PRELOAD`` and settings, plus ``NMM_CHAOS_PARENT``
    (our pid: the driver dies with us if we are killed before we can kill it)."""
    env: dict[str, str]
    if isinstance(plan.target, MallocTarget):
        env = _peer(plan.target).child_env()
    else:
        env = {k: v for k, v in os.environ.items()
               if k not in ("NMM_OPTIONS", "LD_PRELOAD", "MALLOC_CHECK_", "MALLOC_CONF")}
    env["NMM_CHAOS_PARENT"] = str(os.getpid())
    return env


def run_trial(plan: Plan, seed: int, command: Sequence[str], *,
              on_line: LineCallback | None = None,
              stop: threading.Event | None = None) -> TrialRecord:
    """Run and judge one trial in a child process; never raises for what the child does.

    Setting ``stop`` (then calling ``kill_running_children``) ends the child early.
    """
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    argv = [*command, *driver_args(plan, seed)]
    env = child_env(plan)
    for attempt in range(SPAWN_ATTEMPTS):
        try:
            obs = run_child(argv, plan.timeout_s, env=env, on_line=on_line, stop=stop)
            break
        except OSError as exc:
            # fork fails with EAGAIN/ENOMEM while the machine is out of processes or
            # memory for a moment (another job's thread storm): that says nothing about
            # the allocator, so wait and try again before recording it
            if exc.errno in (errno.EAGAIN, errno.ENOMEM) and attempt + 1 < SPAWN_ATTEMPTS \
                    and not (stop is not None and stop.is_set()):
                time.sleep(0.05 * 2 ** attempt)
                continue
            obs = Observation(argv=tuple(argv), exit_code=127,
                              stderr_tail=f"cannot start the driver: {exc}")
            break
    return make_record(plan, seed, obs, started=started)


def run_python_trial_record(plan: Plan, seed: int) -> TrialRecord:
    """Run and judge one trial through the Python driver, in this process (no isolation)."""
    from harness.pydriver import run_python_trial

    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return make_record(plan, seed, run_python_trial(plan, seed), started=started,
                       driver="python")


def make_record(plan: Plan, seed: int, obs: Observation, *, started: str = "",
                driver: str = "native") -> TrialRecord:
    """Judge an observation and wrap it as the journal record of one trial."""
    try:
        verdict = judge(plan, obs)
    except Exception as exc:  # a harness bug must cost one trial, not the run
        verdict = Verdict(outcome="crashed", passed=False,
                          reasons=(f"oracle error (a harness bug): {type(exc).__name__}: {exc}",))
    ops = obs.result.ops if obs.result else int((obs.last_progress or {}).get("ops", 0) or 0)
    elapsed = (obs.result.elapsed_ns / 1e9 if obs.result and obs.result.elapsed_ns
               else obs.wall_s)
    return TrialRecord(key=trial_key(plan, seed, driver), plan=plan.name,
                       plan_hash=plan.plan_hash(), seed=seed, target=plan.target.label,
                       driver=driver, started_at=started,
                       observation=obs, verdict=verdict,
                       ops_per_s=round(ops / elapsed, 1) if elapsed > 0 else 0.0)


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


def check_runnable(plan: Plan, engine: str = "native") -> None:
    """Raise (``UnsupportedFeature``) for a valid plan this engine cannot run here: an
    unknown or missing peer, a feature the Python driver lacks. Runs nothing."""
    if engine not in ("native", "python"):
        raise UnsupportedFeature(f"engine {engine!r}: expected native or python")
    if engine == "native":
        driver_args(plan, plan.seed)
        child_env(plan)
        if isinstance(plan.target, MallocTarget):
            _check_preload(plan.target)
    else:
        PyDriver.check_plan(plan)


def run_plan(plan: Plan, *, seeds: Iterable[int] | None = None, jobs: int | None = None,
             command: Sequence[str] | None = None, journal: Journal | None = None,
             on_record: RecordCallback | None = None,
             on_line: LineCallback | None = None, engine: str = "native") -> RunResult:
    """Run every trial of ``plan`` (``seeds`` defaults to the plan's), ``jobs`` at a time.

    ``engine`` is ``native`` (each trial an isolated nmm-driver child) or ``python``
    (the Python driver, in this process, one trial at a time). Trials already in
    ``journal`` are skipped and their records reused. Checks the plan can run (driver
    present, supported features) before starting any child.
    """
    check_runnable(plan, engine)
    all_seeds = list(seeds) if seeds is not None else plan.trial_seeds()
    if engine == "native":
        command = list(command) if command is not None else driver_command()
    else:
        command = []
        jobs = 1
    result = RunResult(plan=plan)
    done: dict[str, TrialRecord] = {}
    if journal is not None:
        done = {r.key: r for r in journal.records}
    todo: list[int] = []
    for seed in all_seeds:
        key = trial_key(plan, seed, engine)
        if key in done:
            result.records.append(done[key])
            result.skipped += 1
        else:
            todo.append(seed)
    workers = max(1, jobs if jobs else (os.cpu_count() or 1))
    lock = threading.Lock()
    # Set before the run's children are killed on an interrupt: a trial that ends after
    # it was ended by us, not by the allocator, and must run again on --resume.
    stopping = threading.Event()

    def one(seed: int) -> TrialRecord:
        if engine == "python":
            record = run_python_trial_record(plan, seed)
        else:
            record = run_trial(plan, seed, command, on_line=on_line, stop=stopping)
            obs = record.observation
            if obs.exit_code == 2 and obs.start is None:
                said = [ln for ln in obs.stderr_tail.strip().splitlines() if ln.strip()]
                raise DriverUsageError("the driver rejected the trial's command line: "
                                       + " / ".join(said[:3] or ["(no message)"]))
        if stopping.is_set():
            return record  # not journaled: the interrupt cut it short
        if journal is not None:
            journal.append(record)
        with lock:
            result.records.append(record)
        if on_record is not None:
            on_record(record)
        return record

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="trial")
    pending: set[Future[TrialRecord]] = set()
    seeds_iter = iter(todo)

    def settle(limit: int) -> None:
        """Wait until at most ``limit`` trials are pending, re-raising a trial's error.

        Waits in short slices: Python runs a signal handler only between bytecodes, so
        a Ctrl-C or SIGTERM that lands just before the main thread blocks (or on another
        thread) would otherwise wait for the next trial to end, which for a hung trial
        is its watchdog, by when that trial had been judged and journaled."""
        nonlocal pending
        while len(pending) > limit:
            finished, pending = wait(pending, timeout=SIGNAL_POLL_S,
                                     return_when=FIRST_COMPLETED)
            for fut in finished:
                fut.result()

    try:
        for seed in seeds_iter:
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
