"""Witness lines (harness.witness): each finished op named with its worker, index and
block, the switches between workers, and a fork as an operation of its own, counted
with the allocator calls (issue 9: "a shrunk witness of at most 10 operations")."""

from __future__ import annotations

from harness.plan import Plan
from harness.witness import OpEvent, Preemption, is_operation, operations, render

STREAM0 = ["0 alloc slot=1 size=40 flavor=malloc align=0", "1 free slot=1 cross=0",
           "2 alloc slot=2 size=33 flavor=malloc align=0"]
STREAM1 = ["0 alloc slot=4 size=48 flavor=malloc align=0", "1 free slot=4 cross=0"]


def test_forks_are_operations_after_their_op() -> None:
    ops = [OpEvent(0, 1, 10), OpEvent(1, 1, 20), OpEvent(1, 2, 30), OpEvent(0, 2, 40),
           OpEvent(0, 3, 50)]
    lines = render(ops, [Preemption(0, 11, "mutant.x")], {0: STREAM0, 1: STREAM1},
                   threads=2, fork_every=2)
    assert lines == [
        "T0 op 0 alloc(40) -> b1",
        "   -- switch to T1",
        "T1 op 0 alloc(48) -> b2",
        "T1 op 1 free(b2)",
        "   -- switch to T0",
        "T0 op 1 free(b1)   (preempted 1x inside it, at mutant.x)",
        "T0 fork 1: the child allocates 64 blocks, checks and frees them",
        "T0 op 2 alloc(33) -> b3",
    ]
    assert [is_operation(ln) for ln in lines].count(True) == 6
    assert render(ops, [], {0: STREAM0, 1: STREAM1}, fork_every=0)[-1] == \
        "T0 op 2 alloc(33) -> b3"


def test_a_plans_operations_count_worker_zeros_forks() -> None:
    base = {"schema_version": 1, "name": "w", "target": {"kind": "nmm"},
            "workload": {"threads": 2, "ops": 3, "worker_ops": [3, 4], "sizes": ["32-48:1"]}}
    assert operations(Plan.model_validate(base)) == 7
    base["workload"]["fork_every"] = 1
    assert operations(Plan.model_validate(base)) == 10
    base["workload"]["fork_every"] = 2
    assert operations(Plan.model_validate(base)) == 8


def _blocked(worker: int, ops: int, waits: str, holds: str) -> dict[str, object]:
    return {"worker": worker, "state": "blocked", "ops": ops, "waiting_for": waits,
            "waiting_at": f"{waits} @ x.c:1", "holds": [{"lock": holds, "at": "y.c:2"}]}


def test_a_deadlocks_blocked_workers_name_the_op_they_are_inside() -> None:
    """lock_inversion's shrunk witness used to show only T1's finished op: T0 and T2
    were inside their first op when they blocked, and their op lines were missing."""
    stop = {"outcome": "deadlock", "threads": [
        _blocked(0, 1, "class.lock", "registry.lock"),   # inside op 1: free(b1)
        {"worker": 1, "state": "done", "ops": 2, "holds": []},
        _blocked(2, 0, "registry.lock", "class.lock")]}  # inside op 0: alloc(48)
    ops = [OpEvent(0, 1, 10)]
    lines = render(ops, [], {0: STREAM0, 2: STREAM1}, stop=stop, threads=3,
                   worker_ops=[2, 2, 2])
    assert lines == [
        "T0 op 0 alloc(40) -> b1",
        "T0 op 1 free(b1), unfinished: blocked at class.lock @ x.c:1 waiting for "
        "class.lock, holding registry.lock",
        "T2 op 0 alloc(48), unfinished: blocked at registry.lock @ x.c:1 waiting for "
        "registry.lock, holding class.lock",
    ]
    assert [is_operation(ln) for ln in lines].count(True) == 3


def test_a_worker_blocked_after_its_last_op_is_exiting_not_in_an_op() -> None:
    stop = {"outcome": "deadlock", "threads": [_blocked(1, 2, "registry.lock", "class.lock")]}
    ops = [OpEvent(1, 1, 5), OpEvent(1, 2, 6)]
    lines = render(ops, [], {1: STREAM1}, stop=stop, worker_ops=[0, 2])
    assert lines[-1] == ("T1 exiting after its last op: blocked at registry.lock @ x.c:1 "
                         "waiting for registry.lock, holding class.lock")
    assert not is_operation(lines[-1])


def test_worker_zero_blocked_where_a_fork_follows_says_so() -> None:
    stop = {"outcome": "deadlock", "threads": [_blocked(0, 1, "heap.lock", "class.lock")]}
    lines = render([OpEvent(0, 1, 3)], [], {0: STREAM0}, stop=stop, fork_every=2,
                   worker_ops=[3])
    assert lines[-1].startswith("T0 op 1 free(b1) (or fork 1 after it), unfinished: ")
