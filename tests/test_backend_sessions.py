"""Backend sessions (SGLang's open_session / close_session, as Dynamo drives them): 2 workers, 3 mock replicas.

The mocks record every open and close call in order, refuse a request in a session they do
not have open (as SGLang does), and can be told to fail opens and closes. Each test checks
that every opened session is closed exactly once, on its own replica, after its last
request, for each cause: x-session-close, idle expiry, a re-pin, DELETE, drain and reload.
"""
from __future__ import annotations

import os
import signal
import textwrap
import threading
import time

from fastinfer.routing import session_key
from procs import children_of, http_json, metric_value, metrics_text, wait_for
from replicas import (ADMIN, NAMES, chat, force_open, replicas, replicas_config, served, three_replicas)

__all__ = ["replicas", "three_replicas"]

SESSIONS = 'session = { affinity_ttl_s = %s, backend_sessions = true, capacity = 4096 }'


def config(mocks, ttl_s: float = 300, server: str = "", bases=None) -> str:
    return replicas_config(mocks, "sticky", deployment=SESSIONS % ttl_s, server=server, bases=bases)


def calls(mock) -> list[tuple[str, str]]:
    """(call, session id) of every open_session / close_session the mock got, in order."""
    return [(c["call"], c["session_id"]) for c in mock.stats()["session_calls"]]


def generations(mock) -> list[dict]:
    return [e for e in mock.received() if e["path"].endswith("/chat/completions")]


def mock_of(mocks, replica: str):
    return mocks[NAMES.index(replica)]


def gauge(gw) -> float:
    return metric_value(metrics_text(gw), 'fastinfer_backend_sessions{deployment="m"}')


def all_closed(mocks) -> bool:
    return all(not m.stats()["open_sessions"] for m in mocks)


def test_a_session_opens_before_its_first_request_and_closes_after_the_one_that_ends_it(start_gateway, replicas):
    gw = start_gateway(config(replicas))
    answers = [chat(gw.base, f"turn {i}", session="chat-1") for i in range(3)]
    assert [status for status, _, _ in answers] == [200] * 3
    (replica,) = {r for _, r, _ in answers}
    mock = mock_of(replicas, replica)
    ((call, sid),) = calls(mock)
    assert call == "open" and len(sid) == 32                          # the session key's hex
    opened = mock.stats()["session_calls"][0]
    assert opened["body"] == {"session_id": sid, "capacity_of_str_len": 4096, "timeout": 330.0}
    assert opened["authorization"] == f"Bearer sk-{replica}-secret"    # the replica's own credential
    sent = generations(mock)
    assert [g["body"]["session_params"] for g in sent] == [{"id": sid}] * 3
    assert opened["t"] < sent[0]["t"]
    assert gauge(gw) == 1

    # the request that ends it is answered first, then its backend session is closed (streamed here)
    status, again, text = chat(gw.base, "bye", session="chat-1", close=True, stream=True)
    assert status == 200 and again == replica and text.rstrip().endswith("data: [DONE]")
    assert wait_for(lambda: calls(mock) == [("open", sid), ("close", sid)])
    last = generations(mock)[-1]
    assert last["body"]["session_params"] == {"id": sid}
    assert mock.stats()["session_calls"][1]["t"] > last["closed_at"]
    assert wait_for(lambda: gauge(gw) == 0)
    # the same id later is a new session: opened again
    assert chat(gw.base, "again", session="chat-1")[0] == 200
    assert sum(calls(m).count(("open", sid)) for m in replicas) == 2
    assert [c for m in replicas for c in calls(m) if c[0] == "close"] == [("close", sid)]


def test_an_open_that_fails_fails_the_request_and_nothing_is_generated(start_gateway, replicas):
    for mock in replicas:
        mock.control(open_session_status=500)
    gw = start_gateway(config(replicas))
    status, _, body = chat(gw.base, session="doomed")
    assert status == 502 and body["error"]["code"] == "backend_session_failed"
    assert "nothing was generated" in body["error"]["message"]
    assert served(replicas) == [0, 0, 0]                               # no generation request went anywhere
    assert sum(len(calls(m)) for m in replicas) == 1                   # one open, not retried elsewhere
    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_backend_session_calls_total{deployment="m",call="open",result="failed"}') == 1
    assert metric_value(text, 'fastinfer_backend_sessions{deployment="m"}') == 0
    # requests without a session are not affected
    assert chat(gw.base)[0] == 200


def test_a_half_open_replicas_probe_opens_the_session_and_its_success_closes_the_circuit(start_gateway, replicas):
    """The attempt that is a half-open replica's one probe opens the session on it (the open is
    that attempt's, not a second pass through the circuit, which the probe would refuse)."""
    gw = start_gateway(config(replicas))
    for replica in NAMES:
        assert force_open(gw, replica, duration_s=0.5)[0] == 200
    time.sleep(0.8)                                     # every circuit half-open: the next attempt probes
    status, replica, body = chat(gw.base, session="probing")
    assert status == 200, body
    ((call, sid),) = calls(mock_of(replicas, replica))  # asked for real: the open, then the generation
    assert call == "open" and generations(mock_of(replicas, replica))[-1]["body"]["session_params"] == {"id": sid}
    text = metrics_text(gw)
    assert metric_value(text, f'fastinfer_circuit_state{{deployment="m",replica="{replica}"}}') == 0
    assert metric_value(text, 'fastinfer_backend_session_calls_total{deployment="m",call="open",result="ok"}') == 1


