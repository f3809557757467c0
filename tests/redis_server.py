"""A real ``redis-server`` for the cluster tests: its own port on 127.0.0.1, its own temp dir.

``.ci/run`` installs it; a machine without the binary skips the cluster tests, saying why.
The server keeps nothing on disk (no RDB, no AOF), so a restart comes back empty, as a
Redis without persistence does in production.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

import pytest

BINARY = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``start()`` / ``kill()`` / ``start()`` again on the same port (empty, like a restarted Redis)."""

    def __init__(self, workdir):
        self.dir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.proc = subprocess.Popen(
            [BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} on port {self.port}")
            try:
                if self.command("PING") == "+PONG":
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def freeze(self, frozen: bool = True) -> None:
        """SIGSTOP / SIGCONT: a Redis that accepts connections and never answers (slow, or stuck)."""
        self.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def command(self, *args: str) -> str:
        """One command over a plain socket (RESP): a simple reply's line (``+OK``, ``:2``), or a bulk
        string's value. No client library needed."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(payload.encode())
            lines = s.recv(65536).decode().split("\r\n")
        return lines[1] if lines[0].startswith("$") and lines[0] != "$-1" else lines[0]


@pytest.fixture
def redis_server(tmp_path):
    if BINARY is None:
        pytest.skip("redis-server is not installed (.ci/run installs it with apt): cluster tests need a real one")
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()
