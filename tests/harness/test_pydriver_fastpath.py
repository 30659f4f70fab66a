"""The Python driver's batched hot loop: it performs exactly the ops ``step()`` does,
still catches damaged or doubly handed-out blocks, and the ``pydriver`` bench kernel."""

from __future__ import annotations

import os
from typing import Any

import pytest

# The package build makes the binding: under CI its absence is a failure, not a skip.
allocator = (pytest.importorskip("allocator") if not os.environ.get("CI")
             else __import__("allocator"))

from harness import bench  # noqa: E402
from harness._peers import get_target  # noqa: E402
from harness.oracle import judge  # noqa: E402
from harness.plan import Plan  # noqa: E402
from harness.pydriver import SIZE_BITS, PyDriver, run_python_trial, size_table  # noqa: E402

GOLDEN = 0x9E3779B97F4A7C15


def make_plan(level: str = "standard", **workload: Any) -> Plan:
    w: dict[str, Any] = {"threads": 3, "ops": 2000, "live": 40,
                         "sizes": ["16-512:4", "513-8192:1", "24-24:1"], "cross": 0.3}
    w.update(workload)
    return Plan.model_validate({"schema_version": 1, "target": {"level": level},
                                "workload": w})


def slot_state(driver: PyDriver) -> list[Any]:
    return [(w.op, [bool(a) for a in w.addr], list(w.size), list(w.block))
            for w in driver.workers]


@pytest.mark.parametrize("workload", [
    {},
    {"threads": 1, "sizes": ["16-1024:1"], "cross": 0.0},
    {"threads": 2, "sizes": ["64-64:1"], "check": False},
])
def test_turns_of_many_ops_run_the_same_streams_as_single_steps(
        workload: dict[str, Any]) -> None:
    """Only when handed-over blocks are freed depends on the turn length."""
    plan = make_plan(**workload)
    batched, stepped = PyDriver(plan, 11), PyDriver(plan, 11)
    try:
        batched._churn(batched.workers, 700)
        for _ in range(700):
            for index in range(plan.workload.threads):
                stepped.step(index)
        assert slot_state(batched) == slot_state(stepped)
        assert batched.ops == stepped.ops == 700 * plan.workload.threads
        a, b = batched.heap.stats(), stepped.heap.stats()
        assert a.allocs == b.allocs and a.allocs > 100
        results = batched.finish(), stepped.finish()
        assert results[0].stats["frees"] == results[1].stats["frees"] == a.allocs
        assert results[0].stats["frees"] > 100
        assert results[0].pattern_errors == results[1].pattern_errors == 0
    finally:
        batched.close()
        stepped.close()


def test_draws_do_not_depend_on_how_they_are_taken() -> None:
    plan = make_plan()
    one, other = PyDriver(plan, 8), PyDriver(plan, 8)
    try:
        whole = list(one.workers[1].take(5000))
        parts = [d for n in (1, 2, 4093, 8191, 1) for d in other.workers[1].take(n)][:5000]
        assert whole == parts
        assert whole != list(other.workers[0].take(5000))
    finally:
        one.close()
        other.close()


