"""Stop signals during a run: raised once, and never inside a wait on a lock."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from harness import interrupts


@pytest.fixture(autouse=True)
def _handlers_back() -> Iterator[None]:
    """A stopped run leaves SIGINT/SIGTERM ignored (the process is exiting); this test
    process is not, so put pytest's handlers back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _deliver(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs on the main thread's next bytecode


def test_a_signal_during_a_deferred_wait_is_raised_after_it_once():
    reached: list[str] = []
    with pytest.raises(KeyboardInterrupt) as stopped, interrupts.stop_signals():
        with interrupts.deferred():
            _deliver(signal.SIGINT)
            _deliver(signal.SIGINT)  # the second is ignored while the run stops
            reached.append("end of the wait")
        reached.append("after the wait")
        interrupts.raise_if_requested()
        reached.append("past the check")
    assert reached == ["end of the wait", "after the wait"]
    assert not isinstance(stopped.value, interrupts.Terminated)
    interrupts.raise_if_requested()  # raised once: nothing left pending


def test_sigterm_is_terminated_and_outside_a_wait_raises_at_once():
    with pytest.raises(interrupts.Terminated), interrupts.stop_signals():
        _deliver(signal.SIGTERM)
        pytest.fail("SIGTERM outside a deferred wait did not raise at once")


def test_a_signal_in_the_last_wait_of_the_block_is_raised_when_it_ends():
    with pytest.raises(KeyboardInterrupt), interrupts.stop_signals():
        with interrupts.deferred():
            _deliver(signal.SIGINT)


def test_a_queue_wait_interrupted_by_signals_keeps_its_lock_usable():
    # the campaign loop's wait: without deferring, the handler's exception could land
    # while Condition.wait re-takes the queue's lock, leaving it released, and the
    # queue's 'with' failed with RuntimeError: release unlocked lock
    q: queue.Queue[int] = queue.Queue()
    stopper = threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt), interrupts.stop_signals():
        stopper.start()
        for _ in range(20):
            with interrupts.deferred():
                try:
                    q.get(timeout=0.005)
                except queue.Empty:
                    pass
            interrupts.raise_if_requested()
        pytest.fail("the SIGINT was never raised")
    q.put(1)
    assert q.get(timeout=1) == 1
    assert not q.mutex.locked()


def test_handlers_are_put_back_when_the_run_ends_unstopped():
    before = signal.getsignal(signal.SIGINT)
    with interrupts.stop_signals():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
