"""Open a local HTML page in headless Chromium and report what happened (for tests and screenshots).

Drives Debian's ``chromium`` over the DevTools protocol with a small synchronous websocket client
(the ``websockets`` package, a test dependency): it records console errors, uncaught exceptions,
browser log errors (CSP violations land there) and every network request, evaluates JavaScript
expressions and takes a full-page screenshot. Nothing here needs the network.

    >>> find_chromium() is None or find_chromium().endswith("chromium")
    True
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillguard.errors import DistillguardError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """Path of a Chromium binary on PATH (or ``$CHROMIUM``), or None."""
    env = os.environ.get("CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass(kw_only=True)
class PageCheck:
    """What loading a page produced: errors, requests, evaluated values, screenshot bytes."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes | None = None
    page_height: int = 0


class _Cdp:
    def __init__(self, ws_url: str, timeout: float) -> None:
        from websockets.sync.client import connect

        self._stack = ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url, max_size=256 * 2**20, open_timeout=timeout))
        self.timeout = timeout
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise DistillguardError(f"DevTools {method} failed: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str) -> dict[str, Any]:
        for ev in self.events:
            if ev["method"] == method:
                return ev
        deadline = time.monotonic() + self.timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg

    def close(self) -> None:
        self._stack.close()


def check_page(
    path: Path,
    *,
    evaluate: dict[str, str] | None = None,
    width: int = 1360,
    height: int = 900,
    full_page: bool = True,
    max_height: int = 16000,
    clip_y: int = 0,
    timeout: float = 30.0,
) -> PageCheck:
    """Load ``path`` in headless Chromium; return errors, requests, ``evaluate`` results and a PNG.

    The screenshot covers the whole page (at most ``max_height`` pixels from ``clip_y``), or the
    first screen when ``full_page`` is false.
    """
    binary = find_chromium()
    if binary is None:
        raise DistillguardError("chromium not found; install Debian's `chromium` package or set $CHROMIUM")
    url = Path(path).resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="dg-chromium-")
    proc = subprocess.Popen(
        [binary, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--remote-debugging-port=0", f"--user-data-dir={profile}", "--hide-scrollbars",
         f"--window-size={width},{height}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # Chromium puts its singleton socket folder in $TMPDIR and leaves it behind when terminated;
        # inside the profile it goes away with the profile.
        env={**os.environ, "TMPDIR": profile},
    )
    cdp = None
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DistillguardError("chromium did not start its DevTools endpoint; run it by hand to see why")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        import httpx

        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=timeout).json()
        page = next(t for t in targets if t.get("type") == "page")
        cdp = _Cdp(page["webSocketDebuggerUrl"], timeout)
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.call(f"{domain}.enable")
        cdp.events.clear()
        cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        cdp.call("Page.navigate", url=url)
        cdp.wait_event("Page.loadEventFired")
        result = PageCheck(url=url)
        for name, expr in (evaluate or {}).items():
            r = cdp.call("Runtime.evaluate", expression=expr, returnByValue=True)
            result.values[name] = r.get("result", {}).get("value")
        metrics = cdp.call("Page.getLayoutMetrics")
        content_h = int(metrics.get("cssContentSize", metrics.get("contentSize", {})).get("height", height))
        result.page_height = content_h
        shot_h = max(min(content_h - clip_y, max_height) if full_page else height, 1)
        cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=clip_y + shot_h, deviceScaleFactor=1,
                 mobile=False)
        shot = cdp.call("Page.captureScreenshot", format="png",
                        clip={"x": 0, "y": clip_y, "width": width, "height": shot_h, "scale": 1})
        result.screenshot = base64.b64decode(shot["data"])
        for ev in cdp.events:
            m, p = ev["method"], ev.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                result.console_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                det = p.get("exceptionDetails", {})
                desc = (det.get("exception") or {}).get("description", "")
                result.console_errors.append(f'{det.get("text", "exception")} {desc}'.strip())
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                result.console_errors.append(p["entry"].get("text", ""))
            elif m == "Network.requestWillBeSent":
                result.requests.append(p.get("request", {}).get("url", ""))
        return result
    finally:
        if cdp is not None:
            try:
                cdp.close()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
