"""Engines: how one trial of a plan runs and becomes a judged journal record.

An ``Engine`` is a small strategy object. ``check`` refuses a plan it cannot run, before
anything starts; ``run`` runs one (plan, seed) and returns its ``TrialRecord``; ``key``
names the trial in a journal; ``options`` are the command-line options that select it
again (resume and replay commands); ``spec`` rebuilds it in a worker process. Built in:
``native`` (each trial an isolated nmm-driver child, watched and killed by
``harness._isolate``) and ``python`` (the Python driver in the calling process: no
isolation, one trial at a time). Other engines (the chaos build) add themselves with
``register_engine``. Callers never test an engine's name. Nothing here prints.
"""

from __future__ import annotations

import abc
import datetime as _dt
import errno
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from harness._driver import driver_args, driver_command, driver_env
from harness._isolate import LineCallback, run_child
from harness._peers import Target, preload_problem, resolve_target
from harness.errors import DriverUsageError, UnsupportedFeature
from harness.oracle import judge
from harness.plan import Plan
from harness.records import Observation, TrialRecord, Verdict
from harness.reportlogs import is_nmm_preload, read_report_logs, with_log

#: tries at starting a trial's child when fork fails for want of processes or memory
SPAWN_ATTEMPTS = 6


def trial_key(plan: Plan, seed: int, driver: str = "native") -> str:
    """The journal key of one trial: plan hash, seed and target (and the engine if not
    the native one)."""
    suffix = "" if driver == "native" else f":{driver}"
    return f"{plan.plan_hash()}:{seed}:{plan.target.label}{suffix}"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


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


class Engine(abc.ABC):
    """How trials run. Subclasses set ``name`` and implement ``check`` and ``run``."""

    #: the ``--engine`` name, and the journal key's suffix (none for ``native``)
    name: ClassVar[str]
    #: trials run inside the calling process: one at a time, and no isolation from it
    in_process: ClassVar[bool] = False

    @abc.abstractmethod
    def check(self, plan: Plan) -> None:
        """Raise (``UnsupportedFeature``, ``DriverNotFound``) for a valid plan this engine
        cannot run here. Runs nothing."""

    @abc.abstractmethod
    def run(self, plan: Plan, seed: int, *, on_line: LineCallback | None = None,
            stop: threading.Event | None = None) -> TrialRecord:
        """Run and judge one trial. Never raises for what the trial does; raises
        ``DriverUsageError`` when the engine's own command line is refused (a harness or
        plan problem every trial would share). ``stop``, once set (then
        ``kill_running_children``), ends an isolated trial early."""

    def key(self, plan: Plan, seed: int) -> str:
        """The journal key of the trial ``run(plan, seed)`` records."""
        return trial_key(plan, seed, self.name)

    def options(self) -> list[str]:
        """The ``nmm-chaos run`` options that select this engine as configured."""
        return ["--engine", self.name]

    def spec(self) -> dict[str, Any]:
        """What ``engine_from_spec`` needs to rebuild this engine in a worker (JSON)."""
        return {"name": self.name}


