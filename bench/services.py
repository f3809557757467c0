"""The processes a bench run starts: ``python -m fastinfer`` children and foreign daemons.

Owns: starting a service on the CPUs the layout gives it, knowing when it is ready, its log file,
and stopping it (its whole process group). Its cost is read through ``ProcessTree``.
Must not touch: what runs inside (configs are written by the modules that own each service).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .proctree import ProcessTree

_PORT_RE = re.compile(rb"http://[\d.]+:(\d+)")


def free_port() -> int:
    """A port free on 127.0.0.1 now, for daemons that cannot be told to pick one (nginx)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port: int, path: str, method: str = "GET", body: bytes | None = None,
                headers: dict | None = None, timeout: float = 2.0) -> int | None:
    """The status of one request, or None when nothing answers."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, urllib.error.URLError):
        return None


class Daemon(ProcessTree):
    """A command that serves HTTP on a port we chose; ready once ``ready_path`` answers 200."""

    def __init__(self, label: str, argv: list[str], port: int, ready_path: str, log: Path,
                 preexec=None, env: dict | None = None, timeout_s: float = 60.0):
        self.label, self.port = label, port
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=preexec, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if http_status(port, ready_path, timeout=1.0) == 200:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{label} did not start; its log {log}:\n{_tail(log)}")

    def stop(self) -> None:
        _stop_group(self.proc)


class Service(ProcessTree):
    """A ``python -m fastinfer`` child announcing its port on stdout (its logs go to ``log``)."""

    def __init__(self, args: list[str], cwd: str, tree: Path | None = None, preexec=None,
                 log: Path | None = None, wrapper: tuple[str, ...] = (), start_timeout_s: float = 30.0):
        """``wrapper``: a command the interpreter runs under (valgrind), with its arguments."""
        # run the same fastinfer this process imported (a checkout or the installed copy), or the
        # one in ``tree`` (a source tree whose compiled core is built in place)
        tree = tree or fastinfer_tree()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.log = log
        err = open(log, "ab") if log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen([*wrapper, sys.executable, "-m", "fastinfer", *args], cwd=cwd, env=env,
                                         stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=preexec)
        finally:
            if log:
                err.close()
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = _PORT_RE.search(line)
            if m:
                self.port = int(m.group(1))
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"{args[0]} did not start" + (f"; its log {log}:\n{_tail(log)}" if log else ""))

    def stop(self) -> None:
        _stop_group(self.proc)


def fastinfer_tree() -> Path:
    """The source tree of the fastinfer this process imported."""
    import fastinfer
    return Path(fastinfer.__file__).resolve().parents[1]


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tail(log: Path, n: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def start_relay_floor(workdir: Path, upstream_port: int, ready_path: str, workers: int, preexec=None) -> Daemon:
    """The ``uvloop-floor`` path (``relay_floor.py``, run by file: it needs nothing of the bench or
    fastinfer); ready once the mock's ``ready_path`` answers through it."""
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("relay_floor.py")), str(port), str(upstream_port),
            str(workers)]
    return Daemon("uvloop-floor", argv, port, ready_path, Path(workdir, "uvloop-floor.log"), preexec=preexec,
                  timeout_s=30)
