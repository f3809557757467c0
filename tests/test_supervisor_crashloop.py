"""Workers that cannot start: their error in the log, replaced later each time, and given up.

The breakage is a real one, not a hook: a ``uvloop`` that fails to import, first on the
path. The supervisor never imports uvloop (the worker does, after the fork), so it starts
and forks as usual, and each worker dies while it imports.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import socket
import time
from datetime import datetime

import pytest

from procs import children_of, http_json, metric_value, metrics_text, wait_for, wait_workers_serving
from replicas import chat, replicas, replicas_config, three_replicas

__all__ = ["replicas", "three_replicas"]

BROKEN = "broken uvloop for the test"
MESSAGES = [{"role": "user", "content": "ping"}]


def break_uvloop(directory) -> None:
    (directory / "uvloop.py").write_text(f"raise ImportError({BROKEN!r})\n")


@pytest.fixture
def site(workdir):
    """A directory first on the server's import path, and the environment that puts it there."""
    directory = workdir / "site"
    directory.mkdir()
    path = os.pathsep.join(p for p in [str(directory), os.environ.get("PYTHONPATH")] if p)
    return directory, {"PYTHONPATH": path}


def broken_server(start_gateway, site, workers: int):
    """A server started on a broken install, once it has stopped by itself with exit 1: (the
    server, seconds it took to stop, its stderr)."""
    directory, env = site
    break_uvloop(directory)
    gw = start_gateway(workers=workers, env=env)
    started = time.monotonic()
    code = gw.proc.wait(15)
    stderr = gw.stderr_when_stopped()
    assert code == 1, stderr[-3000:]
    return gw, time.monotonic() - started, stderr


def restarts(gw, reason: str, index: int | None = None) -> int:
    """``fastinfer_worker_restarts_total`` of worker ``index`` (None: of every worker) for ``reason``."""
    text = metrics_text(gw)
    indices = range(2) if index is None else [index]
    return sum(int(metric_value(text, f'fastinfer_worker_restarts_total{{worker="{i}",reason="{reason}"}}'))
               for i in indices)


def died_at(stderr: str, index: int) -> list[float]:
    """When the supervisor saw worker ``index`` die at start (seconds, from its log lines)."""
    stamps = re.findall(rf"^(\S+) WARNING fastinfer\.supervisor\[\d+\]: worker {index} \(pid \d+\) died at start",
                        stderr, re.M)
    return [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]


def test_workers_that_cannot_start_stop_the_server_with_their_error(start_gateway, site):
    gw, took, stderr = broken_server(start_gateway, site, workers=2)
    assert took < 10
    assert f"ImportError: {BROKEN}" in stderr              # the worker's own error, with its traceback
    assert "could not start" in stderr and "Traceback" in stderr
    assert "every worker died at start" in stderr and "the last one: exit 1" in stderr
    assert len(died_at(stderr, 0)) + len(died_at(stderr, 1)) <= 2 * 5    # not a spin
    with pytest.raises(ConnectionRefusedError):    # no client is left waiting in a listen queue
        socket.create_connection(("127.0.0.1", gw.port), timeout=2).close()


def test_a_worker_that_dies_at_start_is_replaced_later_each_time(start_gateway, site):
    _, _, stderr = broken_server(start_gateway, site, workers=1)
    deaths = died_at(stderr, 0)
    assert len(deaths) == 5
    gaps = [b - a for a, b in zip(deaths, deaths[1:])]
    # each replacement waits twice as long as the one before: 0.1, 0.2, 0.4, 0.8 s (plus its start)
    assert [f"replacing it in {d}s" in stderr for d in ("0.1", "0.2", "0.4", "0.8")] == [True] * 4
    assert all(gap >= delay - 0.02 for gap, delay in zip(gaps, [0.1, 0.2, 0.4, 0.8])), gaps


