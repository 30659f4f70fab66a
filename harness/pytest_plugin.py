"""The pytest plugin (entry point ``pytest11``): chaos plans collected as test items.

Every ``.toml`` file in a ``chaos_plans`` directory (at any depth) that pytest visits,
and every plan under ``--chaos-plans`` paths (or the ``chaos_plans`` ini option), becomes
one item per trial, ``chaos_plans/smoke.toml::seed[1003]``: the trial runs in its own
child process, the oracle judges it, and a failure reports each fault's outcome, the
first diagnostic line and the ``nmm-chaos run`` command that replays it. Items carry the
``chaos`` marker and the markers the plan names (``markers = ["slow"]``), so ``-m``
selects plans; ``-n auto`` (xdist) spreads trials over workers and ``--junitxml`` records
them. A project whose ``pytest`` does not visit a ``chaos_plans`` directory collects
nothing new. This module is imported by every pytest process of the environment: the
harness itself is imported inside the hooks, only when a plan is collected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.engine import Engine
    from harness.plan import Plan
    from harness.records import TrialRecord

#: the directory name whose ``.toml`` files are plans
PLANS_DIR = "chaos_plans"
#: every plan item carries this marker
MARKER = "chaos"
#: name of the ini option (and the attribute on config) listing extra plan paths
INI = "chaos_plans"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nmm-chaos", "nmm-chaos plans as tests")
    group.addoption("--chaos-plans", action="append", default=[], metavar="PATH",
                    help="Plan files or directories to collect besides the command line's "
                         "(repeatable, or comma-separated); .toml files in a chaos_plans "
                         "directory are collected whenever pytest visits them.")
    group.addoption("--chaos-seeds", type=int, default=None, metavar="N",
                    help="Trials (seeds) per plan, instead of each plan's own seeds.")
    group.addoption("--chaos-target", default=None, metavar="TARGET",
                    help="Run every plan against TARGET: nmm, nmm:<level> or malloc:<peer>.")
    group.addoption("--chaos-level", default=None, metavar="LEVEL",
                    choices=("off", "standard", "paranoid"),
                    help="Detection level of the plans' NMM targets (off, standard, "
                         "paranoid); plans aimed at another allocator keep theirs.")
    group.addoption("--chaos-set", action="append", default=[], metavar="KEY=VALUE",
                    help="Override a plan key in every plan, as nmm-chaos run --set does "
                         "(repeatable).")
    group.addoption("--chaos-driver", default=None, metavar="CMD",
                    help="Driver command instead of the built nmm-driver.")
    parser.addini(INI, type="paths", default=[],
                  help="Plan files or directories that pytest collects besides its "
                       "arguments (as --chaos-plans).")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a chaos plan trial (nmm-chaos)")
    roots = _extra_roots(config)
    config.stash[_ROOTS] = roots
    for root in roots:  # collected as if named on the command line
        if str(root) not in config.args:
            config.args.append(str(root))


_ROOTS = pytest.StashKey[list[Path]]()
_ENGINE = pytest.StashKey["Engine"]()


def _extra_roots(config: pytest.Config) -> list[Path]:
    """``--chaos-plans`` and ini ``chaos_plans`` paths; a missing one is a usage error."""
    given = [p for opt in config.getoption("chaos_plans") for p in opt.split(",") if p]
    roots = [Path(p).absolute() for p in given]
    roots += [Path(p) for p in config.getini(INI)]
    for root in roots:
        if not root.exists():
            raise pytest.UsageError(f"--chaos-plans / {INI}: {root}: no such file or "
                                    "directory")
    return roots


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> PlanFile | None:
    if file_path.suffix != ".toml" or not _is_plan_path(file_path, parent.config):
        return None
    plan_file: PlanFile = PlanFile.from_parent(parent, path=file_path)
    return plan_file


def _is_plan_path(path: Path, config: pytest.Config) -> bool:
    """In a ``chaos_plans`` directory, or at or under a ``--chaos-plans`` path."""
    if PLANS_DIR in path.parent.parts:
        return True
    return any(path == root or root in path.parents for root in config.stash.get(_ROOTS, []))


def _overrides(config: pytest.Config, plan_doc: dict[str, Any]) -> list[str]:
    """The ``--set`` overrides the options ask of one plan (its merged document)."""
    out = list(config.getoption("chaos_set"))
    target = config.getoption("chaos_target")
    level = config.getoption("chaos_level")
    if target:
        kind = target.partition(":")[0]
        out.append(f"target=nmm:{level}" if level and kind == "nmm" else f"target={target}")
    elif level and _target_kind(plan_doc) == "nmm":
        out.append(f"target.level={level}")
    seeds = config.getoption("chaos_seeds")
    if seeds is not None:
        out.append(f"seeds={seeds}")
    return out


def _target_kind(doc: dict[str, Any]) -> str:
    target = doc.get("target")
    if isinstance(target, str):
        return target.partition(":")[0]
    return str(target.get("kind", "nmm")) if isinstance(target, dict) else "nmm"


def _engine(config: pytest.Config) -> Engine:
    """The native engine this session's trials run on (one per process)."""
    engine = config.stash.get(_ENGINE, None)
    if engine is None:
        import shlex

        from harness.engine import get_engine

        driver = config.getoption("chaos_driver")
        engine = get_engine("native", command=shlex.split(driver) if driver else None)
        config.stash[_ENGINE] = engine
    return engine


