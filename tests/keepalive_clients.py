"""Kept-alive HTTP clients that send requests non-stop, with no retries, for drain and reload tests.

Each client is a thread with one ``http.client.HTTPConnection``: it reuses the
connection while the server keeps it alive and opens a new one only after an
answer that said ``Connection: close`` (what any well-behaved client does). A
request that fails in any way (reset, closed without an answer, a non-200) is
recorded as a failure and never retried.
"""
from __future__ import annotations

import http.client
import json
import threading
import time

BODY = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "ping"}]}).encode()


class KeptAliveClients:
    def __init__(self, port: int, n: int = 8, body: bytes = BODY, path: str = "/v1/chat/completions"):
        self.port = port
        self.n = n
        self.body = body
        self.path = path
        self.ok = 0
        self.closes_seen = 0       # answers that said Connection: close
        self.connections = 0       # connections opened, over all clients
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def __enter__(self) -> "KeptAliveClients":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> bool:
        """Until ``count`` more answers than now have arrived."""
        target = self.total + count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.total < target:
            time.sleep(0.01)
        return self.total >= target

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                with self._lock:
                    self.connections += 1
            try:
                conn.request("POST", self.path, self.body, {"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                closing = resp.getheader("connection", "").lower() == "close"
                with self._lock:
                    if resp.status == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"status {resp.status}")
                    self.closes_seen += closing
                if closing:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with self._lock:
                    self.failures.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
