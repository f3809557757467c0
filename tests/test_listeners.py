"""A listening socket per worker slot (SO_REUSEPORT): connections spread over the workers, and the
sockets outlive the workers, so a reload or a crash loses no connection still in an accept queue.

The workers are held with SIGSTOP so that connections stay queued: what is asserted is who answers
them, never how fast.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request

from procs import children_of, wait_for

ECHO = """
    [server]
    drain_grace_s = 5

    [[deployments]]
    name = "echo"
    provider = "mock"
"""
BODY = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "ping"}]}).encode()


def request(close: bool) -> bytes:
    connection = "close" if close else "keep-alive"
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Connection: {connection}\r\nContent-Length: {len(BODY)}\r\n\r\n").encode() + BODY


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer (the echo deployment's are Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class QueuedRequests:
    """``n`` connections, each with one request sent (``Connection: close``), read in threads."""

    def __init__(self, port: int, n: int):
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(n)]
        self.answers: list[bytes | None] = [None] * n
        self.errors: list[str] = []
        for sock in self.socks:
            sock.sendall(request(close=True))
        self._threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def _read(self, i: int) -> None:
        try:
            self.answers[i] = read_answer(self.socks[i])
        except OSError as e:
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            self.socks[i].close()

    def answered(self) -> int:
        return sum(a is not None for a in self.answers)

    def ok(self) -> int:
        return sum(a is not None and a.startswith(b"HTTP/1.1 200") for a in self.answers)


def worker_gauges(base: str, name: str) -> dict[str, float]:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(rf'^fastinfer_{name}{{worker="(\d+)"}} (\S+)$', text, re.M)}


def workers_of(gw) -> list[int]:
    assert wait_for(lambda: len(children_of(gw.pid)) == 2)
    return sorted(children_of(gw.pid))


@contextlib.contextmanager
def stopped(pids):
    """The processes held (SIGSTOP) for the block; those still alive resume after it."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def test_kept_alive_connections_spread_over_both_workers_and_metrics_show_it(start_gateway):
    """64 kept-alive connections opened at once: each worker holds a fair part of them. The kernel
    spreads them by a hash of their addresses: fewer than 12 of 64 on a worker is about 5 standard
    deviations off."""
    gw = start_gateway(ECHO, workers=2)
    socks = [socket.create_connection(("127.0.0.1", gw.port), timeout=30) for _ in range(64)]
    try:
        for sock in socks:
            sock.sendall(request(close=False))
        assert all(read_answer(sock).startswith(b"HTTP/1.1 200") for sock in socks)
        # the per-worker series are published about once a second; the /metrics request's own
        # connection is the 65th
        assert wait_for(lambda: sum(worker_gauges(gw.base, "worker_connections").values()) >= 64, timeout=20)
        connections = worker_gauges(gw.base, "worker_connections")
        requests = worker_gauges(gw.base, "worker_requests_total")
    finally:
        for sock in socks:
            sock.close()
    assert sorted(connections) == ["0", "1"]
    assert all(n >= 12 for n in connections.values()), connections
    assert all(n >= 12 for n in requests.values()), requests


def test_a_reload_serves_connections_queued_on_the_old_generation(start_gateway):
    """The old generation is stopped (SIGSTOP) while connections queue: the new generation accepts
    them from the same sockets, while the old one still holds them and never accepts again."""
    gw = start_gateway(ECHO, workers=2)
    old = workers_of(gw)
    with stopped(old):
        queued = QueuedRequests(gw.port, 32)
        os.kill(gw.pid, signal.SIGHUP)
        assert wait_for(lambda: queued.answered() == 32, timeout=30), (queued.answered(), queued.errors)
    assert queued.errors == [] and queued.ok() == 32
    assert wait_for(lambda: not set(children_of(gw.pid)) & set(old) and len(children_of(gw.pid)) == 2, timeout=20)


def test_a_dead_workers_queued_connections_are_served_by_its_replacement(start_gateway):
    """Both workers stopped while connections queue on their sockets; one is killed: its replacement
    accepts what queued on its slot (nothing is reset), and the other slot's wait for their own worker."""
    gw = start_gateway(ECHO, workers=2)
    workers = workers_of(gw)
    with stopped(workers):
        queued = QueuedRequests(gw.port, 32)
        os.kill(workers[0], signal.SIGKILL)
        # 32 connections all on the surviving (stopped) worker's slot: odds of 2**-32
        assert wait_for(lambda: queued.answered() > 0, timeout=30), queued.errors
        assert queued.answered() < 32       # the stopped worker's share is still queued, not moved
    assert wait_for(lambda: queued.answered() == 32, timeout=30), queued.errors
    assert queued.errors == [] and queued.ok() == 32


def _worker_of(answer: bytes) -> str:
    """Which worker answered: the random prefix of the request ids it makes (one per worker)."""
    return re.search(rb"(?i)\r\nx-request-id: *([0-9a-f]{12})-", answer).group(1).decode()


def _closes(answer: bytes) -> bool:
    return re.search(rb"(?i)\r\nconnection: *close", answer.partition(b"\r\n\r\n")[0]) is not None


def test_a_worker_over_its_share_lets_the_surplus_go_and_the_clients_reconnect(start_gateway):
    """Kept-alive connections made uneven on purpose (the client closes one worker's until it holds a
    fifth of them): within a few publishes of the counts the busier worker answers some of its
    requests with ``Connection: close``, the client connects again, the kernel places the new
    connections anywhere, and the split evens out. Without the rebalancing it stays as it was made:
    nothing would ever close."""
    gw = start_gateway(ECHO, workers=2)
    by_worker: dict[str, list[socket.socket]] = {}
    opened = []
    try:
        # connections until one worker holds 24 (both do, about: the hash spreads them evenly)
        while max((len(v) for v in by_worker.values()), default=0) < 24 and len(opened) < 200:
            sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
            opened.append(sock)
            sock.sendall(request(close=False))
            answer = read_answer(sock)
            if not _closes(answer):     # the gateway may let one go already: that one is not kept
                by_worker.setdefault(_worker_of(answer), []).append(sock)
        busy = max(by_worker, key=lambda w: len(by_worker[w]))
        assert len(by_worker) == 2, "every connection landed on one worker"
        (other,) = set(by_worker) - {busy}
        for sock in by_worker[other][6:]:
            sock.close()
        conns = [(sock, busy) for sock in by_worker[busy][:24]] + [(sock, other) for sock in by_worker[other][:6]]
        for sock in by_worker[busy][24:]:
            sock.close()
        closed_by_gateway = 0
        split = {busy: 24, other: 6}
        deadline = time.monotonic() + 30
        while max(split.values()) - min(split.values()) > 4 and time.monotonic() < deadline:
            for i, (sock, _) in enumerate(conns):
                sock.sendall(request(close=False))
                answer = read_answer(sock)
                assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
                while _closes(answer):     # let go: the client connects again, as HTTP/1.1 clients do
                    closed_by_gateway += 1
                    sock.close()
                    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
                    opened.append(sock)
                    sock.sendall(request(close=False))
                    answer = read_answer(sock)
                conns[i] = (sock, _worker_of(answer))
            split = {w: sum(1 for _, x in conns if x == w) for w in (busy, other)}
            time.sleep(0.05)
        assert max(split.values()) - min(split.values()) <= 4, split
        assert closed_by_gateway >= 4
        # and the let-go connections are counted (published about once a second)
        assert wait_for(lambda: sum(worker_gauges(gw.base, "worker_connections_rebalanced_total").values())
                        >= closed_by_gateway, timeout=10)
    finally:
        for sock in opened:
            sock.close()
