"""The ``nmm-chaos`` command line: a thin shell over the harness library.

Owns argument parsing, the progress bar, tables and exit codes (0 every expectation
held, 1 a trial failed, 2 bad input). All work happens in library functions; this
module is the only one that prints.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from harness import interrupts
from harness.engine import Engine, engine_names, get_engine
from harness.errors import HarnessError, PlanError
from harness.invocation import command_line, program
from harness.journal import JOURNAL_NAME, Journal, read_journal
from harness.loader import load_plan, validate_paths
from harness.plan import MAX_SEEDS, Plan, plan_differences
from harness.progress import RunProgress
from harness.records import TrialRecord
from harness.runner import RunResult, run_plan
from harness.terminal import (
    WIDE,
    console,
    failure_lines,
    forget_verdict,
    matrix_lines,
    passed_line,
    record_verdict,
    recorded_verdict,
    trial_table,
    verdict_line,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: the arguments ``main`` was given (after the program name), for printed commands
_invoked_args: list[str] = []
#: the stdout wrapper click installs when it meets a broken pipe itself (private: looked up)
_PACIFIED: Any = getattr(click.utils, "_PacifyFlushWrapper", ())


def default_plans_dir() -> Path:
    """``chaos_plans/`` next to the harness package (the repository's), else under cwd."""
    beside = Path(__file__).resolve().parent.parent / "chaos_plans"
    return beside if beside.is_dir() else Path("chaos_plans")


class _Failed(Exception):
    """Raised inside a command to exit with a given code after printing its message."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class _PipeClosed(Exception):
    """The reader of stdout went away (``nmm-chaos run ... | head``)."""


class _Group(click.Group):
    """Turns a broken pipe inside a command into ``_PipeClosed`` before click sees it
    (click turns one into exit 1 there: the code of a failed trial)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _PipeClosed() from exc


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(package_name="nmm-chaos", prog_name="nmm-chaos",
                      message="%(prog)s %(version)s")
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
@click.option("--json", "as_json", is_flag=True,
              help="Print the result document as JSON, with the run directory (run_dir) "
                   "and the report paths (reports).")
@click.option("--verbose", "-v", is_flag=True,
              help="List every trial in the table, not only the failing ones.")
@click.option("--quiet", "-q", is_flag=True,
              help="Print only the verdict line (with --json: only the JSON); no progress.")
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
            out: str, as_json: bool, verbose: bool, quiet: bool, jobs: int | None,
            resume: str | None, driver_cmd: str | None, engine: str) -> int:
    """Run every trial of PLAN and judge it; exit 0 if all expectations held, 1 if not.

    Prints the failing trials (every trial with --verbose), each failure's replay
    command, and a last verdict line (PASS/FAIL, the counts and the report's path).
    Progress goes to stderr: a live bar on a terminal, else a line every 10 s."""
    if verbose and quiet:
        raise _Failed("--verbose and --quiet: give one or the other")
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
    err = console(stderr=True, soft_wrap=True)  # a resume command must stay one line
    journal = Journal(run_dir / JOURNAL_NAME)
    for warning in journal.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    for ident in journal.unfinished.values():
        err.print(f"[yellow]warning:[/] trial seed {ident.get('seed')} of "
                  f"{ident.get('plan')} against {ident.get('target')} started and left no "
                  "record (the run or the machine died during it); it runs again",
                  markup=True, highlight=False)
    meta_path = run_dir / "run.json"
    if not meta_path.exists():  # a resume keeps the first run's command and plan
        meta = {"run_id": run_id, "plan_path": plan_path, "overrides": all_overrides,
                "argv": [*program(), *_invoked_args], "engine": eng.name,
                "engine_spec": eng.spec(), "plan_name": plan.name,
                "plan_hash": plan.plan_hash(),
                # what a refused --resume compares key by key
                "plan": plan.model_dump(mode="json")}
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    with journal, interrupts.stop_signals():
        try:
            result = _run_with_progress(plan, journal, eng, jobs, quiet=quiet,
                                        overrides=all_overrides)
        except KeyboardInterrupt as stop:
            resume_cmd = command_line("run", plan_path,
                                      *[a for o in all_overrides for a in ("--set", o)],
                                      *eng.options(), "--resume", str(run_dir))
            terminated = isinstance(stop, interrupts.Terminated)
            how = "terminated (SIGTERM)" if terminated else "interrupted"
            err.print(f"{how}: {len(journal.records)} trial(s) kept in "
                      f"{journal.path}; continue with:\n  {resume_cmd}",
                      markup=False, highlight=False)
            return 143 if terminated else 130
    # the versioned report (result.json, summary.md, junit.xml, report.html), as a
    # campaign's; the terminal and --json show the same document
    from harness._cli_campaign import _write_reports

    paths = _write_reports([run_dir], run_dir)
    doc = json.loads(paths["json"].read_text())
    code = record_verdict(0 if result.passed else 1)
    if as_json:
        click.echo(json.dumps({**doc, "run_dir": str(run_dir.absolute()),
                               "reports": {kind: str(path.absolute())
                                           for kind, path in paths.items()}}, indent=1))
    elif quiet:
        click.echo(verdict_line(plan.name, result.records, report=str(paths["markdown"])))
    else:
        _print_summary(plan.name, result.records, doc, result.skipped, verbose=verbose,
                       report=str(paths["markdown"]))
    return code


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
    if not other:
        return
    name, digest, was_engine = other[0]
    changes = [("engine", was_engine, engine)] if was_engine != engine else []
    before = _run_plan_document(run_dir, meta, digest)
    if before is not None:
        changes += plan_differences(before, plan.model_dump(mode="json"))
    if changes:
        shown = [f"  {key}: was {_show(old)}, now {_show(new)}"
                 for key, old, new in changes[:MAX_CHANGES]]
        if len(changes) > MAX_CHANGES:
            shown.append(f"  ... and {len(changes) - MAX_CHANGES} more")
        what = (f"that run is plan {name!r} with other settings; {plan_path} with these "
                "overrides differs in:\n" + "\n".join(shown) + "\n")
    else:  # a run directory from before run.json kept the plan: hashes are all there is
        what = (f"that run is plan {name!r} (hash {digest}, engine {was_engine}); "
                f"{plan_path} with these overrides is plan {plan.name!r} (hash {want[0]}, "
                f"engine {engine}). ")
    raise _Failed(f"--resume {run_dir}: {what}Resume with the run's plan, --set overrides "
                  "and --engine (see its run.json; only --seed/--seeds may change), or "
                  "leave out --resume to start a new run")


