"""``nmm-chaos bench``: every benchmark kernel against every target, side by side, in one run.

Each (kernel, target) is one child process of the native driver (peers under
``LD_PRELOAD``); results are shown as a table with ratios against glibc and written
as JSON and Markdown under ``reports/bench-<timestamp>/``. The kernels are the
driver's (``pair64``, ``churn``, ``cross``, ``overhead64``, ``peak_rss``) plus
``driver``: the chaos trial workload with pattern checks versus ``--no-check``, and
real programs under the preload targets (``sqlite``, ``python``, ``git``: a
repository built commit by commit, its head commit and log checked against glibc's, and
``gcc``: generated C files compiled at -O2 and linked, the program's output checked).
A target whose ``NMM_OPTIONS`` turn tracking on writes its leak reports under the
kernel's temporary directory (``log_path``), not into the measured programs' stderr.
A missing peer is listed as not installed; a kernel that crashes is reported, not raised.
``python -m harness.bench`` runs it standalone.

The headline figure of a cell is the **median** of its runs, with the min–max spread
beside it: with several threads an allocator can be fast in one run and half as fast
in the next, and the best run hides that. A kernel's repeats go round the targets.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from harness._driver import bench_argv, driver_args, driver_env, driver_path
from harness._isolate import run_child, run_program
from harness._peers import BASELINE, Target, all_targets, preload_problem
from harness.records import Observation

SCHEMA_VERSION = 2  # 2: value is the median of the runs; low/high their spread


@dataclass(frozen=True)
class Kernel:
    """One benchmark column: a driver kernel with its threads and op counts."""

    name: str
    title: str
    unit: str
    higher_is_better: bool
    driver_kernel: str  # "driver" = the trial workload, checked vs --no-check
    threads: int | None
    ops: int
    quick_ops: int
    description: str
    program: str = ""  # driver_kernel "program": a real program timed under the target


KERNELS: tuple[Kernel, ...] = (
    Kernel("pair64", "pair64", "ns/pair", False, "pair64", None, 10_000_000, 2_000_000,
           "malloc(64)+free pairs, 1 thread, median of 5"),
    Kernel("churn1", "churn 1T", "Mops/s", True, "churn", 1, 2_000_000, 300_000,
           "16 B-64 KiB log-uniform over a 1000-block working set, 1 thread"),
    Kernel("churn2", "churn 2T", "Mops/s", True, "churn", 2, 2_000_000, 300_000,
           "the same churn on 2 threads"),
    Kernel("cross", "cross 2T", "Mops/s", True, "cross", None, 2_000_000, 300_000,
           "one thread allocates 16 B-1 KiB blocks, another frees them"),
    Kernel("ws1", "workset 1T", "Mops/s", True, "workset", 1, 2_000_000, 300_000,
           "1024 live blocks of 4 B-32 KiB (density 1/size), a random one replaced per "
           "iteration, 1 thread"),
    Kernel("ws2", "workset 2T", "Mops/s", True, "workset", 2, 2_000_000, 300_000,
           "the same working set on each of 2 threads"),
    Kernel("larson", "larson 4T", "Mops/s", True, "larson", 4, 2_000_000, 400_000,
           "larson-style server: 4 arrays of 1000 blocks (16 B-1 KiB), each worked by 50 "
           "short-lived threads in turn, freeing what their predecessors allocated"),
    Kernel("prodcons", "prodcons 3P1C", "Mops/s", True, "prodcons", 4, 2_000_000, 400_000,
           "3 producers allocate 16 B-1 KiB blocks, one consumer frees them all"),
    Kernel("threadchurn", "thread churn", "MiB", False, "threadchurn", 8, 10_000, 2_000,
           "RSS growth after 10,000 thread lifetimes (8 at a time, started together; each "
           "replaces 256 blocks of 16 B-4 KiB and frees all); one_thread_bytes: after the "
           "first alone, first_wave_bytes: after the first 8"),
    Kernel("oversub8", "oversub 8T", "Mops/s", True, "oversub", 8, 200_000, 40_000,
           "8 threads (64 live blocks of 16 B-1 KiB each), 200k ops each, on this machine's "
           "cores; timed: the ops alone (threads made before, exiting after)"),
    Kernel("oversub64", "oversub 64T", "Mops/s", True, "oversub", 64, 200_000, 40_000,
           "the same on 64 threads (the same ops per thread)"),
    Kernel("oversub1024", "oversub 1024T", "Mops/s", True, "oversub", 1024, 200_000,
           40_000, "the same on 1024 threads (the same ops per thread)"),
    Kernel("overhead64", "overhead64", "B/block", False, "overhead64", None, 1_000_000,
           200_000, "RSS growth per live 64-byte block, minus 64"),
    Kernel("peak_rss", "peak RSS", "MiB", False, "peak_rss", 2, 2_000_000, 300_000,
           "peak RSS growth of the 2-thread churn"),
    Kernel("driver", "driver 2T", "Mops/s", True, "driver", 2, 1_000_000, 200_000,
           "chaos trial workload with pattern checks, 2 threads (overhead vs --no-check)"),
    Kernel("sqlite", "sqlite3", "ms", False, "program", None, 100_000, 20_000,
           "sqlite3 CLI inserting, indexing and querying N rows (wall time; preload targets)",
           program="sqlite"),
    Kernel("python", "python3", "ms", False, "program", None, 100_000, 20_000,
           "python3 json, re and sqlite3 over N records (wall time; preload targets)",
           program="python"),
    Kernel("pydriver", "pydriver 2W", "kops/s", True, "pydriver", 2, 400_000, 100_000,
           "the Python driver in-process: one op per binding call, pattern checks, "
           "2 workers (NMM heaps)"),
    Kernel("git", "git", "ms", False, "git", None, 12, 6,
           "git init, then N commits of a ~100-file tree (edits, adds, deletes), log -p, "
           "gc and fsck (wall time of the git commands; preload targets)"),
    Kernel("gcc", "gcc", "ms", False, "gcc", None, 6, 3,
           "gcc -O2 compiling N generated C files (structs, macros, loops, switch "
           "tables) and linking them; the program's output checked against glibc's "
           "(wall time of the gcc commands; preload targets)"),
)

_SQLITE_SCRIPT = """CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c REAL);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {rows})
INSERT INTO t SELECT x, printf('row-%08d-%s', x, hex(x * 7919)), x * 0.5 FROM n;
CREATE INDEX tb ON t(b);
SELECT count(*), sum(length(b)), max(c) FROM t WHERE b LIKE 'row-0%5-%';
SELECT count(*) FROM t AS p JOIN t AS q ON p.a = q.a + 1 WHERE p.c > 100;
"""

_PYTHON_SCRIPT = """
import json, re, sqlite3
docs = [{{"id": i, "name": f"item-{{i}}", "tags": [str(j) for j in range(i % 7)], "v": i / 4}}
        for i in range({rows})]
