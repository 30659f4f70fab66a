"""The plan schema: frozen pydantic models that describe one chaos or benchmark plan.

A plan is data (TOML in ``chaos_plans/``); these models reject unknown keys and bad
values. Loading, ``include`` and ``--set`` overrides live in ``harness.loader``.
Nothing here touches the file system or runs anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

SCHEMA_VERSION = 1
#: most trials one plan may ask for (``seeds``)
MAX_SEEDS = 100_000

FaultKind = Literal[
    "double_free", "invalid_free", "overflow", "underflow", "uaf_write", "uaf_read",
    "realloc_freed", "alloc_failure", "dealloc_mismatch", "sized_delete", "memcpy_overflow",
    "exit_only_overflow", "zero_size_write", "corrupt_meta",
]
FAULT_KINDS: tuple[str, ...] = (
    "double_free", "invalid_free", "overflow", "underflow", "uaf_write", "uaf_read",
    "realloc_freed", "alloc_failure", "dealloc_mismatch", "sized_delete", "memcpy_overflow",
    "exit_only_overflow", "zero_size_write", "corrupt_meta",
)

#: Outcome classes a trial (and each injected fault) can end in. ``clean`` is a trial
#: with no fault injected and nothing detected.
#: ``deadlock``: the controlled scheduler found every worker blocked on a lock another
#: holds (a ``hang`` under control is its step bound).
Outcome = Literal["detected", "detected-abort", "crashed", "missed", "false-positive",
                  "hang", "deadlock", "clean"]
OUTCOMES: tuple[str, ...] = ("detected", "detected-abort", "crashed", "missed",
                             "false-positive", "hang", "deadlock", "clean")
#: how threads may interleave (``[scheduler] kind``): ``free`` lets the OS decide; the
#: others run one worker at a time in the chaos build, every choice from the seed
SCHEDULER_KINDS: tuple[str, ...] = ("free", "pct", "pos", "surw", "random")

#: corrupt_meta's shapes: damage to the heap's own books (slab lists, counts, the
#: free stack, the quarantine, the limit charge) done after the workload and undone
#: after nmm_validate had its look; only the chaos and coverage drivers can do it
CORRUPT_SHAPES: tuple[str, ...] = (
    "list_twice", "list_cycle", "free_count", "freelist_link", "quar_twice", "quar_lost",
    "quar_bytes", "limit_charge", "live_count", "retained")
#: fault kinds only the chaos build's driver (or the coverage driver) performs
CHAOS_BUILD_FAULTS: tuple[str, ...] = ("corrupt_meta",)

#: Variants each fault kind accepts (empty tuple: the kind takes no variant).
FAULT_VARIANTS: dict[str, tuple[str, ...]] = {
    "invalid_free": ("interior", "stack", "wild", "foreign_heap"),
    "uaf_write": ("first", "middle", "last"),
    "uaf_read": ("first", "middle", "last"),
    # which family made the block and which call frees it (malloc'd block deleted, new'd
    # block freed, new[] deleted, new delete[]'d)
    "dealloc_mismatch": ("malloc_delete", "new_free", "new_array_delete", "new_delete_array"),
    # a sized delete of size + bytes, or an aligned new deleted without its alignment
    "sized_delete": ("size", "alignment"),
    "memcpy_overflow": ("memcpy", "memmove", "memset"),
    # which of the heap's own structures is damaged (allocator/src/chaos.h
    # NMM_CORRUPT_SHAPES; what nmm_validate must say of each: oracle.CORRUPT_REPORTS)
    "corrupt_meta": CORRUPT_SHAPES,
}
#: kinds that take ``bytes`` (how many bytes the misuse writes or is off by)
BYTES_KINDS: tuple[str, ...] = ("overflow", "underflow", "uaf_write", "memcpy_overflow",
                                "exit_only_overflow", "zero_size_write", "sized_delete")
FAIL_POINTS: tuple[str, ...] = ("alloc", "pool.grow", "os.map", "tcache.refill", "large.map",
                                "slab.desc")
_FAIL_TERM = re.compile(r"^(p(0(\.\d+)?|1(\.0+)?|\.\d+|(100|\d{1,2})(\.\d+)?%)|"
                        r"every\d+|after\d+|max\d+|min\d+[kKmMgG]?|maxsize\d+[kKmMgG]?|off)$")
_OPTION_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


def field_error(field: str, given: Any, expected: str) -> PydanticCustomError:
    """An error about one key of the model being validated (the loader names the key)."""
    return PydanticCustomError("plan_field", "{field}: given {given}; expected {expected}",
                               {"field": field, "given": repr(given), "expected": expected})


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


def _pieces(options: dict[str, str | int | float | bool]) -> list[str]:
    """``key=value`` pieces of NMM_OPTIONS (a bool as 1 or 0)."""
    return [f"{key}={('1' if item else '0') if isinstance(item, bool) else item}"
            for key, item in options.items()]


class NmmTarget(_Model):
    """An NMM heap inside the native driver, configured like ``NMM_OPTIONS``."""

    kind: Literal["nmm"] = "nmm"
    level: Literal["off", "standard", "paranoid"] = "standard"
    policy: Literal["record", "abort"] = "record"
    #: any further NMM_OPTIONS key (``quarantine = "4M"``, ``sweep = 1000``)
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    #: NMM_OPTIONS process keys (``avx2 = 0``): they configure the whole driver process,
    #: so they go into its environment's ``NMM_OPTIONS``, not into its heap's options
    process_options: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("options", "process_options")
    @classmethod
    def _check_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not _OPTION_KEY.match(key):
                raise field_error(key, item, "an NMM_OPTIONS key (lower-case letters, "
                                  "digits, _)")
            if key in ("level", "policy"):
                raise field_error(key, item, f"no {key} here: set it as target.{key}")
            if isinstance(item, str) and (":" in item or "=" in item):
                raise field_error(key, item, "a value without ':' or '='")
        return value

    def nmm_options(self) -> str:
        """The ``NMM_OPTIONS`` string for this target (``level=standard:policy=record``)."""
        parts = [f"level={self.level}", f"policy={self.policy}"]
        parts += _pieces(self.options)
        return ":".join(parts)

    def process_env(self) -> dict[str, str]:
        """The driver's environment for ``process_options`` (``{"NMM_OPTIONS": "avx2=0"}``;
        empty when there are none)."""
        return {"NMM_OPTIONS": ":".join(_pieces(self.process_options))} \
            if self.process_options else {}

    @property
    def label(self) -> str:
        """A short name for reports: ``nmm:standard`` (``nmm:standard+abort`` if aborting)."""
        return f"nmm:{self.level}" + ("+abort" if self.policy == "abort" else "")


class MallocTarget(_Model):
    """A foreign allocator: the driver's ``malloc`` target with the peer under ``LD_PRELOAD``
    (``glibc``, ``glibc-debug``, ``jemalloc``, ``mimalloc``, ``tcmalloc``, ``scudo``, ...;
    see ``harness._peers``). Judged from exit status, signal and stderr only."""

    kind: Literal["malloc"]
    peer: str = Field(min_length=1, pattern=r"^[a-z0-9_.-]+$")

    @property
    def label(self) -> str:
        """``malloc:<peer>``."""
        return f"malloc:{self.peer}"


class LibTarget(_Model):
    """A user's own allocator: a shared library that replaces ``malloc`` (the driver's
    ``malloc`` target with ``path`` under ``LD_PRELOAD``, plus ``env``). Judged like a peer,
    from exit status, signal and stderr."""

    kind: Literal["lib"]
    #: the library's path (a relative one is taken from the current directory when run)
    path: str = Field(min_length=1)
    #: environment variables the library reads (``MYALLOC_CHECKS = "1"``)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise field_error(key, value[key], "an environment variable name "
                                  "(letters, digits, _)")
        return value

    @property
    def label(self) -> str:
        """``lib:<path>``, then ``+KEY=VALUE`` for each variable set."""
        return f"lib:{self.path}" + "".join(f"+{k}={v}" for k, v in sorted(self.env.items()))


def parse_target(text: str) -> dict[str, Any]:
    """The short form of a target: ``nmm``, ``nmm:<level>``, ``malloc:<peer>`` or
    ``lib:<path>``."""
    kind, _, rest = text.strip().partition(":")
    if kind == "nmm":
        return {"kind": "nmm", "level": rest} if rest else {"kind": "nmm"}
    if kind == "malloc" and rest:
        return {"kind": "malloc", "peer": rest}
    if kind == "lib" and rest:
        return {"kind": "lib", "path": rest}
    raise field_error("target", text, "nmm, nmm:<level>, malloc:<peer> or lib:<path> "
                      "(or a table)")


Target = Annotated[NmmTarget | MallocTarget | LibTarget, Field(discriminator="kind")]


class SizeRange(_Model):
    """Requested sizes drawn log-uniformly from ``lo..hi`` with relative ``weight``."""

    lo: int = Field(ge=0, le=1 << 34)
    hi: int = Field(ge=0, le=1 << 34)
    weight: int = Field(default=1, ge=1, le=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*(?::\s*(\d+)\s*)?", value)
            if not match:
                raise ValueError(f"size range {value!r} is not 'lo-hi' or 'lo-hi:weight'")
            return {"lo": int(match[1]), "hi": int(match[2]),
                    "weight": int(match[3]) if match[3] else 1}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> SizeRange:
        if self.lo > self.hi:
            raise field_error("hi", self.hi, f"at least lo ({self.lo})")
        return self


class Workload(_Model):
    """What each worker thread does: how many ops, which sizes, how much sharing.

    How long a trial runs: ``ops`` alone, each worker runs exactly ``ops`` operations.
    With ``duration_s``, each worker first runs its ``ops`` (default 100000: the floor
    and the fault window, where every seeded fault lands, exactly as in an ``ops``
    trial) and then goes on with the same stream until ``duration_s`` seconds after the
    start; the trial record keeps each worker's op count (``result.worker_ops``).
    ``worker_ops`` pins those counts (one per thread, each at least ``ops``) to replay
    such a trial op for op; it takes the place of ``duration_s`` when both are set.
    """

    threads: int = Field(default=2, ge=1, le=1024)
    ops: int | None = Field(default=None, ge=1, le=10**10)
    duration_s: float | None = Field(default=None, gt=0, le=86400)
    worker_ops: tuple[int, ...] | None = Field(default=None, min_length=1, max_length=1024)
    sizes: tuple[SizeRange, ...] = Field(
        default=(SizeRange(lo=16, hi=1024, weight=1),), min_length=1, max_length=64)
    live: int = Field(default=1000, ge=1, le=10**7)
    cross: float = Field(default=0.0, ge=0.0, le=1.0)
    thread_churn: int = Field(default=0, ge=0)
    fork_every: int = Field(default=0, ge=0)
    progress_every: int = Field(default=10000, ge=1)
    check: bool = True
    #: share of ops on a live slot that realloc it (to a size drawn like any other, so
    #: across classes, small to large and large to large)
    realloc: float = Field(default=0.05, ge=0.0, lt=1.0)
    #: shares of allocations made by calloc and by aligned_alloc (alignment 64..4096)
    calloc: float = Field(default=0.04, ge=0.0, le=1.0)
    aligned: float = Field(default=0.04, ge=0.0, le=1.0)
    #: calloc(count, size / count) with count drawn from 1..calloc_count
    calloc_count: int = Field(default=1, ge=1, le=65536)
    #: every N ops each worker makes requests every allocator must refuse with NULL (a
    #: calloc whose product overflows size_t, sizes no heap can hold, a realloc of a live
    #: block to one); 0 = never
    edge_every: int = Field(default=0, ge=0)
    #: run on the process's default heap (configured through NMM_OPTIONS) and, after the
    #: teardown checks, leak this many blocks on purpose (some under a suppressed
    #: function): the heap's leak report at exit must list exactly them (NMM targets
    #: with tracking; other targets ignore it); 0 = a heap of the trial's own
    exit_leaks: int = Field(default=0, ge=0, le=4096)
    #: with exit_leaks (NMM targets, x86-64): this many threads each allocate one block and
    #: park until the process exits, holding its address in a register alone; the heap's
    #: scan at exit must stop them to find those blocks still reachable
    exit_held: int = Field(default=0, ge=0, le=16)
    #: with exit_leaks (NMM targets): the process's ``symbolizer`` key for the report at
    #: exit (a program name or path, e.g. ``addr2line``); the text report's stack must then
    #: name the lost blocks' allocation by file:line. None = the heap's own choice, unjudged
    exit_symbolizer: str | None = Field(default=None, min_length=1)
    #: with exit_leaks (NMM targets): NMM_OPTIONS pieces put before the target's own, each
    #: a bad key or value (``nosuch=1``, ``quarantine=lots``) the default heap must name on
    #: stderr, once, and ignore while every other key applies, or ``help`` (its key table
    #: on stderr); a key may come back (several bad fail specs): a line for each piece
    bad_options: list[str] = Field(default_factory=list)
    #: with exit_leaks (NMM targets, standard and paranoid): flip the byte past the end of
    #: half the lost blocks (small and large) and, at paranoid, one byte of a freed
    #: block's poison; the heap's exit check (``exit_check``, on at paranoid) must name
    #: each at its address (overflow, use_after_free) in the report at exit, and nothing else
    exit_damage: bool = False

    @field_validator("bad_options")
    @classmethod
    def _check_bad_options(cls, value: list[str]) -> list[str]:
        for piece in value:
            key = piece.split("=", 1)[0].strip()
            if not key or ":" in piece:
                raise field_error("bad_options", piece, "one NMM_OPTIONS piece (key or "
                                  "key=value, no ':')")
        helps = [p for p in value if p.split("=", 1)[0].strip() == "help"]
        if len(helps) > 1:
            raise field_error("bad_options", helps[1], "one 'help' piece")
        return value

    @model_validator(mode="after")
    def _shares_fit(self) -> Workload:
        if self.calloc + self.aligned > 1.0:
            raise field_error("aligned", self.aligned, f"at most {1.0 - self.calloc:g}: "
                              "calloc and aligned are shares of the allocations, together "
                              "at most 1")
        return self

    @model_validator(mode="after")
    def _exit_damage_on_leaked_blocks(self) -> Workload:
        if self.exit_damage and not self.exit_leaks:
            raise field_error("exit_damage", self.exit_damage,
                              "needs exit_leaks (the damaged blocks are leaked ones, seen by "
                              "the default heap's exit check)")
        return self

    @model_validator(mode="after")
    def _bad_options_on_the_default_heap(self) -> Workload:
        if self.bad_options and not self.exit_leaks:
            raise field_error("bad_options", list(self.bad_options),
                              "none without exit_leaks (only the default heap reads "
                              "NMM_OPTIONS and names its bad pieces)")
        if self.exit_held and not self.exit_leaks:
            raise field_error("exit_held", self.exit_held, "0 without exit_leaks (the parked "
                              "threads' blocks are judged by the default heap's leak report "
                              "at exit)")
        if self.exit_symbolizer is not None and not self.exit_leaks:
            raise field_error("exit_symbolizer", self.exit_symbolizer, "none without "
                              "exit_leaks (it names the symbolizer of the default heap's "
                              "leak report at exit)")
        if self.exit_symbolizer is not None and ":" in self.exit_symbolizer:
            raise field_error("exit_symbolizer", self.exit_symbolizer, "a program name or "
                              "path without ':' (NMM_OPTIONS separates keys with it)")
        return self

    @model_validator(mode="after")
    def _worker_ops_fit(self) -> Workload:
        if self.worker_ops is None:
            return self
        if len(self.worker_ops) != self.threads:
            raise field_error("worker_ops", list(self.worker_ops),
                              f"one op count per worker: {self.threads} (threads)")
        floor = self.ops_per_worker
        short = [n for n in self.worker_ops if not floor <= n <= 1 << 44]
        if short:
            raise field_error("worker_ops", list(self.worker_ops),
                              f"counts of at least ops ({floor}: the fault window) "
                              f"and at most {1 << 44} (got {short[0]})")
        return self

    @property
    def ops_per_worker(self) -> int:
        """Operations every worker runs at least, and the window seeded faults land in
        (``ops``; 100000 when the plan does not give it)."""
        return self.ops if self.ops is not None else 100_000

    @property
    def timed(self) -> bool:
        """Whether a trial runs until ``duration_s`` (not pinned by ``worker_ops``)."""
        return self.duration_s is not None and self.worker_ops is None

    def sizes_spec(self) -> str:
        """The driver's ``--sizes`` argument: ``lo-hi:weight,...``."""
        return ",".join(f"{r.lo}-{r.hi}:{r.weight}" for r in self.sizes)