def test_a_reload_whose_workers_cannot_start_keeps_the_running_generation(start_gateway, site):
    directory, env = site
    gw = start_gateway(workers=2, env=env)
    assert wait_workers_serving(gw.base, 2)
    serving = set(children_of(gw.pid))
    # the install breaks under the running server (an upgrade gone wrong): only new workers import it
    break_uvloop(directory)
    os.kill(gw.pid, signal.SIGHUP)
    assert wait_for(lambda: "reload failed" in gw.stderr(), timeout=10), gw.stderr()[-3000:]
    stderr = gw.stderr()
    assert f"ImportError: {BROKEN}" in stderr and "the running config stays" in stderr
    assert wait_for(lambda: set(children_of(gw.pid)) == serving)    # the new workers are gone, the old ones stay
    # their deaths are counted where an operator looks, though their generation's counters are gone
    deaths = len(died_at(stderr, 0)) + len(died_at(stderr, 1))
    assert deaths >= 5
    assert restarts(gw, "failed_to_start") == deaths and restarts(gw, "died") == 0
    time.sleep(1.0)
    assert gw.proc.poll() is None
    assert set(children_of(gw.pid)) == serving                    # and nothing is started again
    assert http_json("POST", gw.base + "/v1/chat/completions", {"model": "echo", "messages": MESSAGES})[0] == 200
    # once repaired, a reload rolls as usual
    (directory / "uvloop.py").unlink()
    os.kill(gw.pid, signal.SIGHUP)
    assert wait_for(lambda: len(children_of(gw.pid)) == 2 and not set(children_of(gw.pid)) & serving,
                    timeout=15), gw.stderr()[-3000:]
    assert http_json("POST", gw.base + "/v1/chat/completions", {"model": "echo", "messages": MESSAGES})[0] == 200
    assert "every worker died at start" not in gw.stderr()


def test_a_reload_given_up_leaves_the_sessions_bound_and_the_log_as_they_were(start_gateway, site, replicas):
    """The roll hands the session bindings to the new generation and the supervisor logs with the
    new [logging]: given up, both are the running generation's again."""
    directory, env = site
    sticky = replicas_config(replicas, "sticky", deployment="session = { affinity_ttl_s = 300 }")
    gw = start_gateway(sticky, workers=2, env=env)
    assert wait_workers_serving(gw.base, 2)
    bound = {f"s{i}": chat(gw.base, session=f"s{i}")[1] for i in range(8)}
    assert len(set(bound.values())) > 1
    source = gw.args[gw.args.index("--config") + 1]
    with open(source, "w") as f:
        f.write(sticky + '\n[logging]\nformat = "json"\n')
    break_uvloop(directory)
    os.kill(gw.pid, signal.SIGHUP)
    assert wait_for(lambda: "reload failed" in gw.stderr(), timeout=10), gw.stderr()[-3000:]
    (failed,) = [x for x in gw.stderr().splitlines() if "reload failed" in x]
    assert re.match(r"^\S+ ERROR fastinfer\.supervisor\[\d+\]: reload failed", failed), failed   # text, not JSON
    assert metric_value(metrics_text(gw), "fastinfer_session_bindings") == len(bound)
    assert {s: chat(gw.base, session=s)[1] for s in bound} == bound
    # the next line of the supervisor's (a worker killed, replaced) is in the running config's format
    (directory / "uvloop.py").unlink()     # repaired first: its replacement serves what waits for it
    victim = children_of(gw.pid)[0]
    seen = len(gw.stderr())
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: f"(pid {victim}) died" in gw.stderr()[seen:]), gw.stderr()[-3000:]
    (line,) = [x for x in gw.stderr()[seen:].splitlines() if f"(pid {victim}) died" in x]
    assert re.match(r"^\S+ WARNING fastinfer\.supervisor\[\d+\]: worker \d \(pid", line), line
    index = int(re.search(r"worker (\d) \(pid", line).group(1))
    assert wait_for(lambda: restarts(gw, "died", index) == 1)


# lets the first process that imports it through to the real uvloop; every later one fails
FIRST_ONLY = f"""
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
try:
    os.close(os.open(os.path.join(here, "taken"), os.O_CREAT | os.O_EXCL))
except FileExistsError:
    raise ImportError({BROKEN!r})
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
del sys.modules["uvloop"]
import uvloop as real
sys.modules["uvloop"] = real
"""


