"""Process checks shared by the tests that stop runners and watch their children."""

from __future__ import annotations

import psutil


def alive(proc: int | psutil.Process) -> bool:
    """Whether a process still runs. A zombie counts as gone: it has exited, and an
    orphan may stay a zombie where nothing reaps it (a container's pid 1)."""
    try:
        if isinstance(proc, int):
            proc = psutil.Process(proc)
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
