"""C stress tests of the allocator core, built with sanitizers.

Each program in ``tests/c/stress_*.c`` is compiled together with the allocator
sources (``allocator/src/*.c`` except the malloc shim) twice: once with
AddressSanitizer + UndefinedBehaviorSanitizer and once with ThreadSanitizer. The
programs assert their own behaviour (stats add up, nothing leaked, exactly the
injected detections) and exit non-zero with a message on the first failed check;
the sanitizers abort on the first report. A sanitizer runtime missing from the
machine is a skip locally and a failure under ``CI``.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Protocol

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "allocator" / "src"
INCLUDE = ROOT / "allocator" / "include"
PROGRAMS = Path(__file__).resolve().parent / "c"

SANITIZERS: dict[str, list[str]] = {
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    "tsan": ["-fsanitize=thread"],
}
# NMM_DEBUG: the debug flavour, the core's internal invariants checked (NMM_ASSERT)
BASE_FLAGS = ["-std=gnu11", "-O1", "-g", "-fno-omit-frame-pointer", "-pthread", "-Wall",
              "-DNMM_DEBUG"]
if platform.machine() in ("x86_64", "AMD64"):
    BASE_FLAGS.append("-msse4.2")
ENV = {
    "ASAN_OPTIONS": "abort_on_error=0:detect_leaks=0",
    "TSAN_OPTIONS": "halt_on_error=1:second_deadlock_stack=1",
    "UBSAN_OPTIONS": "print_stacktrace=1",
}

class Builder(Protocol):
    """Builds a program of tests/c against the allocator (chaos: its objects compiled
    with -DNMM_CHAOS, the yield points the program schedules); returns its path."""

    sanitizer: str

    def __call__(self, stem: str, *, chaos: bool = False) -> Path: ...


def _allocator_sources() -> list[Path]:
    return sorted(p for p in SRC.glob("*.c") if not p.name.endswith("_shim.c"))


def _compile(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"compiling {what} failed:\n{' '.join(cmd)}\n{result.stderr[-4000:]}")


#: how each build directory's programs are started (see _sanitizer_launcher)
_LAUNCHER: dict[Path, list[str]] = {}


def _sanitizer_launcher(flags: list[str], tmp: Path) -> tuple[list[str] | None, str]:
    """How to start a program built with these flags (``[]``: directly), or None and why
    gcc cannot build and run one. GCC 12's TSan aborts ("unexpected memory mapping")
    where the kernel randomises mmap with more bits than it expects
    (vm.mmap_rnd_bits = 32); such a program runs under ``setarch -R`` (no ASLR)."""
    src = tmp / "probe.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = tmp / "probe"
    result = subprocess.run(
        ["gcc", *flags, str(src), "-o", str(exe)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "gcc failed"
        return None, why
    stderr = ""
    for launcher in ([], ["setarch", os.uname().machine, "-R"]):
        try:
            run = subprocess.run([*launcher, str(exe)], capture_output=True, text=True,
                                 check=False)
        except OSError as exc:  # no setarch
            stderr += f"; {exc}"
            continue
        if run.returncode == 0:
            return launcher, ""
        stderr += run.stderr[-500:]
    return None, f"a probe program built with {' '.join(flags)} does not run: {stderr}"


@pytest.fixture(scope="session", params=sorted(SANITIZERS))
def build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Builder:
    """Compile the allocator once per sanitizer; returns a program builder."""
    name: str = request.param
    flags = BASE_FLAGS + SANITIZERS[name]
    out = tmp_path_factory.mktemp(f"stress-{name}")
    launcher, why = _sanitizer_launcher(flags, out)
    if launcher is None:
        message = f"the {name} runtime is not usable with gcc here: {why}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    _LAUNCHER[out] = launcher
    objects: dict[bool, list[str]] = {}
    built: dict[tuple[str, bool], Path] = {}

    def allocator_objects(chaos: bool) -> list[str]:
        if chaos not in objects:
            defines = ["-DNMM_CHAOS"] if chaos else []
            objs = []
            for src in _allocator_sources():
                obj = out / (src.stem + ("-chaos" if chaos else "") + ".o")
                _compile(["gcc", *flags, *defines, "-I", str(INCLUDE), "-I", str(SRC), "-c",
                          str(src), "-o", str(obj)], src.name)
                objs.append(str(obj))
            objects[chaos] = objs
        return objects[chaos]

    allocator_objects(False)

    class Program:
        sanitizer = name

        def __call__(self, stem: str, *, chaos: bool = False) -> Path:
            if (stem, chaos) not in built:
                exe = out / (stem + ("-chaos" if chaos else ""))
                _compile(
                    ["gcc", *flags, *(["-DNMM_CHAOS"] if chaos else []), "-I", str(INCLUDE),
                     "-I", str(SRC), "-I", str(PROGRAMS),
                     str(PROGRAMS / f"{stem}.c"), *allocator_objects(chaos), "-o", str(exe),
                     "-ldl", "-lm"],
                    f"{stem}.c",
                )
                built[stem, chaos] = exe
            return built[stem, chaos]

    return Program()


def _run(exe: Path, *args: object, timeout: float = 240) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "NMM_OPTIONS")}
    env.update(ENV)
    result = subprocess.run(
        [*_LAUNCHER.get(exe.parent, []), str(exe), *map(str, args)], capture_output=True,
        text=True, env=env, timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{exe.name} {' '.join(map(str, args))} exited {result.returncode}\n"
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-6000:]}"
    )
    assert result.stdout.startswith("ok"), result.stdout
    return result.stdout


def _scale(build: Builder, asan: int, tsan: int) -> int:
    return asan if build.sanitizer == "asan" else tsan


@pytest.mark.parametrize(
    "level", ["off", "standard", "paranoid", "standard:tracking=1:stacks=1/4"]
)
def test_churn_cross_thread_frees(build: Builder, level: str) -> None:
    """Threads churn with a quarter of frees done by another thread: no block lost
    or handed out twice (patterns), stats add up, live = 0, validate clean, no
    events, and every slab returned once the threads have exited. (Tracked: the
    site-0 fast path with its inline stack countdown, per thread.)"""
    ops = _scale(build, 30000, 8000) // (4 if level == "paranoid" else 1)
    _run(build("stress_churn"), level, 3, ops, 7)


@pytest.mark.parametrize("level", ["off", "standard", "paranoid"])
@pytest.mark.parametrize("threads", [2, 4])
def test_threads_blocks_share_no_state_line(build: Builder, level: str, threads: int) -> None:
    """Threads that each churn a working set (1024 blocks of 4 B-32 KiB, started at once)
    hold no block whose out-of-band state byte, written by every alloc and free, sits on
    a cache line with another thread's block's: each thread cache refills from its own
    lane's slabs. (Before lanes, 56-66% of each thread's blocks did at level off, 85-90%
    at standard: the second thread's cost.) A property of the layout, not of timing."""
    ops = _scale(build, 20000, 5000)
    out = _run(build("stress_sharing"), level, threads, ops, 3, 0)
    assert "shared=0 " in out and "held=" in out


