"""Replica choice with the host's view of load, and sticky sessions: 2 workers, 3 real mock replicas.

Both workers decide with the shared segment's counts, and choosing a replica and
counting the request on it are one step, so concurrent requests from both workers
spread exactly. Sticky sessions bind on first use, stay on one replica across
workers, and move (once, counted) when their replica's circuit is forced open.
"""
from __future__ import annotations

import threading

from procs import http_json, in_parallel, metric_value, metrics_text, wait_for
from replicas import (ADMIN, NAMES, admin_state, chat, force_open, replicas, replicas_config, reset_circuit,
                      served, three_replicas)

__all__ = ["replicas", "three_replicas"]   # the fixtures, imported for pytest to find


def test_nine_slow_requests_from_two_workers_land_three_per_replica(start_gateway, replicas):
    for mock in replicas:
        mock.script([{"hold": "slow"}] * 9)       # whatever arrives stays until released
    gw = start_gateway(replicas_config(replicas, "least_loaded"))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(chat(gw.base))) for _ in range(9)]
    for t in threads:
        t.start()
    assert wait_for(lambda: sum(m.stats()["in_flight"] for m in replicas) == 9, timeout=20)
    assert [m.stats()["in_flight"] for m in replicas] == [3, 3, 3]
    text = metrics_text(gw)
    assert [metric_value(text, f'fastinfer_replica_in_flight{{deployment="m",replica="{r}"}}') for r in NAMES] \
        == [3, 3, 3]
    stats = http_json("GET", gw.base + "/admin/stats", headers=ADMIN)[2]
    assert [r["in_flight"] for r in stats["deployments"][0]["replicas"]] == [3, 3, 3]
    for mock in replicas:
        mock.release("slow")
    for t in threads:
        t.join(30)
    assert sorted(status for status, _, _ in results) == [200] * 9
    assert wait_for(lambda: all(metric_value(metrics_text(gw), f'fastinfer_replica_in_flight{{deployment="m",'
                                                                f'replica="{r}"}}') == 0 for r in NAMES))


def test_sequential_requests_rotate_and_weights_hold_host_wide(start_gateway, replicas):
    gw = start_gateway(replicas_config(replicas, "round_robin", weights=(1, 2, 3)))
    answers = [chat(gw.base) for _ in range(12)]
    assert all(status == 200 for status, _, _ in answers)
    assert served(replicas) == [2, 4, 6]
    gw2 = start_gateway(replicas_config(replicas, "least_loaded"))
    for mock in replicas:
        mock.reset()
    picked = [chat(gw2.base)[1] for _ in range(6)]     # idle replicas: ties rotate host-wide
    assert sorted(picked) == ["r0", "r0", "r1", "r1", "r2", "r2"]


def test_sessions_stay_on_one_replica_across_workers_and_move_when_its_circuit_opens(start_gateway, replicas):
    gw = start_gateway(replicas_config(replicas, "sticky", deployment="session = { affinity_ttl_s = 300 }"))
    sessions = [f"conversation-{i}" for i in range(8)]

    def five_turns(i):
        return [chat(gw.base, f"turn {turn}", session=sessions[i]) for turn in range(5)]

    runs = in_parallel(8, five_turns)
    bound = {}
    for session, run in zip(sessions, runs):
        assert [status for status, _, _ in run] == [200] * 5
        replicas_seen = {replica for _, replica, _ in run}
        assert len(replicas_seen) == 1, (session, replicas_seen)
        bound[session] = replicas_seen.pop()
    assert len(set(bound.values())) > 1               # first use binds least loaded: they spread
    text = metrics_text(gw)
    assert metric_value(text, "fastinfer_session_bindings") == 8
    assert metric_value(text, 'fastinfer_session_repins_total{deployment="m"}') == 0

    victim = bound[sessions[0]]
    moving = [s for s in sessions if bound[s] == victim]
    assert force_open(gw, victim)[0] == 200
    # the passive view (the breaker) shows like the active one: no traffic for it
    healthy = 'fastinfer_replica_healthy{deployment="m",replica="%s"}'
    assert metric_value(metrics_text(gw), healthy % victim) == 0
    assert admin_state(gw)["deployments"][0]["replicas"][NAMES.index(victim)]["healthy"] is False
    moved = {s: {chat(gw.base, "after", session=s)[1] for _ in range(3)} for s in sessions}
    for s in sessions:
        assert len(moved[s]) == 1
        if s in moving:
            assert moved[s] != {victim}               # re-pinned off the open circuit ...
        else:
            assert moved[s] == {bound[s]}             # ... and nobody else moved
    assert metric_value(metrics_text(gw), 'fastinfer_session_repins_total{deployment="m"}') == len(moving)
    # the circuit closes again: the moved sessions stay where they were re-pinned
    assert reset_circuit(gw, victim)[0] == 200
    assert metric_value(metrics_text(gw), healthy % victim) == 1
    for s in moving:
        assert {chat(gw.base, "back", session=s)[1]} == moved[s]
    assert metric_value(metrics_text(gw), 'fastinfer_session_repins_total{deployment="m"}') == len(moving)


