"""Campaign workers: where a campaign's trials run, and the pools that feed them.

A *job* is one trial as JSON (plan document, seed, engine spec); ``execute`` runs it and
returns the record as JSON, the same function in a local worker process and on a Dask
worker. ``LocalPool`` keeps N worker processes (``python -m harness._workers``), each
running one job at a time from its stdin and answering on its stdout, so the pool knows
which trial a worker that dies was running. Workers run in their own session (a Ctrl-C
reaches the campaign only) and die with the campaign (parent-death signal), their trial
children with them. Nothing here prints, journals or judges a campaign.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

#: seconds a stopped worker gets to kill its trial's children before it is killed
STOP_GRACE_S = 5.0


def execute(job_json: str) -> str:
    """Run one job (``{"key", "plan", "seed", "engine"}``) and return its answer as JSON:
    ``{"key", "record"}``, or ``{"key", "error"}`` when the harness itself refused it (a
    driver usage error, a plan this engine cannot run): the campaign stops on those."""
    from harness.engine import engine_from_spec
    from harness.errors import HarnessError
    from harness.plan import Plan

    job = json.loads(job_json)
    try:
        plan = Plan.model_validate(job["plan"])
        engine = engine_from_spec(job["engine"])
        record = engine.run(plan, int(job["seed"]))
    except HarnessError as exc:
        return json.dumps({"key": job["key"], "error": f"{type(exc).__name__}: {exc}"})
    record = record.model_copy(update={"worker": f"{socket.gethostname()}:{os.getpid()}"})
    return json.dumps({"key": job["key"], "record": record.model_dump(mode="json")},
                      separators=(",", ":"))


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG(SIGKILL): a SIGKILLed campaign takes its workers with it (and so,
    through the driver's own parent-death signal, their trials)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a worker then ends at its stdin's EOF
        pass


def worker_main(stdin: IO[str], stdout: IO[str]) -> int:
    """A local worker: one job per stdin line, one answer per stdout line, until EOF."""
    from harness._isolate import kill_running_children

    def stop(signum: int, frame: Any) -> None:
        kill_running_children()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.environ.get("NMM_CHAOS_CAMPAIGN")
    _die_with_parent()
    if parent and os.getppid() != int(parent):
        return 1  # the campaign died before the parent-death signal was armed
    for line in stdin:
        if not line.strip():
            continue
        answer = execute(line)
        stdout.write(answer + "\n")
        stdout.flush()
    return 0


@dataclass
class Event:
    """Something a pool reports: a job's answer, or the worker running it died."""

    key: str
    answer: dict[str, Any] | None = None
    #: why the worker died while running the job (None: it answered)
    died: str | None = None


class _Worker:
    def __init__(self, index: int, events: queue.Queue[Event],
                 env: Mapping[str, str]) -> None:
        self.index = index
        self.job: str | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness._workers"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, start_new_session=True, env=dict(env))
        self._events = events
        self._reader = threading.Thread(target=self._read, name=f"worker-{index}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                answer = json.loads(line)
            except ValueError:
                continue  # not an answer (a library printing to stdout): ignored
            if isinstance(answer, dict) and answer.get("key") == self.job:
                self.job = None
                self._events.put(Event(str(answer["key"]), answer=answer))
        self.proc.stdout.close()
        code = self.proc.wait()
        job, self.job = self.job, None
        if job is not None:
            how = (f"killed by signal {-code}" if code < 0 else f"exited with status {code}")
            self._events.put(Event(job, died=f"worker {self.proc.pid} {how}"))

    def send(self, key: str, job_json: str) -> None:
        self.job = key
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(job_json + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # it died: the reader reports the job when it sees the end

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def release(self) -> None:
        """Close our end of a dead worker's stdin."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass

    def stop(self) -> None:
        """SIGTERM (it kills its trial's children and exits), then SIGKILL."""
        self.release()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=STOP_GRACE_S)


class LocalPool:
    """``workers`` local worker processes, each running one job at a time."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.size = max(1, workers)
        self.events: queue.Queue[Event] = queue.Queue()
        self._workers: list[_Worker] = []
        self._env = {**os.environ, "NMM_CHAOS_CAMPAIGN": str(os.getpid())}

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def capacity(self) -> int:
        """Jobs that can be submitted now (idle workers, dead ones replaced)."""
        for w in self._workers:
            if not w.alive and w.job is None:
                w.release()
        self._workers = [w for w in self._workers if w.alive or w.job is not None]
        idle = [w for w in self._workers if w.job is None and w.alive]
        return len(idle) + self.size - len(self._workers)

    def submit(self, key: str, job_json: str) -> None:
        """Give a job to an idle worker, starting one if needed (call after ``capacity``)."""
        for w in self._workers:
            if w.job is None and w.alive:
                w.send(key, job_json)
                return
        worker = _Worker(len(self._workers), self.events, self._env)
        self._workers.append(worker)
        worker.send(key, job_json)

    def next_event(self, timeout: float) -> Event | None:
        """The next answer or death, waiting up to ``timeout`` seconds."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "workers": self.size}

    def close(self) -> None:
        """Stop every worker (their trials' children killed); in-flight jobs are lost."""
        workers, self._workers = self._workers, []
        for w in workers:
            w.job = None
        threads = [threading.Thread(target=w.stop) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


if __name__ == "__main__":
    sys.exit(worker_main(sys.stdin, sys.stdout))
