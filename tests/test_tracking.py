"""Allocation tracking (allocator/src/track.c) and the reports built on it: sites,
sampled stacks, the leak report (text and JSON, grouped by site and stack,
largest first) and the diagnostic report (allocator/src/report.c).
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _nmm_c import compile_program, native_artifact, run

HERE = __file__


def _line_of(marker: str) -> int:
    """Line number of the line in this file that ends with the marker comment."""
    for number, text in enumerate(Path(HERE).read_text().splitlines(), start=1):
        if text.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(marker)


def _leak_some(heap: Any) -> list[Any]:
    blocks = [heap.alloc(1000) for _ in range(3)]  # site-big
    blocks += [heap.alloc(10) for _ in range(7)]  # site-small
    return blocks


def test_leak_report_groups_by_site_largest_first(make_heap) -> None:
    heap = make_heap(level="standard", tracking=True, stacks=0)
    blocks = _leak_some(heap)
    heap.alloc(5).free()  # freed: never reported
    report = heap.leaks()
    assert report["live_blocks"] == 10
    assert report["live_bytes"] == 3 * 1000 + 7 * 10
    groups = report["groups"]
    assert [(g["file"], g["line"], g["count"], g["bytes"]) for g in groups] == [
        (HERE, _line_of("site-big"), 3, 3000),
        (HERE, _line_of("site-small"), 7, 70),
    ]
    assert groups[0]["site"] == f"{HERE}:{_line_of('site-big')}"
    assert report["other"] == {"count": 0, "bytes": 0}
    for block in blocks:
        heap.free(block)
    assert heap.leaks() == {
        "live_blocks": 0,
        "live_bytes": 0,
        "groups": [],
        "other": {"count": 0, "bytes": 0},
    }


def test_every_site_gets_its_own_group_however_many(make_heap) -> None:
    """The group table is sized from the live blocks (a short process's report
    must not touch megabytes): 3,000 sites, one block each, are 3,000 groups and
    nothing left over as "other"; so is one site of 3,000 blocks."""
    heap = make_heap(level="standard", tracking=True, stacks=0)
    blocks: list[Any] = []
    for line in range(1, 3001):  # a site is the caller's file and line
        exec(compile("\n" * (line - 1) + "blocks.append(heap.alloc(16))", "many.py", "exec"),
             {"heap": heap, "blocks": blocks})
    report = heap.leaks()
    assert len(report["groups"]) == 3000 and report["other"] == {"count": 0, "bytes": 0}
    assert sorted(g["line"] for g in report["groups"]) == list(range(1, 3001))
    for block in blocks:
        heap.free(block)
    blocks = [heap.alloc(16) for _ in range(3000)]
    (group,) = heap.leaks()["groups"]
    assert group["count"] == 3000


def test_leak_report_text_names_the_sites(make_heap) -> None:
    heap = make_heap(level="off", tracking=True, stacks=0)
    _leak_some(heap)
    text = heap.leaks_text()
    lines = text.splitlines()
    assert lines[0] == "nmm: leak report: 10 live blocks, 3070 bytes in 2 groups, largest first"
    assert lines[1] == f"  3000 bytes in 3 blocks allocated at {HERE}:{_line_of('site-big')}"
    assert lines[2] == f"  70 bytes in 7 blocks allocated at {HERE}:{_line_of('site-small')}"


def test_untracked_heap_reports_unknown_site(make_heap) -> None:
    heap = make_heap(level="standard")
    heap.alloc(100)
    report = heap.leaks()
    assert report["live_blocks"] == 1
    (group,) = report["groups"]
    assert (group["site"], group["file"], group["count"]) == ("", "", 1)


def test_large_blocks_are_tracked_too(make_heap) -> None:
    heap = make_heap(level="standard", tracking=True, stacks=0)
    heap.alloc(3 << 20)  # site-large
    (group,) = heap.leaks()["groups"]
    assert (group["line"], group["count"], group["bytes"]) == (_line_of("site-large"), 1, 3 << 20)


def test_sampled_stacks_are_python_interpreter_frames(make_heap) -> None:
    heap = make_heap(level="standard", tracking=True, stacks="1/1")
    for _ in range(4):
        heap.alloc(64)  # site-stacked
    groups = heap.leaks()["groups"]
    assert sum(g["count"] for g in groups) == 4
    # identical call paths deduplicate into one stack
    assert len(groups) == 1
    stack = groups[0]["stack"]
    assert stack, groups
    assert any("libpython" in frame or "python" in frame for frame in stack)
    assert all("_nmm_cffi" not in frame for frame in stack[:1])  # our own frames are cut


def test_events_carry_the_sites(make_heap) -> None:
    from allocator.errors import DoubleFree

    heap = make_heap(level="standard", tracking=True, stacks=0)
    block = heap.alloc(48)  # site-alloc
    address = block.address
    heap.free(address)
    with pytest.raises(DoubleFree):
        heap.free(address)  # site-free
    (event,) = heap.events()
    assert event.kind == "double_free"
    assert event.alloc_site == (HERE, _line_of("site-alloc"))
    assert event.free_site == (HERE, _line_of("site-free"))


# ------------------------------------------------------------------ diagnostic report


def test_diagnostic_report_has_every_section(make_heap) -> None:
    from allocator import STATS_FIELDS
    from allocator.errors import DoubleFree

    heap = make_heap(level="standard", tracking=True, stacks=0, quarantine="1M")
    keep = _leak_some(heap)
    block = heap.alloc(200)
    address = block.address
    heap.free(address)
    with pytest.raises(DoubleFree):
        heap.free(address)
    report = heap.report()
    assert report["report_version"] == 1
    cfg = report["config"]
    assert (cfg["level"], cfg["policy"], cfg["tracking"], cfg["quarantine_bytes"]) == (
        "standard",
        "record",
        1,
        1 << 20,
    )
    stats = report["stats"]
    assert set(STATS_FIELDS) <= set(stats)
    assert stats["live_blocks"] == len(keep)
    assert stats["peak_bytes"] >= stats["live_bytes"] > 0
    assert stats["events"] == 1
    classes = report["classes"]
    assert classes, report
    for c in classes:
        # each ratio against the block counts it is made of (their sum being 1 would
        # hold for any two complementary numbers, right or wrong)
        held = c["live"] + c["free_blocks"]
        if held:
            assert c["occupancy"] == pytest.approx(c["live"] / held, abs=1e-4)
            assert c["fragmentation"] == pytest.approx(c["free_blocks"] / held, abs=1e-4)
        else:
            assert c["occupancy"] == c["fragmentation"] == 0
    assert sum(c["live"] for c in classes) == len(keep)
    assert 0.0 <= report["fragmentation"]["mapped_unused_ratio"] <= 1.0
    events = report["events"]
    assert events["total"] == 1 and events["dropped"] == 0
    assert events["by_kind"]["double_free"] == 1
    assert set(events["by_kind"]) == {
        "double_free",
        "invalid_free",
        "overflow",
        "underflow",
        "use_after_free",
        "header_corrupt",
        "realloc_freed",
        "invalid_realloc",
        "freelist_corrupt",
        "guard_page",
        "alloc_dealloc_mismatch",
        "delete_size_mismatch",
        "invalid_pointer",
        "zero_size_access",
    }
    top = report["top_leaks"]
    assert [g["line"] for g in top] == [_line_of("site-big"), _line_of("site-small")]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_program("options_probe.c", tmp_path_factory.mktemp("probe"), link_nmm=True)


@pytest.mark.parametrize(("capacity", "n", "kept"), [(4, 10, 4), (16, 10, 10), (1, 3, 1)])
def test_event_ring_keeps_capacity_and_counts_the_rest(
    probe: Path, capacity: int, n: int, kept: int
) -> None:
    out = run([str(probe), "drops", str(capacity), str(n)])
    assert out.returncode == 0, out.stdout + out.stderr
    report_line, drained = out.stdout.splitlines()
    events = json.loads(report_line)["events"]
    assert events["total"] == n
    assert events["dropped"] == n - kept
    assert events["by_kind"]["invalid_free"] == n
    assert int(drained) == kept


# ------------------------------------------------------------------ C programs


@pytest.fixture(scope="module")
def leaky_api(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_program("leaky_api.c", tmp_path_factory.mktemp("leaky"), link_nmm=True)


def test_c_leak_report_with_stacks(leaky_api: Path) -> None:
    out = run([str(leaky_api)])
    assert out.returncode == 0, out.stdout + out.stderr
    text, _, js = out.stdout.partition("----\n")
    report = json.loads(js)
    assert report["live_blocks"] == 13 and report["live_bytes"] == 3 * 4000 + 10 * 24
    big, small = report["groups"]
    assert (big["count"], big["bytes"], small["count"], small["bytes"]) == (3, 12000, 10, 240)
    assert big["file"].endswith("leaky_api.c") and small["file"].endswith("leaky_api.c")
    assert any(frame.startswith("leak_big+0x") for frame in big["stack"])
    frames = [f.split("+")[0] for f in small["stack"]]
    assert frames.index("leak_small") < frames.index("from_helper") < frames.index("main")
    assert re.search(r"^  12000 bytes in 3 blocks allocated at \S*leaky_api\.c:\d+$", text, re.M)
    assert re.search(r"^      #\d+ from_helper\+0x[0-9a-f]+ \(leaky_api\)$", text, re.M)


def test_c_leak_report_without_stacks(leaky_api: Path) -> None:
    out = run([str(leaky_api), "tracking=1:stacks=0"])
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.partition("----\n")[2])
    assert [g["stack"] for g in report["groups"]] == [[], []]


@pytest.mark.parametrize("level", ("off", "standard", "paranoid"))
@pytest.mark.parametrize("every", (1, 4, 7, 64))
def test_site0_allocations_sample_every_nth_stack(
    tmp_path_factory: pytest.TempPathFactory, level: str, every: int
) -> None:
    """With stacks=1/N, site-0 allocations (the malloc replacement's case, whose
    countdown the standard fast path keeps inline, giving a count back when it
    misses the cache) sample the 1st, (N+1)th, ... allocation of the thread:
    exactly ceil(count / N) stacks. Paranoid records every one's stack (its error
    reports name every block's allocation), whatever the sampling rate."""
    exe = compile_program("sampled_api.c", tmp_path_factory.mktemp("sampled"), link_nmm=True)
    count = 300
    out = run([str(exe), f"level={level}:tracking=1:stacks=1/{every}", str(count)])
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["live_blocks"] == count
    stacks = [s["count"] for g in report["groups"] for s in g.get("stacks", [])]
    assert sum(stacks) == (count if level == "paranoid" else -(-count // every)), report


def test_default_heap_sites_come_from_nmm_site(tmp_path: Path) -> None:
    """nmm_site interns (file, line) once: the same pair gives the same id."""
    script = (
        "from allocator import Heap\n"
        "with Heap(tracking=True, stacks=0) as h:\n"
        "    for i in range(3):\n"
        "        h.alloc(8)\n"
        "    print(len(h.leaks()['groups']))\n"
    )
    out = run([sys.executable, "-c", script])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_sites_interned_concurrently_agree(tmp_path: Path) -> None:
    exe = compile_program("site_stress.c", tmp_path, link_nmm=True)
    out = run([str(exe)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "2000 sites"


def test_odd_file_names_keep_the_report_valid_json(make_heap) -> None:
    heap = make_heap(level="standard", tracking=True, stacks=0)
    name = 'dir/we"ird\\名 \n\t\x01.py'
    code = compile("blocks = [heap.alloc(10) for _ in range(2)]", name, "exec")
    exec(code, {"heap": heap})
    (group,) = heap.leaks()["groups"]
    assert (group["file"], group["line"], group["count"]) == (name, 1, 2)
    assert heap.report()["top_leaks"][0]["file"] == name


def test_default_heap_reports_its_leaks_at_exit(leaky_api: Path) -> None:
    out = run([str(leaky_api), "default"], options="level=standard:stacks=1/1")
    assert out.returncode == 23, out.stderr  # exitcode: blocks were lost
    report = out.stderr[out.stderr.index("nmm: leak report: 4024 bytes in 2 blocks definitely") :]
    assert re.search(r"^  definitely lost: 4000 bytes in 1 block allocated at \S*leaky_api\.c:\d+$",
                     report, re.M), report
    assert re.search(r"^    #\d+ 0x[0-9a-f]+ in from_helper\+0x[0-9a-f]+ \S*leaky_api\.c:\d+:\d+ "
                     r"\(\S*/leaky_api\+0x[0-9a-f]+\)$", report, re.M), report
    quiet = run([str(leaky_api), "default"], options="level=standard")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_heap_destroy_reports_live_blocks_as_leaks() -> None:
    """nmm_heap_destroy with tracking on writes the leak report of what is still
    live to stderr; nothing when everything was freed or tracking is off."""
    script = (
        "from allocator import Heap\n"
        "leaky = Heap(tracking=True, stacks=0)\n"
        "kept = [leaky.alloc(100) for _ in range(3)]\n"
        "leaky.close()\n"
        "clean = Heap(tracking=True, stacks=0)\n"
        "clean.alloc(50).free()\n"
        "clean.close()\n"
        "untracked = Heap(level='standard')\n"
        "lost = untracked.alloc(70)\n"
        "untracked.close()\n"
        "print('done')\n"
    )
    out = run([sys.executable, "-c", script])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert out.stderr.count("nmm: leak report:") == 1, out.stderr
    assert "nmm: leak report: 3 live blocks, 300 bytes" in out.stderr
    assert re.search(r"^  300 bytes in 3 blocks allocated at <string>:3$", out.stderr,
                     re.M), out.stderr


@pytest.mark.parametrize("level", ["standard", "paranoid"])
def test_blocks_reused_from_the_thread_cache_carry_their_new_site(make_heap, level: str) -> None:
    """Tracking rides the cache fast path: a block freed and handed out again from
    the thread cache is attributed to the line that allocated it the second time,
    with a sampled stack when stacks=1/1."""
    heap = make_heap(level=level, tracking=True, stacks="1/1")
    first = [heap.alloc(40) for _ in range(20)]
    for block in first:
        block.free()
    again = [heap.alloc(40) for _ in range(20)]  # site-reused
    (group,) = heap.leaks()["groups"]
    assert (group["line"], group["count"]) == (_line_of("site-reused"), 20)
    assert group["file"].endswith("test_tracking.py")
    assert group["stack"], group
    for block in again:
        block.free()


def test_fast_stack_walk_matches_the_unwinder(tmp_path: Path) -> None:
    """unwind.c's cached-rule walk returns exactly the unwinder's frames (x86-64)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the fast walk is x86-64 only; elsewhere the unwinder does it all")
    root = Path(HERE).resolve().parent.parent
    exe = tmp_path / "unwind_agree"
    cmd = [
        "gcc", "-std=gnu11", "-O2", "-g", "-pthread", "-w",
        "-I", str(root / "allocator" / "include"), "-I", str(root / "allocator" / "src"),
        str(root / "tests" / "c" / "preload" / "unwind_agree.c"),
        str(native_artifact("libnmm.a")), "-o", str(exe), "-ldl", "-lm",
    ]  # fmt: skip
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    out = run([str(exe)])
    match = re.search(r"agree (\d+) declined (\d+) disagree (\d+)", out.stdout)
    assert match, out.stdout
    agree, declined, disagree = (int(g) for g in match.groups())
    assert disagree == 0, out.stdout
    # 24 recursions, then each of qsort's >= 5 comparisons checks twice
    assert declined == 0 and agree >= 24 + 2 * 5, out.stdout


@pytest.mark.parametrize("level", ["off", "standard"])
def test_a_large_realloc_carries_the_realloc_site(make_heap, level: str) -> None:
    """Large-to-large realloc may resize in place (mremap) where tracking is off; with
    tracking the block must still be attributed to the realloc's line, as after the
    allocate-copy-free it stands for."""
    heap = make_heap(level=level, tracking=True, stacks=0)
    block = heap.alloc(300_000)
    block = heap.realloc(block, 3 << 20)  # site-large-realloc
    (group,) = heap.leaks()["groups"]
    assert (group["line"], group["count"], group["bytes"]) == (
        _line_of("site-large-realloc"), 1, 3 << 20)
