"""corrupt_meta: damage to the heap's own books (allocator/src/chaos_corrupt.c, the chaos
and coverage builds only). The release libraries hold no way to do it; the production
driver refuses the fault by name, a peer target calls it not applicable; the chaos
driver damages each shape after the workload, nmm_validate names it (and stats and the
exit check return on the damaged heap: a slab pushed on its list twice made
nmm_stats_get loop forever), the damage is undone, and the plans pass at every level."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from harness._driver import driver_args
from harness._isolate import run_child
from harness.campaign import _retarget, define, skipped_pairs
from harness.engine import NativeEngine
from harness.loader import load_plan
from harness.oracle import judge
from harness.plan import CORRUPT_SHAPES, MallocTarget
from tests.chaos.conftest import ROOT, Run

NATIVE = ROOT / "allocator" / "_native"
PLANS = ROOT / "chaos_plans"
#: the damage hook's symbols (chaos.h): none may be in a release library
HOOK = ("chaos_corrupt_plan", "chaos_corrupt_apply", "chaos_corrupt_undo", "chaos_corrupt_name")
SMALL = ["--threads", "2", "--ops", "4000", "--sizes", "16-256:1", "--live", "800",
         "--progress-every", "0"]


def _symbols(path: Path, dynamic: bool) -> set[str]:
    cmd = ["nm", "-D", "--defined-only", str(path)] if dynamic else ["nm", "-a", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if len(line.split()) >= 2}


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils (nm)")
def test_the_release_libraries_have_no_damage_hook() -> None:
    shared = [NATIVE / "libnmm.so", NATIVE / "libnmm_preload.so",
              *sorted((ROOT / "allocator").glob("_nmm_cffi*.so"))]
    assert all(p.exists() for p in shared), shared
    for lib in shared:
        assert not set(HOOK) & _symbols(lib, dynamic=True), lib
        assert not set(HOOK) & _symbols(lib, dynamic=False), lib
        loaded = ctypes.CDLL(str(lib))
        assert not [name for name in HOOK if hasattr(loaded, name)], lib
    assert not set(HOOK) & _symbols(NATIVE / "libnmm.a", dynamic=False)
    # the same look finds it where it is built: the chaos flavor's archive
    assert set(HOOK) <= _symbols(NATIVE / "libnmm_chaos.a", dynamic=False)


def test_the_production_driver_refuses_the_fault_by_name(release_driver: Path,
                                                         run_driver: Callable[..., Run]) -> None:
    run = run_driver(release_driver, *SMALL, "--fault", "corrupt_meta:variant=list_cycle")
    assert run.returncode == 2
    assert "needs the chaos build's driver" in run.stderr and "nmm-driver_chaos" in run.stderr


def test_a_peer_target_is_not_applicable(chaos_driver: Path,
                                         run_driver: Callable[..., Run]) -> None:
    run = run_driver(chaos_driver, "--target", "malloc", *SMALL, "--fault", "corrupt_meta")
    assert run.returncode == 2
    assert "not applicable to --target malloc" in run.stderr
    plan = load_plan(PLANS / "corrupt_meta.toml")
    assert _retarget(plan, MallocTarget(kind="malloc", peer="glibc")) is None


def test_the_plans_ask_for_the_chaos_driver() -> None:
    for name in ("corrupt_meta.toml", "corrupt_quarantine.toml"):
        plan = load_plan(PLANS / name)
        assert plan.needs_chaos_build
        engine = NativeEngine()
        assert engine.command_for(plan)[0].endswith("nmm-driver_chaos")
        assert NativeEngine(["/bin/true"]).command_for(plan) == ["/bin/true"]  # --driver
    defn = define([PLANS / "corrupt_meta.toml"], targets=("plan", "malloc:glibc"))
    notes = skipped_pairs(defn)
    assert any("corrupt_meta x" in n and "an NMM heap's own books" in n for n in notes), notes


@pytest.mark.parametrize("shape", CORRUPT_SHAPES)
def test_each_shape_is_named_by_validate_and_undone(chaos_driver: Path,
                                                    run_driver: Callable[..., Run],
                                                    shape: str) -> None:
    opts = "level=paranoid:tcache=0:limit=64M" if shape.startswith("quar") else \
        "level=standard:limit=64M"
    run = run_driver(chaos_driver, *SMALL, "--nmm-options", opts,
                     "--fault", f"corrupt_meta:variant={shape}", timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    fault, done = run.one("fault"), run.one("fault_done")
    assert int(fault["damaged"], 16), fault
    assert done["problems"] >= 1 and done["after"] == 0 and done["stats_status"] == 0
    events = [ln for ln in run.lines if ln.get("type") == "event"]
    assert len(events) == done["problems"] == done["seq_end"]
    assert all(e["kind"] == "freelist_corrupt" for e in events)
    named = int(fault["address"], 16)
    assert any(int(e["address"], 16) == named for e in events), (fault, events)
    assert run.one("result")["validate_problems"] == 0  # the final sweep: a whole heap


@pytest.mark.parametrize(("name", "level"), [("corrupt_meta.toml", "off"),
                                             ("corrupt_meta.toml", "standard"),
                                             ("corrupt_meta.toml", "paranoid"),
                                             ("corrupt_quarantine.toml", "paranoid")])
def test_the_plans_pass_judged_by_the_oracle(chaos_driver: Path, name: str, level: str) -> None:
    plan = load_plan(PLANS / name, overrides=[f"target.level={level}"])
    obs = run_child([str(chaos_driver), *driver_args(plan, plan.seed)], 60.0)
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons
    assert {v.variant for v in verdict.faults} == {f.variant for f in plan.faults}
    assert all(v.outcome == "detected" for v in verdict.faults)