def test_a_session_follows_a_retry_only_when_it_was_answered_elsewhere(start_gateway, replicas):
    """One failure of its replica does not make a session's replica unusable: the retry goes
    elsewhere on trial, and the session moves only if that replica answers."""
    retry = 'retry = { max_attempts = 2, base_ms = 1, max_ms = 2 }'
    gw = start_gateway(replicas_config(replicas, "sticky", deployment=f"session = {{ affinity_ttl_s = 300 }}\n{retry}"))
    status, home, _ = chat(gw.base, session="s1")
    assert status == 200
    # home fails once and so does every other replica: the request fails, the session stays home
    for mock in replicas:
        mock.script([{"status": 500}])
    status, _, _ = chat(gw.base, session="s1")
    assert status == 502
    assert [chat(gw.base, session="s1")[1] for _ in range(2)] == [home, home]
    # every replica answers again but home fails once: the retry answered elsewhere takes the session
    for mock in replicas:
        mock.reset()                                  # the one 500 left queued
    replicas[NAMES.index(home)].script([{"status": 500}])
    status, moved, _ = chat(gw.base, session="s1")
    assert status == 200 and moved != home
    assert [chat(gw.base, session="s1")[1] for _ in range(2)] == [moved, moved]
    assert metric_value(metrics_text(gw), 'fastinfer_session_repins_total{deployment="m"}') == 1


def test_a_request_without_a_session_goes_least_loaded_and_sessions_end_on_request(start_gateway, replicas):
    gw = start_gateway(replicas_config(replicas, "sticky"))
    assert sorted(chat(gw.base)[1] for _ in range(3)) == ["r0", "r1", "r2"]
    status, first, _ = chat(gw.base, session="s-1")
    assert status == 200
    assert metric_value(metrics_text(gw), "fastinfer_session_bindings") == 1
    # x-session-close ends the session after this request: the binding is gone
    assert chat(gw.base, session="s-1", close=True)[1] == first
    assert wait_for(lambda: metric_value(metrics_text(gw), "fastinfer_session_bindings") == 0)
    # DELETE /v1/sessions/{id} ends one now; an unknown one is 404
    chat(gw.base, session="s-2")
    status, _, body = http_json("DELETE", gw.base + "/v1/sessions/s-2")
    assert status == 200 and body == {"id": "s-2", "object": "session", "deleted": True, "deployments": ["m"]}
    assert metric_value(metrics_text(gw), "fastinfer_session_bindings") == 0
    status, _, body = http_json("DELETE", gw.base + "/v1/sessions/s-2")
    assert status == 404 and body["error"]["code"] == "session_not_found"


def test_bad_session_ids_are_refused_in_the_callers_shape(start_gateway, replicas):
    gw = start_gateway(replicas_config(replicas, "sticky"))
    status, _, body = chat(gw.base, session="x" * 257)
    assert status == 400 and body["error"]["param"] == "x-session-id"
    assert "longer than 256 bytes" in body["error"]["message"]
    assert chat(gw.base, session="x" * 256)[0] == 200                 # 256 bytes is the limit, included
    utf8_e = "é".encode().decode("latin-1")                          # urllib sends headers as latin-1
    status, _, body = chat(gw.base, session=utf8_e * 129)            # 129 characters, 258 bytes of UTF-8
    assert status == 400 and "longer than 256 bytes" in body["error"]["message"]
    status, _, body = chat(gw.base, session="tab\there")
    assert status == 400 and "control characters" in body["error"]["message"]
    # any other control byte is no valid HTTP header: the parser's 400 (documented), the connection closed
    import socket
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-session-id: a\x01b\r\n"
                     b"Content-Length: 2\r\n\r\n{}")
        answer = b""
        while chunk := sock.recv(4096):      # read to the close
            answer += chunk
    assert answer.split(b" ", 2)[1] == b"400" and b"Malformed HTTP request" in answer
    status, _, body = http_json("POST", gw.base + "/v1/messages",
                                {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
                                headers={"x-session-id": "y" * 300})
    assert status == 400 and body["type"] == "error" and "x-session-id" in body["error"]["message"]
    status, _, body = chat(gw.base, session="ok", headers={"x-session-close": "maybe"})
    assert status == 400 and body["error"]["param"] == "x-session-close"
    status, _, body = http_json("DELETE", gw.base + "/v1/sessions/" + "z" * 300)
    assert status == 400 and body["error"]["param"] == "session_id"
    assert sum(served(replicas)) == 1                                 # only the good one went upstream
    assert admin_state(gw)["sessions"]["bindings"] == 1
