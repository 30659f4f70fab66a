"""A trial's identity (issue 9): everything that decides what it does, journaled before
it starts so that a trial which kills the machine can still be replayed.

The identity is the plan (name, hash and the ``--set`` overrides it was loaded with),
the seed, the target and its options, the build (flavor and a hash of the native
sources and flags), the engine and the scheduler with its parameters. ``harness.chaos``
puts it in artifacts; the runner and campaigns write it as a ``trial_start`` line of the
journal (``harness.journal``). Nothing here runs a trial.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.plan import NmmTarget, Plan

_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def build_id(flavor: str = "chaos") -> str:
    """A hash of the native sources and flags a flavor is built from (16 hex digits;
    ``unknown`` when the sources are not beside the package). Computed once per process:
    the sources a process's trials run from do not change under it."""
    digest = hashlib.sha256(flavor.encode())
    sources = sorted([*(_ROOT / "allocator" / "src").glob("*.[ch]"),
                      *(_ROOT / "allocator" / "include").glob("*.h"),
                      *(_ROOT / "harness" / "native").glob("*.[ch]")])
    if not sources:
        return "unknown"
    build = _ROOT / "allocator" / "build.py"
    for path in [*sources, build]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def trial_identity(plan: Plan, seed: int, overrides: Sequence[str] = (),
                   engine: str = "native") -> dict[str, Any]:
    """Everything that decides what a trial does, written before it starts."""
    target = plan.target
    flavor = "chaos" if plan.needs_chaos_build else "release"
    return {
        "plan": plan.name, "plan_hash": plan.plan_hash(), "overrides": list(overrides),
        "seed": seed, "target": target.label,
        "nmm_options": target.nmm_options() if isinstance(target, NmmTarget) else None,
        "engine": engine, "build": flavor, "build_id": build_id(flavor),
        "scheduler": plan.scheduler.model_dump(mode="json", exclude_none=True),
    }
