"""Bench kernels print one JSON line; the bench command runs targets side by side."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from _procs import alive
from click.testing import CliRunner

from harness import bench as bench_mod
from harness._driver import bench_argv, driver_args, driver_env, driver_path
from harness._isolate import run_child
from harness._peers import Target, all_targets, get_target, preload_problem
from harness.errors import DriverNotFound

KERNEL_ARGS = {
    "pair64": ["--ops", "20000", "--repeat", "2"],
    "churn": ["--ops", "20000", "--threads", "2"],
    "cross": ["--ops", "20000"],
    "overhead64": ["--ops", "20000"],
    "peak_rss": ["--ops", "20000"],
    "workset": ["--ops", "20000", "--threads", "2", "--repeat", "3"],
    "oversub": ["--ops", "20000", "--threads", "8"],
    "prodcons": ["--ops", "20000"],
    "larson": ["--ops", "20000"],
    "threadchurn": ["--ops", "200", "--threads", "4"],
}
RATE_KERNELS = ("pair64", "churn", "cross", "workset", "oversub", "prodcons", "larson")


@pytest.mark.parametrize("target", ["malloc", "nmm"])
@pytest.mark.parametrize("kernel", sorted(KERNEL_ARGS))
def test_kernel_prints_one_json_line(driver: Path, kernel: str, target: str) -> None:
    proc = subprocess.run([str(driver), "bench", kernel, "--target", target,
                           *KERNEL_ARGS[kernel]], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["type"] == "bench" and doc["name"] == kernel and doc["target"] == target
    assert isinstance(doc["value"], (int, float))
    if kernel in RATE_KERNELS:
        # the median of the in-process runs, with their spread around it
        assert 0 < doc["min"] <= doc["value"] <= doc["max"]
    if kernel == "overhead64":
        assert doc["rss_per_block"] >= 0 and doc["ops"] == 20000
    if kernel in ("churn", "workset"):
        assert doc["threads"] == 2
    if kernel == "workset":
        assert doc["repeats"] == 3 and doc["ops"] == 40000  # 20000 per thread
    if kernel == "prodcons":
        assert doc["threads"] == 4 and doc["ops"] == 2 * (20000 // 3) * 3  # 3 producers
    if kernel == "larson":
        assert doc["threads"] == 4 and doc["lifetimes"] == 200
    if kernel == "threadchurn":
        assert doc["ops"] == 200 and doc["threads"] == 4 and doc["unit"] == "bytes"
        assert doc["value"] >= 0 and doc["one_thread_bytes"] >= 0
        assert doc["first_wave_bytes"] >= 0
        assert doc["lifetimes_per_s"] > 0
    if target == "nmm":
        # the heap's own counts ride along: every kernel allocated through it
        assert doc["cache_hits"] + doc["cache_misses"] > 0 and doc["lock_contention"] >= 0
    else:
        assert "lock_contention" not in doc


@pytest.mark.parametrize("target", ["nmm", "nmm-standard", "nmm-preload", "glibc"])
def test_1024_oversubscribed_threads_finish(driver: Path, target: str) -> None:
    """1024 threads on this machine's cores allocate and free through one heap (or the
    preloaded malloc) and all finish: no deadlock, no thread left behind. The timeout
    only catches a hang; no time is asserted. The timed window holds the threads' ops
    only: no thread began to free its set and exit inside it (without the end barrier
    nearly all 1024 did, and oversub1024 timed thread teardown for every allocator)."""
    t = get_target(target)
    lines: list[dict] = []
    obs = run_child(bench_argv("oversub", t, threads=1024, ops=20, driver=driver), 300,
                    env=driver_env(t), on_line=lines.append)
    assert not obs.timed_out, "1024 threads did not finish: a deadlock?"
    assert obs.exit_code == 0, obs.stderr_tail
    (line,) = lines
    assert line["threads"] == 1024 and line["ops"] == 20 * 1024 and line["value"] > 0
    assert line["exits_in_window"] == 0


def test_targets_are_listed_installed_or_not() -> None:
    targets = all_targets(lib_dirs=["/nonexistent"])
    names = [t.name for t in targets]
    assert len(names) == len(set(names))
    assert {"glibc", "nmm", "nmm-standard", "nmm-paranoid", "glibc-debug", "jemalloc",
            "mimalloc", "tcmalloc", "tcmalloc-debug", "scudo", "efence", "duma"} <= set(names)
    by = {t.name: t for t in targets}
    assert by["glibc"].installed and by["nmm"].installed
    assert not by["jemalloc"].installed and "libjemalloc" in by["jemalloc"].missing
    assert by["nmm-paranoid"].driver_args() == ["--target", "nmm", "--nmm-options",
                                                "level=paranoid"]
    with pytest.raises(KeyError, match="unknown target 'nope'"):
        get_target("nope")


def test_child_env_sets_and_strips_preload() -> None:
    peer = Target("p", "a peer", "malloc", preload=("/x/liba.so", "/x/libb.so"),
                  env=(("MALLOC_CHECK_", "3"),))
    env = peer.child_env({"LD_PRELOAD": "/evil.so", "NMM_OPTIONS": "level=off", "HOME": "/h"})
    assert env == {"HOME": "/h", "LD_PRELOAD": "/x/liba.so:/x/libb.so", "MALLOC_CHECK_": "3"}
    glibc = get_target("glibc")
    assert "LD_PRELOAD" not in glibc.child_env({"LD_PRELOAD": "/evil.so"})


def test_driver_path_names_the_missing_file(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("NMM_CHAOS_DRIVER", str(tmp_path / "no-driver"))
    with pytest.raises(DriverNotFound, match="no-driver"):
        driver_path()


def test_argv_helpers_drive_the_real_driver(driver: Path) -> None:
    from harness.plan import Plan

    glibc = get_target("glibc")
    plan = Plan.model_validate({"schema_version": 1,
                                "workload": {"threads": 1, "ops": 2000}})
    obs = run_child([str(driver), *driver_args(plan, 3, glibc)], 60, env=driver_env(glibc))
    assert obs.exit_code == 0 and obs.result is not None
    assert obs.result.ops == 2000
    assert obs.start is not None and obs.start["target"] == "malloc"
    nmm = get_target("nmm-standard")
    lines: list[dict] = []
    obs = run_child(bench_argv("pair64", nmm, ops=10000, repeat=1, driver=driver), 60,
                    env=driver_env(nmm), on_line=lines.append)
    assert obs.exit_code == 0 and obs.bad_lines == 0
    assert [line["nmm_options"] for line in lines] == ["level=standard"]


FORK_AND_HANG = """#!{python}
import os, sys, time
child = os.fork()
if child == 0:  # lets go of the pipes, so only a group kill can end it
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    time.sleep(120)
    os._exit(0)