class PlanFile(pytest.File):
    """A plan file: one ``TrialItem`` per seed of the plan (after the options' overrides)."""

    def collect(self) -> Iterator[TrialItem]:
        from harness.errors import PlanError
        from harness.loader import load_document, load_plan

        try:
            doc, _ = load_document(self.path)
            overrides = _overrides(self.config, doc)
            plan = load_plan(self.path, overrides)
        except PlanError as exc:
            raise self.CollectError(f"{exc}") from None
        markers = [MARKER, *plan.markers]
        for name in plan.markers:  # the plan declares them: register for --strict-markers
            self.config.addinivalue_line("markers", f"{name}: set by chaos plans")
        for seed in plan.trial_seeds():
            item: TrialItem = TrialItem.from_parent(self, name=f"seed[{seed}]", plan=plan,
                                                    seed=seed, overrides=overrides)
            for marker in markers:
                item.add_marker(marker)
            yield item


class TrialFailed(Exception):
    """A trial missed its plan's expectations (the message is the failure's report)."""


class TrialItem(pytest.Item):
    """One trial: (plan, seed) on the native engine, judged by the oracle."""

    def __init__(self, *, plan: Plan, seed: int, overrides: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.seed = seed
        self.overrides = overrides

    def runtest(self) -> None:
        from harness.errors import HarnessError, UnsupportedFeature

        engine = _engine(self.config)
        try:
            engine.check(self.plan)
        except UnsupportedFeature as exc:
            # a peer allocator that is not installed: skipped on a laptop, failed in CI
            if os.environ.get("CI"):
                raise TrialFailed(f"cannot run under CI: {exc}") from None
            pytest.skip(f"{self.plan.name}: {exc}")
        except HarnessError as exc:
            raise TrialFailed(str(exc)) from None
        record = engine.run(self.plan, self.seed)
        if not record.verdict.passed:
            raise TrialFailed(self.failure_text(record, engine))

    def failure_text(self, record: TrialRecord, engine: Engine) -> str:
        """Each fault's outcome, what else failed, the diagnostic, the replay command."""
        from harness.robustness import replay_command, trial_infos
        from harness.terminal import failure_block

        path = os.path.relpath(self.path, self.config.invocation_params.dir)
        info = trial_infos([record], self.plan, plan_path=path, overrides=self.overrides,
                           engine_options=engine.options())[record.key]
        replay = replay_command(record, info)
        return "\n".join(failure_block(record, replay))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, TrialFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.plan.name} seed {self.seed} ({self.plan.target.label})"
