"""The driver's workload knobs and fault shapes: damage confined to one part of a block
(the header's guard, its check bits or size field, one canary byte), use after free at
the last byte, calloc(count > 1), and edge requests every allocator must refuse, each
seen where it was aimed and judged by the oracle, including against a broken calloc."""

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


# (fault spec, offset of the damage from the block's address (None: its size + n),
#  bytes, event kinds that catch it at standard)
SHAPES = [
    ("underflow:bytes=3", -3, 3, {"underflow", "header_corrupt"}),         # guard only
    ("underflow:bytes=1:skip=3", -4, 1, {"header_corrupt"}),                # check bits
    ("underflow:bytes=1:skip=7", -8, 1, {"header_corrupt"}),                # size field
    ("underflow:bytes=24", -24, 24, {"underflow", "header_corrupt"}),       # past the header
    ("overflow:bytes=1:skip=7", 7, 1, {"overflow"}),                        # last canary byte
    ("overflow:bytes=64", 0, 64, {"overflow"}),
]


@pytest.mark.parametrize(("spec", "offset", "nbytes", "kinds"), SHAPES,
                         ids=[s[0] for s in SHAPES])
def test_damage_lands_where_its_shape_says_and_is_caught_there(
        driver: Path, spec: str, offset: int, nbytes: int, kinds: set[str]) -> None:
    argv = [str(driver), "run", *nmm("standard"), "--seed", "31", "--threads", "2",
            "--ops", "6000", "--sizes", "16-2048", "--progress-every", "0",
            "--fault", f"{spec}:count=3"]
    obs = run_child(argv, 120.0)
    assert obs.exit_code == 0 and obs.result is not None, obs.stderr_tail
    assert len(obs.faults) == 3
    for f in obs.faults:
        want = f.size + offset if spec.startswith("overflow") else offset
        assert (f.offset, f.bytes) == (want, nbytes)
        caught = [e for e in obs.events
                  if e.address == f.address and (e.seq or 0) > (f.seq or 0)]
        assert caught and caught[0].kind in kinds, (f, obs.events)
    # the shapes keep the trial's books straight (damaged blocks are retired)
    verdict = judge(_plan(spec, "standard"), obs)
    assert verdict.passed, verdict.reasons


def _plan(spec: str, level: str) -> Plan:
    kind, *rest = spec.split(":")
    fault: dict[str, Any] = {"kind": kind, "count": 3}
    for kv in rest:
        key, _, value = kv.partition("=")
        fault[key] = int(value)
    return Plan.model_validate({
        "schema_version": 1, "target": {"kind": "nmm", "level": level},
        "workload": {"threads": 2, "ops": 6000, "sizes": ["16-2048"]}, "faults": [fault]})


def test_uaf_write_last_hits_the_freed_blocks_last_bytes(run: Any) -> None:
    trial = run("run", *nmm("paranoid"), "--seed", "8", "--threads", "1", "--ops", "6000",
                "--sizes", "16-2048", "--progress-every", "0",
                "--fault", "uaf_write:variant=last:bytes=4:count=2")
    assert trial.returncode == 0, trial.stderr
    for f in trial.of("fault"):
        assert f["variant"] == "last" and f["offset"] == f["size"] - 4 and f["bytes"] == 4
        ev = [e for e in trial.of("event") if e["address"] == f["address"]
              and e["kind"] == "use_after_free" and e["seq"] > f["seq"]]
        # the event names the first damaged byte: the block's last four
        assert ev and ev[0]["detail"] == f["size"] - 4, trial.of("event")


def test_uaf_read_last_reads_the_last_byte(run: Any) -> None:
    trial = run("run", *nmm("paranoid"), "--seed", "3", "--threads", "1", "--ops", "4000",
                "--sizes", "16-1024", "--progress-every", "0", "--fault", "uaf_read:variant=last")
    assert trial.returncode == 0, trial.stderr
    (f,) = trial.of("fault")
    assert f["offset"] == f["size"] - 1
    (done,) = trial.of("fault_done")
    assert (done["was"], done["read"]) == (0x5A, 0xDB)  # paranoid's poison, not the data