class Fault(_Model):
    """One kind of injected misuse: ``count`` of them (or ``rate`` per op), at seeded ops."""

    kind: FaultKind
    count: int | None = Field(default=None, ge=1, le=100_000)
    rate: float | None = Field(default=None, gt=0.0, le=0.01)
    variant: str | None = None
    bytes: int | None = Field(default=None, ge=1, le=1 << 20)
    #: overflow / underflow: bytes left intact between the block's edge and the damage
    #: (underflow ``bytes = 1, skip = 3`` hits only the header's check bits, ``bytes = 3``
    #: only its guard; overflow ``bytes = 1, skip = 7`` only the canary's last byte)
    skip: int | None = Field(default=None, ge=0, le=1 << 20)
    fail: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Fault:
        if self.count is not None and self.rate is not None:
            raise field_error("rate", self.rate, "either count or rate, not both")
        variants = FAULT_VARIANTS.get(self.kind, ())
        if self.variant is not None and self.variant not in variants:
            allowed = (f"one of {', '.join(variants)}" if variants
                       else f"no variant for {self.kind}")
            raise field_error("variant", self.variant, allowed)
        if self.bytes is not None and self.kind not in BYTES_KINDS:
            raise field_error("bytes", self.bytes, f"no bytes for {self.kind} "
                              f"({', '.join(BYTES_KINDS)} only)")
        if self.skip is not None and self.kind not in ("overflow", "underflow"):
            raise field_error("skip", self.skip, f"no skip for {self.kind} (overflow and "
                              "underflow only)")
        if self.fail is not None:
            if self.kind != "alloc_failure":
                raise field_error("fail", self.fail,
                                  f"no fail spec for {self.kind} (alloc_failure only)")
            problem = fail_spec_problem(self.fail)
            if problem:
                raise field_error("fail", self.fail, problem)
        return self

    def resolved_count(self, total_ops: int) -> int:
        """How many faults to inject into a trial of ``total_ops`` operations."""
        if self.count is not None:
            return self.count
        if self.rate is not None:
            return max(1, round(self.rate * total_ops))
        return 1

    def driver_arg(self, total_ops: int) -> str:
        """The driver's ``--fault`` argument: ``KIND[:key=val...]``."""
        parts = [self.kind, f"count={self.resolved_count(total_ops)}"]
        if self.variant is not None:
            parts.append(f"variant={self.variant}")
        if self.bytes is not None:
            parts.append(f"bytes={self.bytes}")
        if self.skip is not None:
            parts.append(f"skip={self.skip}")
        if self.kind == "alloc_failure":
            parts.append(f"fail={self.fail or 'alloc@every50,max20'}")
        return ":".join(parts)


