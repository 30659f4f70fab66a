"""libnmm_preload.so: the malloc family on NMM's default heap, in real programs.

Real programs (python3, the sqlite3 CLI, git) run under the preload library with
the same output as without it and not one NMM report line; small C programs in
tests/c/preload/ check the malloc family's edge cases, threads and fork, and
deliberate misuse: a one-line report naming both sites that lets the program go
on (policy=record) or stops it with SIGABRT (policy=abort), and the leak report
at exit.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest
from _nmm_c import PROGRAMS, compile_program, nmm_lines, preload_path, require_tool, run

LEVELS = ["off", "standard", "paranoid"]


@pytest.fixture(scope="module")
def preload() -> Path:
    return preload_path()


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("preload-programs")
    return {
        name: compile_program(f"{name}.c", out, link_nmm=False)
        for name in ("misuse", "threads_fork", "malloc_family")
    }


def test_preload_path_command_names_an_existing_library(preload: Path) -> None:
    out = run([sys.executable, "-m", "allocator", "preload-path"])
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == preload
    assert preload.is_file()


# ------------------------------------------------------------------ real programs

PYTHON_WORKLOAD = """
import hashlib, json, re, sqlite3
data = [{"id": i, "name": f"item-{i}", "tags": ["a" * (i % 7), "b" * (i % 13)], "v": i * 1.5}
        for i in range(40000)]
text = json.dumps(data)
back = json.loads(text)
ids = re.findall(r"item-(\\d+)", text)
db = sqlite3.connect(":memory:")
db.execute("create table t(id integer primary key, name text, v real)")
db.executemany("insert into t values (?, ?, ?)", [(d["id"], d["name"], d["v"]) for d in back])
row = db.execute("select count(*), sum(v), max(length(name)) from t").fetchone()
print(len(text), len(ids), row, hashlib.sha256(text.encode()).hexdigest())
"""


@pytest.mark.parametrize("level", LEVELS)
def test_python_runs_unchanged(preload: Path, level: str) -> None:
    argv = [sys.executable, "-c", PYTHON_WORKLOAD]
    plain = run(argv)
    assert plain.returncode == 0, plain.stderr
    under = run(argv, preload=preload, options=f"level={level}")
    assert under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout
    assert len(plain.stdout) > 0
    assert nmm_lines(under.stderr) == []


SQL = """
create table t(id integer primary key, name text, v integer);
with recursive c(x) as (select 1 union all select x + 1 from c where x < 100000)
  insert into t select x, printf('name-%08d', x), x * 7 % 1000 from c;
select count(*), sum(v), min(name), max(name) from t;
create index iv on t(v);
select v, count(*) from t where v < 5 group by v;
update t set name = name || '-x' where id % 10 = 0;
delete from t where id % 7 = 0;
select count(*), sum(length(name)) from t;
"""


@pytest.mark.parametrize("level", ["off", "standard"])
def test_sqlite3_inserts_and_queries_100k_rows(preload: Path, tmp_path: Path, level: str) -> None:
    sqlite3 = require_tool("sqlite3")
    plain = run([sqlite3, str(tmp_path / "plain.db")], stdin=SQL)
    assert plain.returncode == 0, plain.stderr
    under = run(
        [sqlite3, str(tmp_path / "nmm.db")], stdin=SQL, preload=preload, options=f"level={level}"
    )
    assert under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout
    assert plain.stdout.startswith("100000|")
    assert nmm_lines(under.stderr) == []


GIT_SCRIPT = """
set -e
git init -q .
git config user.email nmm@example.com
git config user.name nmm
for i in 1 2 3 4; do
  seq 1 $((i * 2000)) > file$i.txt
  echo "round $i" >> notes.txt
  git add .
  git commit -q -m "commit $i"
