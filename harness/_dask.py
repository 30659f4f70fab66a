"""Run a campaign's jobs on a Dask distributed cluster (``--scheduler ADDRESS``).

``DaskPool`` speaks the pool interface of ``harness._workers.LocalPool``: each job goes
to ``harness._workers.execute`` on some worker (JSON in, JSON out, so the workers need
only the same nmm-chaos installed, with their own built driver). A worker that dies
mid-job surfaces as the scheduler's ``KilledWorker`` (after its own
``distributed.scheduler.allowed-failures`` reschedules; 0 leaves retrying to the
campaign) and is reported as a death, which the campaign retries once. At most as many
jobs as the cluster has threads are in flight (nothing queued on a worker), so a worker's
death costs only its own job a try, and a stopped campaign leaves nothing queued.
"""

from __future__ import annotations

import queue
import re
from typing import Any

from harness._workers import Event, execute
from harness.errors import CampaignError

#: seconds to wait for the scheduler before giving up
CONNECT_TIMEOUT_S = 30


class DaskPool:
    """Jobs on the Dask cluster whose scheduler is at ``address``."""

    name = "dask"

    def __init__(self, address: str) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise CampaignError("--scheduler: dask.distributed is not installed (pip "
                                "install 'nmm-chaos[dask]')") from None
        if not re.fullmatch(r"([a-z]+://)?[^\s/:]+(:\d+)?", address.strip()):
            raise CampaignError(f"--scheduler: given {address!r}; expected a scheduler "
                                "address such as tcp://host:8786")
        if not re.search(r":\d+$", address.strip()):
            # distributed's Client fails on it only after half-starting, and its
            # finalizer then blocks the exit for a minute and prints a traceback
            raise CampaignError(f"--scheduler: given {address!r}, which has no port; "
                                "expected a scheduler address such as tcp://host:8786")
        try:
            self.client = Client(address, timeout=CONNECT_TIMEOUT_S,  # type: ignore[no-untyped-call]
                                 set_as_default=False)
        except Exception as exc:  # OSError, TimeoutError, or distributed's own
            raise CampaignError(f"--scheduler {address}: cannot reach it: {exc}") from None
        self.address = address
        self.events: queue.Queue[Event] = queue.Queue()
        self._futures: dict[str, Any] = {}
        self._serial = 0

    def __enter__(self) -> DaskPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _threads(self) -> int:
        info = self.client.scheduler_info()
        return max(1, sum(int(w.get("nthreads", 1)) for w in info["workers"].values()))

    def capacity(self) -> int:
        # one job per worker thread, none queued behind it: the scheduler counts a job
        # queued on a worker as running there, so a worker dying would take the queued
        # (innocent) jobs' one retry too
        return max(0, self._threads() - len(self._futures))

    def submit(self, key: str, job_json: str) -> None:
        self._serial += 1
        future = self.client.submit(execute, job_json, key=f"nmm-trial-{self._serial}",
                                    pure=False, retries=0)
        self._futures[key] = future

        def done(fut: Any) -> None:
            self._futures.pop(key, None)
            if fut.cancelled():
                return
            exc = fut.exception()
            if exc is None:
                import json

                self.events.put(Event(key, answer=json.loads(fut.result())))
            else:
                self.events.put(Event(key, died=f"dask: {type(exc).__name__}: {exc}"))

        future.add_done_callback(done)  # type: ignore[no-untyped-call]

    def next_event(self, timeout: float) -> Event | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def describe(self) -> dict[str, Any]:
        return {"kind": "dask", "scheduler": self.address, "threads": self._threads()}

    def close(self) -> None:
        """Cancel what is still queued and disconnect (jobs running finish unheard)."""
        futures, self._futures = list(self._futures.values()), {}
        if futures:
            self.client.cancel(futures)  # type: ignore[no-untyped-call]
        self.client.close()  # type: ignore[no-untyped-call]