with open({pidfile!r}, "w") as f:
    f.write(str(child))
time.sleep(120)
"""


@pytest.mark.parametrize("kernel", ["pair64", "driver"])
def test_bench_timeout_kills_the_kernels_grandchildren(tmp_path: Path, kernel: str) -> None:
    """bench ran its driver children with a timeout that killed only the child itself: a
    kernel that forks (a fork storm) left its grandchildren running. Now every child runs
    under the trial watchdog, which kills the whole process group."""
    pidfile = tmp_path / "grandchild.pid"
    fake = tmp_path / "fake-driver"
    fake.write_text(FORK_AND_HANG.format(python=sys.executable, pidfile=str(pidfile)))
    fake.chmod(0o755)
    k = next(k for k in bench_mod.KERNELS if k.name == kernel)
    grandchild = None
    for timeout_s in (1.0, 4.0, 16.0):  # the fork must happen before the watchdog fires
        pidfile.unlink(missing_ok=True)
        cell = bench_mod.measure(k, get_target("nmm"), quick=True, timeout_s=timeout_s,
                                 driver=fake)
        assert cell.value is None and cell.error and "timeout" in cell.error
        if pidfile.exists() and pidfile.read_text():
            grandchild = int(pidfile.read_text())
            break
    assert grandchild is not None, "the fake kernel never forked"
    try:
        proc = psutil.Process(grandchild)
    except psutil.NoSuchProcess:
        return  # already gone (and reaped by init)
    deadline = time.monotonic() + 10  # SIGKILL lands asynchronously
    while time.monotonic() < deadline and alive(proc):
        time.sleep(0.02)
    assert not alive(proc), "the kernel's grandchild outlived the bench timeout"


def test_run_bench_ratios_and_reports(driver: Path, monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    monkeypatch.setenv("NMM_CHAOS_DRIVER", str(driver))
    kernels = [bench_mod.Kernel("pair64", "pair64", "ns/pair", False, "pair64", None,
                                20000, 20000, "pairs"),
               bench_mod.Kernel("driver", "driver", "Mops/s", True, "driver", 2,
                                5000, 5000, "trial workload")]
    missing = Target("ghost", "not here", "malloc", installed=False, missing="libghost.so")
    targets = [get_target("glibc"), get_target("nmm"), missing]
    seen: list[str] = []
    report = bench_mod.run_bench(targets, kernels, repeat=2,
                                 on_progress=lambda k, t, d, n: seen.append(f"{k.name}/{t.name}"))
    # repeats go round the targets, so a slow spell of the machine hits them alike
    assert seen == ["pair64/glibc", "pair64/nmm"] * 2 + ["driver/glibc", "driver/nmm"] * 2
    glibc = report.cell("pair64", "glibc")
    assert glibc is not None and glibc.ratio_vs_glibc == 1.0 and len(glibc.runs) == 2
    drv = report.cell("driver", "nmm")
    assert drv is not None and drv.value is not None and drv.value > 0
    assert drv.extra["pattern_errors"] == 0 and "overhead" in drv.extra
    assert report.cell("pair64", "ghost") is None
    md = bench_mod.render_markdown(report)
    assert "| ghost | not installed |" in md and "x1.00" in md
    assert "## Spread of the 2 runs" in md
    low, high = min(glibc.runs), max(glibc.runs)
    assert f"- pair64 on glibc: {bench_mod._fmt_value((low + high) / 2)} " \
        f"({bench_mod._fmt_value(low)}–{bench_mod._fmt_value(high)}) ns/pair" in md
    paths = bench_mod.write_reports(report, tmp_path / "out", tmp_path / "copy.json")
    (out_dir,) = (tmp_path / "out").glob("bench-*")
    doc = json.loads((out_dir / "bench.json").read_text())
    assert doc["schema"] == 2 and len(doc["results"]) == 4
    result = next(r for r in doc["results"] if r["kernel"] == "pair64" and r["target"] == "nmm")
    assert result["low"] <= result["value"] <= result["high"]
    assert json.loads(paths[-1].read_text()) == doc


def _run(value: float, low: float | None = None, high: float | None = None) -> bench_mod.Cell:
    return bench_mod.Cell("k", "t", value, "Mops/s", (value,), extra={"v": value}, low=low,
                          high=high)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_cell_is_the_median_of_its_runs_with_the_spread(higher_is_better: bool) -> None:
    """The headline was the best run, which hid a bimodal allocator; now it is the median,
    and the spread covers every value seen, a run's in-process repeats included."""
    kernel = bench_mod.Kernel("k", "k", "Mops/s", higher_is_better, "churn", 2, 1, 1, "k")
    cell = bench_mod._median_of(kernel, [_run(90.0, 80.0, 95.0), _run(40.0), _run(100.0),
                                         _run(45.0), _run(92.0)])
    assert cell.value == 90.0 and cell.runs == (90.0, 40.0, 100.0, 45.0, 92.0)
    assert (cell.low, cell.high) == (40.0, 100.0) and cell.extra == {"v": 90.0}
    even = bench_mod._median_of(kernel, [_run(10.0), _run(30.0)])
    assert even.value == 20.0 and (even.low, even.high) == (10.0, 30.0)
    assert bench_mod.spread_text(cell) == "40.0–100" and bench_mod.spread_text(_run(5.0)) == ""
    failed = bench_mod.Cell("k", "t", None, "Mops/s", error="exit 1")
    assert bench_mod._median_of(kernel, [_run(1.0), failed]) is failed