done
git log --format='%H %s'
git fsck --no-progress 2>&1
git gc -q
git count-objects -v | grep in-pack
"""


@pytest.mark.parametrize("level", ["off", "standard"])
def test_git_creates_a_repository_and_commits(preload: Path, tmp_path: Path, level: str) -> None:
    require_tool("git")
    dates = {
        "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    (tmp_path / "plain").mkdir()
    (tmp_path / "nmm").mkdir()
    plain = run(["sh", "-c", GIT_SCRIPT], cwd=tmp_path / "plain", extra_env=dates)
    assert plain.returncode == 0, plain.stderr
    under = run(
        ["sh", "-c", GIT_SCRIPT],
        cwd=tmp_path / "nmm",
        extra_env=dates,
        preload=preload,
        options=f"level={level}",
    )
    assert under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout  # same commit hashes: same bytes written
    assert under.stdout.count("commit ") == 4
    assert nmm_lines(under.stderr) == []


@pytest.mark.parametrize("level", ["off", "standard"])
def test_gcc_compiles_the_same_object(preload: Path, tmp_path: Path, level: str) -> None:
    source = PROGRAMS / "threads_fork.c"
    plain = run(["gcc", "-O2", "-c", str(source), "-o", str(tmp_path / "plain.o")])
    assert plain.returncode == 0, plain.stderr
    under = run(
        ["gcc", "-O2", "-c", str(source), "-o", str(tmp_path / "nmm.o")],
        preload=preload,
        options=f"level={level}",
    )
    assert under.returncode == 0, under.stderr
    assert (tmp_path / "nmm.o").read_bytes() == (tmp_path / "plain.o").read_bytes()
    assert nmm_lines(under.stderr) == []


_LEAK_REPORT = re.compile(
    r"^nmm: leak report: (\d+) bytes in (\d+) blocks? definitely lost, (\d+) bytes in (\d+) "
    r"blocks? indirectly lost, (\d+) bytes in (\d+) blocks? still reachable", re.M)


@pytest.mark.parametrize("program", ["python", "sqlite3", "git", "gcc"])
def test_real_programs_are_served_by_nmm(preload: Path, tmp_path: Path, program: str) -> None:
    """The tests above would pass with the library never loaded (same output, no
    report): here the same programs run with tracking and log_path, and every process
    writes its exit-time leak report to its own PREFIX.<pid> file, naming blocks it got
    from NMM (lost or still reachable) and nothing to stderr."""
    argv = {
        "python": [sys.executable, "-c", "import json; print(len(json.dumps([0] * 1000)))"],
        "sqlite3": [require_tool("sqlite3") if program == "sqlite3" else "", ":memory:",
                    "select 1;"],
        "git": ["git", "--version"],
        "gcc": ["gcc", "-O2", "-c", str(PROGRAMS / "threads_fork.c"), "-o",
                str(tmp_path / "x.o")],
    }[program]
    if program == "git":
        require_tool("git")
    prefix = tmp_path / "nmm-log"
    out = run(argv, preload=preload,
              options=f"level=standard:tracking=1:stacks=0:exitcode=0:log_path={prefix}")
    assert out.returncode == 0, out.stderr
    assert nmm_lines(out.stderr) == []  # no detection, and the reports went to the files
    logs = sorted(tmp_path.glob("nmm-log.*"))
    assert logs, "no report file"
    for log in logs:
        reports = _LEAK_REPORT.findall(log.read_text())
        assert len(reports) == 1, (log, log.read_text()[:2000])  # one report per process
        blocks = sum(int(n) for n in reports[0][1::2])
        assert blocks > 0, log.read_text()[:2000]


# ------------------------------------------------------------------ the malloc family


@pytest.mark.parametrize("level", LEVELS)
def test_malloc_family_edge_cases(preload: Path, programs: dict[str, Path], level: str) -> None:
    out = run([str(programs["malloc_family"])], preload=preload, options=f"level={level}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "all checks passed"
    assert nmm_lines(out.stderr) == []


@pytest.mark.parametrize("level", ["off", "standard"])
def test_threads_before_and_after_and_fork(
    preload: Path, programs: dict[str, Path], level: str
) -> None:
    plain = run([str(programs["threads_fork"])])
    assert plain.returncode == 0, plain.stdout + plain.stderr
    under = run([str(programs["threads_fork"])], preload=preload, options=f"level={level}")
    assert under.returncode == 0, under.stdout + under.stderr
    assert under.stdout == plain.stdout
    assert "child 0" in under.stdout
    assert nmm_lines(under.stderr) == []


# ------------------------------------------------------------------ misuse

SITE = r"[\w.]+\+0x[0-9a-f]+ \(misuse\)"


@pytest.mark.parametrize(
    ("case", "kind", "pattern"),
    [
        (
            "double_free",
            "double_free",
            r"^nmm: double_free at 0x[0-9a-f]+ size 48 alloc site make_block\+0x[0-9a-f]+ "
            r"\(misuse\) free site release_block\+0x[0-9a-f]+ \(misuse\) \(thread \d+\)$",
        ),
        (
            "overflow",
            "overflow",
            r"^nmm: overflow at 0x[0-9a-f]+ size 40 \(1 byte past the 40-byte block\) "
            r"alloc site make_block\+0x[0-9a-f]+ "
            r"\(misuse\) free site release_block\+0x[0-9a-f]+ \(misuse\) \(thread \d+\)$",
        ),
        (
            "realloc_freed",
            "realloc_freed",
            r"^nmm: realloc_freed at 0x[0-9a-f]+ size 64 alloc site make_block\+0x[0-9a-f]+ "
            r"\(misuse\) realloc site resize_block\+0x[0-9a-f]+ \(misuse\) \(thread \d+\)$",
        ),
        (
            "invalid_free",
            "invalid_free",
            r"^nmm: invalid_free at 0x[0-9a-f]+ \(wild pointer\) "
            r"free site release_block\+0x[0-9a-f]+ \(misuse\) \(thread \d+\)$",
        ),
    ],
)
def test_misuse_is_reported_in_one_line_and_the_program_goes_on(
    preload: Path, programs: dict[str, Path], case: str, kind: str, pattern: str
) -> None:
    out = run(
        [str(programs["misuse"]), case],
        preload=preload,
        options="level=standard:policy=record:tracking=1",
    )
    assert out.returncode == 23, out.stderr  # exitcode: a detection was recorded
    assert out.stdout.strip() == "survived"
    lines = [line for line in nmm_lines(out.stderr) if not line.startswith("nmm: leak report")]
    assert len(lines) == 1, out.stderr
    assert re.match(pattern, lines[0]), lines[0]


def test_double_free_is_reported_even_at_level_off(
    preload: Path, programs: dict[str, Path]
) -> None:
    out = run([str(programs["misuse"]), "double_free"], preload=preload, options="level=off")
    assert out.returncode == 23, out.stderr
    (line,) = nmm_lines(out.stderr)
    assert line.startswith("nmm: double_free at 0x")
    assert re.search(r"free site release_block\+0x[0-9a-f]+ \(misuse\)", line)


@pytest.mark.parametrize("case", ["double_free", "overflow", "invalid_free"])
def test_misuse_with_policy_abort_stops_the_program(
    preload: Path, programs: dict[str, Path], case: str
) -> None:
    out = run(
        [str(programs["misuse"]), case],
        preload=preload,
        options="level=standard:policy=abort:tracking=1",
    )
    assert out.returncode == -signal.SIGABRT, (out.returncode, out.stderr)
    assert "survived" not in out.stdout
    (line,) = nmm_lines(out.stderr)
    assert line.startswith(f"nmm: {case} at 0x")
    assert "release_block+0x" in line


def test_leak_report_at_exit_names_the_leaking_site(
    preload: Path, programs: dict[str, Path]
) -> None:
    out = run(
        [str(programs["misuse"]), "leak"], preload=preload, options="level=standard:tracking=1"
    )
    assert out.returncode == 23, out.stderr  # exitcode: blocks were lost
    lines = nmm_lines(out.stderr)
    assert lines and lines[0].startswith("nmm: leak report: 3000 bytes in 3 blocks definitely lost")
    report = out.stderr[out.stderr.index("nmm: leak report") :]
    match = re.search(
        r"^  definitely lost: (\d+) bytes in (\d+) blocks allocated at "
        r"leaky_function\+0x[0-9a-f]+ \(misuse\)$",
        report,
        re.M,
    )
    assert match, report
    assert (int(match[1]), int(match[2])) == (3000, 3)
    # make_block's only live block was freed: it is not reported
    assert "make_block" not in report


def test_no_leak_report_without_tracking(preload: Path, programs: dict[str, Path]) -> None:
    out = run([str(programs["misuse"]), "leak"], preload=preload, options="level=standard")
    assert out.returncode == 0, out.stderr
    assert nmm_lines(out.stderr) == []