def fail_spec_problem(spec: str) -> str | None:
    """What is wrong with a fail-point spec (``alloc@every50,max20``), or None if it is fine."""
    for one in spec.split(";"):
        name, sep, terms = one.partition("@")
        if not sep and name in FAIL_POINTS:
            continue  # a bare name fails every hit
        if not sep or name not in FAIL_POINTS:
            return (f"NAME@TERM[,TERM...] with NAME one of {', '.join(FAIL_POINTS)} "
                    f"(in {one!r})")
        for term in terms.split(","):
            if not _FAIL_TERM.match(term):
                return (f"terms p<prob>, every<n>, after<n>, max<n>, min<bytes>, "
                        f"maxsize<bytes> or off (got {term!r})")
    return None


class Scheduler(_Model):
    """How threads interleave: ``free`` (the OS decides) or one of the controlled
    strategies of the chaos build (``pct``, ``pos``, ``surw``, ``random``: one worker at a
    time, every choice from the trial's seed; harness/native/sched.c)."""

    kind: Literal["free", "pct", "pos", "surw", "random"] = "free"
    #: pct: the bug depth d it targets (d-1 priority change points); default 3
    depth: int | None = Field(default=None, ge=1, le=64)
    #: pct: the expected steps k the change points spread over (default: the driver's
    #: estimate, threads x ops x 10)
    steps: int | None = Field(default=None, ge=1, le=1 << 50)
    #: pos: each ready worker's priority is re-drawn with this chance at every step
    pos_p: float | None = Field(default=None, ge=0, le=1)
    #: a controlled trial that takes more steps is a ``hang`` (default 50M)
    max_steps: int | None = Field(default=None, ge=1, le=1 << 50)

    @model_validator(mode="after")
    def _keys_apply(self) -> Scheduler:
        if self.depth is not None and self.kind != "pct":
            raise field_error("depth", self.depth, "no depth (it applies to pct only)")
        if self.steps is not None and self.kind != "pct":
            raise field_error("steps", self.steps, "no steps (it applies to pct only)")
        if self.pos_p is not None and self.kind != "pos":
            raise field_error("pos_p", self.pos_p, "no pos_p (it applies to pos only)")
        if self.max_steps is not None and self.kind == "free":
            raise field_error("max_steps", self.max_steps,
                              "no max_steps (free-running threads take no steps)")
        return self

    @property
    def controlled(self) -> bool:
        """One worker at a time, chosen from the seed (anything but ``free``)."""
        return self.kind != "free"

    def driver_args(self) -> list[str]:
        """The driver's scheduler options (nothing for ``free``)."""
        if not self.controlled:
            return []
        args = ["--scheduler", self.kind]
        for flag, value in (("--depth", self.depth), ("--sched-steps", self.steps),
                            ("--pos-p", self.pos_p), ("--max-steps", self.max_steps)):
            if value is not None:
                args += [flag, repr(value) if isinstance(value, float) else str(value)]
        return args