def test_idle_sessions_are_closed_once_by_the_hosts_reaper(start_gateway, replicas):
    gw = start_gateway(config(replicas, ttl_s=1))
    bound = {s: chat(gw.base, session=s)[1] for s in ("idle-a", "idle-b", "idle-c")}
    assert gauge(gw) == 3
    assert wait_for(lambda: all_closed(replicas), timeout=10)
    time.sleep(1.5)                                                    # a second reaper would close again
    for replica in set(bound.values()):
        mine = calls(mock_of(replicas, replica))
        opened = [sid for call, sid in mine if call == "open"]
        assert mine == [("open", sid) for sid in opened] + [("close", sid) for sid in sorted(
            opened, key=[sid for call, sid in mine if call == "close"].index)]
    everything = [c for m in replicas for c in calls(m)]
    assert sorted(c for c, _ in everything) == ["close"] * 3 + ["open"] * 3
    assert wait_for(lambda: gauge(gw) == 0)
    assert metric_value(metrics_text(gw), "fastinfer_session_bindings") == 0


def test_a_repinned_session_opens_on_its_new_replica_and_closes_on_the_old(start_gateway, replicas):
    gw = start_gateway(config(replicas))
    status, old, _ = chat(gw.base, session="mover")
    ((_, sid),) = calls(mock_of(replicas, old))
    # open for a second: the close on the old replica waits for the circuit to let a probe through
    assert force_open(gw, old, duration_s=1)[0] == 200
    status, new, _ = chat(gw.base, session="mover")
    assert status == 200 and new != old
    assert wait_for(lambda: calls(mock_of(replicas, old)) == [("open", sid), ("close", sid)])
    assert calls(mock_of(replicas, new)) == [("open", sid)]
    assert generations(mock_of(replicas, new))[-1]["body"]["session_params"] == {"id": sid}
    assert chat(gw.base, session="mover")[1] == new
    assert metric_value(metrics_text(gw), 'fastinfer_session_repins_total{deployment="m"}') == 1
    assert gauge(gw) == 1


def test_delete_ends_a_session_at_once(start_gateway, replicas):
    gw = start_gateway(config(replicas))
    _, replica, _ = chat(gw.base, session="to-delete")
    mock = mock_of(replicas, replica)
    ((_, sid),) = calls(mock)
    status, _, body = http_json("DELETE", gw.base + "/v1/sessions/to-delete")
    assert status == 200 and body["deleted"] is True
    assert calls(mock) == [("open", sid), ("close", sid)]            # closed before the answer
    assert http_json("DELETE", gw.base + "/v1/sessions/to-delete")[0] == 404
    time.sleep(0.5)
    assert calls(mock) == [("open", sid), ("close", sid)]
    assert gauge(gw) == 0


def test_a_close_that_fails_is_retried_a_bounded_number_of_times(start_gateway, replicas):
    gw = start_gateway(config(replicas))
    _, replica, _ = chat(gw.base, session="flaky-close")
    mock = mock_of(replicas, replica)
    mock.control(close_session_failures=1)                             # one 503, then fine
    assert chat(gw.base, session="flaky-close", close=True)[0] == 200
    assert wait_for(lambda: [c["status"] for c in mock.stats()["session_calls"]] == [200, 503, 200])
    assert not mock.stats()["open_sessions"]

    _, replica, _ = chat(gw.base, session="dead-close")
    mock = mock_of(replicas, replica)
    mock.control(close_session_failures=100)
    status, _, _ = chat(gw.base, session="dead-close", close=True)
    assert status == 200                                               # never blocks the request
    closes = lambda: [c for c in mock.stats()["session_calls"] if c["call"] == "close"]   # noqa: E731
    assert wait_for(lambda: len(closes()) == 3 and gauge(gw) == 0, timeout=10)   # given up on, counted gone
    time.sleep(2.5)
    assert len(closes()) == 3
    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_backend_session_calls_total{deployment="m",call="close",result="failed"}') == 4


def test_drain_closes_every_open_session(start_gateway, replicas):
    gw = start_gateway(config(replicas))
    for s in ("d-1", "d-2", "d-3", "d-4"):
        assert chat(gw.base, session=s)[0] == 200
    assert chat(gw.base, session="d-4", close=True)[0] == 200         # already ended: closed once, not twice
    assert wait_for(lambda: gauge(gw) == 3)
    gw.stop()
    assert all_closed(replicas)
    everything = [c for m in replicas for c in calls(m)]
    opened = [sid for call, sid in everything if call == "open"]
    closed = [sid for call, sid in everything if call == "close"]
    assert len(opened) == 4 and sorted(opened) == sorted(closed)