def test_sizes_follow_the_weighted_ranges() -> None:
    table = size_table(((16, 512, 4.0), (513, 8192, 1.0), (24, 24, 1.0)))
    assert len(table) == 1 << SIZE_BITS
    share = {"a": 0, "b": 0}
    for size in table:
        assert 16 <= size <= 8192
        share["b" if size > 512 else "a"] += 1
    assert share["b"] / len(table) == pytest.approx(1 / 6, abs=1e-4)
    assert table.count(24) / len(table) > 1 / 6  # the fixed range, plus 24s drawn in 16-512
    log_uniform = size_table(((16, 1024, 1.0),))
    assert log_uniform[0] == 16 and log_uniform[-1] == 1024
    assert log_uniform[len(log_uniform) // 2] in (127, 128)  # the geometric midpoint


def test_a_range_with_a_tiny_weight_is_still_drawn() -> None:
    table = size_table(((16, 64, 1.0), (100_000, 100_000, 1e-9), (4096, 8192, 1e-7)))
    assert len(table) == 1 << SIZE_BITS
    assert table.count(100_000) == 1
    assert any(4096 <= size <= 8192 for size in table)


def test_a_damaged_live_block_is_caught_when_the_workload_frees_it() -> None:
    plan = make_plan(threads=1, cross=0.0)
    driver = PyDriver(plan, 3)
    try:
        driver._churn(driver.workers, 200)
        worker = driver.workers[0]
        i = next(k for k, a in enumerate(worker.addr) if a and worker.size[k] > 40)
        address, size, block_id = worker.addr[i], worker.size[i], worker.block[i]
        raw = driver.heap.raw()
        last = address + size - 1
        raw.unsafe_write(last, bytes([raw.unsafe_read(last, 1)[0] ^ 4]))
        while worker.block[i] == block_id:  # until the stream frees or reallocs the block
            driver.step(0)
        assert driver.pattern_errors == 1
        assert driver.unexpected_status == 0
        driver.finish()
        verdict = judge(plan, driver.observation())
    finally:
        driver.close()
    assert not verdict.passed
    assert any("fill pattern" in reason for reason in verdict.reasons)


def test_a_block_handed_out_twice_is_caught() -> None:
    """Give one address to two slots, as an allocator handing a live block out again
    would: the second owner's fill breaks the first's pattern, the second free fails."""
    plan = make_plan(threads=1, cross=0.0)
    driver = PyDriver(plan, 5)
    try:
        driver._churn(driver.workers, 100)
        worker = driver.workers[0]
        live = next(k for k, a in enumerate(worker.addr) if a and worker.size[k] >= 16)
        empty = worker.addr.index(0)
        address, size = worker.addr[live], worker.size[live]
        again = worker.next_id
        worker.next_id += 1
        word = ((again + 1) * GOLDEN % 2**64).to_bytes(8, "little")
        driver.heap.raw().unsafe_write(address, (word * (size // 8 + 1))[:size])
        worker.addr[empty], worker.size[empty], worker.block[empty] = address, size, again
        driver.finish()
        verdict = judge(plan, driver.observation())
    finally:
        driver.close()
    assert driver.pattern_errors == 1
    assert driver.unexpected_status == 1  # the second owner's free: a double free
    assert not verdict.passed


def test_unchecked_workload_writes_no_pattern_and_is_clean() -> None:
    plan = make_plan("off", threads=2, check=False)
    driver = PyDriver(plan, 2)
    driver._churn(driver.workers, 300)
    raw = driver.heap.raw()
    unfilled = [not raw.check_pattern(a, w.size[k], w.block[k])
                for w in driver.workers for k, a in enumerate(w.addr) if a]
    assert len(unfilled) > 30 and all(unfilled)
    obs = driver.run()  # the whole trial on top
    assert obs.result is not None and obs.result.pattern_errors == 0
    assert judge(plan, obs).outcome == "clean"


def test_alloc_failures_are_counted_and_the_stream_goes_on() -> None:
    plan = Plan.model_validate({
        "schema_version": 1, "target": {"level": "standard"},
        "workload": {"threads": 2, "ops": 3000, "live": 32},
        "faults": [{"kind": "alloc_failure", "fail": "alloc@every7,max30"}]})
    obs = run_python_trial(plan, 4)
    assert obs.result is not None
    assert obs.result.alloc_failures == 30
    assert obs.result.ops == 6000
    verdict = judge(plan, obs)
    assert verdict.passed, verdict.reasons


def test_pydriver_kernel_measures_nmm_heaps_only() -> None:
    kernel = bench.Kernel("pydriver", "pydriver", "kops/s", True, "pydriver", 2, 4000, 4000,
                          "test")
    cell = bench.measure(kernel, get_target("nmm-standard"), quick=True)
    assert cell.error is None and cell.value is not None and cell.value > 0
    assert cell.extra["ops"] == 4000 and cell.extra["level"] == "standard"
    assert cell.extra["kops_per_cpu_s"] > 0
    na = bench.measure(kernel, get_target("glibc"), quick=True)
    assert na.value is None and na.error is None and "n/a" in na.extra["note"]
    assert "pydriver" in [k.name for k in bench.KERNELS]


def test_reallocs_are_ops_of_the_stream_and_keep_their_slot() -> None:
    plan = make_plan(threads=2, ops=3000)
    driver = PyDriver(plan, 6)
    calls: list[tuple[int, int, int, int, int]] = []
    real = driver._raw.realloc_pattern

    def counting(*args: int) -> int:
        calls.append(args)
        return real(*args)

    driver._raw.realloc_pattern = counting
    obs = driver.run()
    assert obs.result is not None
    live_ops = obs.result.stats["frees"]  # every block is freed once by the end
    assert 0.02 * live_ops < len(calls) < 0.1 * live_ops
    assert all(args[3] >> 40 in (0, 1) and args[4] > args[3] for args in calls)
    verdict = judge(plan, obs)
    assert verdict.outcome == "clean", verdict.reasons


def test_blocks_damaged_while_live_are_caught_by_their_realloc() -> None:
    """Every block the stream reallocs is wiped first: each realloc must count it."""
    plan = make_plan(threads=1, cross=0.0, sizes=["64-64:1"], ops=2000)
    driver = PyDriver(plan, 9)
    real = driver._raw.realloc_pattern
    raw = driver.heap.raw()

    wiped: list[int] = []

    def wipe_first(address: int, was: int, n: int, was_key: int, key: int) -> int:
        raw.unsafe_write(address, bytes(was))
        wiped.append(address)
        return real(address, was, n, was_key, key)

    driver._raw.realloc_pattern = wipe_first
    obs = driver.run()
    assert obs.result is not None and len(wiped) > 10
    assert obs.result.pattern_errors == len(wiped)
    assert not judge(plan, obs).passed
