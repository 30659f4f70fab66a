"""NMM_OPTIONS: the one option table and its parser (allocator/src/options.c).

The parser is driven through a small C program (tests/c/preload/options_probe.c)
that prints the parsed nmm_config_t as JSON, through the default heap (which reads
the NMM_OPTIONS environment variable), and through ``Heap(**options)``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _nmm_c import compile_program, nmm_lines, run
from hypothesis import given, settings
from hypothesis import strategies as st

KEYS = (
    "level",
    "policy",
    "limit",
    "retain",
    "quarantine",
    "sweep",
    "guard",
    "exit_check",
    "poison_limit",
    "tcache",
    "tracking",
    "stacks",
    "events",
    "seed",
    "fail",
    "strict",
    "leaks",
    "suppressions",
    "exitcode",
    "log_path",
    "log_format",
    "log_summary",
    "symbolize",
    "copy_check",
    "symbolizer",
    "avx2",
)
FIELDS = {
    "limit": "limit_bytes",
    "retain": "retain_bytes",
    "quarantine": "quarantine_bytes",
    "sweep": "sweep_every_ops",
    "guard": "guard_pages",
    "tcache": "thread_cache",
    "stacks": "stack_sample",
    "events": "event_capacity",
    "fail": "failpoints",
}
KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_program("options_probe.c", tmp_path_factory.mktemp("probe"), link_nmm=True)


def parse(probe: Path, text: str) -> dict[str, Any]:
    out = run([str(probe), "parse", text])
    assert out.returncode == 0, f"{text!r} was rejected: {out.stdout}{out.stderr}"
    return dict(json.loads(out.stdout))


def parse_error(probe: Path, text: str) -> str:
    out = run([str(probe), "parse", text])
    assert out.returncode == 2, f"{text!r} was accepted: {out.stdout}{out.stderr}"
    return out.stdout.strip()


def test_defaults(probe: Path) -> None:
    out = run([str(probe), "defaults"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "level": 0,
        "policy": 0,
        "limit_bytes": 0,
        "retain_bytes": 16 * MiB,
        "quarantine_bytes": 4 * MiB,
        "sweep_every_ops": 0,
        "guard_pages": 0,
        "thread_cache": 1,
        "tracking": 0,
        "stack_sample": 64,
        "event_capacity": 1024,
        "exit_check": 0,
        "poison_limit": 0,
        "seed": 0,
        "failpoints": None,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("level=off", {"level": 0}),
        ("level=standard", {"level": 1, "guard_pages": 0, "exit_check": 0}),
        ("level=paranoid", {"level": 2, "guard_pages": 1, "exit_check": 1}),
        ("level=2", {"level": 2}),
        ("policy=abort", {"policy": 1}),
        ("policy=record", {"policy": 0}),
        ("limit=1G", {"limit_bytes": GiB}),
        ("retain=0", {"retain_bytes": 0}),
        ("quarantine=512k", {"quarantine_bytes": 512 * KiB}),
        ("sweep=1000", {"sweep_every_ops": 1000}),
        ("guard=1", {"guard_pages": 1}),
        ("exit_check=1", {"exit_check": 1}),
        ("poison_limit=256", {"poison_limit": 256}),
        ("poison_limit=4k", {"poison_limit": 4 * KiB}),
        ("tcache=0", {"thread_cache": 0}),
        ("tracking=1", {"tracking": 1, "stack_sample": 64}),
        ("stacks=1/64", {"tracking": 1, "stack_sample": 64}),
        ("stacks=1/1", {"tracking": 1, "stack_sample": 1}),
        ("stacks=8", {"tracking": 1, "stack_sample": 8}),
        ("stacks=0", {"tracking": 0, "stack_sample": 0}),
        ("events=16", {"event_capacity": 16}),
        ("seed=12345", {"seed": 12345}),
        ("seed=0xff", {"seed": 255}),
        ("fail=pool.grow@p0.01", {"failpoints": "pool.grow@p0.01"}),
    ],
)
def test_every_key(probe: Path, text: str, expected: dict[str, Any]) -> None:
    got = parse(probe, text)
    assert {k: got[k] for k in expected} == expected


def test_the_example_from_the_issue(probe: Path) -> None:
    got = parse(probe, "level=standard:policy=record:stacks=1/64:limit=1G:fail=pool.grow@p0.01")
    assert got["level"] == 1 and got["policy"] == 0
    assert got["tracking"] == 1 and got["stack_sample"] == 64
    assert got["limit_bytes"] == GiB
    assert got["failpoints"] == "pool.grow@p0.01"


@pytest.mark.parametrize(
    ("value", "bytes_"),
    [
        ("0", 0),
        ("4096", 4096),
        ("1k", KiB),
        ("1K", KiB),
        ("3m", 3 * MiB),
        ("3M", 3 * MiB),
        ("2g", 2 * GiB),
        ("2G", 2 * GiB),
        ("1T", TiB),
        ("4MiB", 4 * MiB),
        ("4MB", 4 * MiB),
        ("64kB", 64 * KiB),
        ("100B", 100),
        ("0x1000", 4096),
    ],
)
def test_size_suffixes(probe: Path, value: str, bytes_: int) -> None:
    assert parse(probe, f"limit={value}")["limit_bytes"] == bytes_


@pytest.mark.parametrize(
    ("value", "flag"),
    [("1", 1), ("0", 0), ("true", 1), ("false", 0), ("yes", 1), ("no", 0), ("on", 1), ("off", 0)],
)
def test_booleans(probe: Path, value: str, flag: int) -> None:
    assert parse(probe, f"tracking={value}")["tracking"] == flag


def test_config_field_names_are_accepted_too(probe: Path) -> None:
    got = parse(probe, "limit_bytes=1M:quarantine_bytes=2M:event_capacity=7:stack_sample=1/2")
    assert (got["limit_bytes"], got["quarantine_bytes"], got["event_capacity"]) == (MiB, 2 * MiB, 7)
    assert got["stack_sample"] == 2


def test_guard_follows_paranoid_unless_given(probe: Path) -> None:
    assert parse(probe, "guard=0:level=paranoid")["guard_pages"] == 0
    assert parse(probe, "level=paranoid:guard=0")["guard_pages"] == 0
    assert parse(probe, "level=standard:guard=1")["guard_pages"] == 1


def test_exit_check_follows_paranoid_unless_given(probe: Path) -> None:
    assert parse(probe, "exit_check=0:level=paranoid")["exit_check"] == 0
    assert parse(probe, "level=paranoid:exit_check=0")["exit_check"] == 0
    assert parse(probe, "level=standard:exit_check=1")["exit_check"] == 1
    assert parse(probe, "exit_check=1:level=standard")["exit_check"] == 1
    # each follows the level on its own: giving one leaves the other derived
    got = parse(probe, "guard=0:level=paranoid")
    assert (got["guard_pages"], got["exit_check"]) == (0, 1)


def test_fail_values_accumulate_and_empty_clears(probe: Path) -> None:
    assert parse(probe, "fail=alloc@every3:fail=large.map@max1")["failpoints"] == (
        "alloc@every3;large.map@max1"
    )
    assert parse(probe, "fail=alloc@every3:fail=")["failpoints"] is None


def test_blanks_and_empty_pieces_are_ignored(probe: Path) -> None:
    got = parse(probe, " level = standard ::policy=abort: ")
    assert (got["level"], got["policy"]) == (1, 1)
    assert parse(probe, "")["level"] == 0


def test_later_keys_win(probe: Path) -> None:
    assert parse(probe, "level=paranoid:level=standard")["level"] == 1


@pytest.mark.parametrize("text", ["lvl=standard", "bogus=1", "LEVEL=off", "help"])
def test_unknown_key_names_it_and_lists_the_valid_keys(probe: Path, text: str) -> None:
    message = parse_error(probe, text)
    key = text.split("=")[0]
    assert f"unknown key '{key}'" in message
    for valid in KEYS:
        assert valid in message


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("level=extreme", "level", "extreme"),
        ("policy=panic", "policy", "panic"),
        ("limit=12Q", "limit", "12Q"),
        ("limit=-1", "limit", "-1"),
        ("limit=", "limit", ""),
        ("limit=99999999999999999999", "limit", "99999999999999999999"),
        ("limit=16777216T", "limit", "16777216T"),
        ("events=5000000000", "events", "5000000000"),
        ("tracking=maybe", "tracking", "maybe"),
        ("stacks=2/64", "stacks", "2/64"),
        ("stacks=1/0", "stacks", "1/0"),
        ("seed=12abc", "seed", "12abc"),
    ],
)
def test_bad_value_names_key_and_value(probe: Path, text: str, key: str, value: str) -> None:
    message = parse_error(probe, text)
    assert f"bad value '{value}' for key '{key}'" in message
    assert "expected" in message
    assert "valid keys: level, policy" in message


def test_key_without_value(probe: Path) -> None:
    message = parse_error(probe, "level")
    assert "key 'level' needs a value" in message


@pytest.mark.parametrize(
    ("spec", "piece", "listed"),
    [
        (
            "fail=pool.gro@p0.1",
            "unknown point 'pool.gro'",
            "valid points: alloc, pool.grow, os.map",
        ),
        ("fail=alloc@q1", "unknown term 'q1'", "valid terms: p<"),
        ("fail=alloc@p1.5", "probability must be a number from 0 to 1", ""),
        ("fail=alloc@every0", "bad number in term 'every0'", "valid terms"),
        ("fail=alloc@", "no term after '@'", "valid terms"),
        ("fail=alloc@min1k,maxsize10", "min is larger than maxsize", ""),
    ],
)
def test_bad_fail_spec_names_the_piece(probe: Path, spec: str, piece: str, listed: str) -> None:
    message = parse_error(probe, spec)
    assert "bad value for key 'fail'" in message
    assert piece in message
    assert listed in message


def test_the_c_library_and_the_plan_loader_know_the_same_fail_points(probe: Path) -> None:
    """The allocator's list of valid points is written from its table of points; the
    plan loader has its own (harness.plan.FAIL_POINTS): a point added to one only would
    be refused by the other, in a plan or at run time."""
    from harness.plan import FAIL_POINTS

    message = parse_error(probe, "fail=nosuch@p1")
    listed = message.split("valid points: ", 1)[1].split(";", 1)[0].strip()
    assert tuple(listed.split(", ")) == FAIL_POINTS, message


def test_error_leaves_config_untouched(probe: Path) -> None:
    # The probe prints nothing on error; the C contract (cfg unchanged) is checked
    # through the binding, which parses onto defaults and must not half-apply.
    from allocator import Heap
    from allocator.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=r"unknown key 'lvl'.*valid keys: level"):
        Heap(lvl="standard")
    with pytest.raises(InvalidArgument, match=r"bad value 'huge' for key 'quarantine'"):
        Heap(quarantine="huge")
    with Heap(level="standard", quarantine="1M", stacks="1/8") as heap:
        cfg = heap.report()["config"]
    assert cfg["level"] == "standard"
    assert cfg["quarantine_bytes"] == MiB
    assert (cfg["tracking"], cfg["stack_sample"]) == (1, 8)


# ------------------------------------------------------------------ environment


def test_env_options_configure_the_default_heap(probe: Path) -> None:
    out = run([str(probe), "default-heap"], options="level=standard:limit=64M:stacks=1/4")
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)["config"]
    assert cfg["level"] == "standard"
    assert cfg["limit_bytes"] == 64 * MiB
    assert (cfg["tracking"], cfg["stack_sample"]) == (1, 4)
    assert nmm_lines(out.stderr) == []


def test_env_help_prints_the_table(probe: Path) -> None:
    out = run([str(probe), "default-heap"], options="help")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stderr.strip().splitlines()[1:]
    assert header.split()[:4] == ["key", "field", "default", "unit"]
    assert [row.split()[0] for row in rows] == list(KEYS)
    assert json.loads(out.stdout)["config"]["level"] == "off"  # help changes nothing


def test_env_bad_keys_are_named_and_the_good_ones_apply(probe: Path) -> None:
    """A typo in one key must not turn the others off: each bad piece gets its own
    line saying what was expected; every good piece applies."""
    out = run(
        [str(probe), "default-heap"],
        options="level=paranoid:policy=abort:quarantine=abc:colour=blue:limit=64M:stacks=2/8",
    )
    assert out.returncode == 0, out.stderr
    lines = nmm_lines(out.stderr)
    assert len(lines) == 3, out.stderr
    assert lines[0] == (
        "nmm: NMM_OPTIONS: bad value 'abc' for key 'quarantine' (expected a size in bytes "
        "like 4096, 64k, 4M, 1G); ignored, the other keys apply"
    )
    assert lines[1].startswith("nmm: NMM_OPTIONS: unknown key 'colour'; valid keys: level,")
    assert lines[1].endswith("; ignored, the other keys apply")
    assert "bad value '2/8' for key 'stacks' (expected 1/N" in lines[2]
    cfg = json.loads(out.stdout)["config"]
    assert (cfg["level"], cfg["policy"], cfg["limit_bytes"]) == ("paranoid", "abort", 64 * MiB)
    assert cfg["quarantine_bytes"] == 4 * MiB  # the default: the bad value changed nothing
    assert (cfg["tracking"], cfg["guard_pages"]) == (0, 1)


def test_a_long_bad_value_is_cut_so_its_key_is_named(probe: Path) -> None:
    """A path over 1023 bytes is refused; its message quotes the value's first 64 bytes
    and its length, then names the key: quoted whole, the value filled the line before
    the key was named (the default heap's NMM_OPTIONS line said nothing of which key)."""
    path = "/" + "p" * 1099
    out = run([str(probe), "default-heap"], options=f"symbolizer={path}:level=standard")
    assert out.returncode == 0, out.stderr
    lines = nmm_lines(out.stderr)
    assert lines == [f"nmm: NMM_OPTIONS: bad value '{path[:64]}...' (1100 bytes) for key "
                     "'symbolizer' (expected a path of at most 1023 bytes); ignored, the "
                     "other keys apply"], out.stderr
    assert json.loads(out.stdout)["config"]["level"] == "standard"
    message = parse_error(probe, "level=" + "q" * 65)
    assert f"bad value '{'q' * 64}...' (65 bytes) for key 'level'" in message
    assert "bad value 'qqq' for key 'level'" in parse_error(probe, "level=qqq")


def test_env_strict_makes_a_bad_key_fatal(probe: Path) -> None:
    out = run([str(probe), "default-heap"], options="strict=1:level=standard:quarantine=abc")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout == ""
    lines = nmm_lines(out.stderr)
    assert "bad value 'abc' for key 'quarantine'" in lines[0]
    assert lines[-1].startswith("nmm: NMM_OPTIONS: strict=1")
    good = run([str(probe), "default-heap"], options="strict=1:level=standard")
    assert good.returncode == 0 and nmm_lines(good.stderr) == [], good.stderr


def test_process_keys_are_refused_for_one_heap(probe: Path) -> None:
    message = parse_error(probe, "level=standard:strict=1")
    assert "key 'strict' applies to the whole process: set it in NMM_OPTIONS" in message


@pytest.mark.parametrize("options", ["strict=1:level=paranoid:quarantine=abc", "strict=1:lvl=2"])
def test_preload_strict_exits_1_before_main(options: str) -> None:
    """Under the preload library options are read in a constructor: a program that
    never allocates (or never gets to main) still gets the verdict."""
    from _nmm_c import preload_path

    out = run(["/bin/true"], preload=preload_path(), options=options)
    assert out.returncode == 1, out.stderr
    assert nmm_lines(out.stderr)[-1].startswith("nmm: NMM_OPTIONS: strict=1")
    out = run([sys.executable, "-c", "print('main ran')"], preload=preload_path(),
              options=options)
    assert out.returncode == 1 and "main ran" not in out.stdout, out


def test_preload_help_prints_the_table_in_a_program_that_never_allocates() -> None:
    from _nmm_c import preload_path

    out = run(["/bin/true"], preload=preload_path(), options="help")
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines[1].split()[:4] == ["key", "field", "default", "unit"]
    assert [row.split()[0] for row in lines[2:]] == list(KEYS)


def test_allocator_options_command_prints_the_table() -> None:
    import sys

    out = run([sys.executable, "-m", "allocator", "options"])
    assert out.returncode == 0, out.stderr
    for key in KEYS:
        assert f"\n{key} " in out.stdout
        if key in FIELDS:
            assert FIELDS[key] in out.stdout


# ------------------------------------------------------------------ properties

ALPHABET = st.sampled_from(
    list("=:;@,/ .0123456789kKmMgGxp%")
    + list(KEYS)
    + [
        "standard",
        "paranoid",
        "off",
        "abort",
        "record",
        "alloc",
        "pool.grow",
        "every",
        "after",
        "max",
        "min",
        "maxsize",
        "true",
        "1/",
        "\t",
        "é",
        "\\",
        '"',
    ]
)


@given(
    st.one_of(
        st.lists(ALPHABET, max_size=12).map("".join),
        st.text(max_size=40).filter(lambda s: "\x00" not in s),
    )
)
def test_random_strings_parse_or_fail_clearly(probe: Path, text: str) -> None:
    out = run([str(probe), "parse", text], timeout=30)
    assert out.returncode in (0, 2), (text, out.returncode, out.stderr)
    if out.returncode == 0:
        cfg = json.loads(out.stdout)
        assert cfg["level"] in (0, 1, 2) and cfg["policy"] in (0, 1)
    else:
        message = out.stdout.strip()
        assert message.startswith(("unknown key '", "bad value", "key '"))
        assert "valid keys: " in message


SIZE_TEXT = st.tuples(st.integers(0, 4096), st.sampled_from(["", "k", "K", "M", "m"])).map(
    lambda t: (f"{t[0]}{t[1]}", t[0] << {"": 0, "k": 10, "K": 10, "M": 20, "m": 20}[t[1]])
)


@settings(max_examples=40)
@given(
    level=st.sampled_from(["off", "standard", "paranoid"]),
    quarantine=SIZE_TEXT,
    limit=SIZE_TEXT,
    tracking=st.booleans(),
    events=st.integers(1, 5000),
    seed=st.integers(0, 2**64 - 1),
)
def test_heap_keywords_reach_the_config(
    level: str,
    quarantine: tuple[str, int],
    limit: tuple[str, int],
    tracking: bool,
    events: int,
    seed: int,
) -> None:
    """Heap(**kwargs) goes through the same parser: the report shows what was asked."""
    from allocator import Heap

    with Heap(
        level=level,
        quarantine=quarantine[0],
        limit=limit[0],
        tracking=tracking,
        events=events,
        seed=seed,
    ) as heap:
        cfg = heap.report()["config"]
    assert cfg["level"] == level
    assert cfg["quarantine_bytes"] == quarantine[1]
    assert cfg["limit_bytes"] == limit[1]
    assert cfg["tracking"] == int(tracking)
    assert cfg["event_capacity"] == events
    assert cfg["seed"] == seed
    assert cfg["guard_pages"] == int(level == "paranoid")


@pytest.mark.parametrize(
    ("options", "guarded"),
    [
        ("level='paranoid'", True),
        ("level='paranoid', guard=1", True),
        ("level='paranoid', guard=0", False),
        ("level='standard', guard=1", True),
    ],
)
def test_guard_page_follows_the_guard_option(options: str, guarded: bool) -> None:
    """A byte written just past a large block's canary lands on the guard page
    (the process dies of it) only when guard pages are on: paranoid turns them on
    by default, and an explicit guard=0 turns them off even at paranoid."""
    script = (
        "import ctypes\n"
        "from allocator import Heap\n"
        f"heap = Heap({options})\n"
        "block = heap.alloc(300000)\n"
        "ctypes.memset(block.address + 300016, 0x41, 1)  # size + canary, rounded to 16\n"
        "print('survived', flush=True)\n"
        "block.free()\n"
        "heap.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=False)
    if guarded:
        assert out.returncode != 0 and "survived" not in out.stdout, out
        assert "guard page" in out.stderr, out.stderr
    else:
        assert out.returncode == 0 and out.stdout.strip() == "survived", out


def test_the_options_table_states_the_costs_the_readme_measured() -> None:
    """`python -m allocator options` (and NMM_OPTIONS=help) states each setting's cost as
    the README's callgrind table measured it: a re-measure updates both or this fails."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    x = dict(re.findall(r"^\| `(level=[^`]+)`[^|]*\| [\d,]+ \| (\d\.\d\d) \|$", readme, re.M))
    assert len(x) == 6, x
    out = run([sys.executable, "-m", "allocator", "options"])
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    tracked, stacks0 = x["level=standard:tracking=1"], x["level=standard:tracking=1:stacks=0"]
    assert (f"off x{x['level=off']}, standard x{x['level=standard']}, "
            f"paranoid x{x['level=paranoid']}") in text
    assert f"x{stacks0} with stacks=0, x{tracked} with the default 1/64" in text
    assert f"x{tracked} at 1/64, x{x['level=standard:tracking=1:stacks=1']} at 1" in text
