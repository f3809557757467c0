"""The supervisor: binds the socket, forks the workers, keeps them alive, drains.

It runs no event loop and serves no request. It binds the one listening
socket, forks N workers that inherit it, replaces a worker that dies, and on
SIGTERM/SIGINT forwards the drain to every worker, waits for them within the
grace period (then kills stragglers) and removes what it created.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time

from ..config import Config
from .hostwide import HostState
from .worker import run_worker

log = logging.getLogger("fastinfer.supervisor")
_RESTART_BACKOFF_S = 0.1   # a crash loop must not spin the CPU
_POLL_S = 0.05
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, config: Config, n_workers: int):
        self.config = config
        self.n_workers = n_workers
        self.sock: socket.socket | None = None
        self.host: HostState | None = None
        self.workers: dict[int, int] = {}   # pid -> worker index
        self._stopping = False
        self._reload = False

    def run(self) -> int:
        server = self.config.server
        self.sock = bind_socket(server.host, server.port)
        host, port = self.sock.getsockname()[:2]
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        self.host = HostState.create(self.config, self.n_workers)
        try:
            for index in range(self.n_workers):
                self._spawn(index)
            # the line scripts and tests wait for: the port is real even with --port 0
            print(f"fastinfer serving on http://{host}:{port} with {self.n_workers} workers "
                  f"(pid {os.getpid()})", flush=True)
            self._watch()
            return self._drain()
        finally:
            self.sock.close()
            self.host.close()

    def _on_stop(self, signum, frame) -> None:
        self._stopping = True

    def _spawn(self, index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # a stop signal landing between fork and the worker's own handlers would hit the
        # supervisor's handler in the child and be lost: hold signals across the fork
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in _STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
                code = run_worker(index, self.config, self.sock, self.host)
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        self.workers[pid] = index
        log.debug("worker %d started as pid %d", index, pid)

    def _reap(self) -> list[tuple[int, int, int]]:
        """(pid, index, status) of every worker that has exited since the last call."""
        dead = []
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            index = self.workers.pop(pid, None)
            if index is not None:
                dead.append((pid, index, status))
        return dead

    def _watch(self) -> None:
        while not self._stopping:
            for pid, index, status in self._reap():
                reclaimed = self.host.reclaim(index)
                log.warning("worker %d (pid %d) died (%s); reclaimed %s; replacing it",
                            index, pid, _describe(status), reclaimed)
                time.sleep(_RESTART_BACKOFF_S)
                if not self._stopping:
                    self._spawn(index)
            time.sleep(_POLL_S)

    def _drain(self) -> int:
        grace = self.config.server.drain_grace_s
        log.info("draining %d workers (grace %.0fs)", len(self.workers), grace)
        for pid in list(self.workers):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace + 5
        while self.workers and time.monotonic() < deadline:
            self._reap()
            time.sleep(_POLL_S)
        for pid in list(self.workers):
            log.warning("worker pid %d did not drain in time; killing it", pid)
            _signal(pid, signal.SIGKILL)
        while self.workers:
            self._reap()
            time.sleep(_POLL_S)
        return 0


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"
