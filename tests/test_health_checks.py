"""Active health checks: one prober per host, a stopped replica leaves and a restarted one rejoins.

2 workers, 3 real mock replicas of their own (one of them is killed and restarted on its
port). The prober runs in whichever worker holds the host's lease, so the replicas see one
probe per interval, not one per worker.
"""
from __future__ import annotations

import time

from procs import metric_value, metrics_text, start_mock, wait_for
from replicas import admin_state, chat, replicas_config

INTERVAL_S = 1.0
HEALTH = f"health_check = {{ path = \"/health\", interval_s = {INTERVAL_S}, timeout_s = 0.5, " \
         "unhealthy_after = 2, healthy_after = 1 }"


def healthy(gw, replica: str) -> float:
    return metric_value(metrics_text(gw), f'fastinfer_replica_healthy{{deployment="m",replica="{replica}"}}')


def test_a_stopped_replica_leaves_and_rejoins_within_three_intervals(start_gateway, workdir):
    mocks = [start_mock(workdir) for _ in range(3)]
    try:
        gw = start_gateway(replicas_config(mocks, "least_loaded", deployment=HEALTH))
        assert all(healthy(gw, r) == 1 for r in ("r0", "r1", "r2"))
        # one prober for the host: about one probe per interval per replica, not one per worker
        for m in mocks:
            m.reset()
        started = time.monotonic()
        time.sleep(4 * INTERVAL_S)
        window = time.monotonic() - started
        for m in mocks:
            assert 1 <= m.stats()["health_checks"] <= window / INTERVAL_S + 1

        port = mocks[1].port
        mocks[1].kill()
        stopped = time.monotonic()
        assert wait_for(lambda: healthy(gw, "r1") == 0, timeout=10)
        left_after = time.monotonic() - stopped
        assert left_after <= 3 * INTERVAL_S, left_after
        replica = admin_state(gw)["deployments"][0]["replicas"][1]
        assert replica["health"] == {"checked": True, "healthy": False} and replica["healthy"] is False
        assert replica["circuit"]["state"] == "closed"        # the active view, not the passive one
        answers = [chat(gw.base) for _ in range(6)]
        assert all(status == 200 for status, _, _ in answers)
        assert {r for _, r, _ in answers} == {"r0", "r2"}       # no traffic while unhealthy

        mocks[1] = start_mock(workdir, "--port", str(port))
        restarted = time.monotonic()
        assert wait_for(lambda: healthy(gw, "r1") == 1, timeout=10)
        rejoined_after = time.monotonic() - restarted
        assert rejoined_after <= 3 * INTERVAL_S, rejoined_after
        assert "r1" in {chat(gw.base)[1] for _ in range(3)}     # back in the rotation
        text = gw.stderr_when_stopped()
        assert "replica m/r1 is unhealthy" in text and "replica m/r1 is healthy again" in text
        assert text.count("replica m/r1 is unhealthy") == 1    # one prober noticed it, once
    finally:
        for m in mocks:
            m.kill()


def test_an_unhealthy_replica_sheds_its_sticky_sessions(start_gateway, workdir):
    mocks = [start_mock(workdir) for _ in range(3)]
    try:
        gw = start_gateway(replicas_config(mocks, "sticky", deployment=HEALTH))
        bound = {s: chat(gw.base, session=s)[1] for s in ("h-1", "h-2", "h-3")}
        victim = bound["h-1"]
        mocks[int(victim[1])].control(health_status=503)
        assert wait_for(lambda: healthy(gw, victim) == 0, timeout=10)
        for s, replica in bound.items():
            now = chat(gw.base, session=s)[1]
            assert now != victim and (replica == victim or now == replica)
        moved = sum(1 for r in bound.values() if r == victim)
        assert metric_value(metrics_text(gw), 'fastinfer_session_repins_total{deployment="m"}') == moved
    finally:
        for m in mocks:
            m.kill()