text = json.dumps(docs)
back = json.loads(text)
words = re.findall(r"item-(\\d+)", text)
db = sqlite3.connect(":memory:")
db.execute("create table t(id integer, name text)")
db.executemany("insert into t values (?, ?)", ((d["id"], d["name"]) for d in back))
print(len(text), len(words), db.execute("select count(*), sum(length(name)) from t").fetchone())
"""

_SCALE = {"ops/s": 1e-6, "bytes": 1.0 / (1 << 20)}  # driver unit -> display unit


@dataclass(frozen=True)
class Cell:
    """One (kernel, target) measurement: the median over the runs (``low``–``high``
    their spread), or an error."""

    kernel: str
    target: str
    value: float | None
    unit: str
    runs: tuple[float, ...] = ()
    ratio_vs_glibc: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class BenchReport:
    """A whole benchmark run."""

    created: str
    quick: bool
    repeat: int
    driver: str
    host: dict[str, Any]
    kernels: tuple[Kernel, ...]
    targets: tuple[Target, ...]
    cells: tuple[Cell, ...]

    def cell(self, kernel: str, target: str) -> Cell | None:
        """The cell for (kernel, target), if it was run."""
        for c in self.cells:
            if c.kernel == kernel and c.target == target:
                return c
        return None

    def to_json(self) -> dict[str, Any]:
        """The versioned JSON document."""
        return {
            "schema": SCHEMA_VERSION, "kind": "nmm-chaos-bench", "created": self.created,
            "quick": self.quick, "repeat": self.repeat, "driver": self.driver,
            "host": self.host, "baseline": BASELINE,
            "kernels": [asdict(k) for k in self.kernels],
            "targets": [{"name": t.name, "description": t.description,
                         "installed": t.installed, "missing": t.missing,
                         "driver_target": t.driver_target, "nmm_options": t.nmm_options,
                         "preload": list(t.preload), "env": dict(t.env)}
                        for t in self.targets],
            "results": [asdict(c) for c in self.cells],
        }


def select(names: str | None, known: Sequence[str], what: str) -> list[str]:
    """Split a comma list and check every name (None: all of ``known``); ``ValueError``
    names the bad one, or says the list is empty."""
    if names is None:
        return list(known)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    if not chosen:
        raise ValueError(f"given {names!r}; expected a comma-separated list of {what}s "
                         f"({', '.join(known)})")
    for n in chosen:
        if n not in known:
            raise ValueError(f"unknown {what} {n!r}; expected one of {', '.join(known)}")
    return chosen


def _ops(kernel: Kernel, target: Target, quick: bool) -> int:
    ops = max(1000, int((kernel.quick_ops if quick else kernel.ops) * target.scale))
    return min(ops, target.max_ops) if target.max_ops else ops


def _failure(obs: Observation) -> str:
    """One line saying why a driver child did not finish cleanly."""
    if obs.timed_out:
        return "timeout"
    how = f"killed by signal {obs.signal}" if obs.signal else f"exit {obs.exit_code}"
    last = (obs.stderr_tail.strip().splitlines() or [""])[-1]
    return f"{how}: {last}" if last else how


def _run_driver(argv: list[str], target: Target, timeout_s: float,
                bench_lines: list[dict[str, Any]] | None = None) -> Observation:
    """One driver child under the trial watchdog (its whole group killed on timeout), not
    sampled (the parent stays idle while it is measured); ``bench`` lines are collected
    into ``bench_lines``."""

    def keep(line: dict[str, Any]) -> None:
        if bench_lines is not None and line.get("type") == "bench":
            bench_lines.append(line)

    return run_child(argv, timeout_s, env=driver_env(target), on_line=keep,
                     sample_interval_s=None)


def _bench_plan(threads: int, ops: int, check: bool) -> Any:
    """The fault-free trial plan of the ``driver`` kernel: the driver's default sizes,
    1000 live slots per worker, one progress line per worker."""
    from harness.plan import Plan

    return Plan.model_validate({"schema_version": 1, "workload": {
        "threads": threads, "ops": ops, "live": 1000, "progress_every": ops, "check": check}})


def _measure_driver(kernel: Kernel, target: Target, quick: bool, timeout_s: float,
                    driver: Path) -> Cell:
    """The trial workload with pattern checks vs the same with --no-check."""
    ops = _ops(kernel, target, quick)
    rates: dict[str, float] = {}
    cpu_rates: dict[str, float] = {}
    extra: dict[str, Any] = {}
    for label, check in (("checked", True), ("bare", False)):
        plan = _bench_plan(kernel.threads or 2, ops, check)
        obs = _run_driver([str(driver), *driver_args(plan, 1, target)], target, timeout_s)
        result = obs.result
        if obs.exit_code != 0 or result is None:
            return Cell(kernel.name, target.name, None, kernel.unit,
                        error=f"{label}: {_failure(obs)}")
        rates[label] = float(result.ops) * 1e9 / max(1, result.elapsed_ns)
        cpu_rates[label] = float(result.ops) * 1e9 / max(1, result.cpu_ns or 1)
        if label == "checked":
            extra["pattern_errors"] = result.pattern_errors
            extra["latency_ns"] = result.latency_ns
    extra["bare_mops"] = round(rates["bare"] * 1e-6, 3)
    extra["overhead"] = round(rates["bare"] / rates["checked"] - 1.0, 4)
    # CPU-time rates do not depend on what else the machine is running.
    extra["checked_mops_per_cpu_s"] = round(cpu_rates["checked"] * 1e-6, 3)
    extra["bare_mops_per_cpu_s"] = round(cpu_rates["bare"] * 1e-6, 3)
    extra["cpu_overhead"] = round(cpu_rates["bare"] / cpu_rates["checked"] - 1.0, 4)
    value = rates["checked"] * 1e-6
    return Cell(kernel.name, target.name, value, kernel.unit, (value,), extra=extra)


def _program_argv(program: str, rows: int) -> tuple[list[str], str]:
    """The command line and stdin of a real-program kernel."""
    if program == "sqlite":
        return ["sqlite3", ":memory:"], _SQLITE_SCRIPT.format(rows=rows)
    return [sys.executable, "-I", "-S", "-c", _PYTHON_SCRIPT.format(rows=rows)], ""


@functools.cache
def _reference_output(program: str, rows: int) -> str:
    """What the program prints under glibc (every target must print the same)."""
    argv, stdin = _program_argv(program, rows)
    env = Target(BASELINE, "", "malloc").child_env()
    return run_program(argv, 600, env=env, input=stdin).stdout


def _measure_program(kernel: Kernel, target: Target, quick: bool, timeout_s: float,
                     driver: Path) -> Cell:
    """Wall time of a real program with the target as its malloc (preload targets only)."""
    if target.is_nmm_heap:
        return Cell(kernel.name, target.name, None, kernel.unit,
                    extra={"note": "n/a: an NMM heap inside the driver; see nmm-preload*"})
    # The same rows for every target (wall times are compared), except where a peer
    # cannot hold that many blocks (its cell then has no ratio).
    rows = kernel.quick_ops if quick else kernel.ops
    if target.max_ops:
        rows = min(rows, target.max_ops)
    argv, stdin = _program_argv(kernel.program, rows)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nmm-bench-program-") as tmp:
        env = kernel_env(target, Path(tmp))
        t0 = time.perf_counter()
        try:
            proc = run_program(argv, timeout_s, env=env, input=stdin)
        except OSError as exc:
            return Cell(kernel.name, target.name, None, kernel.unit,
                        error=f"cannot run: {exc}")
        ms = (time.perf_counter() - t0) * 1e3
    if proc.timed_out or proc.returncode != 0:
        return Cell(kernel.name, target.name, None, kernel.unit, error=proc.failure())
    if proc.stdout != _reference_output(kernel.program, rows):
        return Cell(kernel.name, target.name, None, kernel.unit,
                    error="output differs from glibc's")
    return Cell(kernel.name, target.name, ms, kernel.unit, (ms,), extra={"rows": rows})


def _measure_pydriver(kernel: Kernel, target: Target, quick: bool, timeout_s: float,
                      driver: Path) -> Cell:
    """The Python driver (``harness.pydriver``) run in this process on a fault-free trial
    (plan defaults: 16 B-1 KiB, 1000 live slots per worker): checked ops per second,
    alloc, free and realloc each one op through the binding. NMM heap targets only; it runs
    in-process, so ``timeout_s`` does not apply."""
    if not target.is_nmm_heap:
        return Cell(kernel.name, target.name, None, kernel.unit,
                    extra={"note": "n/a: the Python driver drives NMM heaps only"})
    from harness.plan import Plan
    from harness.pydriver import PyDriver

    options = dict(pair.split("=", 1) for pair in target.nmm_options.split(":") if pair)
    level = options.pop("level", "off")
    options.pop("policy", None)
    workers = kernel.threads or 2
    ops = max(1, _ops(kernel, target, quick) // workers)
    plan = Plan.model_validate({"schema_version": 1,
                                "target": {"level": level, "options": options},
                                "workload": {"threads": workers, "ops": ops}})
    try:
        pydriver = PyDriver(plan, 1)
        cpu0 = time.process_time_ns()
        result = pydriver.run().result
        cpu_ns = time.process_time_ns() - cpu0
    except Exception as exc:  # a broken driver is a bad cell, not a crashed bench
        return Cell(kernel.name, target.name, None, kernel.unit,
                    error=f"{type(exc).__name__}: {exc}")
    if result is None:
        return Cell(kernel.name, target.name, None, kernel.unit, error="no result")
    if result.pattern_errors or result.unexpected_status or result.validate_problems:
        return Cell(kernel.name, target.name, None, kernel.unit,
                    error=f"unclean trial: {result.pattern_errors} pattern errors, "
                          f"{result.unexpected_status} unexpected statuses, "
                          f"{result.validate_problems} validate problems")
    value = result.ops * 1e6 / max(1, result.elapsed_ns)  # k ops/s
    extra = {"ops": result.ops, "level": level,
             "kops_per_cpu_s": round(result.ops * 1e6 / max(1, cpu_ns), 1)}
    return Cell(kernel.name, target.name, value, kernel.unit, (value,), extra=extra)
# ------------------------------------------------------------------ git kernel

#: git's environment for the kernel: a fixed identity and clock (so every commit id is
#: a pure function of the work, and must equal glibc's), no user or system config.
_GIT_ENV: dict[str, str] = {
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "nmm bench", "GIT_AUTHOR_EMAIL": "bench@nmm.invalid",
    "GIT_COMMITTER_NAME": "nmm bench", "GIT_COMMITTER_EMAIL": "bench@nmm.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+0000",
    "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "PAGER": "cat", "LC_ALL": "C",
    # no fsync: the kernel measures the allocator, not the disk other processes share
    "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsync", "GIT_CONFIG_VALUE_0": "none",
}
_GIT_DIRS = ("src/core", "src/net", "src/ui", "lib/util", "lib/codec", "docs", "tests/unit",
             "tests/e2e")
_GIT_WORDS = ("alloc", "block", "cache", "slab", "free", "heap", "size", "class", "page",
              "guard", "event", "stats", "sweep", "thread", "queue", "index", "value")


def _git_text(rng: Any, lines: int) -> str:
    """Source-like text: a few hundred bytes to a few KiB of varied lines."""
    out = []
    for i in range(lines):
        words = " ".join(rng.choice(_GIT_WORDS) for _ in range(rng.randrange(2, 9)))
        out.append(f"{'    ' * rng.randrange(3)}{words}({i}, {rng.randrange(1 << 20)});")
    return "\n".join(out) + "\n"


def _git_plan(commits: int) -> list[tuple[str, dict[str, str | None]]]:
    """The kernel's work: per commit, a message and the files it writes (None: deletes).
    Seeded, so every target gets the same repository."""
    import random

    rng = random.Random(f"git-kernel:{commits}")
    tree: dict[str, str] = {}
    names = [f"{d}/{w}_{i}.c" for d in _GIT_DIRS for i, w in
             enumerate(rng.sample(_GIT_WORDS, 12))]
    first = {n: _git_text(rng, rng.randrange(20, 200)) for n in names[:len(names) * 3 // 4]}
    tree.update(first)
    work: list[tuple[str, dict[str, str | None]]] = [("initial import", dict(first))]
    for c in range(1, commits):
        change: dict[str, str | None] = {}
        for name in rng.sample(sorted(tree), min(len(tree), 12)):
            lines = tree[name].splitlines(keepends=True)
            at = rng.randrange(len(lines) + 1)
            lines[at:at + rng.randrange(4)] = _git_text(rng, rng.randrange(1, 25)).splitlines(
                keepends=True)
            change[name] = "".join(lines)
        for _ in range(2):
            new = f"{rng.choice(_GIT_DIRS)}/gen_{c}_{rng.randrange(1000)}.c"
            change[new] = _git_text(rng, rng.randrange(10, 120))
        if c % 5 == 0:
            change[rng.choice(sorted(tree))] = None
        for name, text in change.items():
            if text is None:
                tree.pop(name, None)
            else:
                tree[name] = text
        work.append((f"change {c}: {len(change)} files", change))
    return work


def _git_env(target: Target, home: Path) -> dict[str, str]:
    env = kernel_env(target, home)
    env.update(_GIT_ENV)
    env["HOME"] = str(home)
    return env


def kernel_env(target: Target, tmp: Path) -> dict[str, str]:
    """A real-program kernel's environment under ``target``: with NMM tracking on and no
    ``log_path`` of the target's own, every process's reports go to ``tmp/nmm.<pid>``
    (a leak report per process at exit, as a user running git or make under tracking
    would set it up), so the programs' stderr stays theirs."""
    env = target.child_env()
    options = env.get("NMM_OPTIONS", "")
    keys = {piece.split("=", 1)[0].strip() for piece in options.split(":")}
    if "tracking" in keys and "log_path" not in keys:
        env["NMM_OPTIONS"] = f"{options}:log_path={tmp / 'nmm'}"
    return env


