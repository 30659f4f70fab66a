"""Ctrl-C and SIGTERM during a run: stop it once, at a point where it can stop cleanly.

While a run is going, SIGINT raises ``KeyboardInterrupt`` and SIGTERM (a cancelled CI
job) ``Terminated``, once: later ones are ignored while the run stops (children killed,
journal closed, worker threads joined at exit), where a second Ctrl-C printed a
traceback or killed the process. SIGTERM's default action killed only this process, and
the trial children, each in its own session, ran on without their watchdog.

Python runs a signal handler between bytecodes of the main thread, which may be inside
``threading``'s own code: raised while ``queue.get`` or ``concurrent.futures.wait`` is
re-taking a condition's lock, the exception leaves the lock released and the ``with``
around it fails with ``RuntimeError: release unlocked lock`` — a traceback and exit 1
instead of the resume hint and 130. So the run loops wait for their trials inside
``deferred()``: a signal landing there is only recorded, and ``raise_if_requested()``,
called by the loop right after the wait, raises it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run, handled as Ctrl-C is: trial children killed, journal kept."""


_pending: list[int] = []  # the signal that asked the run to stop, not yet raised
_deferring = 0  # > 0 while the main thread waits inside deferred()


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _stop(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _deferring:
        _pending.append(signum)
        return
    raise _exception(signum)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into one ``KeyboardInterrupt``/``Terminated`` for the block
    (main thread only; elsewhere a no-op). A stopped run keeps ignoring them until the
    process exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending.clear()
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
        raise_if_requested()  # one that landed in the block's last wait
    finally:
        if signal.getsignal(signal.SIGINT) is _stop:  # not stopped: put them back
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A wait in threading primitives: a stop signal is recorded, not raised, in it."""
    global _deferring
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are handled on the main thread only
        return
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1


def raise_if_requested() -> None:
    """Raise the stop a signal asked for while the run was waiting (once)."""
    if _pending and not _deferring:
        raise _exception(_pending.pop())