@pytest.mark.parametrize("level", ["off", "standard"])
def test_thread_lifetimes_give_their_memory_back(build: Builder, level: str) -> None:
    """Short-lived threads, 8 alive together, then one at a time again: once they come
    one at a time, the bytes the heap maps for blocks (its own mapped_bytes: live and
    retained empty slabs) are back within twice what one lifetime mapped. Threads alive
    together each take their lane's slabs, and those stayed mapped after the threads were
    gone, up to the 16 MiB retain budget (3.4 MB for one lifetime, 16.6 MB settled at
    off, before the decay steps). Right after the waves, what is resident of the slabs
    and their descriptors (mincore) is within 2x of what one lifetime left (9x before the
    exits trimmed the empty slabs: 2.2 MB against 250 KB), the descriptors alone within 3x
    (3.2-4.3x before the kept empty slabs took the lowest bodies); patterns, stats,
    validate and events are checked too."""
    lifetimes = _scale(build, 1500, 400)
    out = _run(build("stress_lifetimes"), f"level={level}", lifetimes, 8)
    assert "settled=" in out


@pytest.mark.parametrize("level", ["off", "standard", "standard:tracking=1"])
def test_a_kept_empty_slab_gives_back_the_pages_a_decay_step_did_not_need(
    build: Builder, level: str
) -> None:
    """A slab kept empty for reuse: after a burst of 48 blocks of 4 KiB (48 pages
    resident) and then one block at a time through two decay steps, what stays resident
    of it (mincore) is the pages block 0 spans and at most one more; without the trim all
    48 stayed. The blocks trimmed keep their state: two of the burst freed again are
    still double frees; the slab then hands out blocks from 0 up, distinct, patterns
    intact, validate clean. With caches, a refill's blocks come out in address order."""
    out = _run(build("stress_trim"), f"level={level}")
    assert out.startswith("ok burst=48 "), out