def sent_request(port: int) -> socket.socket:
    """A connection with a chat request written on it, its answer not read yet."""
    body = json.dumps({"model": "echo", "messages": MESSAGES}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return sock


def outcome(sock: socket.socket) -> str:
    """``answered`` (a 200), ``reset`` (refused or closed unanswered); a hang raises recv's timeout."""
    try:
        head = sock.recv(12)
    except ConnectionResetError:
        return "reset"
    finally:
        sock.close()
    return "answered" if head.startswith(b"HTTP/1.1 200") else "reset" if not head else repr(head)


def test_a_slot_whose_worker_cannot_start_is_parked_retried_and_counted_while_the_others_serve(start_gateway, site):
    directory, env = site
    (directory / "uvloop.py").write_text(FIRST_ONLY)
    gw = start_gateway(workers=2, env=env)
    early = [sent_request(gw.port) for _ in range(8)]   # some land in the slot nobody will accept from
    # one slot serves; the other's worker dies at start, is replaced 0.1 then 0.2 s later, and its
    # slot is parked after the second death
    assert wait_for(lambda: "parked" in gw.stderr(), timeout=15), gw.stderr()[-3000:]
    # what waited in the parked slot's queue is reset, not left hanging (a hang is recv's timeout)
    assert {outcome(s) for s in early} <= {"answered", "reset"}
    (failing,) = {int(n) for n in re.findall(r"worker slot (\d) parked", gw.stderr())}
    # every new connection is served: none lands in the slot nobody accepts from
    for _ in range(20):
        assert http_json("POST", gw.base + "/v1/chat/completions", {"model": "echo", "messages": MESSAGES})[0] == 200
    assert wait_for(lambda: restarts(gw, "failed_to_start", failing) >= 3, timeout=15), gw.stderr()[-3000:]
    assert restarts(gw, "failed_to_start", 1 - failing) == 0 and restarts(gw, "died") == 0
    # the slot is retried still, and the server is not given up
    assert len(died_at(gw.stderr(), failing)) >= 3 and gw.proc.poll() is None
    assert "every worker died at start" not in gw.stderr()


def test_a_reload_one_of_whose_workers_cannot_start_rolls_and_parks_that_slot(start_gateway, site, replicas):
    """A partial roll: the new generation serves on the slots whose workers start; the old one is
    retired after its wait, and then the slot that cannot start is parked, not left to queue --
    at once, while the old generation still drains a request it holds."""
    directory, env = site
    gw = start_gateway(replicas_config(replicas).replace("drain_grace_s = 10", "drain_grace_s = 60"), workers=2, env=env)
    assert wait_workers_serving(gw.base, 2)
    old = set(children_of(gw.pid))
    for mock in replicas:
        mock.script([{"hold": "drain"}])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(chat, gw.base, "held")        # in flight in an old worker: its drain waits
        assert wait_for(lambda: sum(m.stats()["in_flight"] for m in replicas) == 1)
        for mock in replicas:
            if not mock.stats()["in_flight"]:
                mock.reset()       # their hold step unused: the requests below are answered at once
        (directory / "uvloop.py").write_text(FIRST_ONLY)     # only the first new worker gets through
        rolled_at = time.time()
        os.kill(gw.pid, signal.SIGHUP)
        assert wait_for(lambda: "parked" in gw.stderr(), timeout=30), gw.stderr()[-3000:]
        assert not held.done() and set(children_of(gw.pid)) & old    # the old generation still drains
        # but was retired (it accepts no more) before the slot was parked: 10 s after the roll
        # began (the new generation's wait), not at the failing worker's second death
        (parked,) = re.findall(r"^(\S+) WARNING fastinfer\.supervisor\[\d+\]: worker slot \d parked", gw.stderr(), re.M)
        assert datetime.fromisoformat(parked.replace("Z", "+00:00")).timestamp() - rolled_at > 9.5
        (failing,) = {int(n) for n in re.findall(r"worker slot (\d) parked", gw.stderr())}
        for _ in range(20):
            assert chat(gw.base)[0] == 200
        for mock in replicas:
            mock.release("drain")
        assert held.result(timeout=10)[0] == 200
    assert wait_for(lambda: not set(children_of(gw.pid)) & old)     # the old generation is gone
    assert restarts(gw, "failed_to_start", failing) >= 2 and restarts(gw, "failed_to_start", 1 - failing) == 0
    assert "reload failed" not in gw.stderr() and gw.proc.poll() is None