#: differing keys a refused --resume lists one by one
MAX_CHANGES = 12


def _run_plan_document(run_dir: Path, meta: Any, digest: str) -> dict[str, Any] | None:
    """The plan document of the run in ``run_dir`` with hash ``digest``: from its run.json,
    else from a result.json an earlier pass wrote; None if neither kept it."""
    if isinstance(meta, dict) and meta.get("plan_hash") == digest \
            and isinstance(meta.get("plan"), dict):
        return dict(meta["plan"])
    try:
        plan_doc = json.loads((run_dir / "result.json").read_text())["plan"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(plan_doc, dict) and plan_doc.get("hash") == digest \
            and isinstance(plan_doc.get("document"), dict):
        return dict(plan_doc["document"])
    return None


def _show(value: Any) -> str:
    """A plan value as TOML-ish text: strings quoted, lists in brackets, none as (unset)."""
    return "(unset)" if value is None else json.dumps(value)


def _run_with_progress(plan: Plan, journal: Journal, engine: Engine, jobs: int | None,
                       *, quiet: bool, overrides: Sequence[str] = ()) -> RunResult:
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
                        on_line=on_line, engine=engine, overrides=overrides)


def _print_summary(name: str, records: Sequence[TrialRecord], doc: dict[str, Any],
                   skipped: int, *, verbose: bool, report: str) -> None:
    """The run on stdout: failing trials (all with ``verbose``) in a table that fits the
    terminal (compact when narrow or piped), passing ones in one line, the detection
    matrix, each failure with its replay command, and the verdict line last."""
    out = console(soft_wrap=False, highlight=False)
    compact = not out.is_terminal or out.width < WIDE
    table = trial_table(records, verbose=verbose, compact=compact, width=out.width)
    if table is not None:
        out.print(table)
    passed = None if verbose else passed_line(records, skipped=skipped)
    if passed:
        click.echo(passed)
    for line in matrix_lines(doc):
        click.echo(line)
    for g in doc.get("pct_guarantee") or ():
        click.echo(g["text"])
    replays = {f["key"]: f["replay"] for f in doc["failures"]}
    failures = failure_lines(records, replays)
    if failures:
        click.echo()
        for line in failures:
            click.echo(line)
    click.echo(verdict_line(name, records, report=report))


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
    bad = sum(1 for _, outcome in results if isinstance(outcome, PlanError))
    code = record_verdict(2 if bad else 0)
    for path, outcome in results:
        if isinstance(outcome, PlanError):
            click.echo(f"FAIL {_rel(path)}", err=True)
            for problem in outcome.problems:
                click.echo(f"     {problem}", err=True)
        else:
            n = len(outcome.faults)
            click.echo(f"ok   {_rel(path)} ({outcome.name}: {outcome.seeds} trial(s), "
                       f"{n} fault entr{'y' if n == 1 else 'ies'}, {outcome.target.label})")
    click.echo(f"{len(results) - bad}/{len(results)} plans valid")
    return code


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
    bad = sum(1 for _, outcome in results if isinstance(outcome, PlanError))
    code = record_verdict(2 if bad else 0)
    for path, outcome in results:
        if isinstance(outcome, PlanError):
            table.add_row(_rel(path), "[red]invalid[/]", "", "", "", "", str(outcome)[:80])
            continue
        kinds = dict.fromkeys(f.kind for f in outcome.faults)
        w = outcome.workload
        ops = str(w.ops_per_worker) + (f" + {w.duration_s:g} s" if w.timed else "")
        table.add_row(_rel(path), outcome.target.label, str(w.threads), ops, str(outcome.seeds),
                      " ".join(kinds) or "-", outcome.description)
    out = console()
    if not out.is_terminal:  # a log or a pipe: do not squeeze the table into 80 columns
        out = console(width=200)
    out.print(table)
    if bad:
        click.echo(f"{bad} invalid plan(s); `{command_line('plans', 'validate')}` says why",
                   err=True)
    return code