def test_debug_flavour_stops_at_a_broken_invariant(build: Builder) -> None:
    """These builds are the debug flavour (NMM_DEBUG): a slab whose free stack already
    holds every block it handed out is given one more, and the program stops with one
    line naming the invariant and where it is checked, where a release build would
    write past the stack. (Every other program here runs with the checks on too.)"""
    exe = build("stress_assert")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "NMM_OPTIONS")}
    env.update(ENV)
    result = subprocess.run([*_LAUNCHER.get(exe.parent, []), str(exe)], capture_output=True,
                            text=True, env=env, timeout=60, check=False)
    assert result.returncode != 0 and not result.stdout.startswith("ok"), result.stdout
    assert "nmm: internal assertion failed: " in result.stderr, result.stderr[-2000:]
    assert "slab.c:" in result.stderr and "nstack < s->bump" in result.stderr


@pytest.mark.parametrize("level", ["off", "standard"])
def test_1024_threads(build: Builder, level: str) -> None:
    """1024 threads alive at once, each churning and exiting with a full cache
    (half of them holding blocks allocated by another thread): stats add up,
    nothing live, nothing stranded in a dead thread's cache."""
    _run(build("stress_threads"), level, 1024, _scale(build, 400, 150), 11)


def test_thread_exit_with_full_cache_in_waves(build: Builder) -> None:
    """Thread storms in waves: caches of exited threads are reused by new threads
    and every block comes back."""
    _run(build("stress_threads"), "standard", 512, _scale(build, 200, 100), 5, 64)


@pytest.mark.parametrize("level", ["off", "standard", "paranoid"])
def test_fork_during_churn(build: Builder, level: str) -> None:
    """fork() while other threads churn: each child allocates and frees on the
    inherited heap and on the default heap and exits 0."""
    forks = _scale(build, 12, 4)
    # Several seeds: a fork landing while a thread moves a block between its
    # quarantine ring and a bin (or a bin and a slab) gave the child that block
    # twice in about one run in four (fixed by fork_publish_order).
    for seed in (3, 4, 5, 6):
        _run(build("stress_fork"), level, 2, _scale(build, 20000, 4000), seed, forks)


def test_fork_while_a_free_is_half_done(build: Builder) -> None:
    """fork() while another thread stands between a bin's count and its block's free
    state (a fast free, or a quarantine release at paranoid; the program, built with
    -DNMM_CHAOS, forks at the allocator's "bin.push" yield point): the child counts
    exactly the blocks the thread still holds and validate finds no block on a free
    stack that reads live. The child used to give that block back to the slabs still
    reading live; stress_fork's walk check then failed now and then (CI)."""
    exe = build("stress_fork_pause", chaos=True)
    for options in ("level=off", "level=standard", "level=standard:tracking=1", "level=paranoid"):
        _run(exe, options, _scale(build, 20, 8))


@pytest.mark.parametrize(
    "options", ["level=standard", "level=paranoid", "level=off:tracking=1",
                "level=standard:tracking=1",
                # the shared quarantine (no thread caches), smaller than two blocks:
                # every free pushes the bytes over the bound while both threads' latest
                # frees are pinned
                "level=paranoid:tcache=0:quarantine=200",
                "level=paranoid:sweep=100000:quarantine=1"]
)
def test_second_free_of_an_aligned_block_while_another_thread_allocates(
    build: Builder, options: str
) -> None:
    """A thread frees an aligned block and at once frees it again while another thread
    allocates the same class (aligned and plain blocks): every second free is a double
    free, and the other thread never gets the block in between (lock step) nor loses
    its own (patterns). Aligned frees used to go onto the shared slab stack: the other
    thread's next allocation took the block and the second free freed it (NMM_OK),
    on the first lock-step round at every level with headers but paranoid. At
    paranoid without thread caches the shared quarantine, its bytes over the bound
    and every entry left pinned (each thread's latest free), let the oldest pinned
    one go: the block just freed, which the other thread then allocated, and the
    second free was an interior pointer of that thread's block (round 1)."""
    _run(build("stress_aligned_double"), options, 200, _scale(build, 20000, 4000))


