"""Coverage of the allocator by the chaos plans alone (``make coverage``).

``build_driver`` compiles nmm-driver with gcov instrumentation (the allocator's sources
as the driver links them, ``--coverage``, counters updated atomically: trials are
multi-threaded). ``measure`` runs each campaign's gating trials (``nmm-chaos campaign
FILE --targets plan``: every plan at its own target and the levels its expectations
name, no peers) against that driver, and after each campaign reads the counters with
``gcov --json-format``: line and branch coverage of ``allocator/src/`` (its headers'
inline functions included), per file, with every function no trial entered. The unit
tests never touch these counters: the figure is the plans' own.

A trial that dies by a signal (a detected-abort) writes no counters (gcov writes them
at exit): its coverage is not counted, which can only lower the figure.

The result is ``coverage.json`` and ``coverage.md`` in the output directory; each
campaign's report (``result.json``, ``summary.md``, ``report.html``) is written again
with the figure in it (``harness.robustness`` reads ``coverage.json`` from a run
directory).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "allocator" / "src"
INCLUDE = ROOT / "allocator" / "include"
NATIVE = ROOT / "harness" / "native"
COVERAGE_FILE = "coverage.json"
#: sources of the instrumented build that are not the allocator under test: the damage
#: hook of corrupt_meta faults (chaos and coverage builds only) would count its own
#: lines, run by the very plans measured, as the allocator's
NOT_MEASURED = frozenset({"allocator/src/chaos_corrupt.c"})
#: gcc flags of the instrumented build (the release build's, at -O1: lines map to code
#: closely enough to count, and trials stay fast)
CFLAGS = ["-std=gnu11", "-O1", "-g", "-pthread", "-fvisibility=hidden", "-Wall",
          "-Wextra", "--coverage", "-fprofile-update=atomic", "-fno-inline-functions-called-once"]


class CoverageError(Exception):
    """The instrumented build or gcov failed."""


def _sources() -> list[Path]:
    """What nmm-driver is built from: the driver and the allocator but its shims (the
    preload library's entry points, which no driver trial calls)."""
    alloc = sorted(p for p in SRC.glob("*.c") if not p.name.endswith("_shim.c"))
    return sorted(NATIVE.glob("*.c")) + alloc


def build_driver(out_dir: Path, jobs: int = 2) -> Path:
    """Compile an instrumented nmm-driver into ``out_dir`` (objects and their ``.gcno``
    in ``out_dir/obj``); returns its path. Old counters there are removed."""
    obj_dir = out_dir / "obj"
    if obj_dir.exists():
        shutil.rmtree(obj_dir)
    obj_dir.mkdir(parents=True)
    extra = ["-msse4.2"] if os.uname().machine == "x86_64" else []
    flags = [*CFLAGS, *extra, "-DNMM_CHAOS_COVERAGE", "-I", str(INCLUDE), "-I", str(SRC)]

    def compile_one(src: Path) -> Path:
        obj = obj_dir / (("drv_" if src.parent == NATIVE else "") + src.stem + ".o")
        proc = subprocess.run(["gcc", *flags, "-c", str(src), "-o", str(obj)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise CoverageError(f"gcc {src.name}: {proc.stderr.strip()[-2000:]}")
        return obj

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        objects = list(pool.map(compile_one, _sources()))
    driver = out_dir / "nmm-driver"
    proc = subprocess.run(["gcc", "--coverage", "-pthread", *map(str, objects), "-lm", "-ldl",
                           "-o", str(driver)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CoverageError(f"link: {proc.stderr.strip()[-2000:]}")
    return driver


def reset_counters(out_dir: Path) -> None:
    """Remove every ``.gcda`` (counters of earlier runs)."""
    for gcda in (out_dir / "obj").glob("*.gcda"):
        gcda.unlink()


# ------------------------------------------------------------------ reading gcov

@dataclass
class _FileCounts:
    lines: dict[int, int] = field(default_factory=dict)           # line -> count
    branches: dict[tuple[int, int], int] = field(default_factory=dict)  # (line, i) -> count
    functions: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (line, n)


def read_counters(out_dir: Path) -> dict[str, _FileCounts]:
    """Line, branch and function counts of every file under ``allocator/src``, merged
    over the objects (a header's inline functions appear in each object using them)."""
    obj_dir = out_dir / "obj"
    gcdas = sorted(obj_dir.glob("*.gcda"))
    files: dict[str, _FileCounts] = defaultdict(_FileCounts)
    work = out_dir / "gcov"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    if not gcdas:
        return {}
    proc = subprocess.run(["gcov", "--json-format", "--branch-probabilities",
                           "--object-directory", str(obj_dir), *map(str, gcdas)],
                          cwd=work, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CoverageError(f"gcov: {proc.stderr.strip()[-2000:]}")
    for path in sorted(work.glob("*.gcov.json.gz")):
        doc = json.loads(gzip.decompress(path.read_bytes()))
        for f in doc.get("files", []):
            name = Path(f["file"])
            full = name if name.is_absolute() else (Path(doc.get("current_working_directory",
                                                                 ROOT)) / name)
            try:
                rel = full.resolve().relative_to(SRC)
            except ValueError:
                continue  # the driver's own sources, system headers
            if str(Path("allocator/src") / rel) in NOT_MEASURED:
                continue
            counts = files[str(Path("allocator/src") / rel)]
            for line in f.get("lines", []):
                n = int(line["line_number"])
                counts.lines[n] = counts.lines.get(n, 0) + int(line["count"])
                for i, br in enumerate(line.get("branches", [])):
                    if br.get("throw"):
                        continue
                    key = (n, i)
                    counts.branches[key] = counts.branches.get(key, 0) + int(br["count"])
            for fn in f.get("functions", []):
                name_ = fn.get("demangled_name") or fn["name"]
                line_no, seen = counts.functions.get(name_, (int(fn["start_line"]), 0))
                counts.functions[name_] = (line_no, seen + int(fn["execution_count"]))
    return dict(files)


def summarize(files: dict[str, _FileCounts]) -> dict[str, Any]:
    """Totals, per-file figures and the functions never entered."""
    per_file = []
    uncovered: list[dict[str, Any]] = []
    tl = cl = tb = cb = 0
    for name in sorted(files):
        c = files[name]
        lines_hit = sum(1 for n in c.lines.values() if n > 0)
        br_hit = sum(1 for n in c.branches.values() if n > 0)
        per_file.append({"file": name, "lines": len(c.lines), "lines_covered": lines_hit,
                         "branches": len(c.branches), "branches_covered": br_hit,
                         "line_percent": _pct(lines_hit, len(c.lines)),
                         "branch_percent": _pct(br_hit, len(c.branches))})
        tl, cl, tb, cb = tl + len(c.lines), cl + lines_hit, tb + len(c.branches), cb + br_hit
        uncovered += [{"file": name, "function": fn, "line": line}
                      for fn, (line, n) in sorted(c.functions.items(), key=lambda x: x[1][0])
                      if n == 0]
    return {"lines": tl, "lines_covered": cl, "line_percent": _pct(cl, tl),
            "branches": tb, "branches_covered": cb, "branch_percent": _pct(cb, tb),
            "files": per_file, "uncovered_functions": uncovered}


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


# ------------------------------------------------------------------ running

def _run_campaign(campaign: Path, driver: Path, out: Path, seeds: int | None,
                  workers: int | None) -> tuple[Path | None, int]:
    """Run one campaign's gating trials against the instrumented driver; returns the
    campaign directory and the campaign's exit code."""
    before = set(out.iterdir()) if out.exists() else set()
    argv = [sys.executable, "-m", "harness", "campaign", str(campaign), "--targets", "plan",
            "--driver", str(driver), "--out", str(out), "-q"]
    if seeds is not None:
        argv += ["--seeds", str(seeds)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    proc = subprocess.run(argv, cwd=ROOT, check=False)
    made = sorted(set(out.iterdir()) - before) if out.exists() else []
    return (made[-1] if made else None), proc.returncode


def measure(campaigns: Sequence[tuple[str, Path, int | None]], out: Path, *, jobs: int = 2,
            workers: int | None = None) -> dict[str, Any]:
    """Build, run each ``(label, campaign file, seeds)`` in turn and read the counters
    after each: the figure of the first alone, then of the first two, and so on."""
    out.mkdir(parents=True, exist_ok=True)
    build = out / "build"
    driver = build_driver(build, jobs)
    reset_counters(build)
    stages: list[dict[str, Any]] = []
    labels: list[str] = []
    run_dirs: list[Path] = []
    for label, campaign, seeds in campaigns:
        run_dir, code = _run_campaign(campaign, driver, out, seeds, workers)
        labels.append(label)
        if run_dir is not None:
            run_dirs.append(run_dir)
        summary = summarize(read_counters(build))
        stages.append({"plans": "+".join(labels), "campaign": str(campaign), "seeds": seeds,
                       "campaign_dir": str(run_dir) if run_dir else None,
                       "campaign_exit": code,
                       **{k: summary[k] for k in ("lines", "lines_covered", "line_percent",
                                                  "branches", "branches_covered",
                                                  "branch_percent")}})
    final = summarize(read_counters(build))
    doc = {"scope": "allocator/src", "by": "chaos plans only (no unit tests)",
           "stages": stages, **final}
    (out / COVERAGE_FILE).write_text(json.dumps(doc, indent=1) + "\n")
    (out / "coverage.md").write_text(render_markdown(doc))
    for run_dir in run_dirs:  # each campaign's report shows the figure
        (run_dir / COVERAGE_FILE).write_text(json.dumps(doc, indent=1) + "\n")
        _rewrite_report(run_dir)
    return doc


def _rewrite_report(run_dir: Path) -> None:
    from harness.robustness import build_report, load_run, write_report

    run = load_run(run_dir)
    write_report(build_report([run]), run_dir, [run])


def render_markdown(doc: dict[str, Any]) -> str:
    """The coverage section of a report (also ``coverage.md`` on its own)."""
    lines = [f"## Coverage of {doc['scope']} by the chaos plans alone", "",
             "| plans | lines | branches |", "|---|---|---|"]
    for s in doc.get("stages", []):
        lines.append(f"| {s['plans']}"
                     + (f" ({s['seeds']} seeds)" if s.get("seeds") else "")
                     + f" | {s['line_percent']:.1f}% ({s['lines_covered']}/{s['lines']}) | "
                     f"{s['branch_percent']:.1f}% ({s['branches_covered']}/{s['branches']}) |")
    lines += ["", "| file | lines | branches |", "|---|---|---|"]
    lines += [f"| {f['file']} | {f['line_percent']:.1f}% | {f['branch_percent']:.1f}% |"
              for f in doc.get("files", [])]
    missing = doc.get("uncovered_functions", [])
    lines += ["", f"Functions no trial entered ({len(missing)}):", ""]
    lines += [f"- {m['file']}:{m['line']} `{m['function']}`" for m in missing]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.coverage [--out DIR] [--nightly-seeds N]``."""
    import argparse
    import datetime as dt

    parser = argparse.ArgumentParser(prog="python -m harness.coverage",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / f"coverage-{stamp}")
    parser.add_argument("--nightly-seeds", type=int, default=4,
                        help="seeds per plan of the nightly campaign (its own: 50)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    campaigns = ROOT / "chaos_plans" / "campaigns"
    try:
        doc = measure([("smoke", campaigns / "smoke.toml", None),
                       ("nightly", campaigns / "nightly.toml", args.nightly_seeds)],
                      args.out, jobs=args.jobs, workers=args.workers)
    except CoverageError as exc:
        print(f"nmm-chaos coverage: {exc}", file=sys.stderr)
        return 1
    for s in doc["stages"]:
        print(f"{s['plans']}: lines {s['line_percent']:.1f}% "
              f"({s['lines_covered']}/{s['lines']}), branches {s['branch_percent']:.1f}% "
              f"({s['branches_covered']}/{s['branches']})")
    print(f"{len(doc['uncovered_functions'])} function(s) never entered; "
          f"report: {args.out / 'coverage.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
