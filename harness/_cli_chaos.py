"""``nmm-chaos hunt``, ``replay`` and ``shrink``: thin shells over ``harness.chaos`` and
``harness.shrink`` (design.md "Reproduction", issue 9). Registered on the ``nmm-chaos``
group by ``harness.cli``; the only printing is here.

Exit codes: ``hunt`` 0 when the failure was found (1 when it was not within
``--max-seeds``), ``replay`` 0 when every run brought the same signature back (1
otherwise), ``shrink`` 0 with a minimal plan written; 2 bad input (an unknown mutant, an
unreadable artifact, an artifact of another version).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from harness.chaos import (
    STRATEGIES,
    Artifact,
    ChaosError,
    TrialRun,
    artifact_of,
    hunt,
    pct_guarantee_line,
    replay,
    with_mutant,
)
from harness.errors import HarnessError
from harness.loader import load_plan

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _err(text: str) -> None:
    click.echo(text, err=True)


@click.command("hunt", context_settings=CONTEXT)
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--mutant", metavar="NAME", help="Switch this mutant of the chaos build on.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto", show_default=True,
              help="Scheduler of every seed; auto rotates pct, pos, surw and random.")
@click.option("--depth", type=click.IntRange(1, 64), help="pct's bug depth (default: the "
              "plan's, else 3).")
@click.option("--calibrate-k", is_flag=True,
              help="pct: k from the first trial's recorded steps instead of the driver's "
                   "threads*ops*10 (measured on the mutant plans: more seeds, so off by "
                   "default).")
@click.option("--max-seeds", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
              help="Give up after this many seeds.")
@click.option("--seed", "start_seed", type=click.IntRange(0, (1 << 64) - 1), default=None,
              help="First seed tried (default: the plan's seed).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a plan key (repeatable).")
@click.option("--artifact", "artifact_path", type=click.Path(dir_okay=False),
              help="Where the failing trial's artifact goes (default: "
                   "reports/hunt-<plan>-<mutant>-<seed>.json).")
@click.option("--journal", "journal_path", type=click.Path(dir_okay=False),
              help="Each trial's identity goes here before it starts, its signature after "
                   "(default: reports/hunt-<plan>-<mutant>.jsonl).")
@click.option("--quiet", "-q", is_flag=True, help="Only the verdict line.")
def hunt_cmd(plan_path: str, mutant: str | None, strategy: str, depth: int | None,
             calibrate_k: bool, max_seeds: int, start_seed: int | None, overrides: tuple[str, ...],
             artifact_path: str | None, journal_path: str | None, quiet: bool) -> int:
    """Search seeds until PLAN fails; report how many it took and save the failing
    trial as an artifact (for `nmm-chaos replay` and `nmm-chaos shrink`)."""
    plan = with_mutant(load_plan(plan_path, overrides), mutant)
    first = plan.seed if start_seed is None else start_seed
    progress = sys.stderr.isatty() and not quiet
    t0 = time.monotonic()

    def on_trial(n: int, seed: int, kind: str, run: TrialRun) -> None:
        if progress:
            status = "FAIL" if run.signature else "pass"
            click.echo(f"\rhunt: seed {seed} ({kind}) {status}; {n}/{max_seeds} seeds, "
                       f"{time.monotonic() - t0:.0f}s", err=True, nl=False)
        elif not quiet and n % 25 == 0:
            _err(f"hunt: {n}/{max_seeds} seeds, {time.monotonic() - t0:.0f}s")

    journal = Path(journal_path or f"reports/hunt-{plan.name}-{mutant or 'none'}.jsonl")
    journal.parent.mkdir(parents=True, exist_ok=True)
    result = hunt(plan, strategy=strategy, max_seeds=max_seeds, start_seed=first,
                  depth=depth, journal=journal, on_trial=on_trial, calibrate=calibrate_k)
    if progress:
        _err("")
    what = f"{plan.name}" + (f" with mutant {mutant}" if mutant else "")
    if result.found is None:
        click.echo(f"NOT FOUND {what}: {result.tried} seeds ({strategy}) passed, "
                   f"{first}..{result.seeds[-1]}")
        return 1
    run = result.found
    assert run.signature is not None
    found_plan = result.plan
    artifact = artifact_of(found_plan, run, overrides)
    out = Path(artifact_path or f"reports/hunt-{plan.name}-{mutant or 'none'}-"
               f"{run.record.seed}.json")
    artifact.save(out)
    if not quiet:
        click.echo(f"signature: {run.signature.text()}")
        for reason in run.record.verdict.reasons[:3]:
            click.echo(f"  {reason}")
        if artifact.witness:
            click.echo("witness:")
            for line in artifact.witness:
                click.echo(f"  {line}")
        sched = run.record.observation.result.sched if run.record.observation.result else None
        if result.strategy_of_found == "pct" and found_plan.scheduler.depth:
            steps = int((sched or {}).get("steps") or (run.schedule.steps if run.schedule
                                                        else 0))
            click.echo(pct_guarantee_line(found_plan.workload.threads, steps,
                                          found_plan.scheduler.depth))
        click.echo(f"artifact: {out}  (nmm-chaos replay {out}; nmm-chaos shrink {out})")
    click.echo(f"FOUND {what}: seed {run.record.seed} ({result.strategy_of_found}) after "
               f"{result.tried} seed(s)")
    return 0


@click.command("replay", context_settings=CONTEXT)
@click.argument("artifact_path", metavar="ARTIFACT", type=click.Path(dir_okay=False))
@click.option("--times", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="Runs; each must bring the same signature back.")
def replay_cmd(artifact_path: str, times: int) -> int:
    """Re-run a failing trial saved by `hunt` or `shrink` (following its schedule) and say
    whether the same failure signature came back."""
    artifact = Artifact.load(artifact_path)
    click.echo(f"replaying {artifact.identity.get('plan')} seed {artifact.seed}: "
               f"{artifact.signature.text()}")

    def on_run(i: int, run: TrialRun) -> None:
        same = run.signature == artifact.signature
        got = run.signature.text() if run.signature else "passed"
        div = f"; schedule diverged at step {run.diverged_at}" if run.diverged_at else ""
        click.echo(f"  run {i + 1}: {'same' if same else 'DIFFERENT'} ({got}){div}")

    result = replay(artifact, times, on_run=on_run)
    if result.build_changed:
        click.echo("note: the code changed since the artifact was made (build id "
                   f"{artifact.identity.get('build_id')}); a schedule that stops matching "
                   "goes on under the seeded strategy")
    verdict = "REPRODUCED" if result.matched == times else "NOT REPRODUCED"
    click.echo(f"{verdict}: {result.matched}/{times} runs gave the same signature")
    return 0 if result.matched == times else 1


@click.command("shrink", context_settings=CONTEXT)
@click.argument("artifact_path", metavar="ARTIFACT", type=click.Path(dir_okay=False))
@click.option("--budget", type=click.FloatRange(1, 86400), default=120, show_default=True,
              help="Seconds to spend; a stopped shrink resumes from its progress file.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              default="chaos_plans/regressions/mutants", show_default=True,
              help="Where the minimal plan and its artifact go.")
def shrink_cmd(artifact_path: str, budget: float, out_dir: str) -> int:
    """Minimise a failing trial (threads, ops, faults, schedule preemptions), keeping its
    signature; write the minimal plan and artifact and print the witness."""
    from harness.shrink import shrink

    def note(text: str) -> None:
        _err(f"shrink: {text}")

    outcome = shrink(Artifact.load(artifact_path), Path(artifact_path), budget_s=budget,
                     out_dir=Path(out_dir), note=note)
    a = outcome.artifact
    click.echo(f"signature: {a.signature.text()}")
    click.echo(f"minimal: {outcome.summary}")
    if a.witness:
        click.echo("witness:")
        for line in a.witness:
            click.echo(f"  {line}")
    click.echo(f"plan: {outcome.plan_path}\nartifact: {outcome.artifact_path}")
    click.echo(("DONE" if outcome.finished else "STOPPED (budget; run again to resume)")
               + f" after {outcome.trials} trials, {outcome.seconds:.0f}s")
    return 0


COMMANDS = {"hunt": hunt_cmd, "replay": replay_cmd, "shrink": shrink_cmd}
__all__ = ["COMMANDS", "ChaosError", "HarnessError"]