def reports_written(tmp: Path) -> int:
    """How many per-process report files ``kernel_env``'s ``log_path`` received."""
    return sum(1 for _ in tmp.glob("nmm.*"))


def _children_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _run_git_kernel(target: Target, commits: int,
                    timeout_s: float) -> tuple[float, float, str]:
    """Run the git workload in a temporary directory under ``target``; returns (wall ms
    and CPU ms of the git commands, a fingerprint of what they produced). Raises
    ``RuntimeError`` naming the failing command and its last stderr line when a command
    fails or the allocator reports (an ``nmm:`` line)."""
    import shutil
    import tempfile

    git = shutil.which("git")
    if git is None:
        raise FileNotFoundError("git")
    deadline = time.perf_counter() + timeout_s
    spent = cpu = 0.0
    outputs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nmm-bench-git-") as tmp:
        repo = Path(tmp) / "repo"
        env = _git_env(target, Path(tmp))

        def git_cmd(*args: str, keep: bool = False) -> None:
            nonlocal spent, cpu
            c0, t0 = _children_cpu_s(), time.perf_counter()
            proc = run_program([git, *args], max(1.0, deadline - t0), env=env, cwd=str(repo))
            spent += time.perf_counter() - t0
            cpu += _children_cpu_s() - c0
            if proc.timed_out:
                raise TimeoutError(f"git {args[0]}")
            said = [ln for ln in proc.stderr.splitlines() if ln.startswith("nmm:")]
            if proc.returncode != 0 or said:
                tail = (said or proc.stderr.strip().splitlines() or [""])[-1]
                raise RuntimeError(f"git {args[0]}: exit {proc.returncode}: {tail}")
            if keep:
                outputs.append(proc.stdout)

        repo.mkdir()
        git_cmd("init", "-q", "-b", "main")
        for message, files in _git_plan(commits):
            for name, text in files.items():
                path = repo / name
                if text is None:
                    path.unlink()
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
            git_cmd("add", "-A")
            git_cmd("commit", "-q", "-m", message)
        git_cmd("log", "-p", "--stat", "--format=%H %s", keep=True)
        git_cmd("gc", "-q")
        git_cmd("fsck", "--no-progress", "--strict")
        git_cmd("rev-list", "--count", "HEAD", keep=True)
        git_cmd("rev-parse", "HEAD", "HEAD^{tree}", keep=True)
    count = int(outputs[1].strip())
    if count != commits:
        raise RuntimeError(f"git rev-list: {count} commits, expected {commits}")
    import hashlib

    digest = hashlib.sha256(outputs[0].encode()).hexdigest()[:16]
    return spent * 1e3, cpu * 1e3, f"{outputs[2].split()[0]} log:{digest}"


