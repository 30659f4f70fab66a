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
    #: blocks this fault leaves allocated on purpose (optional protocol field)
    leaks: int | None = None
    #: index of the line in the trial's stdout stream (ordering faults against events)
    line: int = 0

    _addr = field_validator("address", mode="before")(classmethod(
        lambda cls, v: parse_address(v)))


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


class Sample(_Line):
    """One psutil sample of the child: seconds since start, RSS bytes, threads, CPU seconds."""

    t_s: float
    rss: int
    threads: int
    cpu_s: float


class Observation(BaseModel):
    """Everything the parent saw of one trial's child process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    argv: tuple[str, ...] = ()
    start: dict[str, Any] | None = None
    faults: tuple[FaultLine, ...] = ()
    events: tuple[EventLine, ...] = ()
    #: events dropped from this record to bound its size (they were counted, not kept)
    events_truncated: int = 0
    last_progress: dict[str, Any] | None = None
    result: ResultLine | None = None
    exit_code: int | None = None
    #: the signal that killed the child (positive number), if it died by one
    signal: int | None = None
    timed_out: bool = False
    stderr_tail: str = ""
    samples: tuple[Sample, ...] = ()
    wall_s: float = 0.0
    #: stdout lines that were not valid protocol JSON
    bad_lines: int = 0


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
        """Whether this fault's outcome is one the plan allows."""
        return self.outcome in self.allowed


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
