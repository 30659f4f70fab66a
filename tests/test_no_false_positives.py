"""Zero false positives with everything on: python3, sqlite3, git and C++
programs using the STL run under libnmm_preload.so at standard and at paranoid,
with the exit check on (paranoid's default; asked for at standard) and every
memcpy/memmove/memset/str*cpy of theirs checked against the heap's blocks
(copy_shim.c), and give the same output as under glibc with not one NMM line.
(test_preload.py runs the same workloads at the other levels.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _nmm_c import compile_program, nmm_lines, preload_path, require_tool, run
from test_preload import GIT_SCRIPT, PYTHON_WORKLOAD, SQL

OPTIONS = ("level=standard:exit_check=1", "level=paranoid:exit_check=1")


@pytest.mark.parametrize("options", OPTIONS)
def test_python(options: str) -> None:
    argv = [sys.executable, "-c", PYTHON_WORKLOAD]
    plain = run(argv)
    under = run(argv, preload=preload_path(), options=options)
    assert plain.returncode == under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout
    assert nmm_lines(under.stderr) == []


@pytest.mark.parametrize("options", OPTIONS)
def test_sqlite3(tmp_path: Path, options: str) -> None:
    sqlite3 = require_tool("sqlite3")
    plain = run([sqlite3, str(tmp_path / "plain.db")], stdin=SQL)
    under = run([sqlite3, str(tmp_path / "nmm.db")], stdin=SQL, preload=preload_path(),
                options=options)
    assert plain.returncode == under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout
    assert nmm_lines(under.stderr) == []


@pytest.mark.parametrize("options", OPTIONS)
def test_git(tmp_path: Path, options: str) -> None:
    require_tool("git")
    env = {
        "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    (tmp_path / "plain").mkdir()
    (tmp_path / "nmm").mkdir()
    plain = run(["sh", "-c", GIT_SCRIPT], cwd=tmp_path / "plain", extra_env=env)
    under = run(["sh", "-c", GIT_SCRIPT], cwd=tmp_path / "nmm", extra_env=env,
                preload=preload_path(), options=options)
    assert plain.returncode == under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout
    assert nmm_lines(under.stderr) == []


@pytest.mark.parametrize("options", OPTIONS)
def test_cxx_stl(tmp_path: Path, options: str) -> None:
    exe = compile_program("cxx_family.cpp", tmp_path, link_nmm=False)
    under = run([str(exe)], preload=preload_path(), options=options)
    assert under.returncode == 0, under.stdout + under.stderr
    assert under.stdout.strip() == "all checks passed"
    assert nmm_lines(under.stderr) == []


@pytest.mark.parametrize("options", OPTIONS)
def test_cxx_stl_workload(tmp_path: Path, options: str) -> None:
    """Strings, vectors, node containers, shared_ptr and threads: the copies
    under them (std::string's memcpy/memmove, std::copy of trivial types) run
    through the checked routines; the digest matches glibc's run."""
    exe = compile_program("stl_workload.cpp", tmp_path, link_nmm=False)
    plain = run([str(exe)])
    under = run([str(exe)], preload=preload_path(), options=options)
    assert plain.returncode == under.returncode == 0, under.stdout + under.stderr
    assert under.stdout == plain.stdout and len(plain.stdout.splitlines()) == 4
    assert nmm_lines(under.stderr) == []


def test_copies_are_checked_in_these_runs(tmp_path: Path) -> None:
    """The runs above would show a copy past a block: the same preload library
    and options report one (tests/c/preload/copy_checks.c)."""
    exe = compile_program("copy_checks.c", tmp_path, link_nmm=False)
    for options in OPTIONS:
        under = run([str(exe), "memcpy"], preload=preload_path(), options=options)
        lines = nmm_lines(under.stderr)
        assert lines and lines[0].startswith("nmm: overflow at 0x"), (options, under.stderr)
        assert "by memcpy writing 108 bytes" in lines[0], lines[0]
