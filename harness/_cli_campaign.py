"""``nmm-chaos campaign``, ``report`` and ``compare``: thin shells over
``harness.campaign``, ``harness.robustness`` and ``harness.compare``.

Exit codes as ``run``: 0 every gating trial held its expectations (``compare``: no
regression), 1 one did not (a regression), 2 bad input, 130/143 stopped by a signal
(the journal kept, a resume command printed). Registered on the ``nmm-chaos`` group by
``harness.cli``; the only printing is here.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from harness import terminal
from harness.errors import CampaignError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _env_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CampaignError(f"--target-env {pair!r}: expected KEY=VALUE")
        env[key] = value
    return env


def _console() -> Console:
    # PipeConsole: a closed stdout (| head) ends with the command's code, not rich's exit 1
    return terminal.console()


@click.command("campaign", context_settings=CONTEXT)
@click.argument("plans", nargs=-1, type=click.Path())
@click.option("--seeds", type=click.IntRange(1, 100_000),
              help="Trials per plan and target (default: each plan's own seeds).")
@click.option("--targets", "targets_opt", metavar="T,...",
              help="Targets: plan (each plan's own, the default), nmm (at --levels), "
                   "nmm:<level>, peers (every installed peer), a peer name (glibc, "
                   "jemalloc, ...), lib:/path/libfoo.so (your allocator).")
@click.option("--levels", "levels_opt", metavar="L,...",
              help="NMM levels for nmm targets: off, standard, paranoid, each optionally "
                   "+abort (default: the plan's own).")
@click.option("--target-env", "target_env", multiple=True, metavar="KEY=VALUE",
              help="Environment for lib: targets (repeatable).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of every plan (repeatable).")
@click.option("--split-faults/--whole-plans", default=None,
              help="Run each fault entry of a plan as trials of its own (for a matrix over "
                   "allocators that stop at the first fault) or plans whole (default).")
@click.option("--strict", is_flag=True, default=None,
              help="Every trial gates the exit code, not only each plan's own target.")
@click.option("--engine", default=None, metavar="NAME",
              help="Engine (native, python, ...; default native).")
@click.option("--driver", "driver_cmd", metavar="CMD", help="Driver command for the native engine.")
@click.option("--workers", type=click.IntRange(1, 1024),
              help="Local worker processes (default: CPU count).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run on this Dask distributed scheduler (tcp://host:8786) instead.")
@click.option("--resume", type=click.Path(file_okay=False),
              help="Continue the campaign in this directory (as its campaign.json defines it).")
@click.option("--out", type=click.Path(file_okay=False), default="reports", show_default=True,
              help="Directory under which the campaign directory is written.")
@click.option("--name", help="Campaign name (default: the campaign file's or plan's).")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
def campaign_cmd(plans: tuple[str, ...], seeds: int | None, targets_opt: str | None,
                 levels_opt: str | None, target_env: tuple[str, ...],
                 overrides: tuple[str, ...], split_faults: bool | None, strict: bool | None,
                 engine: str | None, driver_cmd: str | None, workers: int | None,
                 scheduler: str | None, resume: str | None, out: str, name: str | None,
                 quiet: bool) -> int:
    """Run PLANS (plan files, directories, or one campaign file) x seeds x targets x
    levels, journal every trial and write the reports (HTML, JSON, Markdown, JUnit).

    Exit 0 if every trial of each plan's own target met its expectations, 1 if not."""
    from harness import campaign as cp
    from harness.cli import _driver_argv, _new_run_dir
    from harness.engine import NativeEngine, engine_from_spec, get_engine
    from harness.environment import capture
    from harness.loader import is_campaign_file

    given = click.get_current_context().get_parameter_source
    if resume is not None:
        definitional = {"PLANS": plans, "--seeds": seeds, "--targets": targets_opt,
                        "--levels": levels_opt, "--target-env": target_env,
                        "--set": overrides, "--split-faults": split_faults,
                        "--strict": strict, "--engine": engine, "--name": name}
        clash = [k for k, v in definitional.items() if v not in (None, (), False)]
        if given("out") is not click.core.ParameterSource.DEFAULT:
            clash.append("--out")
        if clash:
            raise CampaignError(f"--resume {resume}: continues the campaign as its "
                                f"campaign.json defines it; leave out {', '.join(clash)}")
        run_dir = Path(resume)
        defn = cp.load_definition(run_dir)
        if driver_cmd is not None:
            defn = defn.model_copy(update={"engine": {**defn.engine,
                                                      "command": _driver_argv(driver_cmd)}})
        eng = engine_from_spec(defn.engine)
        if isinstance(eng, NativeEngine):
            eng.command  # noqa: B018 - the driver must still be there (DriverNotFound)
    else:
        if not plans:
            raise CampaignError("give PLANS (plan files, directories or a campaign file), "
                                "or --resume DIR")
        spec = None
        files = [p for p in plans if Path(p).is_file() and is_campaign_file(p)]
        if files:
            if len(plans) > 1:
                raise CampaignError(f"{files[0]}: a campaign file is given alone")
            spec = cp.load_campaign_file(files[0])
        eng = get_engine(engine or (spec.engine if spec else "native"),
                         command=_driver_argv(driver_cmd) if driver_cmd else None)
        levels = _split_list(levels_opt)
        targets = _split_list(targets_opt)
        defn = cp.define(
            list(spec.plans) if spec else list(plans),
            name=name or (spec.name if spec else None),
            seeds=seeds if seeds is not None else (spec.seeds if spec else None),
            targets=targets if targets is not None else (list(spec.targets) if spec
                                                         else ["plan"]),
            levels=levels if levels is not None else (list(spec.levels) if spec and
                                                      spec.levels else None),
            target_env=_env_pairs(target_env) or (dict(spec.target_env) if spec else {}),
            overrides=[*(spec.set if spec else ()), *overrides],
            split_faults=split_faults if split_faults is not None else bool(
                spec and spec.split_faults),
            strict=strict if strict is not None else bool(spec and spec.strict), engine=eng)
    pool = _make_pool(workers, scheduler)  # a bad --scheduler: before any directory is made
    try:
        if resume is None:
            stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
            run_dir = _new_run_dir(Path(out),
                                   f"{stamp}-{cp.safe_name(defn.name)}-{os.getpid()}")
            cp.save_definition(defn, run_dir)
            labels = {t.plan.target.label for t in cp.expand(defn, eng)}
            (run_dir / "environment.json").write_text(
                json.dumps(capture(labels), indent=1) + "\n")
    except BaseException:
        pool.close()
        raise
    return _run(defn, run_dir, pool, quiet)


