"""Protocol 2's evidence from the real driver: fault sequence numbers and fault_done
lines, the driver's own books against the heap's counters and walk, and errors named
by address, including against deliberately broken allocators (a preloaded malloc that
hands a live block out twice, scribbles on one, or leaves calloc memory dirty)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness._isolate import run_child
from harness.oracle import judge
from harness.plan import Plan

BROKEN_SRC = Path(__file__).parent / "broken" / "broken_malloc.c"


def nmm(level: str) -> list[str]:
    return ["--target", "nmm", "--nmm-options", f"level={level}:policy=record"]


@pytest.mark.parametrize("level", ["off", "standard", "paranoid"])
def test_a_clean_trial_balances_the_drivers_books_against_the_heap(run: Any, level: str) -> None:
    trial = run("run", *nmm(level), "--seed", "12", "--threads", "2", "--ops", "20000",
                "--cross", "0.3", "--sizes", "16-1024:4,1025-300000:1", "--progress-every", "0")
    assert trial.returncode == 0, trial.stderr
    assert trial.lines[0]["protocol"] == 2
    r = trial.result
    counts, walk, before, after = r["counts"], r["walk"], r["stats_before"], r["stats"]
    # the workers' live blocks, by the driver, the heap's counter and a walk of the heap
    assert counts["live_blocks"] == before["live_blocks"] == walk["blocks"] > 0
    if level == "off":  # no header: the walk reports usable sizes
        assert walk["bytes"] >= counts["live_bytes"]
    else:  # requested sizes from the headers
        assert counts["live_bytes"] == walk["bytes"]
    assert walk["unknown"] == walk["missing"] == walk["size_mismatch"] == 0
    # every alloc and free the driver made is the heap's, plus the reallocs it counts
    extra = after["allocs"] - counts["allocs"]
    assert extra == after["frees"] - counts["frees"]
    assert counts["reallocs_moved"] <= extra <= counts["reallocs"]
    assert r["walk_after"] == {"blocks": 0, "bytes": 0, "unknown": 0, "missing": 0,
                               "size_mismatch": 0}
    assert after["live_blocks"] == 0 and after["live_bytes"] == 0


def test_every_fault_line_carries_its_seq_and_a_fault_done(run: Any) -> None:
    trial = run("run", *nmm("standard"), "--seed", "5", "--threads", "2", "--ops", "8000",
                "--fault", "double_free:count=3", "--fault", "overflow:bytes=4",
                "--fault", "invalid_free:variant=wild", "--progress-every", "0")
    assert trial.returncode == 0, trial.stderr
    faults = {f["id"]: f for f in trial.of("fault")}
    done = {d["id"]: d for d in trial.of("fault_done")}
    assert set(done) == set(faults) == set(range(5))
    for fid, f in faults.items():
        # caught: an error status, and an event at the address recorded after the fault
        assert done[fid]["status"] > 0
        ev = [e for e in trial.of("event") if e["address"] == f["address"]]
        assert ev and all(e["seq"] > f["seq"] for e in ev), (f, ev)
    overflow = next(f for f in faults.values() if f["kind"] == "overflow")
    assert overflow["offset"] == overflow["size"] and overflow["bytes"] == 4


@pytest.mark.parametrize(("level", "stale"), [("standard", True), ("paranoid", False)])
def test_uaf_read_reports_the_byte_it_read(run: Any, level: str, stale: bool) -> None:
    trial = run("run", *nmm(level), "--seed", "2", "--threads", "1", "--ops", "4000",
                "--sizes", "16-1024", "--fault", "uaf_read:variant=middle",
                "--progress-every", "0")
    assert trial.returncode == 0, trial.stderr
    (done,) = trial.of("fault_done")
    assert done["was"] == 0x5A
    # paranoid poisons the freed block (0xDB); standard leaves the data there
    assert done["read"] == (0x5A if stale else 0xDB)


@pytest.fixture(scope="module")
def broken_malloc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("broken") / "broken_malloc.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(BROKEN_SRC), "-ldl"],
                   check=True, capture_output=True)
    return out


def _malloc_plan() -> Plan:
    return Plan.model_validate({"schema_version": 1,
                                "target": {"kind": "malloc", "peer": "glibc"},
                                "workload": {"threads": 1, "ops": 20000,
                                             "sizes": ["16-1024"]}})


@pytest.mark.parametrize(("mode", "what", "offset"), [
    ("scribble:100", "check", 100),   # a byte the old sparse pattern never looked at
    ("scribble:9", "check", 9),
    ("calloc:100", "calloc", 100),    # calloc zeroing was only checked at the ends
])
def test_allocator_damage_is_named_by_address_and_fails_the_trial(
        driver: Path, broken_malloc: Path, mode: str, what: str, offset: int) -> None:
    argv = [str(driver), "run", "--target", "malloc", "--seed", "1", "--threads", "1",
            "--ops", "20000", "--sizes", "16-1024", "--progress-every", "0"]
    env = {"LD_PRELOAD": str(broken_malloc), "BROKEN_MALLOC": mode, "PATH": "/usr/bin:/bin"}
    obs = run_child(argv, 120.0, env=env)
    errors = [d for d in obs.details if d.type == "pattern_error"]
    assert errors, obs.stderr_tail
    # a scribbled block is found when it is freed or, moved by a realloc, at its copy
    whats = {what, "realloc"} if what == "check" else {what}
    assert all(d.what in whats and d.offset == offset and d.address for d in errors)
    verdict = judge(_malloc_plan(), obs)
    assert not verdict.passed
    assert any("wrong fill pattern" in r and f"{errors[0].address:#x}+{offset}" in r
               for r in verdict.reasons), verdict.reasons


def test_a_block_handed_out_twice_fails_the_trial(driver: Path, broken_malloc: Path) -> None:
    argv = [str(driver), "run", "--target", "malloc", "--seed", "1", "--threads", "1",
            "--ops", "20000", "--sizes", "16-1024", "--progress-every", "0"]
    obs = run_child(argv, 120.0, env={"LD_PRELOAD": str(broken_malloc),
                                      "BROKEN_MALLOC": "twice", "PATH": "/usr/bin:/bin"})
    assert any(d.type == "pattern_error" for d in obs.details)
    assert not judge(_malloc_plan(), obs).passed


def test_without_the_bug_the_same_trial_passes(driver: Path, broken_malloc: Path) -> None:
    argv = [str(driver), "run", "--target", "malloc", "--seed", "1", "--threads", "1",
            "--ops", "20000", "--sizes", "16-1024", "--progress-every", "0"]
    obs = run_child(argv, 120.0, env={"LD_PRELOAD": str(broken_malloc), "PATH": "/usr/bin:/bin"})
    verdict = judge(_malloc_plan(), obs)
    assert verdict.passed, verdict.reasons


def test_detail_lines_are_capped_and_counted(run: Any, broken_malloc: Path) -> None:
    trial = run("run", "--target", "malloc", "--seed", "1", "--threads", "1", "--ops", "100000",
                "--sizes", "200-1024", "--progress-every", "0",
                env={"LD_PRELOAD": str(broken_malloc), "BROKEN_MALLOC": "calloc:100"})
    assert len(trial.of("pattern_error")) == 256
    r = trial.result
    assert r["pattern_errors"] == 256 + r["detail_lines_dropped"] > 256


def test_a_hanging_allocator_is_named_in_seconds_with_every_threads_stack(
        driver: Path, broken_malloc: Path) -> None:
    """The driver's heartbeat keeps coming while a worker is stuck inside malloc: the
    trial is a hang after hang_s, in phase ops, with the stuck thread's stack."""
    argv = [str(driver), "run", "--target", "malloc", "--seed", "1", "--threads", "2",
            "--ops", "200000", "--progress-every", "0"]
    env = {"LD_PRELOAD": str(broken_malloc), "BROKEN_MALLOC": "hang:5000",
           "PATH": "/usr/bin:/bin"}
    obs = run_child(argv, 600.0, env=env, stall_s=2.0)
    assert obs.timed_out and obs.result is None
    assert obs.hang is not None and obs.hang["phase"] == "ops"
    assert obs.wall_s < 300  # named by the stall, not the 600 s timeout
    assert "pause" in obs.stacks or "malloc" in obs.stacks or "wchan" in obs.stacks
    verdict = judge(_malloc_plan(), obs)
    assert verdict.outcome == "hang" and not verdict.passed
