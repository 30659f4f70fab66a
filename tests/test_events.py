"""The reporting choke point (allocator/src/events.c): the event ring under
concurrent reporters and a concurrent drainer (also under ThreadSanitizer), the
one-line report of the SIGSEGV handler for guard-page hits and freed large
blocks, and its chaining to handlers installed before it.
"""

from __future__ import annotations

import platform
import re
import signal
import subprocess
from pathlib import Path

import pytest
from _nmm_c import DEBUG_FLAGS, INCLUDE, PROGRAMS, ROOT, compile_program, nmm_lines, run


@pytest.fixture(scope="module")
def guard_hit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_program("guard_hit.c", tmp_path_factory.mktemp("guard"), link_nmm=True)


@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        (
            "overflow",
            r"^nmm: overflow into guard page at 0x[0-9a-f]+ \(block (0x[0-9a-f]+) "
            r"size 1000000, alloc site \S*guard_hit\.c:\d+\) \(thread \d+\)$",
        ),
        (
            "uaf",
            r"^nmm: use after free of large block at 0x[0-9a-f]+ \(block (0x[0-9a-f]+) "
            r"size 1000000, alloc site \S*guard_hit\.c:\d+\) \(thread \d+\)$",
        ),
    ],
)
def test_guard_page_hit_is_named_then_the_process_dies_of_sigsegv(
    guard_hit: Path, case: str, pattern: str
) -> None:
    out = run([str(guard_hit), case])
    assert out.returncode == -signal.SIGSEGV, out.stderr
    assert "not reached" not in out.stdout
    (line,) = nmm_lines(out.stderr)
    match = re.match(pattern, line)
    assert match, line
    assert f"block {match[1]}" in out.stderr  # the block the program allocated


def test_a_fault_that_is_not_nmm_s_is_left_alone(guard_hit: Path) -> None:
    out = run([str(guard_hit), "plain"])
    assert out.returncode == -signal.SIGSEGV
    assert nmm_lines(out.stderr) == []


def test_the_handler_chains_to_the_one_installed_before(guard_hit: Path) -> None:
    out = run([str(guard_hit), "chained"])
    assert out.returncode == 42, out.stderr
    assert "earlier handler ran" in out.stderr
    assert nmm_lines(out.stderr) == []


def test_ring_loses_and_duplicates_nothing_under_concurrency(tmp_path: Path) -> None:
    exe = compile_program("events_stress.c", tmp_path, link_nmm=True)
    out = run([str(exe)])
    assert out.returncode == 0, out.stdout + out.stderr
    total, dropped, drained = map(int, re.findall(r"\d+", out.stdout.splitlines()[0]))
    assert total == 80000 and dropped + drained == total and drained > 0
    # the quiet phase: exactly the capacity drained, oldest first; the rest dropped
    assert out.stdout.splitlines()[1] == "quiet ring: drained 64 of 74, dropped 10 more"


@pytest.mark.slow
@pytest.mark.parametrize("program", ["events_stress.c", "site_stress.c"])
def test_lock_free_tables_under_thread_sanitizer(tmp_path: Path, program: str) -> None:
    sources = [
        p
        for p in sorted((ROOT / "allocator" / "src").glob("*.c"))
        if not p.name.endswith("_shim.c")
    ]
    exe = tmp_path / "tsan_program"
    arch = ["-msse4.2"] if platform.machine() == "x86_64" else []
    cmd = [
        "gcc",
        "-std=gnu11",
        *DEBUG_FLAGS,
        "-fsanitize=thread",
        *arch,
        "-I",
        str(INCLUDE),
        "-I",
        str(ROOT / "allocator" / "src"),
        *map(str, sources),
        str(PROGRAMS / program),
        "-o",
        str(exe),
    ]
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    out = run([str(exe)], extra_env={"TSAN_OPTIONS": "halt_on_error=1 exitcode=66"})
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    assert "WARNING: ThreadSanitizer" not in out.stderr


@pytest.fixture(scope="module")
def asan_objects(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The allocator (without the malloc shim) built with ASan and UBSan."""
    out = tmp_path_factory.mktemp("asan")
    arch = ["-msse4.2"] if platform.machine() == "x86_64" else []
    objects = []
    for src in sorted((ROOT / "allocator" / "src").glob("*.c")):
        if src.name.endswith("_shim.c"):  # the preload library's entry points
            continue
        obj = out / f"{src.stem}.o"
        cmd = [
            "gcc",
            "-std=gnu11",
            *DEBUG_FLAGS,
            *arch,
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-I",
            str(INCLUDE),
            "-I",
            str(ROOT / "allocator" / "src"),
            "-c",
            str(src),
            "-o",
            str(obj),
        ]
        built = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert built.returncode == 0, built.stderr
        objects.append(obj)
    return objects


@pytest.mark.slow
@pytest.mark.parametrize(
    ("program", "args", "status"),
    [
        ("options_probe.c", ["parse", "level=paranoid:stacks=1/2:fail=alloc@p0.5;os.map@max1"], 0),
        ("options_probe.c", ["parse", "fail=alloc@p1.5\u00e9:limit=99999999999999999999T"], 2),
        ("options_probe.c", ["parse", "limit=99999999999999999999T"], 2),
        (
            "options_probe.c",
            ["failpoints", "7", "alloc@min10,maxsize1k,p0.5", "alloc", "64", "500"],
            0,
        ),
        ("options_probe.c", ["drops", "3", "50"], 0),
        ("leaky_api.c", [], 0),
        ("site_stress.c", [], 0),
        ("events_stress.c", [], 0),
    ],
)
def test_periphery_under_asan_and_ubsan(
    asan_objects: list[Path], tmp_path: Path, program: str, args: list[str], status: int
) -> None:
    exe = tmp_path / Path(program).stem
    cmd = [
        "gcc",
        *DEBUG_FLAGS,
        "-fsanitize=address,undefined",
        "-I",
        str(INCLUDE),
        str(PROGRAMS / program),
        *map(str, asan_objects),
        "-o",
        str(exe),
        "-ldl",
    ]
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    out = run([str(exe), *args])
    assert "Sanitizer" not in out.stderr and "runtime error" not in out.stderr, out.stderr[-4000:]
    assert out.returncode == status, out.stdout + out.stderr[-4000:]


@pytest.mark.parametrize(
    "options", ["level=standard", "level=standard:tracking=1:stacks=0", "level=off:tracking=1"]
)
def test_sites_out_of_band_follow_the_block(tmp_path: Path, options: str) -> None:
    """Sites live in the slab's site[] (flagged in the header): events name the
    allocation site through reuse, realloc in place and aligned blocks, and a
    block handed out again with site 0 never inherits its previous owner's."""
    exe = compile_program("site_oob.c", tmp_path, link_nmm=True)
    out = run([str(exe), options])
    assert out.returncode == 0 and out.stdout == "ok\n", out.stdout + out.stderr