def _make_pool(workers: int | None, scheduler: str | None) -> Any:
    if scheduler:
        from harness._dask import DaskPool

        return DaskPool(scheduler)
    from harness._workers import LocalPool

    return LocalPool(workers or os.cpu_count() or 1)


def _run(defn: Any, run_dir: Path, pool: Any, quiet: bool) -> int:
    from harness import campaign as cp
    from harness import interrupts
    from harness.invocation import command_line
    from harness.journal import JOURNAL_NAME, Journal
    from harness.progress import RunProgress

    err = terminal.console(stderr=True, soft_wrap=True)
    trials = cp.expand(defn)
    for note in defn.notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    journal = Journal(run_dir / JOURNAL_NAME)
    for warning in journal.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    keys = {t.key for t in trials}
    done_before = sum(1 for r in journal.records if r.key in keys)
    progress = RunProgress(defn.name, len(trials), enabled=not quiet, done=done_before)

    def on_record(record: Any) -> None:
        result = record.observation.result
        progress.advance(failed=not record.verdict.passed, ops=result.ops if result else 0)

    def on_retry(trial: Any, why: str) -> None:
        err.print(f"retrying {trial.plan.name} seed {trial.seed} on {trial.plan.target.label}:"
                  f" {why}", markup=False, highlight=False)

    with journal, interrupts.stop_signals():
        try:
            with pool, progress:
                result = cp.run_campaign(defn, journal, pool, on_record=on_record,
                                         on_retry=on_retry)
        except KeyboardInterrupt as stop:
            terminated = isinstance(stop, interrupts.Terminated)
            how = "terminated (SIGTERM)" if terminated else "interrupted"
            err.print(f"{how}: {len(journal.records)} trial(s) kept in {journal.path}; "
                      f"continue with:\n  {command_line('campaign', '--resume', str(run_dir))}",
                      markup=False, highlight=False)
            return 143 if terminated else 130
    paths = _write_reports([run_dir], run_dir)
    doc = json.loads(paths["json"].read_text())
    code = terminal.record_verdict(0 if result.passed else 1)
    _print_matrix(_console(), doc)
    click.echo(f"{'PASS' if result.passed else 'FAIL'}: {doc['verdict']['text']}"
               + (f" ({result.skipped} from the journal)" if result.skipped else ""))
    click.echo(f"report: {paths['html']}  (JSON: {paths['json']}, Markdown: "
               f"{paths['markdown']}, JUnit: {paths['junit']})")
    return code


