"""C++'s allocation surface under libnmm_preload.so (tests/c/preload/cxx_family.cpp).

Every replaceable operator new/delete form works as under glibc (the same checks
pass under both: aligned new up to 4 MiB, an alignas(8192) type, the STL,
std::bad_alloc and nothrow on exhaustion, a new_handler); at standard and above
a block remembers which family made it, so mixing malloc/free with new/delete or
new/delete with new[]/delete[], a sized delete of the wrong size and an aligned
block deleted without its alignment are each reported in one line naming both
sites (the program goes on; policy=abort stops it), and malloc_usable_size of
a pointer that is not a live block is reported and answers 0. A C program
linked against nothing does not pull in libstdc++.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest
from _nmm_c import compile_program, nmm_lines, preload_path, run

LEVELS = ("off", "standard", "paranoid")


@pytest.fixture(scope="module")
def cxx_family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_program("cxx_family.cpp", tmp_path_factory.mktemp("cxx"), link_nmm=False)


def _reports(stderr: str) -> list[str]:
    return [line for line in nmm_lines(stderr) if not line.startswith("nmm: leak report")]


def test_checks_pass_under_glibc(cxx_family: Path) -> None:
    out = run([str(cxx_family)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "all checks passed"


@pytest.mark.parametrize("level", LEVELS)
def test_every_operator_works_under_the_preload_library(cxx_family: Path, level: str) -> None:
    out = run([str(cxx_family)], preload=preload_path(), options=f"level={level}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "all checks passed"
    assert nmm_lines(out.stderr) == []


def test_the_preload_library_does_not_need_libstdcxx() -> None:
    needed = subprocess.run(
        ["readelf", "-d", str(preload_path())], capture_output=True, text=True, check=True
    ).stdout
    assert "NEEDED" in needed
    assert "libstdc++" not in needed


SITE = r"\+0x[0-9a-f]+ \(cxx_family\)"
MISUSE = {
    "malloc_delete": (
        "alloc_dealloc_mismatch",
        r"\(allocated by malloc, freed by operator delete\) size 64 "
        rf"alloc site \w*make_with_malloc\w*{SITE} free site \w*release_with_delete\w*{SITE}",
    ),
    "new_free": (
        "alloc_dealloc_mismatch",
        r"\(allocated by operator new, freed by free\) size 64 "
        rf"alloc site \w*make_with_new\w*{SITE} free site \w*release_with_free\w*{SITE}",
    ),
    "new_array_delete": (
        "alloc_dealloc_mismatch",
        r"\(allocated by operator new\[\], freed by operator delete\) size 64 "
        rf"alloc site \w*make_with_new_array\w*{SITE} free site \w*release_with_delete\w*{SITE}",
    ),
    "new_delete_array": (
        "alloc_dealloc_mismatch",
        r"\(allocated by operator new, freed by operator delete\[\]\) size 64 "
        rf"alloc site \w*make_with_new\w*{SITE} free site \w*release_with_delete_array\w*{SITE}",
    ),
    "sized_delete": (
        "delete_size_mismatch",
        r"\(delete given size 32\) size 64 "
        rf"alloc site \w*make_with_new\w*{SITE} free site \w*release_sized\w*{SITE}",
    ),
    "aligned_delete": (
        "delete_size_mismatch",
        r"\(allocated with alignment 64, deleted with the default alignment\) size 64 "
        rf"alloc site \w*make_aligned\w*{SITE} free site \w*release_with_delete\w*{SITE}",
    ),
    "usable_size_interior": (
        "invalid_pointer",
        rf"\(interior pointer\) call site \w*ask_usable\w*{SITE}",
    ),
    "usable_size_freed": (
        "invalid_pointer",
        rf"\(freed block\) call site \w*ask_usable\w*{SITE}",
    ),
}


@pytest.mark.parametrize("level", ("standard", "paranoid"))
@pytest.mark.parametrize("case", sorted(MISUSE))
def test_misuse_is_reported_in_one_line_and_the_program_goes_on(
    cxx_family: Path, case: str, level: str
) -> None:
    kind, rest = MISUSE[case]
    out = run(
        [str(cxx_family), case],
        preload=preload_path(),
        options=f"level={level}:policy=record:tracking=1",
    )
    assert out.returncode == 23, out.stdout + out.stderr  # exitcode: a recorded detection
    assert out.stdout.splitlines()[-1] == "survived"
    if case.startswith("usable_size"):
        assert "usable 0" in out.stdout
    (line,) = _reports(out.stderr)
    assert re.match(rf"^nmm: {kind} at 0x[0-9a-f]+ {rest} \(thread \d+\)$", line), line


@pytest.mark.parametrize("case", sorted(MISUSE))
def test_misuse_with_policy_abort_stops_the_program(cxx_family: Path, case: str) -> None:
    kind = MISUSE[case][0]
    out = run(
        [str(cxx_family), case], preload=preload_path(), options="level=standard:policy=abort"
    )
    assert out.returncode == -signal.SIGABRT, (out.returncode, out.stdout, out.stderr)
    assert "survived" not in out.stdout
    (line,) = nmm_lines(out.stderr)
    assert line.startswith(f"nmm: {kind} at 0x")


@pytest.mark.parametrize("case", sorted(MISUSE))
def test_families_are_not_recorded_at_level_off(cxx_family: Path, case: str) -> None:
    out = run([str(cxx_family), case], preload=preload_path(), options="level=off")
    # only malloc_usable_size's check does not depend on the level
    expected = ["invalid_pointer"] if case.startswith("usable_size") else []
    assert out.returncode == (23 if expected else 0), out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "survived"
    assert [line.split()[1] for line in _reports(out.stderr)] == expected
