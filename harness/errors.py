"""Exceptions raised by the harness, one tree rooted at ``HarnessError``.

    HarnessError
    ├── PlanError (also ValueError)        a plan file, include or override is invalid
    ├── DriverNotFound (also FileNotFoundError)  the native driver executable is missing
    ├── DriverUsageError                   the driver rejected its command line (exit 2)
    ├── JournalError                       a journal cannot be opened or belongs to another run
    ├── CampaignError                      a bad campaign file, target list or campaign directory
    └── UnsupportedFeature (also NotImplementedError)  a valid request the harness cannot do yet

Library code raises these; only the CLI turns them into messages and exit codes.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""


class PlanError(HarnessError, ValueError):
    """A plan could not be loaded: names the file, the dotted key, what was given and expected.

    ``problems`` holds one line per problem found (a plan may have several).
    """

    def __init__(self, message: str, *, file: str | None = None,
                 problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.file = file
        self.problems = problems or (message,)


class DriverNotFound(HarnessError, FileNotFoundError):
    """The native driver executable (``harness/_native/nmm-driver``) is not built or not found."""


class DriverUsageError(HarnessError):
    """The driver refused the trial's command line (exit status 2): a plan value it rejects."""


class JournalError(HarnessError):
    """A journal file is unusable (unreadable, or written by a different run)."""


class CampaignError(HarnessError):
    """A campaign cannot start: a bad campaign file, target, level or run directory."""


class UnsupportedFeature(HarnessError, NotImplementedError):
    """A request that is valid in the plan schema but not implemented yet (e.g. ``pct``)."""