@functools.cache
def _git_reference(commits: int, timeout_s: float) -> str:
    """The fingerprint of the git workload under glibc (every target must match it)."""
    return _run_git_kernel(Target(BASELINE, "", "malloc"), commits, timeout_s)[2]


def _reference_cell(kernel: Kernel, target: Target, program: str,
                    run: Callable[[], tuple[Any, ...]], reference: Callable[[], str],
                    differs: Callable[[str, str], str]) -> tuple[Any, ...] | Cell:
    """Run a real-program kernel against ``target`` and check what it produced against
    glibc's run: ``run()`` gives (wall ms, CPU ms, what the programs produced, ...),
    ``reference()`` what they produce under glibc. Returns ``run()``'s tuple, or the cell
    that stands instead of a number: n/a for an NMM heap in the driver (``program`` needs a
    preload target), skipped when ``program`` is not on PATH, a timeout, the failed
    command (``RuntimeError``), or ``differs(got, glibc's)`` when the output is not
    glibc's."""

    def no_value(**kwargs: Any) -> Cell:
        return Cell(kernel.name, target.name, None, kernel.unit, **kwargs)

    if target.is_nmm_heap:
        return no_value(extra={"note": "n/a: an NMM heap inside the driver; see nmm-preload*"})
    try:
        measured = run()
        want = reference()
    except FileNotFoundError:
        return no_value(extra={"note": f"skipped: {program} is not installed (not on PATH)"})
    except TimeoutError:
        return no_value(error="timeout")
    except RuntimeError as exc:
        return no_value(error=str(exc))
    if measured[2] != want:
        return no_value(error=differs(measured[2], want))
    return measured


def _measure_git(kernel: Kernel, target: Target, quick: bool, timeout_s: float,
                 driver: Path) -> Cell:
    """Wall time of the git commands of the git workload with the target as git's malloc
    (preload targets only); the head commit and the log must equal glibc's."""
    commits = kernel.quick_ops if quick else kernel.ops
    got = _reference_cell(
        kernel, target, "git", lambda: _run_git_kernel(target, commits, timeout_s),
        lambda: _git_reference(commits, timeout_s),
        lambda fingerprint, glibc: f"repository differs from glibc's ({fingerprint} != {glibc})")
    if isinstance(got, Cell):
        return got
    ms, cpu_ms, fingerprint = got
    return Cell(kernel.name, target.name, ms, kernel.unit, (ms,),
                extra={"rows": commits, "cpu_ms": round(cpu_ms, 1),
                       "head": fingerprint.split()[0]})