@pytest.mark.parametrize("level", ["standard", "paranoid"])
def test_detection_under_threads(build: Builder, level: str) -> None:
    """One injected double free and one 1-byte overflow (and at paranoid one
    use-after-free write) under cross-thread churn: exactly those events, with the
    right addresses, nothing else."""
    ops = _scale(build, 20000, 5000) // (4 if level == "paranoid" else 1)
    for seed in (1, 2):
        _run(build("stress_detect"), level, 3, ops, seed)


def test_shared_quarantine_keeps_a_stalled_threads_free(build: Builder) -> None:
    """Paranoid with sweeps (one shared quarantine): a thread that freed a block and
    stalls before writing to it keeps the block quarantined while another thread
    frees 8x the quarantine; the late write is reported (it used to be handed to
    the other thread, verified clean, and the write missed)."""
    for seed in (1, 2, 3):
        _run(build("stress_quarantine"), 8, seed)


@pytest.mark.parametrize("level", ["off", "standard"])
def test_full_region_reuses_ranges_other_classes_gave_back(
    build: Builder, level: str, tmp_path: Path
) -> None:
    """A heap with a 1 MiB region (the allocator rebuilt with
    -DNMM_TEST_REGION_BYTES): filled with one class, another class fails cleanly;
    once everything is freed, the bigger class reuses the given-back ranges.
    Patterns, validate, stats and slab counts all hold, on a region that is only
    page aligned."""
    flags = BASE_FLAGS + SANITIZERS[build.sanitizer]
    exe = tmp_path / "stress_region"
    _compile(
        ["gcc", *flags, "-DNMM_TEST_REGION_BYTES=((size_t)1 << 20)", "-I", str(INCLUDE),
         "-I", str(SRC), "-I", str(PROGRAMS), str(PROGRAMS / "stress_region.c"),
         *map(str, _allocator_sources()), "-o", str(exe), "-ldl", "-lm"],
        "stress_region.c with a 1 MiB region",
    )
    _run(exe, level)


def test_stats_read_while_a_cache_is_half_updated(build: Builder) -> None:
    """nmm_stats_get while a thread cache's owner stands between the stores of an
    alloc, a refill, a flush or a quarantine release (the program, built with
    -DNMM_CHAOS, is the scheduler of the allocator's "tcache.*" yield points):
    frees never exceed allocs (they once read as 2^64 - 32), live never exceeds
    what the owner holds, and the peak stays within what it ever held."""
    exe = build("stress_stats", chaos=True)
    for options in ("level=off", "level=off:tracking=1", "level=standard", "level=paranoid"):
        _run(exe, options, 2)


@pytest.mark.parametrize("level", ["off", "standard"])
def test_leak_report_ignores_a_damaged_headers_site_flag(build: Builder, level: str) -> None:
    """A tracked block handed out without a site in a slot whose previous owner had
    one: once a write below it sets the header's site flag, the leak report still
    counts it but must not name the previous owner's site (the header fails its
    keyed check)."""
    _run(build("stress_leaksite"), level)


@pytest.mark.parametrize("level", ["off", "standard"])
def test_roots_scan_skips_the_leak_checks_own_frames(build: Builder, level: str) -> None:
    """The heap walk of the leak check leaves live blocks' addresses in its own stack
    frames; the calling thread's stack counts as a root only from the check's entry
    up, so a lost block whose address sits only below it stays lost, and one held in
    the caller's frame is reachable."""
    _run(build("stress_roots"), level)


def test_canary_window_holds_every_requests_canary(build: Builder) -> None:
    """free_standard fetches the canary's possible lines before reading the header
    that says where it is: the window it takes from the class (detect_canary_window)
    must hold the canary of every request size a slab serves, and be exactly as wide
    as the class's smallest and largest requests make it."""
    _run(build("stress_canary_window"), "standard")