def test_a_reload_keeps_sessions_and_closes_those_whose_replica_left(start_gateway, replicas):
    gw = start_gateway(config(replicas))
    bound = {}
    for i in range(6):
        _, bound[f"r-{i}"], _ = chat(gw.base, session=f"r-{i}")
    assert len(set(bound.values())) == 3
    # the new config drops r2: its sessions move (counted), their backend sessions on r2 are closed
    source = gw.args[gw.args.index("--config") + 1]
    with open(source, "w") as f:
        f.write(textwrap.dedent(config(replicas[:2])))
    status, _, _ = http_json("POST", gw.base + "/admin/reload", {}, headers=ADMIN)
    assert status == 202
    r2 = replicas[2]
    assert wait_for(lambda: not r2.stats()["open_sessions"], timeout=20)
    gone = [s for s, r in bound.items() if r == "r2"]
    kept = [s for s, r in bound.items() if r != "r2"]
    for s in kept:                                                     # carried: same replica, no new open
        assert chat(gw.base, session=s)[1] == bound[s]
    for s in gone:
        assert chat(gw.base, session=s)[1] in ("r0", "r1")
    assert [c for c, _ in calls(r2)] == ["open"] * len(gone) + ["close"] * len(gone)
    opens = [c for m in replicas[:2] for c, _ in calls(m)]
    assert opens.count("open") == len(kept) + len(gone) and "close" not in opens
    # counted into the new generation's totals, which /metrics shows once the old one is retired
    assert wait_for(lambda: metric_value(metrics_text(gw), 'fastinfer_session_repins_total{deployment="m"}')
                    == len(gone))


def test_a_full_table_evicts_the_least_recently_used_session_and_closes_its_backend_session(
        start_gateway, replicas):
    """``server.max_sessions = 1`` is one stripe of 64 bindings, where the victim is exactly the
    least recently used: the 65th session evicts it (counted), is served, and only the evicted
    session's backend session is closed."""
    gw = start_gateway(config(replicas, server="max_sessions = 1"))
    bound = {f"e{i}": chat(gw.base, session=f"e{i}") for i in range(64)}
    assert all(status == 200 for status, _, _ in bound.values())
    assert chat(gw.base, session="e0")[1] == bound["e0"][1]           # e0 used again: e1 is now the oldest
    status, _, _ = chat(gw.base, session="e64")
    assert status == 200                                               # a full table never refuses
    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_session_evictions_total{deployment="m"}') == 1
    assert metric_value(text, "fastinfer_session_bindings") == 64
    evicted = session_key("", "m", "e1").hex()
    closes = lambda: [(m, sid) for m in replicas for call, sid in calls(m) if call == "close"]   # noqa: E731
    assert wait_for(lambda: closes() != [])
    assert closes() == [(mock_of(replicas, bound["e1"][1]), evicted)]
    assert wait_for(lambda: gauge(gw) == 64)
    # e0 kept its binding and its backend session; e1 comes back as a new session
    opens = sum(len(calls(m)) for m in replicas)
    assert chat(gw.base, session="e0")[1] == bound["e0"][1]
    assert sum(len(calls(m)) for m in replicas) == opens
    assert chat(gw.base, session="e1")[0] == 200
    assert sum(calls(m).count(("open", evicted)) for m in replicas) == 2
    assert metric_value(metrics_text(gw), 'fastinfer_session_evictions_total{deployment="m"}') == 2


def test_a_worker_killed_while_opening_leaves_no_session_stuck(start_gateway, replicas):
    """The worker opening a session's backend session is killed in the call: the session's next
    request waits out what a call may take, takes the state over and opens it afresh."""
    gw = start_gateway(replicas_config(replicas, "sticky", deployment=SESSIONS % 300 + """
        timeouts = { connect_s = 0.5, first_byte_s = 3 }"""))
    for mock in replicas:
        mock.control(open_session_latency_ms=60_000)
    opener = threading.Thread(target=lambda: _ignore_os_errors(chat, gw.base, session="stuck"))
    opener.start()
    assert wait_for(lambda: sum(len(calls(m)) for m in replicas) == 1)
    workers = children_of(gw.pid)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)     # whichever worker was opening dies in the call
    opener.join(10)
    assert wait_for(lambda: len(set(children_of(gw.pid)) - set(workers)) >= 2, timeout=10)
    for mock in replicas:
        mock.control(open_session_latency_ms=0)
    (mock,) = [m for m in replicas if calls(m)]
    status, replica, _ = chat(gw.base, session="stuck")
    assert status == 200 and mock_of(replicas, replica) is mock      # the binding survived, on its replica
    sid = session_key("", "m", "stuck").hex()
    assert calls(mock) == [("open", sid), ("open", sid)]
    assert generations(mock)[-1]["body"]["session_params"] == {"id": sid}
    assert chat(gw.base, session="stuck")[0] == 200                  # open now: no third open
    assert calls(mock) == [("open", sid), ("open", sid)]
    assert "its worker is gone" in gw.stderr_when_stopped()


def _ignore_os_errors(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except OSError:
        pass    # its worker is killed under it, as intended
