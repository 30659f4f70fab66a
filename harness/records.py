"""Records that flow through the harness: protocol lines, what a trial observed, verdicts.

Protocol-line models parse the native driver's JSON lines (see
``harness/native/PROTOCOL.md``) leniently (unknown fields kept out, addresses as
ints). ``Observation`` is everything the isolation layer saw of one child;
``Verdict`` is the oracle's judgement; ``TrialRecord`` is one journal line.
All are frozen pydantic models so they round-trip through JSON unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def parse_address(value: Any) -> int:
    """An address from the protocol: ``"0x7f.."`` (hex text), decimal text or an int."""
    if isinstance(value, bool):
        raise ValueError("an address, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        return int(text, 16) if text.startswith("0x") else int(text or "0")
    if value is None:
        return 0
    raise ValueError(f"an address, got {value!r}")


class _Line(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


#: fault kinds that write bytes (``offset``/``bytes`` say where): their damage window
WRITING_FAULTS = frozenset({"overflow", "underflow", "uaf_write", "memcpy_overflow",
                            "exit_only_overflow", "zero_size_write"})


class FaultLine(_Line):
    """A ``fault`` line: one injected fault, written before it is performed."""

    id: int = 0
    kind: str
    variant: str = ""
    worker: int = 0
    op: int = 0
    address: int = 0
    size: int = 0
    #: bytes damaged (overflow, underflow, uaf_write), when the driver says
    bytes: int | None = None
    #: the fail-point spec armed (alloc_failure)
    fail: str = ""
    #: where the damage starts relative to ``address`` (overflow: size, underflow:
    #: -bytes, uaf: the first or middle byte); None from a protocol-1 driver
    offset: int | None = None
    #: the heap's latest event sequence number right before the misuse: only events
    #: with a larger ``seq`` can have been caused by it (None: the driver does not say)
    seq: int | None = None
    #: index of the line in the trial's stdout stream (ordering faults against events)
    line: int = 0
    # ---- from the fault's ``fault_done`` line (protocol 2), merged in by id
    #: the driver finished performing the fault (its ``fault_done`` line arrived)
    done: bool = False
    #: status the misused call returned (0 ok; -1: the fault makes no call)
    status: int | None = None
    #: uaf_read: the byte read after the free, and the byte the block held before it
    read: int | None = None
    was: int | None = None
    #: alloc_failure: whether the fail point armed, and the heap's injected failures then
    armed: bool | None = None
    injected_before: int | None = None
    #: memcpy_overflow on an NMM heap: the bytes its checked copy copied (clamped to the
    #: block in record mode once the overflow was seen)
    copied: int | None = None
    # ---- corrupt_meta: ``address`` is where nmm_validate must name the damage (0: a
    # count, named by no address)
    #: the first byte of the heap's books the damage wrote (0: not performed)
    damaged: int = 0
    #: a second address validate must name (freelist_link: the free block lost; a slab
    #: whose list its damaged free count disagrees with), 0 for none
    also: int = 0
    #: the structure damaged, or why none could be (no such structure on this heap)
    what: str = ""
    #: from its fault_done line: validate's problem count while the damage was there,
    #: and after it was undone; the last event sequence number of the damaged heap's
    #: probes (its reports are the events after ``seq`` up to this one)
    problems: int | None = None
    after: int | None = None
    seq_end: int | None = None

    _addr = field_validator("address", "damaged", "also", mode="before")(classmethod(
        lambda cls, v: parse_address(v)))

    @property
    def performed(self) -> bool:
        """Whether the fault was done: a block was hit (or, for alloc_failure and a
        protocol-1 line without ``done``, the line says nothing against it; for
        corrupt_meta, the heap's books written)."""
        if self.kind == "alloc_failure":
            return self.armed is not False
        if self.kind == "corrupt_meta":
            return self.damaged != 0
        return self.address != 0

    def window(self) -> tuple[int, int]:
        """The byte range ``[lo, hi)`` this fault damaged (empty for faults that write
        nothing): from ``offset`` and ``bytes`` (protocol 2), else the kind's rule."""
        n = max(self.bytes or 0, 1)
        if self.offset is not None:
            if self.kind not in WRITING_FAULTS:
                return (0, 0)
            lo = self.address + self.offset
            return (lo, lo + n)
        if self.kind in ("overflow", "memcpy_overflow", "exit_only_overflow"):
            return (self.address + self.size, self.address + self.size + n)
        if self.kind == "underflow":
            return (self.address - n, self.address)
        if self.kind == "uaf_write":
            return (self.address, self.address + max(self.size, 1))
        if self.kind == "zero_size_write":
            return (self.address, self.address + n)
        return (0, 0)


def merge_fault_done(faults: list[FaultLine], line: dict[str, Any]) -> bool:
    """Fold a ``fault_done`` line into the fault line of the same id (the last one with
    it); False if there is no such fault or the line is malformed."""
    fid = line.get("id")
    for i in range(len(faults) - 1, -1, -1):
        if faults[i].id == fid:
            update = {k: line[k] for k in ("status", "read", "was", "armed", "injected_before",
                                           "copied", "problems", "after", "seq_end")
                      if k in line}
            faults[i] = FaultLine.model_validate({**faults[i].model_dump(), **update,
                                                  "done": True})
            return True
    return False


class DetailLine(_Line):
    """A line naming one thing the driver found wrong, with its address: a block
    whose pattern was wrong (``pattern_error``), a legitimate free or realloc that
    returned an error (``status_error``), a fork child that failed (``fork_failure``),
    a block the heap walk and the driver disagree on (``walk_mismatch``)."""

    type: str
    #: pattern_error: check | realloc | calloc | aligned; walk_mismatch: unknown |
    #: missing | size | requested_size | usable_size | usable_size_checked
    what: str = ""
    #: status_error: free | realloc
    call: str = ""
    address: int = 0
    #: where the data came from (realloc: the old block), when not ``address``
    source: int | None = None
    size: int = 0
    #: first wrong byte (pattern_error; -1: the driver cannot say which)
    offset: int = 0
    status: int = 0
    walk_size: int = 0
    worker: int | None = None
    op: int | None = None
    signal: int | None = None
    exit: int | None = None
    line: int = 0

    _addr = field_validator("address", "source", mode="before")(classmethod(
        lambda cls, v: None if v is None else parse_address(v)))


#: line types parsed into ``DetailLine``
DETAIL_TYPES = frozenset({"pattern_error", "status_error", "fork_failure", "walk_mismatch"})


class EventLine(_Line):
    """An ``event`` line: one detection drained from the NMM heap."""

    kind: str
    address: int = 0
    size: int = 0
    detail: int = 0
    seq: int = 0
    op_count: int = 0
    thread: int = 0
    #: the worker that drained the event (-1: the final drain after the workers finished)
    worker: int | None = None
    driver_op: int | None = None
    line: int = 0

    _addr = field_validator("address", mode="before")(classmethod(
        lambda cls, v: parse_address(v)))


class ResultLine(_Line):
    """The ``result`` line: the last line of a trial that finished."""

    ops: int = 0
    #: ops each worker ran, by worker index: with ``duration_s`` the only record of
    #: where each stream stopped (``workload.worker_ops`` replays them); empty from a
    #: driver that does not say
    worker_ops: tuple[int, ...] = ()
    elapsed_ns: int = 0
    #: process CPU time of the workload, all threads (0 from a driver that does not say)
    cpu_ns: int = 0
    #: the driver's own peak RSS in bytes (VmHWM; 0 from a driver that does not say)
    peak_rss: int = 0
    faults: int = 0
    events: int = 0
    pattern_errors: int = 0
    alloc_failures: int = 0
    #: NULLs of the driver's edge requests (workload.edge_every), which must fail: the
    #: heap counts them among its failed allocations
    edge_nulls: int = 0
    #: NULLs a target that is not an NMM heap returned for zero-byte requests (malloc(0),
    #: calloc with a zero count or size, realloc to 0 after freeing the block, as glibc
    #: does): C allows them, so they are not allocation failures; always 0 for NMM, whose
    #: zero-byte requests get a block (a NULL is an allocation failure there)
    zero_nulls: int = 0
    #: the heap's leak report on the quiescent heap before teardown (NMM targets): its
    #: JSON's ``live_blocks``/``live_bytes`` and whether they could be read
    leak_report: dict[str, Any] | None = None
    #: blocks the driver leaked on purpose after the teardown checks (workload.exit_leaks):
    #: blocks, bytes, suppressed_blocks, suppressed_bytes
    exit_leaks: dict[str, Any] | None = None
    latency_ns: dict[str, float] = Field(default_factory=dict)
    #: nmm_stats fields (empty for a target that is not an NMM heap)
    stats: dict[str, Any] = Field(default_factory=dict)

    @field_validator("stats", "latency_ns", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    #: problems found by the final nmm_validate (None: the target has no validate)
    validate_problems: int | None = 0
    #: blocks still live after the driver freed its live set (None: not an NMM target)
    leaked_blocks: int | None = 0
    #: frees/reallocs of legitimate blocks that returned an error status
    unexpected_status: int = 0
    exit: str = "ok"
    #: fork children started, and those that failed (a wrong pattern, a refused free, a
    #: signal: each named in a fork_failure line)
    fork_children: int = 0
    fork_failures: int = 0
    # ---- protocol 2: the driver's own evidence, independent of the heap's counters
    #: fork() calls that failed (the machine's limits), and fork children whose
    #: allocations returned NULL (a fail point or limit inherited from the parent)
    fork_errors: int = 0
    fork_alloc_failures: int = 0
    #: detail lines (pattern_error, status_error...) past the driver's cap, not written
    detail_lines_dropped: int = 0
    #: the driver's own books: allocs, frees, reallocs, reallocs_moved, dropped, and
    #: its live_blocks/live_bytes (requested) once the workers finished
    counts: dict[str, int] | None = None
    #: the heap's stats once the workers finished, before teardown
    stats_before: dict[str, Any] | None = None
    #: a walk of the heap then, compared with the driver's live set: blocks, bytes,
    #: unknown (only the walk has them), missing (only the driver), size_mismatch
    walk: dict[str, int] | None = None
    #: a walk after teardown: blocks, bytes (every block freed: both 0)
    walk_after: dict[str, int] | None = None
    #: a controlled trial's scheduler: kind, its parameters, steps, switches, preemptions
    #: (and with a followed schedule trace, trace_steps and diverged_at)
    sched: dict[str, Any] | None = None


class Sample(_Line):
    """One psutil sample of the child: seconds since start, RSS bytes, threads, CPU seconds."""

    t_s: float
    rss: int
    threads: int
    cpu_s: float


class ReportFrame(_Line):
    """One frame of an NMM report (``allocator.reportlog.Frame``, what a person reads):
    the function (the inlined one, if any), its ``file:line`` when the module has debug
    info, else the module's file name and the offset into it."""

    function: str = ""
    file: str = ""
    line: int = 0
    module: str = ""
    offset: int = 0


class LoggedError(_Line):
    """An error report NMM wrote to the trial's report log: the detection and the first
    frames (from the first one that is not the allocator's) of the call that found it
    (``stack``), of the block's allocation and of its free."""

    pid: int
    kind: str
    thread: int = 0
    seq: int = 0
    address: int = 0
    size: int = 0
    extent: str = ""
    stack: tuple[ReportFrame, ...] = ()
    alloc: tuple[ReportFrame, ...] = ()
    free: tuple[ReportFrame, ...] = ()


class LoggedLeakGroup(_Line):
    """One group of a leak report: blocks of one allocation site in one category, and
    the first frames of its first sampled stack (else of its site)."""

    pid: int
    category: str
    site: str = ""
    blocks: int = 0
    bytes: int = 0
    frames: tuple[ReportFrame, ...] = ()


class ReportLog(BaseModel):
    """What NMM wrote to a trial's report logs (``harness.reportlogs``), bounded: error
    reports and leak groups (those past the bounds counted), the leak totals by category
    (blocks, bytes) over the trial's processes, and notes on anything unreadable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: processes whose log was read
    processes: int = 0
    errors: tuple[LoggedError, ...] = ()
    errors_dropped: int = 0
    leak_groups: tuple[LoggedLeakGroup, ...] = ()
    leak_groups_dropped: int = 0
    leak_totals: dict[str, tuple[int, int]] = Field(default_factory=dict)
    #: a malformed or truncated log, a file past the bounds: one line each
    notes: tuple[str, ...] = ()


class Observation(BaseModel):
    """Everything the parent saw of one trial's child process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: tuple[str, ...] = ()
    start: dict[str, Any] | None = None
    faults: tuple[FaultLine, ...] = ()
    events: tuple[EventLine, ...] = ()
    #: events dropped from this record to bound its size (they were counted, not kept)
    events_truncated: int = 0
    #: pattern_error / status_error / fork_failure / walk_mismatch lines
    details: tuple[DetailLine, ...] = ()
    last_progress: dict[str, Any] | None = None
    #: (seconds since the child started, ops over all workers) at each progress line
    progress_series: tuple[tuple[float, int], ...] = ()
    result: ResultLine | None = None
    exit_code: int | None = None
    #: the signal that killed the child (positive number), if it died by one
    signal: int | None = None
    #: the watchdog killed it: past the timeout, or stalled (then ``hang`` is set)
    timed_out: bool = False
    #: a child that stopped making progress: the phase it stopped in, its ops and step
    #: counts then, and how many seconds it showed nothing
    hang: dict[str, Any] | None = None
    #: every thread's stack of a stalled child, taken before it was killed
    stacks: str = ""
    #: the controlled scheduler's ``sched_stop`` line (outcome deadlock or hang: each
    #: worker's last yield point, the lock it waits for, the locks it holds)
    sched_stop: dict[str, Any] | None = None
    #: the driver's ``exit_report`` line (workload.exit_leaks): the default heap's leak
    #: report at exit, read back, per category
    exit_report: dict[str, Any] | None = None
    stderr_tail: str = ""
    samples: tuple[Sample, ...] = ()
    wall_s: float = 0.0
    #: stdout lines that were not valid protocol JSON
    bad_lines: int = 0
    #: the JSON reports NMM wrote to the trial's log (NMM targets; None: none written)
    report_log: ReportLog | None = None


#: the outcome of a fault the trial never got to judge: the process was already dying of
#: another fault's detection (robustness reports count it neither reached nor missed)
NOT_REACHED = "not-reached"


class FaultVerdict(BaseModel):
    """How one injected fault ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    kind: str
    variant: str = ""
    address: int = 0
    outcome: str
    allowed: tuple[str, ...] = ()
    event_kind: str | None = None
    event_seq: int | None = None
    latency_ops: int | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether this fault's outcome is one the plan allows (one never reached says
        nothing either way, so it does not fail the trial)."""
        return self.outcome in self.allowed or self.outcome == NOT_REACHED


class Check(BaseModel):
    """One integrity check of a finished trial (pattern, stats, validate, leaks...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    ok: bool
    detail: str = ""


class Verdict(BaseModel):
    """The oracle's judgement of one trial."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: str
    passed: bool
    faults: tuple[FaultVerdict, ...] = ()
    false_positives: tuple[EventLine, ...] = ()
    duplicates: int = 0
    collateral: int = 0
    checks: tuple[Check, ...] = ()
    #: human-readable reasons the trial failed (empty when it passed)
    reasons: tuple[str, ...] = ()
    #: the one-line ``nmm:`` diagnostic, when the child died with one
    diagnostic: str | None = None


class TrialRecord(BaseModel):
    """One journal line: which trial, what was seen, what the oracle said."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    plan: str
    plan_hash: str
    seed: int
    target: str
    driver: str = "native"
    started_at: str = ""
    observation: Observation
    verdict: Verdict
    ops_per_s: float = 0.0
    #: where it ran (``host:pid`` of a campaign worker; empty when run in the runner itself)
    worker: str = ""