def test_bench_command(driver: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NMM_CHAOS_DRIVER", str(driver))
    result = CliRunner().invoke(bench_mod.bench, [
        "--quick", "--targets", "glibc,nmm", "--kernels", "overhead64",
        "--out", str(tmp_path), "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "overhead64" in result.output and "nmm" in result.output
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [c["target"] for c in doc["results"]] == ["glibc", "nmm"]
    assert len(list(tmp_path.glob("bench-*/bench.md"))) == 1


def test_a_baseline_build_runs_next_to_nmm_preload_standard(
        driver: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--baseline-lib adds an older libnmm_preload.so (here: a copy of the current one) as
    nmm-preload-baseline at level=standard, measured by the same kernels in the same run."""
    from harness._peers import nmm_preload_library

    lib = tmp_path / "old" / "libnmm_preload.so"
    lib.parent.mkdir()
    shutil.copy(nmm_preload_library(), lib)
    monkeypatch.setenv("NMM_CHAOS_DRIVER", str(driver))
    result = CliRunner().invoke(bench_mod.bench, [
        "--quick", "--targets", "nmm-preload-standard", "--kernels", "pair64",
        "--baseline-lib", str(lib), "--out", str(tmp_path), "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "b.json").read_text())
    cells = {c["target"]: c for c in doc["results"]}
    assert set(cells) == {"nmm-preload-standard", "nmm-preload-baseline"}
    assert all(c["value"] and not c.get("error") for c in cells.values()), cells
    listed = CliRunner().invoke(bench_mod.bench, ["--list", "--baseline-lib", str(lib)])
    assert f"LD_PRELOAD={lib}" in listed.output and "nmm-preload-baseline" in listed.output
    missing = CliRunner().invoke(bench_mod.bench, ["--baseline-lib", str(tmp_path / "nope.so")])
    assert missing.exit_code != 0 and "nope.so" in missing.output


def test_a_peer_library_that_does_not_load_is_an_error_not_glibc_numbers(
        driver: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ld.so only warns about an LD_PRELOAD library it cannot load and runs the program on
    glibc's malloc: the peer's cells were glibc's numbers under the peer's name."""
    monkeypatch.setenv("NMM_CHAOS_DRIVER", str(driver))
    broken_lib = tmp_path / "libbroken.so"
    broken_lib.write_text("not an ELF file")
    broken = Target("broken", "a damaged peer", "malloc", preload=(str(broken_lib),))
    assert preload_problem(get_target("glibc")) is None
    assert preload_problem(get_target("nmm-preload")) is None
    problem = preload_problem(broken)
    assert problem is not None and f"'{broken_lib}' from LD_PRELOAD cannot be preloaded" in problem
    kernel = bench_mod.Kernel("overhead64", "overhead64", "B/block", False, "overhead64", None,
                              20000, 20000, "overhead")
    report = bench_mod.run_bench([get_target("glibc"), broken], [kernel])
    cell = report.cell("overhead64", "broken")
    assert cell is not None and cell.value is None and cell.error == problem
    glibc = report.cell("overhead64", "glibc")
    assert glibc is not None and glibc.value is not None
    one = bench_mod.measure(kernel, broken, driver=driver)  # the one-cell API refuses it too
    assert one.value is None and one.error == problem


def test_bench_command_rejects_unknown_names(monkeypatch: pytest.MonkeyPatch,
                                             driver: Path) -> None:
    monkeypatch.setenv("NMM_CHAOS_DRIVER", str(driver))
    result = CliRunner().invoke(bench_mod.bench, ["--targets", "glibc,nope"])
    assert result.exit_code == 2 and "unknown target 'nope'" in result.output
    result = CliRunner().invoke(bench_mod.bench, ["--kernels", "warp"])
    assert result.exit_code == 2 and "unknown kernel 'warp'" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--targets", ""], "Invalid value for --targets: given ''; expected a comma-separated"),
    (["--targets", ",,"], "Invalid value for --targets: given ',,'"),
    (["--kernels", " , "], "Invalid value for --kernels: given ' , '"),
    (["--targets", "ghost"], "Invalid value for --targets: ghost is not installed "
                             "(looked for libghost.so)"),
])
def test_bench_command_rejects_empty_lists_and_missing_peers(
        monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    """An empty --targets ran every target (minutes); an empty list after commas, or a
    named peer that is not installed, ran nothing and exited 0."""
    ghost = Target("ghost", "not here", "malloc", installed=False, missing="libghost.so")
    monkeypatch.setattr(bench_mod, "all_targets", lambda: (*all_targets(), ghost))
    monkeypatch.setattr(bench_mod, "run_bench", _must_not_run)
    result = CliRunner().invoke(bench_mod.bench, args)
    assert result.exit_code == 2 and message in " ".join(result.output.split())


@pytest.mark.parametrize("option", ["--out", "--json"])
def test_bench_command_checks_its_output_paths_before_running(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, option: str) -> None:
    """Not after minutes of benchmarking (the results were lost, and a traceback under
    python -m harness.bench)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(bench_mod, "run_bench", _must_not_run)
    path = blocker / "sub" if option == "--out" else blocker / "b.json"
    result = CliRunner().invoke(bench_mod.bench, ["--targets", "glibc", option, str(path)])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for {option}: cannot create directory" in result.output


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("the benchmark ran despite bad input")


def test_program_kernel_times_preload_targets_only(driver: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NMM_CHAOS_DRIVER", str(driver))
    kernel = bench_mod.Kernel("python", "python3", "ms", False, "program", None, 300, 300,
                              "python3 workload", program="python")
    peer = Target("capped", "a peer that holds few blocks", "malloc", max_ops=100)
    report = bench_mod.run_bench([get_target("glibc"), get_target("nmm"), peer], [kernel])
    glibc = report.cell("python", "glibc")
    assert glibc is not None and glibc.value is not None and glibc.value > 0
    assert glibc.ratio_vs_glibc == 1.0 and glibc.extra["rows"] == 300
    nmm = report.cell("python", "nmm")
    assert nmm is not None and nmm.value is None and nmm.error is None
    assert bench_mod.cell_text(nmm) == ("n/a", "")
    capped = report.cell("python", "capped")
    assert capped is not None and capped.value is not None
    assert capped.extra["rows"] == 100 and capped.ratio_vs_glibc is None  # other work, no ratio


def test_bench_list_names_every_target_and_kernel() -> None:
    result = CliRunner().invoke(bench_mod.bench, ["--list"])
    assert result.exit_code == 0, result.output
    for name in ("glibc", "nmm-paranoid", "jemalloc", "scudo", "duma"):
        assert name in result.output
    assert "kernel pair64" in result.output and "kernel driver" in result.output


def _git_kernel(commits: int) -> bench_mod.Kernel:
    return bench_mod.Kernel("git", "git", "ms", False, "git", None, commits, commits,
                            "git workload")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_kernel_times_preload_targets_and_checks_the_repository(
        driver: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NMM_CHAOS_DRIVER", str(driver))
    # the user's git config must not reach the kernel: this one would fail every commit
    config = tmp_path / "gitconfig"
    config.write_text("[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = /bin/false\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    targets = [get_target("glibc"), get_target("nmm"), get_target("nmm-preload-standard")]
    report = bench_mod.run_bench(targets, [_git_kernel(3)])
    glibc = report.cell("git", "glibc")
    assert glibc is not None and glibc.value is not None and glibc.value > 0, glibc
    assert glibc.ratio_vs_glibc == 1.0 and glibc.extra["rows"] == 3
    assert glibc.extra["cpu_ms"] > 0 and len(glibc.extra["head"]) == 40
    nmm = report.cell("git", "nmm")
    assert nmm is not None and nmm.value is None and nmm.error is None  # a driver heap: n/a
    preload = report.cell("git", "nmm-preload-standard")
    assert preload is not None and preload.error is None and preload.value is not None
    assert preload.extra["head"] == glibc.extra["head"]  # fixed identity and clock
    assert preload.ratio_vs_glibc is not None


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_kernel_failure_is_an_error_not_a_number(driver: Path) -> None:
    broken = Target("broken", "git pointed at a repository it cannot create", "malloc",
                    env=(("GIT_DIR", "/dev/null/repo"),))
    cell = bench_mod.measure(_git_kernel(2), broken, driver=driver)
    assert cell.value is None and cell.error is not None
    assert cell.error.startswith("git ") and "exit" in cell.error


def test_git_kernel_is_skipped_with_a_reason_without_git(
        driver: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    cell = bench_mod.measure(_git_kernel(2), get_target("glibc"), driver=driver)
    assert cell.value is None and cell.error is None
    assert cell.extra["note"] == "skipped: git is not installed (not on PATH)"
    assert bench_mod.cell_text(cell) == ("n/a", "")


def _gcc_kernel(files: int) -> bench_mod.Kernel:
    return bench_mod.Kernel("gcc", "gcc", "ms", False, "gcc", None, files, files,
                            "gcc workload")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_gcc_kernel_times_preload_targets_and_checks_what_gcc_built(driver: Path) -> None:
    targets = [get_target("glibc"), get_target("nmm"), get_target("nmm-preload-standard"),
               get_target("nmm-preload-tracking")]
    report = bench_mod.run_bench(targets, [_gcc_kernel(2)])
    glibc = report.cell("gcc", "glibc")
    assert glibc is not None and glibc.value is not None and glibc.value > 0, glibc
    assert glibc.ratio_vs_glibc == 1.0 and glibc.extra["rows"] == 2
    assert glibc.extra["cpu_ms"] > 0 and "report_files" not in glibc.extra
    nmm = report.cell("gcc", "nmm")
    assert nmm is not None and nmm.value is None and nmm.error is None  # a driver heap: n/a
    for name in ("nmm-preload-standard", "nmm-preload-tracking"):
        cell = report.cell("gcc", name)
        # an error would say so: a build that printed another number, or an nmm: line
        # on gcc's stderr (under tracking every process's leak report goes to log_path)
        assert cell is not None and cell.error is None and cell.value is not None, cell
        assert cell.ratio_vs_glibc is not None
    tracked = report.cell("gcc", "nmm-preload-tracking")
    # gcc, cc1, as, collect2 and ld for each of 3 commands: one report file per process
    assert tracked is not None and tracked.extra["report_files"] >= 9


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_gcc_kernel_failure_is_an_error_not_a_number(driver: Path) -> None:
    broken = Target("broken", "gcc told to write a file where it cannot", "malloc",
                    env=(("DEPENDENCIES_OUTPUT", "/dev/null/deps"),))
    cell = bench_mod.measure(_gcc_kernel(1), broken, driver=driver)
    assert cell.value is None and cell.error is not None
    assert cell.error.startswith("gcc unit0.c: exit ")


def test_kernel_env_sends_tracking_reports_to_the_kernels_directory(tmp_path: Path) -> None:
    tracked = bench_mod.kernel_env(get_target("nmm-preload-tracking"), tmp_path)
    assert tracked["NMM_OPTIONS"] == ("level=standard:tracking=1:exitcode=0:"
                                      f"log_path={tmp_path / 'nmm'}")
    plain = bench_mod.kernel_env(get_target("nmm-preload-standard"), tmp_path)
    assert plain["NMM_OPTIONS"] == "level=standard"
    own = Target("own", "", "malloc", env=(("NMM_OPTIONS", "tracking=1:log_path=/x/y"),))
    assert bench_mod.kernel_env(own, tmp_path)["NMM_OPTIONS"] == "tracking=1:log_path=/x/y"


def test_paranoid_churn_is_set_against_memcpy_bandwidth_of_the_same_run(
        driver: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The churn line carries the size table's mean and the memcpy bandwidth its own
    process measured; bench turns them into paranoid's poison traffic as a share of
    that bandwidth (a number, never asserted against a wall-clock budget)."""
    monkeypatch.setenv("NMM_CHAOS_DRIVER", str(driver))
    churn = bench_mod.Kernel("churn1", "churn 1T", "Mops/s", True, "churn", 1, 20000, 20000,
                             "churn")
    report = bench_mod.run_bench([get_target("nmm-standard"), get_target("nmm-paranoid")],
                                 [churn])
    cells = {t: report.cell("churn1", t) for t in ("nmm-standard", "nmm-paranoid")}
    for cell in cells.values():
        assert cell is not None and cell.value is not None, cell
        mean, bw = cell.extra["mean_size"], cell.extra["memcpy_bytes_per_s"]
        # the kernel's default sizes, 16 B-64 KiB log-uniform: mean (64K - 16) / ln(4096)
        assert 6000 < mean < 10000, mean
        assert bw > 1e8, bw  # any machine copies more than 100 MB/s
        assert cell.extra["traffic_share_of_memcpy"] == pytest.approx(
            cell.value * 1e6 * mean / bw, rel=1e-3)
    lines = bench_mod.poison_traffic_lines(report)
    assert len(lines) == 1 and lines[0].startswith("- churn1 on nmm-paranoid: "), lines
    assert "of memcpy's" in lines[0]
    md = bench_mod.render_markdown(report)
    assert "## Paranoid churn against memory bandwidth" in md and lines[0] in md
    assert bench_mod.traffic_share(1e6, {"mean_size": 100}) is None  # no bandwidth: none


def test_a_real_program_kernel_ends_in_one_cell_for_each_way_it_can_fail() -> None:
    """git and gcc share ``_reference_cell``: n/a on a driver heap, skipped naming the
    missing program, a timeout, the failed command, output other than glibc's, or the
    measurement when it matches."""
    kernel = _gcc_kernel(1)
    preload = get_target("nmm-preload-standard")

    def cell(run: Any, target: Target = preload, want: str = "42") -> Any:
        return bench_mod._reference_cell(kernel, target, "gcc", run, lambda: want,
                                         lambda got, glibc: f"prints {got}, glibc {glibc}")

    def raises(exc: BaseException) -> Any:
        def run() -> tuple[Any, ...]:
            raise exc
        return run

    assert cell(lambda: (5.0, 4.0, "42", 3)) == (5.0, 4.0, "42", 3)
    na = cell(raises(AssertionError("never run")), target=get_target("nmm"))
    assert na.value is None and na.error is None and na.extra["note"].startswith("n/a: ")
    skipped = cell(raises(FileNotFoundError("gcc")))
    assert skipped.error is None
    assert skipped.extra["note"] == "skipped: gcc is not installed (not on PATH)"
    assert cell(raises(TimeoutError())).error == "timeout"
    assert cell(raises(RuntimeError("gcc unit0.c: exit 1"))).error == "gcc unit0.c: exit 1"
    differs = cell(lambda: (5.0, 4.0, "41", 0))
    assert differs.value is None and differs.error == "prints 41, glibc 42"
    assert (differs.kernel, differs.target) == ("gcc", "nmm-preload-standard")
