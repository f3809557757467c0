"""Real processes for the tests: ``fastinfer serve`` and ``fastinfer mock-upstream``.

Every process runs from a temporary working directory, so it imports the
installed fastinfer (with its compiled core), never the bare source tree.
"""
from __future__ import annotations

import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

_LISTEN_RE = re.compile(rb"http://([\d.]+):(\d+)")


class Proc:
    """A child process whose first stdout line announces its address."""

    def __init__(self, args: list[str], cwd: Path, env: dict | None = None, ready_timeout: float = 20.0):
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastinfer", *args], cwd=cwd, env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        self.stderr_lines: list[bytes] = []
        self.stdout_lines: list[bytes] = []   # what the process printed, from the address line on
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        self.port = self._wait_ready(ready_timeout)
        self.base = f"http://127.0.0.1:{self.port}"

    def _drain_stdout(self) -> None:
        for line in self.proc.stdout:
            self.stdout_lines.append(line)

    def stdout(self) -> str:
        return b"".join(self.stdout_lines).decode(errors="replace")

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def _wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
            m = _LISTEN_RE.search(line)
            if m:
                self.stdout_lines.append(line)
                threading.Thread(target=self._drain_stdout, daemon=True).start()
                return int(m.group(2))
        self.kill()
        raise RuntimeError(f"{self.args[0]} did not start: {line!r} {b''.join(self.stderr_lines)[-2000:]!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return b"".join(self.stderr_lines).decode(errors="replace")

    def stderr_when_stopped(self, timeout: float = 20.0) -> str:
        """Stop the process and return all it wrote to stderr (nothing can still be on its way)."""
        self.stop(timeout)
        self._stderr_thread.join(timeout)
        return self.stderr()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        kill_group(self.proc)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM and wait up to ``timeout`` for the drain (raising if it takes
        longer), and in any case leave no process behind."""
        # A client the test dropped without closing it (an SDK client in a reference cycle)
        # still holds idle kept-alive connections, which a draining gateway keeps open until
        # drain_grace_s ends (the contract: never closed while idle before that). Collect such
        # clients first, so that their sockets close and the drain ends when its work does.
        gc.collect()
        try:
            self.terminate(timeout=timeout)
        finally:
            self.kill()


class MockUpstream(Proc):
    """``fastinfer mock-upstream`` with its control API as methods."""

    def __init__(self, workdir: Path, *args: str):
        super().__init__(["mock-upstream", "--port", "0", *args], workdir)

    def control(self, **knobs):
        return http_json("POST", self.base + "/_mock/config", knobs)

    def script(self, steps: list):
        return http_json("POST", self.base + "/_mock/script", steps)

    def reset(self):
        return http_json("POST", self.base + "/_mock/reset", {})

    def release(self, hold: str):
        """Let the requests held by a ``{"hold": hold}`` script step go on."""
        return http_json("POST", self.base + "/_mock/release", {"hold": hold})

    def wait_in_flight(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until exactly ``n`` requests are inside the mock (held, or answering)."""
        return wait_for(lambda: self.stats()["in_flight"] == n, timeout=timeout)

    def stats(self) -> dict:
        return http_json("GET", self.base + "/_mock/stats")[2]

    def received(self) -> list:
        return self.stats()["received"]


def start_mock(workdir: Path, *args: str) -> MockUpstream:
    """A fresh mock upstream on a free port; the caller kills it."""
    return MockUpstream(workdir, *args)


def start_gateway_proc(workdir: Path, config_text: str | None = None, workers: int = 2,
                       env: dict | None = None) -> Proc:
    """``fastinfer serve`` on a free port with a TOML config text (dedented, written
    into ``workdir``); the caller stops it with ``Proc.stop``."""
    args = ["serve", "--port", "0", "--workers", str(workers), "--log-level", "warning"]
    if config_text is not None:
        args += ["--config", str(write_config(workdir, textwrap.dedent(config_text)))]
    return Proc(args, workdir, env=env)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a child started with ``start_new_session=True`` and everything it started; reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def http_json(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 10.0):
    """(status, headers, parsed body) with the standard library, for non-SDK checks."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"null")


def in_parallel(n: int, fn, timeout: float = 120.0) -> list:
    """``fn(i)`` for i in 0..n-1 on n threads released together; their results in order."""
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


def worker_prefix(base: str) -> str:
    """The worker that answered a request on a new connection: a generated request id starts with
    a per-worker random prefix."""
    _, headers, _ = http_json("GET", base + "/v1/models", headers={"connection": "close"})
    return headers["x-request-id"].split("-")[0]


def wait_workers_serving(base: str, n: int, timeout: float = 20.0) -> bool:
    """Until ``n`` workers have each answered (the supervisor announces its listener before the
    workers serve: a test that needs every worker up, not just queueing, waits for this)."""
    seen: set[str] = set()

    def all_seen() -> bool:
        seen.add(worker_prefix(base))
        return len(seen) >= n
    return wait_for(all_seen, timeout=timeout, interval=0)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Call ``predicate`` every ``interval`` seconds until it returns something true, for at
    most ``timeout`` seconds; returns that value, or else the value of one last call after
    the deadline (so ``assert wait_for(...)`` asserts what the predicate checks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def write_config(directory: Path, text: str) -> Path:
    fd, path = tempfile.mkstemp(suffix=".toml", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(path)


def raw_post(port: int, body: dict, path: str = "/v1/chat/completions") -> socket.socket:
    """Send a POST with a plain socket and hand the socket back: the caller reads, or leaves."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data))
    return sock


def metrics_text(gw) -> str:
    with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def metric_value(text: str, series: str) -> float:
    """The value of one series (``name{labels}``) in a /metrics text; an AssertionError if absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} missing")
