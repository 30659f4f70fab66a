"""Progress of a run: a plain status line at intervals when not on a terminal (a CI log),
a live bar on one, nothing when disabled."""

from __future__ import annotations

import io
import threading

import pytest

from harness.progress import RunProgress, format_duration, is_interactive


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (42.4, "42s"), (185, "3m05s"),
                                               (7620, "2h07m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_status_line_says_done_total_failures_rate_and_time_left():
    clock = Clock()
    progress = RunProgress("smoke", 200, stream=io.StringIO(), live=False, clock=clock)
    with progress:
        assert progress.status_line() == (
            "smoke: 0/200 trials (0%), 0 failed, time left unknown, 0s elapsed")
        for i in range(40):
            progress.advance(failed=i in (3, 7))
        clock.now += 20
        assert progress.status_line() == (
            "smoke: 40/200 trials (20%), 2 failed, 2.0 trials/s, 1m20s left, 20s elapsed")


def test_slow_trials_read_as_seconds_per_trial_and_resumed_ones_count_as_done():
    clock = Clock()
    progress = RunProgress("nightly", 10, stream=io.StringIO(), live=False, done=4,
                           clock=clock)
    with progress:
        progress.advance()
        clock.now += 30
        assert progress.status_line() == (
            "nightly: 5/10 trials (50%), 0 failed, 30.0 s per trial, 2m30s left, "
            "30s elapsed")


class Lines(io.StringIO):
    """A stream that signals once it has been written ``want`` lines."""

    def __init__(self, want: int) -> None:
        super().__init__()
        self.want = want
        self.enough = threading.Event()

    def write(self, text: str) -> int:
        n = super().write(text)
        if self.getvalue().count("\n") >= self.want:
            self.enough.set()
        return n


def test_not_on_a_terminal_a_line_is_written_at_each_interval():
    stream = Lines(2)
    progress = RunProgress("smoke", 3, stream=stream, interval_s=0.01)
    assert not progress.live  # a StringIO is no terminal
    with progress:
        progress.advance()
        assert stream.enough.wait(timeout=120)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("smoke: ") for line in lines)
    assert "1/3 trials (33%), 0 failed" in lines[-1]


def test_no_line_before_the_first_interval_and_none_after_exit():
    stream = io.StringIO()
    with RunProgress("smoke", 3, stream=stream, interval_s=3600) as progress:
        progress.advance()
    assert stream.getvalue() == ""


def test_disabled_prints_nothing_even_on_a_terminal():
    stream = io.StringIO()
    with RunProgress("smoke", 3, stream=stream, live=True, enabled=False) as progress:
        progress.advance(failed=True)
    assert stream.getvalue() == ""
    assert progress.done == 1 and progress.failed == 1


def test_live_bar_draws_on_a_terminal():
    stream = io.StringIO()
    with RunProgress("smoke", 2, stream=stream, live=True) as progress:
        progress.detection()
        progress.advance(ops=1000)
        progress.advance(failed=True, ops=1000)
    out = stream.getvalue()
    assert "smoke" in out and "2/2" in out and "1 failed, 1 detections" in out


def test_a_closed_stream_stops_the_lines_quietly():
    stream = io.StringIO()
    stream.close()
    with RunProgress("smoke", 3, stream=stream, interval_s=0.001) as progress:
        progress.advance()
    assert progress.done == 1


def test_is_interactive(monkeypatch):
    assert not is_interactive(io.StringIO())

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert is_interactive(Tty())
    monkeypatch.setenv("TERM", "dumb")
    assert not is_interactive(Tty())