# ------------------------------------------------------------------ gcc kernel

def _gcc_source(index: int, files: int) -> str:
    """One generated translation unit: enough structs, inline functions, macros, loops
    and switch tables that cc1 builds sizeable trees (its allocations are what the
    kernel measures). Deterministic: every target compiles the same text."""
    import random

    rng = random.Random(f"gcc-kernel:{index}:{files}")
    out = ["#include <stdint.h>", "#include <string.h>", "",
           f"#define MIX{index}(a, b) (((a) * 2654435761u) ^ ((b) >> 3))",
           f"struct rec{index} {{ uint32_t key; uint16_t tag; char name[24]; "
           f"double w[{rng.randrange(3, 9)}]; }};", ""]
    funcs = []
    for f in range(24):
        name = f"u{index}_f{f}"
        funcs.append(name)
        cases = "\n".join(f"        case {c}: acc = MIX{index}(acc, {rng.randrange(1 << 16)}u)"
                           f" + r->tag; break;" for c in range(rng.randrange(6, 20)))
        out.append(f"""static inline uint32_t {name}_step(const struct rec{index} *r, uint32_t acc)
{{
    switch (acc % {rng.randrange(7, 23)}u) {{
{cases}
        default: acc ^= r->key;
    }}
    return acc;
}}

uint32_t {name}(struct rec{index} *v, int n, uint32_t seed)
{{
    uint32_t acc = seed;
    for (int i = 0; i < n; i++) {{
        v[i].key = MIX{index}(acc, (uint32_t)i);
        v[i].tag = (uint16_t)(v[i].key >> {rng.randrange(1, 16)});
        memset(v[i].name, 'a' + (int)(acc % 26u), sizeof v[i].name - 1);
        v[i].name[sizeof v[i].name - 1] = 0;
        for (unsigned k = 0; k < sizeof v[i].w / sizeof v[i].w[0]; k++)
            v[i].w[k] = (double)(acc >> k) * {rng.random():.6f};
        acc = {name}_step(&v[i], acc + (uint32_t)i);
    }}
    return acc;
}}
""")
    calls = "\n".join(f"    acc = {fn}(v, 64, acc);" for fn in funcs)
    out.append(f"""uint32_t unit{index}(uint32_t acc)
{{
    static struct rec{index} v[64];
{calls}
    return acc;
}}
""")
    return "\n".join(out)


def _gcc_main(files: int) -> str:
    decls = "\n".join(f"uint32_t unit{i}(uint32_t);" for i in range(files))
    calls = "\n".join(f"    acc = unit{i}(acc);" for i in range(files))
    return f"""#include <stdint.h>
#include <stdio.h>
{decls}
int main(void)
{{
    uint32_t acc = 12345u;
{calls}
    printf("%u\\n", acc);
    return 0;
}}
"""


def _run_gcc_kernel(target: Target, files: int, timeout_s: float
                    ) -> tuple[float, float, str, int]:
    """Compile ``files`` generated C files with ``gcc -O2 -c`` one by one and link them,
    under ``target``; returns (wall ms and CPU ms of the gcc commands, what the linked
    program printed, report files written). Raises ``RuntimeError`` naming the failing
    command and its last stderr line (an ``nmm:`` line first) when gcc fails or the
    allocator reports on stderr."""
    import shutil
    import tempfile

    gcc = shutil.which("gcc")
    if gcc is None:
        raise FileNotFoundError("gcc")
    deadline = time.perf_counter() + timeout_s
    spent = cpu = 0.0
    with tempfile.TemporaryDirectory(prefix="nmm-bench-gcc-") as tmp:
        work = Path(tmp)
        env = kernel_env(target, work)
        env["LC_ALL"] = "C"

        def gcc_cmd(*args: str) -> None:
            nonlocal spent, cpu
            c0, t0 = _children_cpu_s(), time.perf_counter()
            proc = run_program([gcc, *args], max(1.0, deadline - t0), env=env, cwd=tmp)
            spent += time.perf_counter() - t0
            cpu += _children_cpu_s() - c0
            if proc.timed_out:
                raise TimeoutError(f"gcc {args[-1]}")
            said = [ln for ln in proc.stderr.splitlines() if ln.startswith("nmm:")]
            if proc.returncode != 0 or said:
                tail = (said or proc.stderr.strip().splitlines() or [""])[-1]
                raise RuntimeError(f"gcc {args[-1]}: exit {proc.returncode}: {tail}")

        objects = []
        for i in range(files):
            (work / f"unit{i}.c").write_text(_gcc_source(i, files))
            gcc_cmd("-O2", "-std=c11", "-c", "-o", f"unit{i}.o", f"unit{i}.c")
            objects.append(f"unit{i}.o")
        (work / "main.c").write_text(_gcc_main(files))
        gcc_cmd("-O2", "-std=c11", "-o", "prog", "main.c", *objects)
        written = reports_written(work)
        # the program itself runs under glibc: its output checks what gcc built
        plain = Target(BASELINE, "", "malloc").child_env()
        proc = run_program([str(work / "prog")], max(1.0, deadline - time.perf_counter()),
                           env=plain, cwd=tmp)
        if proc.returncode != 0:
            raise RuntimeError(f"the compiled program: exit {proc.returncode}")
    return spent * 1e3, cpu * 1e3, proc.stdout.strip(), written


@functools.cache
def _gcc_reference(files: int, timeout_s: float) -> str:
    """What the program gcc builds under glibc prints (every target's build must match)."""
    return _run_gcc_kernel(Target(BASELINE, "", "malloc"), files, timeout_s)[2]


def _measure_gcc(kernel: Kernel, target: Target, quick: bool, timeout_s: float,
                 driver: Path) -> Cell:
    """Wall time of gcc compiling and linking the generated files with the target as the
    malloc of gcc, cc1, as and ld (preload targets only); the built program's output
    must equal glibc's build's."""
    files = kernel.quick_ops if quick else kernel.ops
    got = _reference_cell(
        kernel, target, "gcc", lambda: _run_gcc_kernel(target, files, timeout_s),
        lambda: _gcc_reference(files, timeout_s),
        lambda output, glibc: f"the program gcc built prints {output!r}, glibc's build "
                              f"{glibc!r}")
    if isinstance(got, Cell):
        return got
    ms, cpu_ms, _, written = got
    extra: dict[str, Any] = {"rows": files, "cpu_ms": round(cpu_ms, 1)}
    if written:
        extra["report_files"] = written
    return Cell(kernel.name, target.name, ms, kernel.unit, (ms,), extra=extra)


