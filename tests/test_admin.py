"""The admin API: authentication, /admin/state, operator circuit control, readiness."""
from __future__ import annotations

import json

import pytest

from conftest import upstream_config
from procs import http_json

ADMIN = {"Authorization": "Bearer adm-secret-key"}


def config_with_admin(upstream_base: str) -> str:
    return upstream_config(upstream_base).replace(
        "drain_grace_s = 10", 'drain_grace_s = 10\nadmin_key = { value = "adm-secret-key" }')


@pytest.fixture
def gw(start_gateway, mock_upstream):
    return start_gateway(config_with_admin(mock_upstream.base))


def chat(base):
    return http_json("POST", base + "/v1/chat/completions",
                     {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                     headers={"connection": "close"})


def test_admin_needs_the_key(gw):
    assert http_json("GET", gw.base + "/admin/state")[0] == 401
    status, headers, body = http_json("GET", gw.base + "/admin/state", headers={"Authorization": "Bearer nope"})
    assert status == 401 and body["error"]["code"] == "invalid_admin_key"
    assert headers["Cache-Control"] == "no-store"      # an admin answer, error or not, is never cached


def test_admin_disabled_when_the_configured_key_cannot_be_read(start_gateway, mock_upstream):
    config = upstream_config(mock_upstream.base).replace(
        "drain_grace_s = 10", 'drain_grace_s = 10\nadmin_key = { env = "FI_TEST_UNSET_ADMIN_KEY" }')
    gw = start_gateway(config, env={"FI_TEST_UNSET_ADMIN_KEY": ""})
    status, _, body = http_json("GET", gw.base + "/admin/state", headers=ADMIN)
    assert status == 404 and body["error"]["code"] == "admin_disabled"
    assert "token=" not in gw.stdout()      # a configured key is never replaced by a one-time token


def test_state_shows_deployments_and_circuits_without_secrets(gw):
    assert chat(gw.base)[0] == 200
    status, _, state = http_json("GET", gw.base + "/admin/state", headers=ADMIN)
    assert status == 200
    (dep,) = state["deployments"]
    assert dep["name"] == "m" and dep["in_flight"] == 0 and dep["queue_depth"] == 0
    (replica,) = dep["replicas"]
    assert replica["circuit"]["state"] == "closed"
    assert replica["credential"] == "value:****"
    text = json.dumps(state)
    assert "sk-replica-secret" not in text and "adm-secret-key" not in text


def test_force_open_and_reset_hold_host_wide(gw, mock_upstream):
    status, _, body = http_json("POST", gw.base + "/admin/circuits/m/r0",
                                {"action": "force_open", "duration_s": 60}, headers=ADMIN)
    assert status == 200 and body["state"] == "open"
    before = mock_upstream.stats()["requests"]
    for _ in range(4):  # connection: close -> spread over both workers
        status, headers, body = chat(gw.base)
        assert status == 503
        assert int(headers.get("retry-after") or headers["Retry-After"]) >= 50
    assert mock_upstream.stats()["requests"] == before
    assert http_json("GET", gw.base + "/readyz")[0] == 503
    assert http_json("POST", gw.base + "/admin/circuits/m/r0", {"action": "reset"}, headers=ADMIN)[0] == 200
    assert chat(gw.base)[0] == 200
    assert http_json("GET", gw.base + "/readyz")[0] == 200


@pytest.mark.parametrize("path, body, status", [
    ("/admin/circuits/m/r9", {"action": "reset"}, 404),
    ("/admin/circuits/nope/r0", {"action": "reset"}, 404),
    ("/admin/circuits/m/r0", {"action": "explode"}, 400),
    ("/admin/circuits/m/r0", {"action": "force_open", "duration_s": -1}, 400),
])
def test_bad_admin_requests(gw, path, body, status):
    answered, headers, _ = http_json("POST", gw.base + path, body, headers=ADMIN)
    assert answered == status and headers["Cache-Control"] == "no-store"
