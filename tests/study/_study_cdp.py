"""Open a local HTML file in headless Chromium and record what it did, over the DevTools protocol.

No browser download and no third-party client: Chromium (the Debian package, /usr/bin/chromium) is started
with ``--remote-debugging-pipe``, which speaks CDP as NUL-separated JSON on file descriptors 3 (commands in)
and 4 (replies and events out), so no port is opened and no websocket library is needed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
         "--window-size=1280,900")


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None."""
    for path in CHROMIUM_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


@dataclass
class PageVisit:
    """What happened while a page loaded: console errors (console.error/assert, uncaught exceptions, error
    log entries such as failed loads), every request other than the page itself and data: URIs, the number
    of images that decoded, and a full-page PNG screenshot."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images_total: int = 0
    images_decoded: int = 0
    screenshot: bytes = b""


class Chromium:
    """A headless Chromium driven over a CDP pipe; use as a context manager."""

    def __init__(self, executable: str, *, timeout: float = 30.0):
        self.timeout = timeout
        self._dir = tempfile.mkdtemp(prefix="dicelab-chromium-")
        cmd_r, self._cmd_w = os.pipe()    # we write commands; Chromium reads them on fd 3
        self._out_r, out_w = os.pipe()    # Chromium writes replies/events on fd 4; we read them

        def _map_fds() -> None:  # in the child, before exec: put the two pipe ends on fds 3 and 4
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._stderr_path = Path(self._dir) / "stderr.log"
        with open(self._stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                [executable, *FLAGS, f"--user-data-dir={Path(self._dir) / 'profile'}",
                 "--remote-debugging-pipe", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, close_fds=False,
                preexec_fn=_map_fds, start_new_session=True)
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._id = 0
        self._events: list[dict[str, Any]] = []

    # -- protocol -------------------------------------------------------------------------------------------
    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._out_r], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe; stderr tail:\n{self.stderr_tail()}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _wait_event(self, method: str, session: str) -> None:
        for e in self._events:
            if e.get("method") == method and e.get("sessionId") == session:
                return
        deadline = time.monotonic() + self.timeout
        while True:
            e = self._read(deadline)
            self._events.append(e)
            if e.get("method") == method and e.get("sessionId") == session:
                return

    def _drain(self, quiet: float) -> None:
        """Collect events until none arrives for ``quiet`` seconds (late requests or errors)."""
        while True:
            try:
                self._events.append(self._read(time.monotonic() + quiet))
            except TimeoutError:
                return

    # -- visit ----------------------------------------------------------------------------------------------
    def visit(self, path: str | Path, *, quiet: float = 0.5) -> PageVisit:
        """Load a local file in a fresh tab, wait for the load event and a quiet spell, screenshot the page."""
        url = Path(path).resolve().as_uri()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self._events.clear()
        self.send("Page.navigate", {"url": url}, session=session)
        self._wait_event("Page.loadEventFired", session)
        self._drain(quiet)
        images = self.send("Runtime.evaluate", {
            "expression": "JSON.stringify([document.images.length, Array.from(document.images)"
                          ".filter(i => i.complete && i.naturalWidth > 0).length])",
            "returnByValue": True}, session=session)["result"]["value"]
        size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}},
            session=session)["data"]
        self._drain(0.1)
        visit = PageVisit(url=url, screenshot=base64.b64decode(shot))
        visit.images_total, visit.images_decoded = json.loads(images)
        for e in self._events:
            if e.get("sessionId") != session:
                continue
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                visit.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                     for a in p.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                visit.console_errors.append(d.get("exception", {}).get("description") or d.get("text", ""))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                visit.console_errors.append(f"{p['entry'].get('text')} ({p['entry'].get('url', '')})")
            elif method == "Network.requestWillBeSent":
                req = p["request"]["url"]
                if req != url and not req.startswith("data:"):
                    visit.requests.append(req)
            elif method == "Network.webSocketCreated":
                visit.requests.append(p.get("url", "websocket"))
        self.send("Target.closeTarget", {"targetId": target})
        return visit

    # -- lifetime -------------------------------------------------------------------------------------------
    def stderr_tail(self, n: int = 2000) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def close(self) -> None:
        try:
            if self._proc.poll() is None:
                try:
                    self.send("Browser.close")
                except (RuntimeError, TimeoutError, OSError):
                    pass
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self._proc.pid, signal.SIGKILL)  # the session we started for it, by id
                    self._proc.wait(timeout=10)
        finally:
            for fd in (self._cmd_w, self._out_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
