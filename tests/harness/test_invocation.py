"""Printed commands name nmm-chaos as it was invoked: bare when PATH finds that same
script, else by absolute path (``make run`` calls .venv/bin/nmm-chaos, not on PATH)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.invocation import command_line, program


@pytest.fixture
def script(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    path = bin_dir / "nmm-chaos"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_script_on_path_is_named_bare(script):
    assert program(str(script), path=str(script.parent), main_module="") == ["nmm-chaos"]


def test_script_not_on_path_is_named_by_absolute_path(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert program("venv/bin/nmm-chaos", path="/usr/bin", main_module="") == [str(script)]


def test_another_nmm_chaos_on_path_does_not_shadow_the_one_invoked(script, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "nmm-chaos").write_text("#!/bin/sh\n")
    (other / "nmm-chaos").chmod(0o755)
    assert program(str(script), path=str(other), main_module="") == [str(script)]


def test_python_dash_m_names_the_interpreter(tmp_path):
    assert program("/x/harness/__main__.py", executable="/opt/venv/bin/python",
                   path="/usr/bin", main_module="harness") == [
        "/opt/venv/bin/python", "-m", "harness"]


def test_called_from_another_program_names_the_script_beside_the_interpreter(script):
    python = script.parent / "python"
    assert program("/usr/lib/pytest", executable=str(python), path="/usr/bin",
                   main_module="pytest") == [str(script)]


def test_no_script_anywhere_falls_back_to_python_dash_m(tmp_path):
    python = str(tmp_path / "python")
    assert program("/usr/lib/pytest", executable=python, path="/usr/bin",
                   main_module="") == [python, "-m", "harness"]


def test_command_line_quotes_arguments():
    assert command_line("run", "my plan.toml", "--set", 'expect.outcome=["missed"]',
                        prefix=["/v/bin/nmm-chaos"]) == (
        "/v/bin/nmm-chaos run 'my plan.toml' --set 'expect.outcome=[\"missed\"]'")
