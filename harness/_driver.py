"""The native driver ``nmm-driver``: where it is and its command lines (PROTOCOL.md).

``driver_path()`` finds the executable that ``pip install -e .`` builds
(``$NMM_CHAOS_DRIVER`` overrides it) and ``driver_command()`` is the argv prefix every
caller uses; ``driver_args()`` builds the ``run`` command line of one trial of a plan,
``bench_argv()`` the ``bench`` one of a kernel. Children are started, watched and killed
by ``harness._isolate`` only. Nothing here prints.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness._peers import Target, resolve_target
from harness.errors import DriverNotFound
from harness.plan import NmmTarget, Plan

#: Overrides where the driver is looked for (a path to an ``nmm-driver`` executable).
DRIVER_ENV = "NMM_CHAOS_DRIVER"
#: The same for the chaos build's driver (controlled schedulers, mutants).
CHAOS_DRIVER_ENV = "NMM_CHAOS_CHAOS_DRIVER"

_DEFAULT = Path(__file__).resolve().parent / "_native" / "nmm-driver"
_DEFAULT_CHAOS = _DEFAULT.with_name("nmm-driver_chaos")


def default_driver_path() -> Path:
    """Where ``pip install -e .`` puts the driver: ``harness/_native/nmm-driver``."""
    return _DEFAULT


def driver_path(*, chaos: bool = False) -> Path:
    """The driver executable: ``$NMM_CHAOS_DRIVER`` if set, else the built one; with
    ``chaos`` the chaos build's (``$NMM_CHAOS_CHAOS_DRIVER``, else ``nmm-driver_chaos``).

    Raises ``DriverNotFound`` naming the path and how to build it.
    """
    env, default = (CHAOS_DRIVER_ENV, _DEFAULT_CHAOS) if chaos else (DRIVER_ENV, _DEFAULT)
    override = os.environ.get(env)
    path = Path(override) if override else default
    if not path.is_file() or not os.access(path, os.X_OK):
        how = (f"${env} points at it" if override
               else "run `pip install -e .` (or `make run`) to build it")
        what = "the chaos build's driver" if chaos else "native driver"
        raise DriverNotFound(f"{what} not found at {path}; {how}")
    return path


def driver_command(*, chaos: bool = False) -> list[str]:
    """The driver's command (``[path]``), or ``DriverNotFound`` saying how to build it;
    ``chaos``: the chaos build's driver (a controlled scheduler, a mutant)."""
    return [str(driver_path(chaos=chaos))]


def driver_env(target: Target) -> dict[str, str]:
    """A driver child's environment: ours, minus anything that would change the allocator,
    plus ``target``'s ``LD_PRELOAD`` and settings, plus ``NMM_CHAOS_PARENT`` (our pid: the
    driver dies with us if we are killed before we can kill it)."""
    env = target.child_env()
    env["NMM_CHAOS_PARENT"] = str(os.getpid())
    return env


def driver_args(plan: Plan, seed: int, target: Target | None = None) -> list[str]:
    """The ``run`` arguments of one trial of ``plan`` (PROTOCOL.md), against ``target``
    (default: the plan's own, resolved; ``UnsupportedFeature`` if it cannot be)."""
    w = plan.workload
    args = ["run", *(target or resolve_target(plan.target)).driver_args()]
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
    # the driver's defaults are the plan's: only what a plan changes is on the line
    for option, value, default in (("--realloc", w.realloc, 0.05), ("--calloc", w.calloc, 0.04),
                                   ("--aligned", w.aligned, 0.04),
                                   ("--calloc-count", w.calloc_count, 1),
                                   ("--edge-every", w.edge_every, 0)):
        if value != default:
            args += [option, repr(value)]
    if w.exit_leaks and isinstance(plan.target, NmmTarget):  # the default NMM heap's report
        args += ["--exit-leaks", str(w.exit_leaks)]
        if w.bad_options:
            args += ["--bad-options", ":".join(w.bad_options)]
        if w.exit_damage:
            args.append("--exit-damage")
        if w.exit_held:
            args += ["--exit-held", str(w.exit_held)]
        if w.exit_symbolizer is not None:
            args += ["--exit-symbolizer", w.exit_symbolizer]
    for fault in plan.faults:
        args += ["--fault", fault.driver_arg(plan.total_ops)]
    return args + plan.scheduler.driver_args()


def bench_argv(kernel: str, target: Target, *, threads: int | None = None,
               ops: int | None = None, repeat: int | None = None,
               driver: Path | None = None) -> list[str]:
    """``nmm-driver bench KERNEL`` for ``target``; None leaves the kernel's default."""
    argv = [str(driver or driver_path()), "bench", kernel, *target.driver_args()]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if ops is not None:
        argv += ["--ops", str(ops)]
    if repeat is not None:
        argv += ["--repeat", str(repeat)]
    return argv
