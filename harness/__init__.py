"""nmm-chaos harness: plans, the trial runner, the oracle, the journal and reports.

The curated public surface; private modules (``_isolate``, ``_driver``) stay private.
"""

from __future__ import annotations

from harness.errors import (
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
from harness.runner import RunResult, run_plan, run_trial

__all__ = [
    "DriverNotFound", "HarnessError", "Journal", "JournalError", "Observation", "Plan",
    "PlanError", "PyDriver", "RunResult", "TrialRecord", "UnsupportedFeature", "Verdict",
    "build_document", "judge", "load_plan", "read_journal", "run_plan", "run_python_trial",
    "run_trial", "validate_paths", "write_reports",
]
