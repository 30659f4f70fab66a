"""Process checks shared by the tests that stop runners and watch their children."""

from __future__ import annotations

import psutil


def alive(proc: psutil.Process) -> bool:
    """Whether a process still runs. A zombie counts as gone: it has exited, and an
    orphan may stay a zombie where nothing reaps it (a container's pid 1). A process
    whose pid another one holds now counts as gone too: a reaped pid is handed out
    again (with pid_max 32768 and pid churn, within seconds), and ``status()`` reads
    whichever process has the pid, so ``is_running()`` (pid plus start time) confirms
    the read. Hence a ``psutil.Process`` taken while it ran, never a bare pid."""
    try:
        status = proc.status()
        return status != psutil.STATUS_ZOMBIE and proc.is_running()
    except psutil.NoSuchProcess:
        return False