class NativeEngine(Engine):
    """Each trial an isolated ``nmm-driver`` child under a watchdog (PROTOCOL.md).
    ``command`` replaces the built driver (``--driver``); a chaos engine overrides
    ``command``, ``argv`` or ``env``."""

    name = "native"

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._command = list(command) if command else None
        self.custom_command = self._command is not None

    @property
    def command(self) -> list[str]:
        """The driver's argv prefix (found on first use; ``DriverNotFound`` if missing)."""
        if self._command is None:
            self._command = driver_command()
        return self._command

    def command_for(self, plan: Plan) -> list[str]:
        """The driver for ``plan``: the chaos build's when it needs a controlled scheduler
        or a mutant (unless a driver was named)."""
        if plan.needs_chaos_build and not self.custom_command:
            return driver_command(chaos=True)
        return self.command

    def target(self, plan: Plan) -> Target:
        """The runnable target of ``plan`` (``UnsupportedFeature`` if it cannot be)."""
        return resolve_target(plan.target)

    def argv(self, plan: Plan, seed: int) -> list[str]:
        """The child's whole command line for one trial."""
        return [*self.command_for(plan), *driver_args(plan, seed, self.target(plan))]

    def env(self, plan: Plan) -> dict[str, str]:
        """The child's environment (``harness._driver.driver_env`` of the plan's target)."""
        return driver_env(self.target(plan))

    def check(self, plan: Plan) -> None:
        target = self.target(plan)
        self.argv(plan, plan.seed)
        problem = preload_problem(target)
        if problem:
            key, name = (("target.path", plan.target.path) if plan.target.kind == "lib"
                         else ("target.peer", getattr(plan.target, "peer", target.name)))
            raise UnsupportedFeature(f"{key}: {name}: {problem}")

    def reports_to_log(self, plan: Plan) -> bool:
        """Whether NMM runs in the trial's child and its reports should go to a log the
        harness reads: an NMM heap in the driver, or NMM's malloc replacement preloaded."""
        target = self.target(plan)
        return target.is_nmm_heap or any(is_nmm_preload(lib) for lib in target.preload)

    def run(self, plan: Plan, seed: int, *, on_line: LineCallback | None = None,
            stop: threading.Event | None = None) -> TrialRecord:
        started = _now()
        argv = self.argv(plan, seed)
        env = self.env(plan)
        if not self.reports_to_log(plan):
            return self._run(plan, seed, argv, env, started, on_line, stop)
        # the trial's directory: NMM's JSON report logs (one file per process), read
        # into the record once the child is gone, then removed with the directory
        with tempfile.TemporaryDirectory(prefix="nmm-trial-") as tmp:
            record = self._run(plan, seed, argv, with_log(env, Path(tmp)), started, on_line,
                               stop, log_dir=Path(tmp))
        return record

    def _run(self, plan: Plan, seed: int, argv: list[str], env: dict[str, str], started: str,
             on_line: LineCallback | None, stop: threading.Event | None,
             log_dir: Path | None = None) -> TrialRecord:
        obs = Observation(argv=tuple(argv), exit_code=127, stderr_tail="the driver never ran")
        for attempt in range(SPAWN_ATTEMPTS):
            try:
                obs = run_child(argv, plan.timeout_s, env=env, on_line=on_line, stop=stop,
                                stall_s=plan.hang_s)
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
        if obs.exit_code == 2 and obs.start is None:
            said = [ln for ln in obs.stderr_tail.strip().splitlines() if ln.strip()]
            raise DriverUsageError("the driver rejected the trial's command line: "
                                   + " / ".join(said[:3] or ["(no message)"]))
        if log_dir is not None:
            obs = obs.model_copy(update={"report_log": read_report_logs(log_dir)})
        return make_record(plan, seed, obs, started=started, driver=self.name)

    def options(self) -> list[str]:
        import shlex

        return ["--driver", shlex.join(self.command)] if self.custom_command else []

    def spec(self) -> dict[str, Any]:
        # a worker elsewhere finds its own built driver unless one was named
        return {"name": self.name, "command": self._command if self.custom_command else None}


class PythonEngine(Engine):
    """The Python driver (``harness.pydriver``) in the calling process: slow, easy to
    extend, no isolation (a crash ends the caller), one trial at a time."""

    name = "python"
    in_process = True

    def __init__(self, command: Sequence[str] | None = None) -> None:
        if command:
            raise UnsupportedFeature("--driver: the python engine runs no driver; give "
                                     "--driver with --engine native (the default)")

    def check(self, plan: Plan) -> None:
        from harness.pydriver import PyDriver

        PyDriver.check_plan(plan)

    def run(self, plan: Plan, seed: int, *, on_line: LineCallback | None = None,
            stop: threading.Event | None = None) -> TrialRecord:
        from harness.pydriver import run_python_trial

        started = _now()
        return make_record(plan, seed, run_python_trial(plan, seed), started=started,
                           driver=self.name)


EngineFactory = Callable[..., Engine]

_ENGINES: dict[str, EngineFactory] = {"native": NativeEngine, "python": PythonEngine}


def register_engine(name: str, factory: EngineFactory) -> None:
    """Make ``--engine NAME`` build engines with ``factory(**spec-without-name)``."""
    _ENGINES[name] = factory


def engine_names() -> tuple[str, ...]:
    """Every ``--engine`` name, built-in first."""
    return tuple(_ENGINES)


def get_engine(engine: str | Engine = "native", *,
               command: Sequence[str] | None = None) -> Engine:
    """The engine called ``engine`` (an ``Engine`` is returned as is); ``command`` is a
    driver command for engines that run one. ``UnsupportedFeature`` for an unknown name."""
    if isinstance(engine, Engine):
        return engine
    factory = _ENGINES.get(engine)
    if factory is None:
        raise UnsupportedFeature(f"engine {engine!r}: expected one of "
                                 f"{', '.join(engine_names())}")
    return factory(command=command) if command else factory()


def engine_from_spec(spec: dict[str, Any]) -> Engine:
    """Rebuild an engine from its ``spec()`` (in a worker process)."""
    rest = {k: v for k, v in spec.items() if k != "name" and v is not None}
    factory = _ENGINES.get(str(spec.get("name")))
    if factory is None:
        raise UnsupportedFeature(f"engine {spec.get('name')!r}: expected one of "
                                 f"{', '.join(engine_names())}")
    return factory(**rest)


def run_trial(plan: Plan, seed: int, command: Sequence[str], *,
              on_line: LineCallback | None = None,
              stop: threading.Event | None = None) -> TrialRecord:
    """Run and judge one trial of ``plan`` in an isolated child of ``command`` (the native
    engine with that driver)."""
    return NativeEngine(command).run(plan, seed, on_line=on_line, stop=stop)
