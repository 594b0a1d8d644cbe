"""Headless Chromium against a page folder served on 127.0.0.1 (for tests/test_web.py).

The page posts its results to ``/__result`` (app.js's ``?selftest=1`` mode); the server keeps the
JSON and the test reads it: no browser-driving dependency. Chromium runs as a child process with
the flags a closed network and root need (no sandbox, no background networking), in a fresh
profile, and is killed when the result arrives or the time runs out.

Where the browser and onnxruntime-web come from: ``chromium`` on PATH (Debian's package; .ci/run
installs it) and ``NNGRAPH_ORT_WEB_DIR`` or ``.ci/ort-web/dist`` (``npm pack onnxruntime-web`` in
.ci/run). Without them the browser tests skip, unless ``NNGRAPH_REQUIRE_BROWSER=1`` (set by
.ci/run), which makes a missing browser a failure.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--mute-audio"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ort_web_dir() -> Path | None:
    for cand in (os.environ.get("NNGRAPH_ORT_WEB_DIR"), ROOT / ".ci" / "ort-web" / "dist"):
        if cand and (Path(cand) / "ort.wasm.min.js").is_file():
            return Path(cand)
    return None


def missing_reason() -> str | None:
    if chromium() is None:
        return "no chromium on PATH (apt-get install chromium)"
    if ort_web_dir() is None:
        return "no onnxruntime-web dist folder (NNGRAPH_ORT_WEB_DIR, or .ci/ort-web/dist from npm pack)"
    return None


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".js": "text/javascript"}

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/__result":
            self.server.result = json.loads(body)  # type: ignore[attr-defined]
            self.server.done.set()  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


class Served:
    """The folder served on 127.0.0.1 (a free port) while the context is open."""

    def __init__(self, folder: Path):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
        self.server.result = None
        self.server.done = threading.Event()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _kill_group(proc: subprocess.Popen) -> None:
    """Chromium and its helper processes (renderer, zygote): its own session, killed together."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def run_page(folder: Path, timeout: float = 90.0, query: str = "?selftest=1") -> dict:
    """Open the page in headless Chromium and return what it posted to /__result."""
    with Served(folder) as served, tempfile.TemporaryDirectory(prefix="nngraph-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                 served.url + "index.html" + query],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if not served.server.done.wait(timeout):
                raise AssertionError(f"the page posted no result within {timeout:.0f} s")
            return served.server.result
        finally:
            _kill_group(proc)


def screenshot(folder: Path, out: Path, query: str = "?selftest=1", size: str = "900,620",
               budget_ms: int = 8000) -> Path:
    """A PNG of the page after ``budget_ms`` of (virtual) time."""
    with Served(folder) as served, tempfile.TemporaryDirectory(prefix="nngraph-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                                 f"--screenshot={out}", f"--virtual-time-budget={budget_ms}",
                                 served.url + "index.html" + query],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(120)
        finally:
            _kill_group(proc)
    return out
