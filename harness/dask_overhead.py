"""Measure what a Dask campaign costs per trial against local worker processes.

    python -m harness.dask_overhead [--trials 40,160] [--workers 2] [--rounds 3]

Starts a Dask scheduler and ``--workers`` single-thread workers as separate processes on
this machine (as ``tests/harness/test_campaign_dask.py`` does), then runs the same
campaign of short trials (NMM at level standard, one thread, a few hundred ops: the
trial itself is cheap, so what is left is dispatch) through ``LocalPool`` and through
``DaskPool``, alternating, ``--rounds`` times for each trial count. No reports are
written: only ``run_campaign`` is timed (the pool's start is timed apart).

For each mode it prints the pool's start-up, the median wall time of each campaign, the
**per-trial cost** (the slope of wall time over the trial counts, so fixed costs such as
a client connecting drop out), and the **per-trial overhead** (slots x wall minus the
trials' own child wall time, over the trials: time a slot spent not running a trial);
then Dask minus local per trial. Wall-clock numbers: run it on a quiet machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: a trial that does almost nothing, so the campaign's own cost per trial shows
PLAN = """
schema_version = 1
name = "overhead"
seeds = 1
timeout_s = 60
[target]
level = "standard"
[workload]
threads = 1
ops = {ops}
progress_every = 100000
"""
#: longest wait for the cluster to come up
START_S = 120.0


@dataclass
class Sample:
    """One timed campaign: how many trials, its wall time, the trials' own wall time."""

    trials: int
    wall_s: float
    trial_wall_s: float


@dataclass
class Mode:
    """Everything measured for one way of running trials."""

    name: str
    slots: int
    start_s: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    def median_wall(self, trials: int) -> float:
        return statistics.median(s.wall_s for s in self.samples if s.trials == trials)

    def per_trial_slope(self, counts: Sequence[int]) -> float | None:
        """Seconds each extra trial adds (least squares over every sample)."""
        if len(set(counts)) < 2:
            return None
        xs = [float(s.trials) for s in self.samples]
        ys = [s.wall_s for s in self.samples]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        den = sum((x - mx) ** 2 for x in xs)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den

    def overhead_per_trial(self) -> float:
        """Median over samples of (slots x wall - the trials' own wall) / trials."""
        return statistics.median((self.slots * s.wall_s - s.trial_wall_s) / s.trials
                                 for s in self.samples)


class ClusterError(RuntimeError):
    """The Dask cluster did not come up."""


@contextmanager
def dask_cluster(workers: int, tmp: Path, env: Mapping[str, str] | None = None,
                 start_s: float = START_S) -> Iterator[str]:
    """A scheduler and ``workers`` single-thread workers, each its own process group
    (``env`` added to ours: Dask settings); yields the scheduler's address and stops and
    reaps them all on the way out (``ClusterError`` if the cluster did not come up).
    ``tests/harness/test_campaign_dask.py`` runs its cluster with this too."""
    info = tmp / "scheduler.json"
    child_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
             "start_new_session": True, "env": child_env, "cwd": tmp}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                               "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(info)], **quiet)]  # type: ignore[call-overload]
    try:
        deadline = time.monotonic() + start_s
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not info.exists():
            raise ClusterError(f"the Dask scheduler did not start in {start_s:.0f} s")
        for n in range(workers):
            procs.append(subprocess.Popen(  # type: ignore[call-overload]
                [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                 str(info), "--nthreads", "1", "--no-dashboard", "--name", f"w{n}",
                 "--local-directory", str(tmp / f"w{n}")], **quiet))
        address = str(json.loads(info.read_text())["address"])
        from distributed import Client

        with Client(address, timeout=start_s) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(workers, timeout=start_s)
        yield address
    finally:
        stop_groups(procs)


