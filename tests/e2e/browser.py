"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for tests of pages as a user sees them.

A page is opened in a real browser, its scripts run, and the test reads what the page shows (its rendered text),
every console error and uncaught exception, and every URL the page requested. The protocol is spoken over a
websocket (the ``websockets`` package): Playwright cannot download its own browser here, and ``--dump-dom``
neither waits for pages that render after fetching data nor reports console errors reliably.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from websockets.sync.client import ClientConnection, connect

from testing.polling import poll

CHROMIUM = shutil.which("chromium")
# As root Chromium needs --no-sandbox. The machine's network is closed: without the background networking
# flags Chromium keeps trying (and failing) to reach Google's services.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class Browser:
    """One headless Chromium with a fresh profile; ``open(url)`` loads a page in its tab."""

    def __init__(self, start_timeout: float = 30):
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed")
        self._profile = tempfile.mkdtemp(prefix="recsvc-chromium-")
        self._process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Chromium writes the port it chose into the profile once the DevTools endpoint listens.
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + start_timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        self.endpoint = f"http://127.0.0.1:{port_file.read_text().split()[0]}"

    @contextmanager
    def open(self, url: str) -> Iterator[Page]:
        """Load ``url`` in a new tab with console, exception and request capture on; the tab closes after.

        A tab of its own per page: nothing an earlier page logged can be reported as this page's.
        """
        tab = requests.put(f"{self.endpoint}/json/new?about:blank", timeout=10).json()
        try:
            with connect(tab["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
                page = Page(socket)
                page.navigate(url)
                yield page
        finally:
            requests.get(f"{self.endpoint}/json/close/{tab['id']}", timeout=10)

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Page:
    """A tab over the DevTools protocol: commands answered in order, events recorded as they arrive."""

    def __init__(self, socket: ClientConnection):
        self._socket = socket
        self._ids = itertools.count(1)
        self.errors: list[str] = []  # console.error/assert calls, uncaught exceptions, browser log errors
        self.requested: list[str] = []  # every URL the page asked for
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable")

    def call(self, method: str, timeout: float = 30, **params) -> dict:
        """Send one command and return its result, recording the events that arrive meanwhile."""
        command_id = next(self._ids)
        self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.0, deadline - time.monotonic())))
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._record(message)

    def _record(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            texts = [arg.get("value", arg.get("description", "")) for arg in params["args"]]
            self.errors.append("console: " + " ".join(str(text) for text in texts))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append("exception: " + details.get("exception", {}).get("description", details["text"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry['text']} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            self.requested.append(params["request"]["url"])

    def navigate(self, url: str) -> None:
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"cannot load {url}: {result['errorText']}")

    def text(self) -> str:
        """The page's rendered text (``innerText``), without the zero-width spaces some UIs put into paths."""
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return result["result"].get("value", "").replace("\u200b", "")

    def wait_for_text(self, wanted: str, timeout: float) -> bool:
        """Poll the rendered text until it contains ``wanted`` (True) or ``timeout`` passes (False)."""
        return bool(poll(lambda: wanted in self.text(), timeout, 0.2))

    def settle(self, seconds: float) -> None:
        """Keep recording events for ``seconds`` (errors of work the page does after it rendered)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._record(json.loads(self._socket.recv(timeout=left)))
            except TimeoutError:
                break