def _rel(path: Path) -> str:
    """``path`` relative to the working directory when it is under it, else as given."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


from harness._cli_campaign import campaign_cmd, compare_cmd, report_cmd  # noqa: E402

cli.add_command(campaign_cmd, "campaign")
cli.add_command(report_cmd, "report")
cli.add_command(compare_cmd, "compare")

from harness._cli_chaos import COMMANDS as _CHAOS_COMMANDS  # noqa: E402

for _name, _command in _CHAOS_COMMANDS.items():  # hunt, replay, shrink (issue 9)
    cli.add_command(_command, _name)

try:
    from harness.bench import bench as _bench
except ImportError as _exc:  # the bench module is written in parallel; absent until it lands
    if _exc.name != "harness.bench":
        raise
else:
    cli.add_command(_bench, "bench")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    A closed stdout (``| head``) ends the command quietly, with its verdict's exit code
    when it had one (141, as for SIGPIPE, when it had not got that far)."""
    global _invoked_args
    _invoked_args = list(argv) if argv is not None else sys.argv[1:]
    forget_verdict()
    try:
        rv = cli.main(args=list(_invoked_args), prog_name="nmm-chaos", standalone_mode=False)
    except _PipeClosed:
        _discard_stdout()
        code = recorded_verdict()
        return code if code is not None else 141
    except SystemExit:
        if _PACIFIED and isinstance(sys.stdout, _PACIFIED):  # click met a closed pipe
            _discard_stdout()                                 # itself (--help, --version)
            return 0
        raise
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


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush of what is still
    buffered does not fail again (and print "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
