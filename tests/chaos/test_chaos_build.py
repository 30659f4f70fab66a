"""The chaos build (design.md "Chaos build", issue 9): a second flavor of the allocator
and driver with yield points, a controlled scheduler and mutants; the production build
has none of it. Controlled trials are a function of their seed (the schedule trace is
the evidence), stop with the step bound as a hang naming every worker, and follow a
recorded trace, reporting where it stops matching."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.chaos import Schedule
from harness.shrink_search import parse_yield_log
from tests.chaos.conftest import ROOT, SMALL, Run, mutant_names

NATIVE = ROOT / "allocator" / "_native"
#: symbol names only the chaos build may define: the scheduler's hooks, the lock
#: wrappers, the mutant switch
CHAOS_SYMBOLS = ("chaos_hooks", "chaos_mutants", "chaos_mutex", "chaos_yield",
                 "chaos_mutant_name", "chaos_thread_retire", "hook_yield")


def _release_libraries() -> list[Path]:
    libs = [NATIVE / "libnmm.so", NATIVE / "libnmm_preload.so", NATIVE / "libnmm.a",
            *sorted((ROOT / "allocator").glob("_nmm_cffi*.so"))]
    missing = [p for p in libs if not p.exists()]
    if missing:
        pytest.fail(f"not built (pip install -e .): {missing}")
    return libs


def _symbols(path: Path, dynamic: bool) -> set[str]:
    cmd = ["nm", "-D", "--defined-only", str(path)] if dynamic else ["nm", "-a", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if len(line.split()) >= 2}


def _strings(path: Path) -> str:
    return subprocess.run(["strings", "-a", str(path)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(shutil.which("nm") is None or shutil.which("strings") is None,
                    reason="needs binutils (nm, strings)")
def test_release_libraries_hold_no_scheduler_symbol_and_no_mutant_name() -> None:
    names = mutant_names()
    assert len(names) >= 8
    for lib in _release_libraries():
        exported = _symbols(lib, dynamic=True) if lib.suffix == ".so" else set()
        assert not {s for s in exported if s.startswith(("chaos", "sched_", "hook_"))}, lib
        every = _symbols(lib, dynamic=False)
        assert not {s for s in every if s.startswith(CHAOS_SYMBOLS)}, lib
        text = _strings(lib)
        assert not [n for n in names if n in text], lib
    # the same checks do see them in the chaos flavor: they can fail
    chaos = NATIVE / "libnmm_chaos.a"
    assert {s for s in _symbols(chaos, dynamic=False) if s.startswith(CHAOS_SYMBOLS)}
    assert all(n in _strings(chaos) for n in names)


def _parse_in(module: str, options: str) -> tuple[int, str]:
    code = (f"from allocator.{module} import ffi, lib\n"
            "cfg = ffi.new('nmm_config_t *'); lib.nmm_config_init(cfg)\n"
            "err = ffi.new('char[600]')\n"
            f"st = lib.nmm_config_parse(cfg, {options!r}.encode(), err, 600)\n"
            "print(st); print(ffi.string(err).decode())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.splitlines()
    return int(out[0]), "\n".join(out[1:])


def test_the_production_build_refuses_the_mutant_key_without_naming_mutants() -> None:
    status, message = _parse_in("_nmm_cffi", "level=standard:mutant=xfree_unsync")
    assert status != 0
    assert "key 'mutant' exists only in the chaos build" in message
    assert not [n for n in mutant_names() if n in message.replace("xfree_unsync", "", 1)]


def test_the_chaos_build_takes_a_mutant_and_names_the_known_ones_for_a_bad_one() -> None:
    assert _parse_in("_nmm_chaos_cffi", "mutant=xfree_unsync") == (0, "")
    assert _parse_in("_nmm_chaos_cffi", "mutant=none")[0] == 0
    status, message = _parse_in("_nmm_chaos_cffi", "mutant=nosuch")
    assert status != 0
    assert "unknown mutant 'nosuch'" in message
    assert all(n in message for n in mutant_names())


def test_the_production_driver_refuses_a_controlled_scheduler(release_driver: Path,
                                                              run_driver: Callable[..., Run]
                                                              ) -> None:
    run = run_driver(release_driver, *SMALL, "--scheduler", "pct")
    assert run.returncode == 2
    assert "needs the chaos build" in run.stderr and "nmm-driver_chaos" in run.stderr
    help_text = subprocess.run([str(release_driver), "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "--scheduler KIND" in help_text and "--schedule-in FILE" in help_text


@pytest.mark.parametrize("bad, said", [
    (["--scheduler", "fifo"], "--scheduler: expected free, pct, pos, surw or random"),
    (["--scheduler", "pct", "--depth", "0"], "--depth: expected an integer 1..64"),
    (["--scheduler", "pos", "--pos-p", "2"], "--pos-p: expected a number 0..1"),
    (["--scheduler", "pct", "--duration", "1"], "--duration: not under a controlled"),
    (["--schedule-out", "x.trace"], "need a controlled scheduler"),
    (["--yield-log", "y.log"], "need a controlled scheduler"),
])
def test_bad_scheduler_options_are_usage_errors(chaos_driver: Path,
                                                run_driver: Callable[..., Run],
                                                bad: list[str], said: str) -> None:
    run = run_driver(chaos_driver, *SMALL, *bad)
    assert run.returncode == 2
    assert said in run.stderr


@pytest.mark.parametrize("kind", ["pct", "pos", "surw", "random"])
def test_one_seed_is_one_interleaving(chaos_driver: Path, run_driver: Callable[..., Run],
                                      tmp_path: Path, kind: str) -> None:
    """The same seed gives the same schedule trace, thread churn and fork storm included;
    another seed gives another."""
    args = [*SMALL, "--thread-churn", "100", "--fork-every", "120",
            "--nmm-options", "level=paranoid", "--scheduler", kind]
    traces = []
    for seed, name in (("7", "a"), ("7", "b"), ("8", "c")):
        out = tmp_path / f"{name}.trace"
        run = run_driver(chaos_driver, *args, "--seed", seed, "--schedule-out", str(out))
        result = run.one("result")
        assert result["exit"] == "ok" and result["pattern_errors"] == 0
        assert result["threads_spawned"] == 9 and result["fork_children"] == 2
        assert result["sched"]["kind"] == kind and result["sched"]["steps"] > 1000
        traces.append(out.read_bytes())
    assert traces[0].startswith(b"NMMSCHED 1 threads=3 kind=" + kind.encode())
    assert traces[0] == traces[1]
    assert traces[0] != traces[2]


def test_pct_priorities_change_at_depth_minus_one_points(chaos_driver: Path,
                                                         run_driver: Callable[..., Run]
                                                         ) -> None:
    sched = run_driver(chaos_driver, *SMALL, "--scheduler", "pct", "--depth", "4",
                       "--sched-steps", "5000").one("result")["sched"]
    assert sched["depth"] == 4 and sched["k"] == 5000
    points = sched["change_points"]
    assert len(points) == 3 and points == sorted(points) and all(1 <= p <= 5000 for p in points)
    # pct runs the highest priority until a change point or a block: few switches, where
    # random switches at about every other step
    rnd = run_driver(chaos_driver, *SMALL, "--scheduler", "random").one("result")["sched"]
    assert sched["switches"] < rnd["switches"] / 10


def test_the_step_bound_is_a_hang_naming_every_worker(chaos_driver: Path,
                                                      run_driver: Callable[..., Run]) -> None:
    run = run_driver(chaos_driver, *SMALL, "--scheduler", "random", "--max-steps", "500")
    assert run.returncode == 87
    stop = run.one("sched_stop")
    assert stop["outcome"] == "hang" and "step bound 500" in stop["why"]
    assert [t["worker"] for t in stop["threads"]] == [0, 1, 2]
    assert all(t["last_yield"] for t in stop["threads"] if t["state"] != "absent")
    assert not any(ln.get("type") == "result" for ln in run.lines)


def test_a_followed_trace_matches_and_a_changed_trial_says_where_it_diverged(
        chaos_driver: Path, run_driver: Callable[..., Run], tmp_path: Path) -> None:
    trace = tmp_path / "t.trace"
    args = [*SMALL, "--scheduler", "random", "--seed", "3"]
    first = run_driver(chaos_driver, *args, "--schedule-out", str(trace)).one("result")
    same = run_driver(chaos_driver, *args, "--schedule-in", str(trace)).one("result")
    assert same["sched"]["diverged_at"] is None
    assert same["sched"]["trace_steps"] == first["sched"]["steps"] == same["sched"]["steps"]
    # another workload (more ops per worker): the trace stops fitting at some step
    changed = [*args[:args.index("--ops") + 1], "310", *args[args.index("--ops") + 2:]]
    other = run_driver(chaos_driver, *changed, "--schedule-in", str(trace)).one("result")
    assert 1 <= other["sched"]["diverged_at"] <= first["sched"]["steps"] + 1
    bad = tmp_path / "bad.trace"
    bad.write_bytes(b"something else\n")
    run = run_driver(chaos_driver, *args, "--schedule-in", str(bad))
    assert run.returncode == 2 and "not a schedule trace of version 1" in run.stderr


def test_the_yield_log_names_the_baton_holder_of_every_step(chaos_driver: Path,
                                                            run_driver: Callable[..., Run],
                                                            tmp_path: Path) -> None:
    """``--yield-log``: at every decision after the first, the worker the previous decision
    chose and the yield point it stopped at (the shrinker places preemptions there)."""
    trace, log = tmp_path / "t.trace", tmp_path / "y.log"
    result = run_driver(chaos_driver, *SMALL, "--scheduler", "random", "--seed", "5",
                        "--schedule-out", str(trace), "--yield-log", str(log)).one("result")
    chosen = [w for w, n in Schedule.from_bytes(trace.read_bytes()).runs for _ in range(n)]
    steps = parse_yield_log(log.read_text())
    assert len(steps) == result["sched"]["steps"] - 1 == len(chosen) - 1
    assert [y.step for y in steps] == list(range(2, len(chosen) + 1))
    assert all(y.worker == chosen[y.step - 2] for y in steps)
    assert all(y.where for y in steps) and any(y.where == "op" for y in steps)
    assert any(not y.runnable for y in steps)  # random switches into held locks
    switches = sum(1 for a, b in itertools.pairwise(chosen) if a != b)
    assert switches == result["sched"]["switches"]
