"""Fixtures for the harness tests: plan files on disk and the fake driver command."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PLANS = REPO / "chaos_plans"


def fault_plan(faults: Sequence[str], *, seeds: int = 1, ops: int = 100,
               level: str = "paranoid", timeout_s: float = 20,
               workload: Mapping[str, int] | None = None, **top: float) -> str:
    """The TOML of the small plan the campaign, report and hang tests run: NMM at
    ``level``, ``ops`` per worker (and the other ``workload`` keys), one ``[[faults]]``
    entry per kind, ``seeds`` seeds; ``top`` adds top-level keys (``seed``, ``hang_s``)."""
    lines = ["schema_version = 1", f"seeds = {seeds}", f"timeout_s = {timeout_s}",
             *(f"{key} = {value}" for key, value in top.items()),
             "[target]", f'level = "{level}"', "[workload]", f"ops = {ops}",
             *(f"{key} = {value}" for key, value in (workload or {}).items())]
    for kind in faults:
        lines += ["[[faults]]", f'kind = "{kind}"']
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def plan_text() -> Callable[..., str]:
    """``fault_plan`` for fixtures that write their plan themselves (module-scoped ones)."""
    return fault_plan


@pytest.fixture
def write_plan(tmp_path: Path) -> Callable[..., Path]:
    """Write a plan under tmp_path and return its path: the TOML ``text`` (dedented), or,
    with ``faults=[...]``, the small fault plan ``fault_plan`` makes of its keywords."""

    def write(text: str | None = None, name: str = "plan.toml", **plan: object) -> Path:
        if (text is None) == (not plan):
            raise TypeError("write_plan: give the TOML text or fault_plan's keywords")
        path = tmp_path / name
        path.write_text(textwrap.dedent(text) if text is not None
                        else fault_plan(**plan))  # type: ignore[arg-type]
        return path

    return write


@pytest.fixture
def fake_driver() -> Callable[[str], list[str]]:
    """The command of the fake driver in a given mode (detect, crash, hang, ...)."""

    def command(mode: str) -> list[str]:
        return [sys.executable, str(HERE / "fake_driver.py"), mode]

    return command