def _stream(driver: Path, *args: str) -> str:
    proc = subprocess.run([str(driver), "stream", *args], capture_output=True, text=True,
                          check=True, timeout=60)
    return proc.stdout


def _shape(text: str) -> list[tuple[str, str]]:
    return [(ln.split()[1], ln.split()[2]) for ln in text.splitlines() if ln[0].isdigit()]


def test_calloc_count_splits_the_size_and_keeps_the_stream(driver: Path) -> None:
    base = ["--seed", "5", "--threads", "1", "--sizes", "16-4096", "--calloc", "0.5",
            "--worker", "0", "--count", "400"]
    one = _stream(driver, *base)
    many = _stream(driver, *base, "--calloc-count", "16")
    counts = [int(w.split("=")[1]) for line in many.splitlines()
              for w in line.split() if w.startswith("count=")]
    assert len(counts) > 50 and max(counts) > 8 and min(counts) >= 2
    for line in many.splitlines():
        words = dict(w.split("=") for w in line.split()[2:] if "=" in w)
        if "count" in words:
            assert words["flavor"] == "calloc" and int(words["size"]) % int(words["count"]) == 0
    # the same slots and kinds in the same order: the count comes from the flavor draw
    assert _shape(one) == _shape(many)
    assert "count=" not in one


@pytest.mark.parametrize("level", ["off", "standard", "paranoid"])
def test_edge_requests_are_refused_and_counted_apart(driver: Path, level: str) -> None:
    argv = [str(driver), "run", *nmm(level), "--seed", "4", "--threads", "2", "--ops", "6000",
            "--sizes", "16-1024:8,1025-2000000:1", "--calloc-count", "64", "--calloc", "0.2",
            "--edge-every", "200", "--progress-every", "0"]
    obs = run_child(argv, 120.0)
    r = obs.result
    assert obs.exit_code == 0 and r is not None, obs.stderr_tail
    # four requests every 200 ops per worker, and a realloc when its slot is live
    assert r.edge_nulls >= 2 * (6000 // 200) * 4
    assert r.stats["alloc_failures"] == r.alloc_failures + r.edge_nulls
    assert r.unexpected_status == 0 and not obs.details
    plan = Plan.model_validate({
        "schema_version": 1, "target": {"kind": "nmm", "level": level},
        "workload": {"threads": 2, "ops": 6000, "sizes": ["16-1024:8", "1025-2000000:1"],
                     "calloc": 0.2, "calloc_count": 64, "edge_every": 200}})
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons
    # the same evidence without the driver's count of refused requests: the heap's
    # failed allocations are unexplained, and the trial fails
    blind = obs.model_copy(update={"result": r.model_copy(update={"edge_nulls": 0})})
    assert not judge(plan, blind).passed


@pytest.fixture(scope="module")
def broken_malloc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("broken") / "broken_malloc.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(BROKEN_SRC), "-ldl"],
                   check=True, capture_output=True)
    return out


@pytest.mark.parametrize(("mode", "passes"), [("wrap", False), ("off", True)])
def test_a_calloc_whose_product_wraps_fails_the_trial(driver: Path, broken_malloc: Path,
                                                      mode: str, passes: bool) -> None:
    argv = [str(driver), "run", "--target", "malloc", "--seed", "1", "--threads", "1",
            "--ops", "4000", "--sizes", "16-1024", "--edge-every", "500",
            "--progress-every", "0"]
    obs = run_child(argv, 120.0, env={"LD_PRELOAD": str(broken_malloc), "BROKEN_MALLOC": mode,
                                      "PATH": "/usr/bin:/bin"})
    plan = Plan.model_validate({"schema_version": 1,
                                "target": {"kind": "malloc", "peer": "glibc"},
                                "workload": {"threads": 1, "ops": 4000, "sizes": ["16-1024"],
                                             "edge_every": 500}})
    verdict = judge(plan, obs)
    assert verdict.passed is passes, verdict.reasons
    if not passes:
        bad = [d for d in obs.details if d.type == "status_error"]
        assert bad and all(d.call == "calloc-overflow" and d.status == 0 for d in bad)
        assert any("calloc-overflow" in r for r in verdict.reasons), verdict.reasons