def _write_reports(sources: list[Path], out_dir: Path, title: str | None = None
                   ) -> dict[str, Path]:
    from harness.robustness import build_report, load_run, write_report

    runs = [load_run(p) for p in sources]
    doc = build_report(runs, title=title)
    return write_report(doc, out_dir, runs)


def _print_matrix(console: Console, doc: dict[str, Any]) -> None:
    """The detection matrix: a table on a terminal wide enough for it, else (piped, a CI
    log, a narrow terminal) one line per fault row, no cell cut or wrapped."""
    from harness.robustness import cell_text

    if not doc["rows"]:
        return
    table = Table(title="detection matrix (trials detected / reached)")
    table.add_column("fault", no_wrap=True)
    for t in doc["targets"]:
        table.add_column(t, no_wrap=True)
    colour = {"detected": "green", "partial": "yellow", "missed": "red", "crashed": "magenta",
              "hang": "blue", "skipped-hanging": "blue"}
    for row in doc["rows"]:
        cells = []
        for t in doc["targets"]:
            cell = doc["matrix"][row].get(t)
            style = colour.get(cell["class"], "dim") if cell else "dim"
            cells.append(f"[{style}]{cell_text(cell)}[/]")
        table.add_row(row, *cells)
    if console.is_terminal and console.measure(table).maximum <= console.width:
        console.print(table)
        return
    for line in terminal.matrix_lines(doc):
        click.echo(line)


@click.command("report", context_settings=CONTEXT)
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True),
                metavar="RUN_DIR_OR_JOURNAL...")
@click.option("--out", type=click.Path(file_okay=False),
              help="Where to write the reports (default: the run's directory for one run, "
                   "reports/report-<time>/ for several).")
@click.option("--title", help="Title of the report.")
def report_cmd(sources: tuple[str, ...], out: str | None, title: str | None) -> int:
    """Write the reports (HTML, JSON, Markdown, JUnit) of one run or campaign, or of many
    (a week of nightly runs: one report with a trend per fault and target)."""
    paths = [Path(s) for s in sources]
    seen: dict[Path, str] = {}
    for given in sources:  # one night twice would be two points of every trend
        p = Path(given).resolve()
        key = p.parent if p.name == "journal.jsonl" else p
        if key in seen:
            raise CampaignError(f"{given}: the same run as {seen[key]}; give each run once")
        seen[key] = given
    if out is not None:
        out_dir = Path(out)
    elif len(paths) == 1:
        out_dir = paths[0] if paths[0].is_dir() else paths[0].parent
    else:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
        out_dir = Path("reports") / f"report-{stamp}"
    written = _write_reports(paths, out_dir, title)
    doc = json.loads(written["json"].read_text())
    terminal.record_verdict(0)
    click.echo(f"{doc['verdict']['status'].upper()}: {doc['verdict']['text']} "
               f"({len(doc['runs'])} run(s), {doc['summary']['trials']} trials in the latest)")
    click.echo(f"report: {written['html']}  (JSON: {written['json']}, Markdown: "
               f"{written['markdown']}, JUnit: {written['junit']})")
    return 0


@click.command("compare", context_settings=CONTEXT)
@click.argument("old", type=click.Path(exists=True))
@click.argument("new", type=click.Path(exists=True))
def compare_cmd(old: str, new: str) -> int:
    """Compare two runs or reports (OLD then NEW: run or campaign directories, journals or
    result.json files); exit 1 if NEW regressed (a fault newly missed, a detection rate
    that fell, a new crash or hang, a throughput drop beyond the runs' noise), else 0."""
    from harness.compare import compare, load_report

    result = compare(load_report(old), load_report(new))
    code = terminal.record_verdict(1 if result.regressions else 0)
    console = _console()
    if result.changes:
        table = Table(title=f"{old} -> {new}")
        for column in ("", "fault / measure", "target", "old", "new", "why"):
            table.add_column(column)
        for c in result.changes:
            table.add_row("[red]REGRESSION[/]" if c.regression else "", c.what, c.target,
                          c.old, c.new, c.why)
        if console.is_terminal and console.measure(table).maximum <= console.width:
            console.print(table)
        else:  # piped or narrow: one line per change, nothing cut or wrapped
            for c in result.changes:
                where = f" @ {c.target}" if c.target else ""
                click.echo(f"{'REGRESSION ' if c.regression else ''}{c.what}{where}: "
                           f"{c.old} -> {c.new}" + (f" ({c.why})" if c.why else ""))
    if result.regressions:
        click.echo(f"{len(result.regressions)} regression(s)")
        return code
    click.echo("no regression" + ("" if result.changes else " (no change)"))
    return 0
