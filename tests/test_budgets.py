"""Budgets and the state that outlives a restart: spend per key per UTC period, kept under
``server.state_dir`` (SQLite, saved by one worker about every second and by the supervisor at
the end of a drain), and the lock that keeps two servers off one directory."""
from __future__ import annotations

import datetime as dt
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time

from procs import http_json, wait_for, write_config
from test_gateway_keys import ADMIN, keys_config

KEY = "sk-budget-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# the mock counts 5 prompt words and answers 20 tokens: 25 tokens at $10,000 per million = $0.25
PRICE = "{ input_per_mtok = 10000.0, output_per_mtok = 10000.0 }"


def config(upstream_base: str, state_dir, budget: str = '{ usd = 0.6, period = "day" }', **key) -> str:
    extra = "\n".join(f"{k} = {v}" for k, v in key.items())
    server = f'state_dir = "{state_dir}"' if state_dir is not None else ""
    return keys_config(upstream_base, f"""
        [[keys]]
        name = "team"
        key = "{KEY}"
        budget = {budget}
        {extra}
    """, price=PRICE).replace("[server]\n", f"[server]\n{server}\n", 1)


def chat(gw):
    return http_json("POST", gw.base + "/v1/chat/completions",
                     {"model": "m", "messages": [{"role": "user", "content": "a b c d e"}]},
                     headers={"connection": "close", **AUTH}, timeout=30)


def spend_usd(gw) -> float:
    keys = http_json("GET", gw.base + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"})[2]["keys"]
    return keys[0]["spend_usd"]


def test_a_budget_stops_spend_and_survives_a_restart(start_gateway, mock_upstream, workdir):
    mock_upstream.control(tokens=20)
    state = workdir / "state"
    gw = start_gateway(config(mock_upstream.base, state))
    assert [chat(gw)[0] for _ in range(3)] == [200, 200, 200]    # $0, $0.25, $0.50 spent before each
    status, headers, body = chat(gw)
    assert status == 429 and body["error"]["code"] == "budget_exceeded"
    now = time.time()
    midnight = dt.datetime.fromtimestamp(now, dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    until_midnight = midnight.timestamp() + 86400 - now
    assert abs(int(headers["retry-after"]) - until_midnight) <= 2    # the day's end, UTC
    assert mock_upstream.stats()["requests"] == 3
    assert spend_usd(gw) == 0.75
    gw.stop()                                          # the drain's end saves the final state
    again = start_gateway(config(mock_upstream.base, state))
    assert spend_usd(again) == 0.75
    status, _, body = chat(again)
    assert status == 429 and body["error"]["code"] == "budget_exceeded"
    assert mock_upstream.stats()["requests"] == 3


def test_a_total_budget_has_no_retry_after(start_gateway, mock_upstream):
    mock_upstream.control(tokens=20)
    gw = start_gateway(config(mock_upstream.base, None, budget='{ usd = 0.2, period = "total" }'))
    assert chat(gw)[0] == 200
    status, headers, body = chat(gw)
    assert status == 429 and body["error"]["code"] == "budget_exceeded"
    assert "retry-after" not in {k.lower() for k in headers}
    assert "does not reset" in body["error"]["message"]


def saved_spend(state) -> int | None:
    db = state / "state.sqlite3"
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT micro_usd FROM spend WHERE key = 'team'").fetchone()
    return row[0] if row else None


def test_state_is_saved_while_serving_so_a_killed_server_keeps_it(start_gateway, mock_upstream, workdir):
    mock_upstream.control(tokens=20)
    state = workdir / "state"
    gw = start_gateway(config(mock_upstream.base, state, rpm=1))
    assert chat(gw)[0] == 200
    assert wait_for(lambda: saved_spend(state) == 250_000)      # a worker saved it, about a second later
    os.killpg(gw.proc.pid, signal.SIGKILL)                      # no drain, no final save
    gw.proc.wait(10)
    killed_at = time.monotonic()
    again = start_gateway(config(mock_upstream.base, state, rpm=1))
    assert spend_usd(again) == 0.25
    status, _, body = chat(again)
    # the key's one request a minute was used before the kill; the bucket refilled while the server
    # was down, but not a whole request unless a minute went by
    if time.monotonic() - killed_at < 60:
        assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"


def test_two_servers_cannot_share_a_state_dir(start_gateway, mock_upstream, workdir):
    state = workdir / "state"
    first = start_gateway(config(mock_upstream.base, state))
    path = write_config(workdir, config(mock_upstream.base, state))
    out = subprocess.run([sys.executable, "-m", "fastinfer", "serve", "--config", str(path), "--port", "0"],
                         capture_output=True, text=True, cwd=workdir, timeout=60)
    assert out.returncode == 2
    assert f"server.state_dir {state} is in use by another fastinfer (pid {first.pid})" in out.stderr
    assert chat(first)[0] == 200                           # the first one is untouched
    first.stop()
    start_gateway(config(mock_upstream.base, state))          # free again once it has stopped


def test_spend_is_counted_per_key_in_metrics(start_gateway, mock_upstream):
    mock_upstream.control(tokens=20)
    gw = start_gateway(config(mock_upstream.base, None, budget='{ usd = 100.0, period = "month" }'))
    for _ in range(2):
        assert chat(gw)[0] == 200
    import urllib.request
    with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'fastinfer_key_cost_usd_total{key="team"} 0.5' in text
    budget = http_json("GET", gw.base + "/admin/keys", headers={"Authorization": f"Bearer {ADMIN}"})[2][
        "keys"][0]["budget"]
    assert budget["usd"] == 100.0 and budget["period"] == "month"
    assert math.isclose(budget["spent_usd"], 0.5) and math.isclose(budget["remaining_usd"], 99.5)
    first_of_next_month = dt.datetime.fromtimestamp(budget["resets_at"], dt.timezone.utc)
    assert (first_of_next_month.day, first_of_next_month.hour) == (1, 0)
