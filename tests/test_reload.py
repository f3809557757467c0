"""Config reload: a new generation of workers takes over without dropping a request."""
from __future__ import annotations

import os
import signal

import openai

from conftest import upstream_config
from procs import http_json, wait_for

ADMIN = {"Authorization": "Bearer adm"}


def with_admin(text: str) -> str:
    return text.replace("drain_grace_s = 10", 'drain_grace_s = 10\nadmin_key = { value = "adm" }')


def models(gw) -> list[str]:
    return [m["id"] for m in http_json("GET", gw.base + "/v1/models", headers={"connection": "close"})[2]["data"]]


def test_reload_adds_a_deployment_and_finishes_streams_in_flight(start_gateway, mock_upstream, workdir):
    base = with_admin(upstream_config(mock_upstream.base))
    gw = start_gateway(base)
    config_path = gw.args[gw.args.index("--config") + 1]
    client = openai.OpenAI(base_url=gw.base + "/v1", api_key="x", max_retries=0, timeout=20)
    assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}]).choices
    mock_upstream.control(tokens=10, itl_ms=100)
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "b"}], stream=True)
    next(iter(stream))
    with open(config_path, "a") as f:
        f.write('\n[[deployments]]\nname = "echo2"\nprovider = "mock"\n')
    status, _, body = http_json("POST", gw.base + "/admin/reload", b"", headers=ADMIN)
    assert status == 202
    rest = list(stream)  # the old generation drains: this stream completes
    assert rest[-1].choices[0].finish_reason == "stop"
    assert wait_for(lambda: "echo2" in models(gw) and all("echo2" in models(gw) for _ in range(4)))
    assert client.chat.completions.create(model="echo2", messages=[{"role": "user", "content": "c"}]).choices
    # counters carried over, including what the old generation counted while draining
    import urllib.request

    def counted() -> str:
        with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
            return resp.read().decode()
    assert wait_for(lambda: 'fastinfer_requests_total{deployment="m",code="200"} 2' in counted())
    assert 'fastinfer_session_rebuilds_total{deployment="m",cause="reload"} 1' in counted()


def test_a_bad_config_is_refused_and_the_old_one_keeps_serving(start_gateway, mock_upstream):
    gw = start_gateway(with_admin(upstream_config(mock_upstream.base)))
    config_path = gw.args[gw.args.index("--config") + 1]
    with open(config_path, "a") as f:
        f.write('\n[[deployments]]\nname = "broken"\nprovider = "mock"\nmax_concurrency = -4\n')
    status, _, body = http_json("POST", gw.base + "/admin/reload", b"", headers=ADMIN)
    assert status == 400
    assert "deployments[1].max_concurrency" in body["error"]["message"]
    # SIGHUP with the same bad file: the supervisor refuses too and keeps its workers
    os.kill(gw.pid, signal.SIGHUP)
    assert wait_for(lambda: "reload refused" in gw.stderr())
    assert models(gw) == ["m"]
    assert http_json("POST", gw.base + "/v1/chat/completions",
                     {"model": "m", "messages": [{"role": "user", "content": "x"}]})[0] == 200


def test_a_key_the_file_cannot_give_is_refused_by_the_admin_reload_as_by_the_supervisor(start_gateway, mock_upstream):
    """The admin API checks what the supervisor will: a gateway key whose source gives nothing is a
    400 there (not a 202 for a reload the supervisor then refuses)."""
    gw = start_gateway(with_admin(upstream_config(mock_upstream.base)))
    config_path = gw.args[gw.args.index("--config") + 1]
    with open(config_path, "a") as f:
        f.write('\n[[keys]]\nname = "team"\nkey = { env = "FASTINFER_TEST_UNSET_KEY_VAR" }\n')
    status, _, body = http_json("POST", gw.base + "/admin/reload", b"", headers=ADMIN)
    assert status == 400, body
    assert "keys[0].key" in body["error"]["message"] and "FASTINFER_TEST_UNSET_KEY_VAR" in body["error"]["message"]
    assert http_json("POST", gw.base + "/v1/chat/completions",
                     {"model": "m", "messages": [{"role": "user", "content": "x"}]})[0] == 200