def _measure_kernel(kernel: Kernel, target: Target, quick: bool, timeout_s: float,
                    driver: Path) -> Cell:
    argv = bench_argv(kernel.driver_kernel, target, threads=kernel.threads,
                      ops=_ops(kernel, target, quick), driver=driver)
    lines: list[dict[str, Any]] = []
    obs = _run_driver(argv, target, timeout_s, lines)
    line = lines[-1] if lines else None
    if obs.exit_code != 0 or line is None or line.get("value") is None:
        return Cell(kernel.name, target.name, None, kernel.unit, error=_failure(obs))
    scale = _SCALE.get(str(line.get("unit")), 1.0)
    value = float(line["value"]) * scale
    # a driver that repeats in-process reports its runs' median, min and max
    low = float(line.get("min", line["value"])) * scale
    high = float(line.get("max", line["value"])) * scale
    extra = {k: v for k, v in line.items()
             if k not in ("type", "name", "target", "nmm_options", "value", "unit", "min", "max")}
    share = traffic_share(float(line["value"]), extra)
    if share is not None:
        extra["traffic_share_of_memcpy"] = share
    return Cell(kernel.name, target.name, value, kernel.unit, (value,), extra=extra,
                low=min(low, high), high=max(low, high))


def traffic_share(ops_per_s: float, extra: dict[str, Any]) -> float | None:
    """The churn's memory traffic (ops/s x the mean block size: at ``paranoid`` every
    freed block is poisoned and checked again when handed out) as a fraction of the
    memcpy bandwidth the same driver process measured right after it; None when the
    line carries no such measurement."""
    mean, bandwidth = extra.get("mean_size"), extra.get("memcpy_bytes_per_s")
    if not isinstance(mean, int | float) or not isinstance(bandwidth, int | float) \
            or bandwidth <= 0:
        return None
    return round(ops_per_s * float(mean) / float(bandwidth), 4)


def poison_traffic_lines(report: BenchReport) -> list[str]:
    """One line per churn cell of a ``level=paranoid`` target: its poison traffic
    against the machine's memcpy bandwidth, both from the same run."""
    paranoid = {t.name for t in report.targets
                if "level=paranoid" in t.nmm_options or
                any(k == "NMM_OPTIONS" and "level=paranoid" in v for k, v in t.env)}
    out = []
    for c in report.cells:
        share = c.extra.get("traffic_share_of_memcpy")
        if c.target not in paranoid or c.value is None or share is None:
            continue
        mean, bw = float(c.extra["mean_size"]), float(c.extra["memcpy_bytes_per_s"])
        traffic = float(share) * bw
        out.append(f"- {c.kernel} on {c.target}: {c.value:.3g} Mops/s x {mean:.0f} B mean "
                   f"= {traffic / 1e9:.2f} GB/s of poison fills and checks, "
                   f"{100 * float(share):.1f}% of memcpy's {bw / 1e9:.2f} GB/s "
                   "(measured by the same process)")
    return out


def _median_of(kernel: Kernel, cells: Sequence[Cell]) -> Cell:
    """One cell from repeated runs of a kernel on a target: the median value (the
    headline), every run's value in ``runs``, the lowest and highest value seen (a run's
    own in-process repeats included) as ``low``/``high``, the extras of the run nearest
    the median; the first failed run if one failed."""
    for cell in cells:
        if cell.value is None:
            return cell
    values = [c.value for c in cells if c.value is not None]
    mid = statistics.median(values)
    near = min(cells, key=lambda c: abs((c.value or 0.0) - mid))
    lows = [c.low if c.low is not None else c.value for c in cells]
    highs = [c.high if c.high is not None else c.value for c in cells]
    return Cell(near.kernel, near.target, mid, near.unit, tuple(values), extra=near.extra,
                low=min(v for v in lows if v is not None),
                high=max(v for v in highs if v is not None))


def _measure_once(kernel: Kernel, target: Target, quick: bool, timeout_s: float,
                  driver: Path) -> Cell:
    fn = {"driver": _measure_driver, "program": _measure_program,
          "pydriver": _measure_pydriver,
          "git": _measure_git, "gcc": _measure_gcc}.get(kernel.driver_kernel,
                                                         _measure_kernel)
    return fn(kernel, target, quick, timeout_s, driver)


def _broken_cell(kernel: Kernel, target: Target, problem: str) -> Cell:
    """The cell of a peer whose preload library does not load: an error, never a number
    (the program would run on glibc's malloc under the peer's name)."""
    return Cell(kernel.name, target.name, None, kernel.unit, error=problem)


def measure(kernel: Kernel, target: Target, *, quick: bool = False, repeat: int = 1,
            timeout_s: float = 300.0, driver: Path | None = None) -> Cell:
    """Run one kernel against one target ``repeat`` times; the median is the value."""
    problem = preload_problem(target)
    if problem:
        return _broken_cell(kernel, target, problem)
    drv = driver or driver_path()
    cells: list[Cell] = []
    for _ in range(repeat):
        cells.append(_measure_once(kernel, target, quick, timeout_s, drv))
        if cells[-1].value is None:
            break
    return _median_of(kernel, cells)


def _with_ratios(cells: list[Cell]) -> list[Cell]:
    """Ratios against the baseline's cell of the same kernel; none for a wall-time
    cell that ran a different amount of work (``rows``) than the baseline."""
    base = {c.kernel: c for c in cells if c.target == BASELINE and c.value}
    out = []
    for c in cells:
        ref = base.get(c.kernel)
        comparable = ref is not None and ref.value and c.extra.get("rows") == ref.extra.get("rows")
        ratio = (round(c.value / ref.value, 4)
                 if c.value is not None and ref is not None and ref.value and comparable
                 else None)
        out.append(Cell(c.kernel, c.target, c.value, c.unit, c.runs, ratio, c.extra, c.error,
                        c.low, c.high))
    return out


ProgressFn = Callable[[Kernel, Target, int, int], None]


