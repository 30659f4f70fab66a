"""nmm-chaos harness: plans, engines, the trial runner, campaigns, the oracle, the journal
and reports.

The curated public surface; private modules (``_isolate``, ``_driver``) stay private.
"""

from __future__ import annotations

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
from harness.report import build_document, write_reports
from harness.robustness import build_report, load_run, write_report
from harness.runner import RunResult, run_plan, run_trial

__all__ = [
    "CampaignError", "CampaignResult", "Comparison", "Definition", "DriverNotFound", "Engine",
    "HarnessError", "Journal", "JournalError", "NativeEngine", "Observation", "Plan",
    "PlanError", "PyDriver", "PythonEngine", "RunResult", "TrialRecord",
    "UnsupportedFeature", "Verdict", "build_document", "build_report", "compare", "define",
    "expand", "get_engine", "judge", "load_plan", "load_report", "load_run", "read_journal",
    "register_engine", "run_campaign", "run_plan", "run_python_trial", "run_trial",
    "validate_paths", "write_report", "write_reports",
]
