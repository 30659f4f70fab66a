"""The ``nmm-chaos`` command line: a thin shell over the harness library.

Owns argument parsing, the progress bar, tables and exit codes (0 every expectation
held, 1 a trial failed, 2 bad input). All work happens in library functions; this
module is the only one that prints.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from harness.engine import Engine, engine_names, get_engine
from harness.errors import HarnessError, PlanError
from harness.invocation import command_line
from harness.journal import JOURNAL_NAME, Journal, read_journal
from harness.loader import load_plan, validate_paths
from harness.plan import MAX_SEEDS, Plan
from harness.progress import RunProgress
from harness.records import TrialRecord
from harness.report import build_document, write_reports
from harness.runner import RunResult, run_plan

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def default_plans_dir() -> Path:
    """``chaos_plans/`` next to the harness package (the repository's), else under cwd."""
    beside = Path(__file__).resolve().parent.parent / "chaos_plans"
    return beside if beside.is_dir() else Path("chaos_plans")


class _Failed(Exception):
    """Raised inside a command to exit with a given code after printing its message."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@click.group(context_settings=CONTEXT)
def cli() -> None:
    """nmm-chaos: hammer an allocator with churn and injected faults, judge every trial."""


@cli.command("run", context_settings=CONTEXT)
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--seed", type=click.IntRange(0, (1 << 64) - 1),
              help="First trial seed (overrides the plan).")
@click.option("--seeds", type=click.IntRange(1, MAX_SEEDS), help="Number of trials (seeds) to run.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a plan key, e.g. --set workload.threads=8 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), default="reports", show_default=True,
              help="Directory under which <run-id>/ (journal and reports) is written.")
@click.option("--json", "as_json", is_flag=True, help="Print the result document as JSON.")
@click.option("--jobs", "-j", type=click.IntRange(min=1),
              help="Trials run at once (default: CPU count).")
@click.option("--resume", type=click.Path(file_okay=False),
              help="Continue the run in this run directory, skipping recorded trials.")
@click.option("--driver", "driver_cmd", metavar="CMD",
              help="Driver command to use instead of the built nmm-driver.")
@click.option("--engine", type=click.Choice(engine_names()), default="native",
              show_default=True,
              help="native: isolated nmm-driver children; python: the Python driver "
                   "in-process (no isolation, one trial at a time).")
def run_cmd(plan_path: str, seed: int | None, seeds: int | None, overrides: tuple[str, ...],
            out: str, as_json: bool, jobs: int | None, resume: str | None,
            driver_cmd: str | None, engine: str) -> int:
    """Run every trial of PLAN and judge it; exit 0 if all expectations held, 1 if not."""
    all_overrides = list(overrides)
    if seed is not None:
        all_overrides.append(f"seed={seed}")
    if seeds is not None:
        all_overrides.append(f"seeds={seeds}")
    given = click.get_current_context().get_parameter_source
    if resume is not None and given("out") is not click.core.ParameterSource.DEFAULT:
        raise _Failed(f"--out: a resumed run writes into its own directory ({resume}); "
                      "give --out or --resume, not both")
    plan = load_plan(plan_path, all_overrides)
    eng = get_engine(engine, command=_driver_argv(driver_cmd) if driver_cmd is not None
                     else None)
    if eng.in_process and jobs not in (None, 1):
        raise _Failed(f"--jobs: given {jobs}; the {eng.name} engine runs one trial at a time "
                      "in this process (use --engine native for parallel trials)")
    eng.check(plan)  # before a run directory is made for it
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / JOURNAL_NAME).exists():
            raise _Failed(f"--resume {resume}: no {JOURNAL_NAME} there (not a run directory)")
        _check_same_run(run_dir, plan, plan_path, eng.name)
        run_id = run_dir.name
    else:
        if not out:
            raise _Failed("--out: given an empty path; expected a directory")
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
        # the plan's name is free text: keep it from adding directories (a/b, ..) to the path
        safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", plan.name).strip(".") or "plan"
        run_dir = _new_run_dir(Path(out), f"{stamp}-{safe_name}-{os.getpid()}")
        run_id = run_dir.name
    err = Console(stderr=True, soft_wrap=True)  # a resume command must stay one line
    journal = Journal(run_dir / JOURNAL_NAME)
    for warning in journal.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    meta_path = run_dir / "run.json"
    if not meta_path.exists():  # a resume keeps the first run's command and plan
        meta = {"run_id": run_id, "plan_path": plan_path, "overrides": all_overrides,
                "argv": sys.argv, "engine": eng.name, "engine_spec": eng.spec(),
                "plan_name": plan.name, "plan_hash": plan.plan_hash()}
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    with journal, _stop_signals():
        try:
            result = _run_with_progress(plan, journal, eng, jobs, quiet=False)
        except KeyboardInterrupt as stop:
            resume_cmd = command_line("run", plan_path,
                                      *[a for o in all_overrides for a in ("--set", o)],
                                      *eng.options(),
                                      "--resume", str(run_dir))
            how = "terminated (SIGTERM)" if isinstance(stop, _Terminated) else "interrupted"
            err.print(f"{how}: {len(journal.records)} trial(s) kept in "
                      f"{journal.path}; continue with:\n  {resume_cmd}",
                      markup=False, highlight=False)
            return 143 if isinstance(stop, _Terminated) else 130
    doc = build_document(plan, result.records, run_id=run_id, plan_path=plan_path,
                         overrides=all_overrides, command=shlex.join(sys.argv))
    paths = write_reports(run_dir, doc)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
    else:
        _print_summary(Console(), plan, result.records, doc, result.skipped)
        click.echo(f"report: {paths['markdown']}  (JSON: {paths['json']})")
    return 0 if result.passed else 1


class _Terminated(KeyboardInterrupt):
    """SIGTERM during a run, handled as Ctrl-C is: trial children killed, journal kept."""


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """While a run is going, SIGINT raises ``KeyboardInterrupt`` and SIGTERM (a cancelled
    CI job) ``_Terminated``, once: later ones are ignored while the run stops (children
    killed, journal closed, worker threads joined at exit), where a second Ctrl-C printed
    a traceback or killed the process. SIGTERM's default action killed only this process,
    and the trial children, each in its own session, ran on without their watchdog."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    fired: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        fired.append(signum)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if not fired:  # a stopped run keeps ignoring them until the process exits
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _new_run_dir(out: Path, run_id: str) -> Path:
    """Create ``out/run_id``, or ``out/run_id-2``, ``-3``... if taken: a run never joins
    another run's journal (two runs in one second under a reused pid would have)."""
    run_dir = out / run_id
    try:
        out.mkdir(parents=True, exist_ok=True)
        for n in itertools.count(2):
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                run_dir = out / f"{run_id}-{n}"
    except OSError as exc:
        raise _Failed(f"--out {out}: cannot create {run_dir}: {exc.strerror}") from None
    raise AssertionError("unreachable")


def _driver_argv(text: str) -> list[str]:
    """The ``--driver`` command as argv; ``_Failed`` if it is empty, unparsable or not found."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise _Failed(f"--driver {text!r}: {exc}; expected a command line") from None
    if not argv:
        raise _Failed("--driver: given an empty command; expected a command line")
    if shutil.which(argv[0]) is None:
        raise _Failed(f"--driver {text!r}: {argv[0]}: no such executable")
    return argv


def _check_same_run(run_dir: Path, plan: Plan, plan_path: str, engine: str) -> None:
    """Refuse to ``--resume`` a run of another plan or engine: its journal and reports
    would be mixed with (and overwritten by) this one's. Only ``--seed``/``--seeds`` may
    change (they are not part of the plan hash)."""
    want = (plan.plan_hash(), engine)
    runs = {(r.plan, r.plan_hash, r.driver) for r in read_journal(run_dir / JOURNAL_NAME).records}
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        meta = None
    if isinstance(meta, dict) and "plan_hash" in meta:
        runs.add((str(meta.get("plan_name")), str(meta["plan_hash"]),
                  str(meta.get("engine", "native"))))
    other = sorted(r for r in runs if (r[1], r[2]) != want)
    if other:
        name, digest, was_engine = other[0]
        raise _Failed(
            f"--resume {run_dir}: that run is plan {name!r} (hash {digest}, engine "
            f"{was_engine}); {plan_path} with these overrides is plan {plan.name!r} (hash "
            f"{want[0]}, engine {engine}). Resume with the run's plan, --set overrides and "
            "--engine (see its run.json; only --seed/--seeds may change), or leave out "
            "--resume to start a new run")


def _run_with_progress(plan: Plan, journal: Journal, engine: Engine, jobs: int | None,
                       *, quiet: bool) -> RunResult:
    """Run the plan's trials with progress on stderr: a live bar on a terminal, a status
    line every 10 s otherwise (a CI log), nothing when ``quiet``."""
    done_before = len([r for r in journal.records if r.plan_hash == plan.plan_hash()])
    progress = RunProgress(plan.name, plan.seeds, enabled=not quiet,
                           done=min(done_before, plan.seeds))

    def on_line(line: dict[str, Any]) -> None:
        if line.get("type") == "event":
            progress.detection()

    def on_record(record: TrialRecord) -> None:
        result = record.observation.result
        progress.advance(failed=not record.verdict.passed, ops=result.ops if result else 0)

    with progress:
        return run_plan(plan, jobs=jobs, journal=journal, on_record=on_record,
                        on_line=on_line, engine=engine)


def _print_summary(console: Console, plan: Plan, records: Sequence[TrialRecord],
                   doc: dict[str, Any], skipped: int) -> None:
    s = doc["summary"]
    table = Table(title=f"{plan.name}: {s['passed']}/{s['trials']} trials passed"
                  + (f" ({skipped} from the journal)" if skipped else ""))
    for column in ("seed", "target", "outcome", "faults", "ops/s", "wall s", "result"):
        table.add_column(column)
    shown = [r for r in records if not r.verdict.passed] + [
        r for r in records if r.verdict.passed]
    for r in shown[:40]:
        found = sum(1 for f in r.verdict.faults if f.outcome in ("detected", "detected-abort"))
        table.add_row(str(r.seed), r.target, r.verdict.outcome,
                      f"{found}/{len(r.verdict.faults)}", f"{r.ops_per_s:,.0f}",
                      f"{r.observation.wall_s:.2f}",
                      "[green]pass[/]" if r.verdict.passed else
                      "[red]FAIL[/] " + "; ".join(r.verdict.reasons)[:200])
    if len(shown) > 40:
        table.caption = f"{len(shown) - 40} more trials in the report"
    console.print(table)
    if doc["detection_matrix"]:
        matrix = Table(title="detections by fault kind")
        matrix.add_column("fault")
        targets = sorted({t for row in doc["detection_matrix"].values() for t in row})
        for t in targets:
            matrix.add_column(t)
        for kind, row in doc["detection_matrix"].items():
            cells = []
            for t in targets:
                c = row.get(t, {})
                found = c.get("detected", 0) + c.get("detected-abort", 0)
                cells.append(f"{found}/{c.get('injected', 0)}" + (
                    f" ({c['missed']} missed)" if c.get("missed") else ""))
            matrix.add_row(kind, *cells)
        console.print(matrix)


@cli.group("plans", context_settings=CONTEXT)
def plans_group() -> None:
    """Check and list chaos plans."""


@plans_group.command("validate", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path())
def plans_validate(paths: tuple[str, ...]) -> int:
    """Validate plans (default: every plan under chaos_plans/); exit 0 all valid, 2 if not."""
    results = validate_paths(paths or (default_plans_dir(),))
    if not results:
        raise _Failed(f"no plans found under {', '.join(paths) or default_plans_dir()}")
    bad = 0
    for path, outcome in results:
        if isinstance(outcome, PlanError):
            bad += 1
            click.echo(f"FAIL {_rel(path)}", err=True)
            for problem in outcome.problems:
                click.echo(f"     {problem}", err=True)
        else:
            n = len(outcome.faults)
            click.echo(f"ok   {_rel(path)} ({outcome.name}: {outcome.seeds} trial(s), "
                       f"{n} fault entr{'y' if n == 1 else 'ies'}, {outcome.target.label})")
    click.echo(f"{len(results) - bad}/{len(results)} plans valid")
    return 2 if bad else 0


@plans_group.command("list", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path())
def plans_list(paths: tuple[str, ...]) -> int:
    """List plans with their target, workload and faults (default: every plan under
    chaos_plans/); exit 0, or 2 if a plan is invalid or none is found."""
    results = validate_paths(paths or (default_plans_dir(),))
    if not results:
        raise _Failed(f"no plans found under {', '.join(paths) or default_plans_dir()}")
    table = Table()
    for column in ("plan", "target", "threads", "ops/worker", "seeds"):
        table.add_column(column, no_wrap=True)
    table.add_column("faults")
    table.add_column("about", overflow="fold", ratio=1)
    bad = 0
    for path, outcome in results:
        if isinstance(outcome, PlanError):
            bad += 1
            table.add_row(_rel(path), "[red]invalid[/]", "", "", "", "", str(outcome)[:80])
            continue
        kinds = dict.fromkeys(f.kind for f in outcome.faults)
        w = outcome.workload
        ops = str(w.ops_per_worker) + (f" + {w.duration_s:g} s" if w.timed else "")
        table.add_row(_rel(path), outcome.target.label, str(w.threads), ops, str(outcome.seeds),
                      " ".join(kinds) or "-", outcome.description)
    console = Console()
    if not console.is_terminal:  # a log or a pipe: do not squeeze the table into 80 columns
        console = Console(width=200)
    console.print(table)
    if bad:
        click.echo(f"{bad} invalid plan(s); `nmm-chaos plans validate` says why", err=True)
    return 2 if bad else 0


def _rel(path: Path) -> str:
    """``path`` relative to the working directory when it is under it, else as given."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


try:
    from harness.bench import bench as _bench
except ImportError as _exc:  # the bench module is written in parallel; absent until it lands
    if _exc.name != "harness.bench":
        raise
else:
    cli.add_command(_bench, "bench")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="nmm-chaos",
                      standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except _Failed as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.code
    except HarnessError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except OSError as exc:  # an unwritable --out, a full disk: bad input, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"error: {exc.strerror or exc}{where}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