def run_bench(targets: Sequence[Target], kernels: Sequence[Kernel], *, quick: bool = False,
              repeat: int = 1, timeout_s: float = 300.0,
              on_progress: ProgressFn | None = None) -> BenchReport:
    """Run every kernel against every installed target and return the report. Never
    prints. Kernel-major, and a kernel's repeats go round the targets (one run of
    each, then the next round) rather than target by target: a slow spell of a shared
    machine then lands on every target alike instead of on whichever ran during it,
    and the ratios stay fair. ``on_progress`` is called before each run."""
    drv = driver_path()
    runnable = [t for t in targets if t.installed]
    broken = {t.name: problem for t in runnable if (problem := preload_problem(t))}
    total = len(runnable) * len(kernels) * repeat
    cells: list[Cell] = []
    done = 0
    for kernel in kernels:
        runs: dict[str, list[Cell]] = {t.name: [] for t in runnable}
        for _ in range(repeat):
            for target in runnable:
                if on_progress:
                    on_progress(kernel, target, done, total)
                done += 1
                so_far = runs[target.name]
                if target.name in broken:
                    if not so_far:
                        so_far.append(_broken_cell(kernel, target, broken[target.name]))
                elif not so_far or so_far[-1].value is not None:  # stop at a failure
                    so_far.append(_measure_once(kernel, target, quick, timeout_s, drv))
        cells.extend(_median_of(kernel, runs[t.name]) for t in runnable)
    host = {"machine": platform.machine(), "cpus": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version()}
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return BenchReport(created, quick, repeat, str(drv), host, tuple(kernels), tuple(targets),
                       tuple(_with_ratios(cells)))


# ------------------------------------------------------------------ rendering

