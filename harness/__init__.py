"""nmm-chaos harness: plans, engines, the trial runner, campaigns, the oracle, the journal
and reports.

The curated public surface; private modules (``_isolate``, ``_driver``) stay private.
Names are imported on first use (PEP 562): ``import harness.<module>`` (the pytest
plugin, loaded into every pytest process of the environment) must not pay for pydantic
and the whole engine before it needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.campaign import CampaignResult, Definition, define, expand, run_campaign
    from harness.compare import Comparison, compare, load_report
    from harness.engine import Engine, NativeEngine, PythonEngine, get_engine, register_engine
    from harness.errors import (
        CampaignError,
        DriverNotFound,
        HarnessError,
        JournalError,
        PlanError,
        UnsupportedFeature,
    )
    from harness.journal import Journal, read_journal
    from harness.loader import load_plan, validate_paths
    from harness.oracle import judge
    from harness.plan import Plan
    from harness.pydriver import PyDriver, run_python_trial
    from harness.records import Observation, TrialRecord, Verdict
    from harness.robustness import build_report, load_run, run_of_records, write_report
    from harness.runner import RunResult, run_plan, run_trial

#: public name -> the module that defines it
_SOURCES = {
    "CampaignResult": "campaign", "Definition": "campaign", "define": "campaign",
    "expand": "campaign", "run_campaign": "campaign",
    "Comparison": "compare", "compare": "compare", "load_report": "compare",
    "Engine": "engine", "NativeEngine": "engine", "PythonEngine": "engine",
    "get_engine": "engine", "register_engine": "engine",
    "CampaignError": "errors", "DriverNotFound": "errors", "HarnessError": "errors",
    "JournalError": "errors", "PlanError": "errors", "UnsupportedFeature": "errors",
    "Journal": "journal", "read_journal": "journal",
    "load_plan": "loader", "validate_paths": "loader",
    "judge": "oracle", "Plan": "plan", "PyDriver": "pydriver",
    "run_python_trial": "pydriver",
    "Observation": "records", "TrialRecord": "records", "Verdict": "records",
    "build_report": "robustness", "load_run": "robustness", "run_of_records": "robustness",
    "write_report": "robustness",
    "RunResult": "runner", "run_plan": "runner", "run_trial": "runner",
}

__all__ = [
    "CampaignError", "CampaignResult", "Comparison", "Definition", "DriverNotFound", "Engine",
    "HarnessError", "Journal", "JournalError", "NativeEngine", "Observation", "Plan",
    "PlanError", "PyDriver", "PythonEngine", "RunResult", "TrialRecord",
    "UnsupportedFeature", "Verdict", "build_report", "compare", "define",
    "expand", "get_engine", "judge", "load_plan", "load_report", "load_run", "read_journal",
    "register_engine", "run_campaign", "run_of_records", "run_plan", "run_python_trial",
    "run_trial", "validate_paths", "write_report",
]


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"harness.{source}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
