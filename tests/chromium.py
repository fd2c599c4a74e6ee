"""Open a page in headless Chromium and report what a reader would see, with the standard library only.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: the browser reads
commands on file descriptor 3 and writes replies and events on 4, one JSON message per NUL-terminated
chunk), so no WebDriver, websocket client or downloaded browser is needed: Debian's ``chromium`` package
is enough.

    python tests/chromium.py report.html shot.png     # writes the screenshot, prints what it found
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageVisit:
    """What opening a page did: the requests it made besides itself, errors it logged, its screenshot."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    measured: object = None  # the value of the expression given to ``visit``


class DevTools:
    """One Chromium process and a DevTools session with one page."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900, timeout: float = 60.0):
        self.timeout = timeout
        self.events: list[dict] = []
        self.next_id = 0
        self.profile = tempfile.TemporaryDirectory(prefix="symbackprop-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        import fcntl  # POSIX only, as --remote-debugging-pipe is

        def onto_3_and_4():  # in the child: the protocol's fixed descriptors
            r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [executable, "--headless", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={self.profile.name}", f"--window-size={width},{height}", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root (CI containers)
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=onto_3_and_4, pass_fds=(3, 4))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer = b""
        self.session = None

    # ---- the protocol --------------------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method:
                return event
            self.events.append(event)

    def open_page(self) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self.profile.cleanup()


def visit(page: Path, expression: str | None = None, width: int = 1280, executable: str | None = None) -> PageVisit:
    """Open ``page`` (a local file), wait for it to load, evaluate ``expression`` in it (its JSON value goes
    to ``measured``), and take a screenshot of the whole page. Requests to anything but the page itself, and
    console messages and log entries of level error, are collected."""
    executable = executable or find_chromium()
    if executable is None:
        raise FileNotFoundError("chromium is not installed")
    browser = DevTools(executable, width=width)
    url = Path(page).resolve().as_uri()
    out = PageVisit()
    try:
        browser.open_page()
        browser.send("Page.navigate", {"url": url})
        browser.wait_for("Page.loadEventFired")
        time.sleep(0.3)  # let layout and any late request settle
        if expression is not None:
            result = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
            out.measured = result.get("result", {}).get("value")
        height = browser.send("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight",
                                                   "returnByValue": True})["result"]["value"]
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
        import base64
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        out.screenshot = base64.b64decode(shot["data"])
        browser.send("Runtime.evaluate", {"expression": "1"})  # flush events sent meanwhile
        for event in browser.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                requested = params.get("request", {}).get("url", "")
                if requested != url:
                    out.requests.append(requested)
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                out.errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.errors.append(params["entry"].get("text", ""))
    finally:
        browser.close()
    return out


#: the boxes of the page's math: each <math> and <mfrac> element's width and height, and its font size
MATH_BOXES = """JSON.stringify({
  math: Array.from(document.querySelectorAll('math')).map(e => {
    const r = e.getBoundingClientRect(); return [r.width, r.height]; }),
  fractions: Array.from(document.querySelectorAll('mfrac')).map(e => {
    const r = e.getBoundingClientRect(); return [r.width, r.height, parseFloat(getComputedStyle(e).fontSize)]; }),
  tables: Array.from(document.querySelectorAll('mtable')).map(e => {
    const r = e.getBoundingClientRect(); return [r.width, r.height]; }),
  svg: Array.from(document.querySelectorAll('svg')).map(e => {
    const r = e.getBoundingClientRect(); return [r.width, r.height]; }),
  scripts: document.scripts.length,
  mathDisplay: document.querySelector('math') ? getComputedStyle(document.querySelector('math')).display : null
})"""


if __name__ == "__main__":  # pragma: no cover - a tool for the docs screenshot
    page, png = Path(sys.argv[1]), Path(sys.argv[2])
    seen = visit(page, MATH_BOXES)
    png.write_bytes(seen.screenshot)
    print(f"requests: {seen.requests}\nerrors: {seen.errors}\nmeasured: {seen.measured[:300]}")