def _fmt_value(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell_text(c: Cell | None) -> tuple[str, str]:
    """(value, ratio) texts of a cell for tables."""
    if c is None:
        return "", ""
    if c.value is None:
        return ("error", "") if c.error else ("n/a", "")
    ratio = f"x{c.ratio_vs_glibc:.2f}" if c.ratio_vs_glibc is not None else ""
    return _fmt_value(c.value), ratio


def spread_text(c: Cell | None) -> str:
    """The min–max spread of a cell's runs ("" when it has one value or none)."""
    if c is None or c.value is None or c.low is None or c.high is None or c.low == c.high:
        return ""
    return f"{_fmt_value(c.low)}–{_fmt_value(c.high)}"


def render_table(report: BenchReport) -> Any:
    """A rich ``Table``: one row per target, one column per kernel, value and ratio."""
    from rich.table import Table

    table = Table(title=f"nmm-chaos bench ({'quick' if report.quick else 'full'}, median of "
                        f"{report.repeat} with min–max below; xN = median ratio vs {BASELINE}; "
                        "↑/↓ = higher/lower is better)", show_lines=False)
    table.add_column("target", style="bold", no_wrap=True)
    for k in report.kernels:
        arrow = "↑" if k.higher_is_better else "↓"
        table.add_column(f"{k.title}\n{k.unit} {arrow}", justify="right", no_wrap=True)
    for t in report.targets:
        if not t.installed:
            blanks = [""] * (len(report.kernels) - 1)
            table.add_row(t.name, "[dim]not installed[/dim]", *blanks)
            continue
        row = [t.name]
        for k in report.kernels:
            cell = report.cell(k.name, t.name)
            value, ratio = cell_text(cell)
            text = f"{value} [dim]{ratio}[/dim]" if ratio else value
            spread = spread_text(cell)
            row.append(f"{text}\n[dim]{spread}[/dim]" if spread else text)
        table.add_row(*row)
    return table


def render_markdown(report: BenchReport) -> str:
    """The Markdown summary: the same table, plus errors and the driver overhead."""
    head = ["target", *[f"{k.title} ({k.unit}, {'↑' if k.higher_is_better else '↓'})"
                        for k in report.kernels]]
    lines = [f"# nmm-chaos bench — {report.created}", "",
             f"{'Quick' if report.quick else 'Full'} run; each cell is the median of "
             f"{report.repeat} run(s) with the min–max of every run in brackets (a kernel's "
             f"in-process repeats included); ratios of medians against {BASELINE} "
             f"(↑ higher is better, ↓ lower is better). "
             f"Host: {report.host.get('cpus')} CPUs, {report.host.get('machine')}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in report.targets:
        if not t.installed:
            lines.append(f"| {t.name} | not installed |" + " |" * (len(report.kernels) - 1))
            continue
        row = [t.name]
        for k in report.kernels:
            cell = report.cell(k.name, t.name)
            value, ratio = cell_text(cell)
            span = spread_text(cell)
            row.append(f"{value} [{span}] {ratio}".strip() if span
                       else f"{value} {ratio}".strip())
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Kernels", ""]
    lines += [f"- **{k.title}** ({k.unit}): {k.description}" for k in report.kernels]
    errors = [c for c in report.cells if c.error]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {c.kernel} on {c.target}: {c.error}" for c in errors]
    overheads = [c for c in report.cells if c.kernel == "driver" and c.value is not None]
    if overheads:
        lines += ["", "## Driver overhead (pattern checks vs --no-check)", ""]
        lines += [f"- {c.target}: {c.value:.2f} M checked ops/s, "
                  f"{c.extra.get('bare_mops')} M bare (wall overhead "
                  f"{100 * float(c.extra.get('overhead', 0)):.0f}%); per CPU-second "
                  f"{c.extra.get('checked_mops_per_cpu_s')} M checked, "
                  f"{c.extra.get('bare_mops_per_cpu_s')} M bare (CPU overhead "
                  f"{100 * float(c.extra.get('cpu_overhead', 0)):.0f}%)" for c in overheads]
    poison = poison_traffic_lines(report)
    if poison:
        # paranoid's price is memory bandwidth: shown against the machine's own limit
        lines += ["", "## Paranoid churn against memory bandwidth", ""]
        lines += poison
    spread = [c for c in report.cells if c.value is not None and len(c.runs) > 1]
    if spread:
        # how far the runs spread says how much of a ratio is the machine (a shared VM
        # moves real programs by tens of percent) and how stable the allocator is
        lines += ["", f"## Spread of the {report.repeat} runs (median, min–max, max/min)", ""]
        lines += [f"- {c.kernel} on {c.target}: {_fmt_value(statistics.median(c.runs))} "
                  f"({_fmt_value(min(c.runs))}–{_fmt_value(max(c.runs))}) {c.unit}"
                  + (f", x{max(c.runs) / min(c.runs):.2f}" if min(c.runs) > 0 else "")
                  for c in spread]
    counts = [c for c in report.cells
              if c.value is not None and "lock_contention" in c.extra]
    if counts:
        # the NMM heap's own counts do not depend on what else the machine runs
        lines += ["", "## NMM heap counts (the median run)", ""]
        lines += [f"- {c.kernel} on {c.target}: {c.extra['lock_contention']} lock "
                  f"contentions, {c.extra.get('cache_misses')} cache refills, "
                  f"{c.extra.get('cache_hits')} cache hits" for c in counts]
    missing = [t for t in report.targets if not t.installed]
    if missing:
        lines += ["", "## Not installed", ""]
        lines += [f"- {t.name}: looked for {t.missing}" for t in missing]
    return "\n".join(lines) + "\n"


def write_reports(report: BenchReport, out_root: Path = Path("reports"),
                  json_path: Path | None = None) -> list[Path]:
    """Write ``bench.json`` and ``bench.md`` under ``out_root/bench-<timestamp>/``, and a
    copy of the JSON at ``json_path`` if given. Returns the paths written."""
    stamp = report.created.replace(":", "").replace("-", "").replace("+0000", "Z")
    out = out_root / f"bench-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    doc = json.dumps(report.to_json(), indent=2) + "\n"
    paths = [out / "bench.json", out / "bench.md"]
    paths[0].write_text(doc)
    paths[1].write_text(render_markdown(report))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(doc)
        paths.append(json_path)
    return paths


# ------------------------------------------------------------------ command

#: the target ``--baseline-lib`` adds
BASELINE_LIB_TARGET = "nmm-preload-baseline"


def baseline_lib_target(library: Path) -> Target:
    """An older build of NMM's malloc replacement at ``level=standard``, run like
    ``nmm-preload-standard`` (the driver's malloc target under ``LD_PRELOAD``): a change's
    cost on pair64, churn and the program kernels, side by side in one run. Only
    ``level`` is set, a key every build knows."""
    path = library.resolve()
    return Target(BASELINE_LIB_TARGET, f"libnmm_preload.so at {path} (level=standard): the "
                  "baseline build", "malloc", preload=(str(path),),
                  env=(("NMM_OPTIONS", "level=standard"),))


@click.command("bench")
@click.option("--targets", "targets_opt", metavar="LIST",
              help="Comma-separated targets (default: every installed one).")
@click.option("--kernels", "kernels_opt", metavar="LIST",
              help=f"Comma-separated kernels (default: all: {', '.join(k.name for k in KERNELS)}).")
@click.option("--quick", is_flag=True, help="Fewer operations per kernel (a few minutes in all).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON document to this path.")
@click.option("--repeat", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Run each kernel N times per target (round the targets); the median "
                   "is the headline, the min–max its spread.")
@click.option("--out", "out_root", type=click.Path(file_okay=False, path_type=Path),
              default=Path("reports"), show_default=True,
              help="Directory under which bench-<timestamp>/ is written.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=300.0,
              show_default=True, help="Seconds before one kernel run is killed.")
@click.option("--list", "list_only", is_flag=True,
              help="List the targets and kernels (installed or not) and exit.")
@click.option("--baseline-lib", "baseline_lib",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"Also run this libnmm_preload.so (an older build: `git worktree add "
                   f"/tmp/base COMMIT && cd /tmp/base && python allocator/build.py native`) "
                   f"as target {BASELINE_LIB_TARGET} at level=standard, next to "
                   f"nmm-preload-standard: the same driver and kernels, only the library "
                   f"differs.")
def bench(targets_opt: str | None, kernels_opt: str | None, quick: bool,
          json_path: Path | None, repeat: int, out_root: Path, timeout_s: float,
          list_only: bool, baseline_lib: Path | None = None) -> int:
    """Benchmark NMM and the installed peer allocators side by side, with ratios vs glibc."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from harness.terminal import PipeConsole as Console  # a closed pipe: exit code kept

    known = list(all_targets())
    if baseline_lib is not None:
        known.append(baseline_lib_target(baseline_lib))
        if targets_opt is not None and BASELINE_LIB_TARGET not in targets_opt.split(","):
            targets_opt += f",{BASELINE_LIB_TARGET}"
    if list_only:
        out = Console(width=200) if not Console().is_terminal else Console()
        for t in known:
            how = " ".join(t.driver_args()[1:]) if t.is_nmm_heap else (
                f"LD_PRELOAD={':'.join(t.preload)}" if t.preload else "no preload")
            state = "installed" if t.installed else f"not installed ({t.missing})"
            out.print(f"{t.name:<22} {state:<12} {how}  [dim]{t.description}[/dim]",
                      highlight=False)
        for k in KERNELS:
            out.print(f"kernel {k.name:<12} {k.unit:<8} {k.description}", highlight=False)
        return 0
    try:
        names = select(targets_opt, [t.name for t in known], "target")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--targets") from None
    try:
        kernel_names = select(kernels_opt, [k.name for k in KERNELS], "kernel")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--kernels") from None
    if targets_opt is None:
        targets = list(known)  # installed ones run; the others are listed as not installed
    else:
        targets = [t for t in known if t.name in names]
        absent = [t for t in targets if not t.installed]
        if absent:  # asked for by name: a table of blanks would hide it
            raise click.BadParameter("; ".join(f"{t.name} is not installed (looked for "
                                               f"{t.missing})" for t in absent),
                                     param_hint="--targets")
    kernels = [k for k in KERNELS if k.name in kernel_names]
    for path, hint in ((out_root, "--out"), (json_path.parent if json_path else None, "--json")):
        try:  # before minutes of benchmarking, not after
            if path is not None:
                path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
            raise click.BadParameter(f"cannot create directory {path}: {why}",
                                     param_hint=hint) from None
    console = Console()
    if not console.is_terminal:  # a log or a pipe: do not squeeze the table into 80 columns
        console = Console(width=200)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("bench", total=sum(t.installed for t in targets)
                                 * len(kernels) * repeat)

        def step(kernel: Kernel, target: Target, done: int, total: int) -> None:
            progress.update(task, completed=done,
                            description=f"{kernel.name:<10} {target.name:<15}")

        report = run_bench(targets, kernels, quick=quick, repeat=repeat, timeout_s=timeout_s,
                           on_progress=step)
        progress.update(task, completed=progress.tasks[0].total)
    console.print(render_table(report))
    for c in report.cells:
        if c.error:
            console.print(f"[yellow]{c.kernel} on {c.target}: {c.error}[/yellow]")
    paths = write_reports(report, out_root, json_path)
    for p in paths:
        console.print(f"wrote {os.path.relpath(p)}")
    return 0


if __name__ == "__main__":
    bench(prog_name="python -m harness.bench")
