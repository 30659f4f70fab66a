"""Fixtures for the harness tests: plan files on disk and the fake driver command."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PLANS = REPO / "chaos_plans"


@pytest.fixture
def write_plan(tmp_path: Path) -> Callable[..., Path]:
    """Write a TOML plan (dedented) under tmp_path and return its path."""

    def write(text: str, name: str = "plan.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def fake_driver() -> Callable[[str], list[str]]:
    """The command of the fake driver in a given mode (detect, crash, hang, ...)."""

    def command(mode: str) -> list[str]:
        return [sys.executable, str(HERE / "fake_driver.py"), mode]

    return command
