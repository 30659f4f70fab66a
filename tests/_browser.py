"""Headless Chromium over the DevTools protocol, for tests of the HTML report.

``open_page(path)`` loads a local file in a fresh headless Chromium and returns what a
person would check: console errors and uncaught exceptions, the results of JavaScript
probes, a PNG screenshot and the load time. Chromium is Debian's ``chromium``
(installed by .ci/run); missing is a skip locally and a failure under CI.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _nmm_c import require_tool

#: longest wait for Chromium to start or a page to load
TIMEOUT_S = 60.0
#: longest wait for Chromium's helper processes to go once their group is killed
GONE_S = 10.0


@dataclass
class Page:
    """What a page did when it was opened."""

    errors: list[str] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""
    load_ms: float = 0.0
    #: the browser's profile directory (removed when ``open_page`` returns)
    profile: str = ""


class _Cdp:
    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=TIMEOUT_S, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            for ev in self.events:
                if ev.get("method") == method:
                    return ev
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)


def open_page(path: Path, probes: dict[str, str], width: int = 1400,
              height: int = 1000) -> Page:
    """Open ``path`` and evaluate each probe (a JavaScript expression) after load.

    Chromium runs in a session of its own; its whole group (zygote, renderer, crash
    handler) is killed at the end and given time to go before the profile is removed.
    Helpers still writing there while it was removed made the cleanup fail now and then
    ("Directory not empty"), failing a test whose page had been checked; a leftover
    file now costs nothing (``ignore_cleanup_errors``)."""
    chromium = require_tool("chromium")
    with tempfile.TemporaryDirectory(prefix="nmm-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-extensions", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            assert proc.stderr is not None
            browser_ws = None
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                line = proc.stderr.readline()
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                if m:
                    browser_ws = m.group(1)
                    break
                if not line and proc.poll() is not None:
                    break
            if browser_ws is None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            port = re.search(r":(\d+)/", browser_ws).group(1)  # type: ignore[union-attr]
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as resp:
                pages = [t for t in json.load(resp) if t["type"] == "page"]
            cdp = _Cdp(pages[0]["webSocketDebuggerUrl"])
            for domain in ("Page", "Runtime", "Log"):
                cdp.call(f"{domain}.enable")
            t0 = time.monotonic()
            cdp.call("Page.navigate", url=path.resolve().as_uri())
            cdp.wait_for("Page.loadEventFired")
            page = Page(load_ms=(time.monotonic() - t0) * 1e3, profile=profile)
            for name, expr in probes.items():
                res = cdp.call("Runtime.evaluate", expression=expr, returnByValue=True)
                page.probes[name] = res.get("result", {}).get("value")
            shot = cdp.call("Page.captureScreenshot", format="png")
            page.screenshot = base64.b64decode(shot["data"])
            for ev in cdp.events:
                method, params = ev.get("method"), ev.get("params", {})
                if method == "Runtime.consoleAPICalled" and params.get("type") in (
                        "error", "assert"):
                    page.errors.append(f"console: {params.get('args')}")
                elif method == "Runtime.exceptionThrown":
                    page.errors.append(f"exception: {params.get('exceptionDetails')}")
                elif method == "Log.entryAdded" and params.get("entry", {}).get(
                        "level") == "error":
                    page.errors.append(f"log: {params['entry'].get('text')}")
            cdp.ws.close()
            return page
        finally:
            _end_group(proc)


def _end_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the browser's process group, reap the browser, and wait (up to GONE_S)
    until no process of the group is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
    deadline = time.monotonic() + GONE_S
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return  # the group is empty
        time.sleep(0.05)
