"""The real program as a child process, for the tests that run it as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cli(*args: str) -> subprocess.Popen[str]:
    """``python -m app.cli ARGS`` from the repository root, output (both streams) piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_health(port: int, until: Callable[[dict[str, Any]], bool], within_s: float = 30.0,
                    every_s: float = 0.25) -> dict[str, Any] | None:
    """Poll ``/health`` until it answers 200 with a document ``until`` accepts; that
    document, or None when it did not within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            if response.status_code == 200:
                doc: dict[str, Any] = response.json()
                if until(doc):
                    return doc
        except httpx.TransportError:
            pass
        time.sleep(every_s)
    return None