class FaultExpect(_Model):
    """Per-fault-kind override of which outcomes count as a pass."""

    outcome: tuple[Outcome, ...] = Field(min_length=1)


Level = Literal["off", "standard", "paranoid"]


class LevelExpect(_Model):
    """What a plan expects when its NMM heap runs at another level (a campaign's level
    axis, or ``--set target.level=off``): ``[expect.levels.off.faults.overflow] outcome
    = ["missed"]``. A level named here gates in a campaign, like the plan's own."""

    #: allowed outcomes of each fault at this level (default: the plan's)
    outcome: tuple[Outcome, ...] | None = Field(default=None, min_length=1)
    faults: dict[FaultKind, FaultExpect] = Field(default_factory=dict)


class Expect(_Model):
    """Which outcomes count as a pass."""

    #: allowed outcome of each injected fault (and of the trial, e.g. ``hang``)
    outcome: tuple[Outcome, ...] = Field(default=("detected",), min_length=1)
    max_false_positives: int = Field(default=0, ge=0)
    #: per fault kind overrides: ``[expect.faults.uaf_write] outcome = ["missed"]``
    faults: dict[FaultKind, FaultExpect] = Field(default_factory=dict)
    #: pattern errors, stats, final validate and leaks must all check out
    integrity: bool = True
    #: a fault detected more than once is a failure unless this is true
    allow_duplicate_detections: bool = False
    #: expectations at other NMM levels than the plan's own (the level axis)
    levels: dict[Level, LevelExpect] = Field(default_factory=dict)

    def allowed_for(self, kind: str, level: str | None = None) -> tuple[str, ...]:
        """Outcomes that count as a pass for one fault of ``kind`` (on an NMM heap at
        ``level``: that level's expectations first, where the plan gives them)."""
        at = self.levels.get(level) if level else None  # type: ignore[call-overload]
        if at is not None:
            override = at.faults.get(kind)
            if override is not None:
                return override.outcome  # type: ignore[no-any-return]
            if at.outcome is not None:
                return at.outcome  # type: ignore[no-any-return]
        override = self.faults.get(kind)  # type: ignore[call-overload]
        return override.outcome if override is not None else self.outcome

    def trial_outcomes(self, level: str | None = None) -> tuple[str, ...]:
        """Outcomes a trial as a whole may end in (``hang``, ``crashed``)."""
        at = self.levels.get(level) if level else None  # type: ignore[call-overload]
        return at.outcome if at is not None and at.outcome is not None else self.outcome