def stop_groups(procs: Sequence[subprocess.Popen[bytes]], grace_s: float = 30.0) -> None:
    """SIGTERM each process's group (newest first), give them ``grace_s`` each to exit,
    SIGKILL the groups of those that did not, and reap every one (no zombie is left)."""
    for proc in reversed(procs):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def timed_campaign(plan_path: Path, trials: int, pool_factory: object, out: Path,
                   mode: Mode) -> None:
    """Run one campaign of ``trials`` seeds on a fresh pool; record its times."""
    from harness.campaign import define, run_campaign
    from harness.journal import JOURNAL_NAME, Journal

    defn = define([plan_path], seeds=trials, targets=("plan",))
    out.mkdir(parents=True)
    journal = Journal(out / JOURNAL_NAME)
    t0 = time.perf_counter()
    with pool_factory() as pool:  # type: ignore[operator]
        t1 = time.perf_counter()
        result = run_campaign(defn, journal, pool)
        t2 = time.perf_counter()
    bad = [r for r in result.records if r.verdict.outcome == "infra-failure"]
    if len(result.records) != trials or bad:
        raise SystemExit(f"{mode.name}: {len(result.records)} of {trials} trials recorded, "
                         f"{len(bad)} infrastructure failures: not a measurement")
    mode.start_s.append(t1 - t0)
    mode.samples.append(Sample(trials, t2 - t1,
                               sum(r.observation.wall_s for r in result.records)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.dask_overhead",
        description="Per-trial cost of a Dask campaign against local worker processes "
                    "(run on a quiet machine).")
    parser.add_argument("--trials", default="40,160",
                        help="trial counts per campaign, comma-separated (default 40,160)")
    parser.add_argument("--workers", type=int, default=2, help="slots in each mode (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="campaigns per count and mode")
    parser.add_argument("--ops", type=int, default=200, help="ops per trial (default 200)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.trials.split(",") if n.strip()]
    if not counts or min(counts) < 1 or args.workers < 1 or args.rounds < 1:
        parser.error("--trials, --workers and --rounds must be positive")

    from harness._dask import DaskPool
    from harness._workers import LocalPool

    local = Mode("local", args.workers)
    dask = Mode("dask", args.workers)
    with tempfile.TemporaryDirectory(prefix="nmm-dask-overhead-") as tmp_s:
        tmp = Path(tmp_s)
        plan = tmp / "overhead.toml"
        plan.write_text(PLAN.format(ops=args.ops))
        try:
            with dask_cluster(args.workers, tmp) as address:
                runs = 0
                for r in range(args.rounds):
                    for n in counts:
                        for mode, factory in ((local, lambda: LocalPool(args.workers)),
                                              (dask, lambda: DaskPool(address))):
                            runs += 1
                            timed_campaign(plan, n, factory, tmp / f"c{runs}", mode)
                            print(f"round {r + 1}/{args.rounds} {mode.name:5} {n:5} trials: "
                                  f"{mode.samples[-1].wall_s:7.2f} s", file=sys.stderr)
        except ClusterError as exc:
            raise SystemExit(str(exc)) from None
    print(f"{'mode':6} {'start s':>8} " + " ".join(f"{f'wall {n}':>10}" for n in counts)
          + f" {'s/trial':>9} {'overhead/trial':>15}")
    for mode in (local, dask):
        slope = mode.per_trial_slope(counts)
        print(f"{mode.name:6} {statistics.median(mode.start_s):8.2f} "
              + " ".join(f"{mode.median_wall(n):10.2f}" for n in counts)
              + f" {slope * 1e3 if slope is not None else float('nan'):7.1f}ms"
              + f" {mode.overhead_per_trial() * 1e3:13.1f}ms")
    ls, ds = local.per_trial_slope(counts), dask.per_trial_slope(counts)
    if ls is not None and ds is not None:
        print(f"dask - local per trial: {(ds - ls) * 1e3:+.1f} ms (slope of wall time over "
              f"{', '.join(map(str, counts))} trials, {args.workers} slots each); overhead "
              f"difference: {(dask.overhead_per_trial() - local.overhead_per_trial()) * 1e3:+.1f}"
              " ms per trial")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