class Plan(_Model):
    """One plan: a target, a workload, faults, a scheduler and expectations."""

    schema_version: Literal[1]
    name: str = Field(default="plan", min_length=1, max_length=200)
    description: str = ""
    #: pytest markers of this plan's items (``pytest chaos_plans -m "not slow"``); they
    #: change nothing a trial does and are not part of ``plan_hash``
    markers: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], ...] = ()
    seed: int = Field(default=1, ge=0, lt=1 << 64)
    seeds: int = Field(default=1, ge=1, le=MAX_SEEDS)
    target: Target = Field(default_factory=NmmTarget)
    workload: Workload = Field(default_factory=Workload)
    faults: tuple[Fault, ...] = ()
    scheduler: Scheduler = Field(default_factory=Scheduler)
    expect: Expect = Field(default_factory=Expect)
    timeout_s: float = Field(default=60.0, gt=0, le=86400)
    #: seconds a trial may show no progress (no op done, no step of a final phase,
    #: no line) before it is a hang, named with its phase and every thread's stack
    hang_s: float = Field(default=5.0, gt=0, le=86400)

    @model_validator(mode="before")
    @classmethod
    def _default_target_kind(cls, value: Any) -> Any:
        target = value.get("target") if isinstance(value, dict) else None
        if isinstance(target, str):
            value = {**value, "target": parse_target(target)}
        elif isinstance(target, dict) and "kind" not in target:
            value = {**value, "target": {"kind": "nmm", **target}}
        return value

    @model_validator(mode="after")
    def _watchdog_outlasts_duration(self) -> Plan:
        duration = self.workload.duration_s
        if self.workload.timed and duration is not None and self.timeout_s <= duration:
            raise field_error("timeout_s", self.timeout_s,
                              f"more than workload.duration_s ({duration:g}): the watchdog "
                              "would kill every trial as a hang")
        return self

    @property
    def needs_chaos_build(self) -> bool:
        """A controlled scheduler, a mutant or damage to the heap's books
        (``CHAOS_BUILD_FAULTS``): only the chaos driver has them."""
        return self.scheduler.controlled or (
            isinstance(self.target, NmmTarget) and "mutant" in self.target.options) or any(
            f.kind in CHAOS_BUILD_FAULTS for f in self.faults)

    @property
    def total_ops(self) -> int:
        """Operations over all workers that a trial runs at least (every op of an ``ops``
        trial; the fault window of a ``duration_s`` one). Fault ``rate`` applies to it."""
        return self.workload.ops_per_worker * self.workload.threads

    @property
    def nmm_level(self) -> str | None:
        """The level of an NMM target (None for the others): picks ``expect.levels``."""
        return self.target.level if isinstance(self.target, NmmTarget) else None

    def allowed_for(self, kind: str) -> tuple[str, ...]:
        """Outcomes that pass for one fault of ``kind`` on this plan's target."""
        return self.expect.allowed_for(kind, self.nmm_level)

    def trial_seeds(self) -> list[int]:
        """The seeds of this plan's trials: ``seed, seed+1, ... seed+seeds-1`` (mod 2**64)."""
        return [(self.seed + i) % (1 << 64) for i in range(self.seeds)]

    def plan_hash(self) -> str:
        """A stable hash of what a trial does, independent of ``seed``/``seeds``/``name``."""
        data = self.model_dump(mode="json", exclude=set(UNHASHED))
        for key, default in (("bad_options", []), ("exit_damage", False), ("exit_held", 0),
                             ("exit_symbolizer", None)):
            if data["workload"][key] == default:
                # added later: a plan that does not use it keeps the hash it had (reports
                # and journals match trials across runs by it)
                del data["workload"][key]
        if isinstance(self.target, NmmTarget) and not self.target.process_options:
            del data["target"]["process_options"]  # the same, for process_options
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


#: top-level keys that do not change what a trial does (left out of ``plan_hash``)
UNHASHED: tuple[str, ...] = ("seed", "seeds", "name", "description", "markers")


def plan_differences(old: dict[str, Any], new: dict[str, Any]
                     ) -> list[tuple[str, Any, Any]]:
    """The hashed keys whose values differ between two plan documents (``model_dump``
    output), as ``(dotted key, old value, new value)``; a key missing on one side has
    ``None`` there. Lists are compared item by item (``faults.1.count``)."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = sorted(set(flat_old) | set(flat_new))
    return [(k, flat_old.get(k), flat_new.get(k)) for k in keys
            if k.split(".")[0] not in UNHASHED and flat_old.get(k) != flat_new.get(k)]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        items: Any = value.items()
    elif isinstance(value, list | tuple) and value and any(
            isinstance(v, dict | list | tuple) for v in value):
        items = enumerate(value)
    else:
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for key, item in items:
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out
