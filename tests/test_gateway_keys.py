"""Gateway keys end to end: 2 workers, the official SDKs, a mock upstream that records what it got.

401 for a missing, malformed or unknown key and 403 for a model outside the key's globs, in each
API's shape, raised by the SDKs as they would be by the real providers; the key taken from any of
its three headers, never forwarded, never shown; /v1/models filtered; priorities; config errors.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import textwrap
import threading

import anthropic
import openai
import pytest

from conftest import upstream_config
from procs import http_json, metric_value, metrics_text, wait_for, write_config

KEY_A, KEY_B = "sk-gw-team-a-4f9c1e", "sk-gw-team-b-77d2aa"
ADMIN = "admin-secret-for-tests"


def keys_config(upstream_base: str, keys: str = "", **deployment) -> str:
    """conftest's one-deployment config (``m``) with an admin key, ``keys`` and a second deployment."""
    config = textwrap.dedent(upstream_config(upstream_base, **deployment))
    config = config.replace("[server]\n", f'[server]\nadmin_key = "{ADMIN}"\n', 1)
    config = config.replace("[[deployments]]", textwrap.dedent(keys) + "\n[[deployments]]", 1)
    return config + textwrap.dedent(f"""
        [[deployments]]
        name = "claude-mock"
        provider = "anthropic"
        model = "claude-mock"
        [[deployments.replicas]]
        base_url = "{upstream_base}/v1"
        credential = {{ value = "sk-ant-replica" }}
    """)


TWO_KEYS = f"""
    [[keys]]
    name = "team-a"
    key = {{ value = "{KEY_A}" }}
    models = ["m"]
    priority = "background"
    max_priority = "high"

    [[keys]]
    name = "team-b"
    key_sha256 = "{hashlib.sha256(KEY_B.encode()).hexdigest()}"
"""
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def gateway(start_gateway, mock_upstream):
    return start_gateway(keys_config(mock_upstream.base, TWO_KEYS))


def chat(gw, headers: dict, model: str = "m", path: str = "/v1/chat/completions", **fields):
    body = {"model": model, "messages": MESSAGES, "max_tokens": 5, **fields}
    return http_json("POST", gw.base + path, body, headers=headers)


@pytest.mark.parametrize("headers, says", [
    ({}, "Missing API key"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "Malformed Authorization header"),
    ({"Authorization": "Bearer"}, "Malformed Authorization header"),
    ({"Authorization": "Bearer sk-not-a-key"}, "Invalid API key"),
    ({"x-api-key": KEY_A + "x"}, "Invalid API key"),
])
def test_no_valid_key_is_401_in_the_callers_shape(gateway, mock_upstream, headers, says):
    status, _, body = chat(gateway, headers)
    assert status == 401
    assert body["error"]["type"] == "authentication_error" and says in body["error"]["message"]
    status, _, body = chat(gateway, headers, path="/v1/messages")
    assert status == 401
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert says in body["error"]["message"]
    assert mock_upstream.stats()["requests"] == 0


@pytest.mark.parametrize("value", [b"Bearer sk-gw-\xff\xfe", b"Bearer " + KEY_A.encode() + b"\xc3"])
def test_a_key_that_is_not_utf8_is_401_and_the_gateway_keeps_serving(gateway, mock_upstream, value):
    """Bytes that are not UTF-8 (a Latin-1 client, garbage) are no configured key: a 401 in the API's
    shape, not an error of the gateway's own."""
    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (value, len(body), body))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert json.loads(text)["error"]["message"] == "Invalid API key."
    assert chat(gateway, {"Authorization": f"Bearer {KEY_A}"})[0] == 200
    assert mock_upstream.stats()["requests"] == 1


def test_one_connection_is_answered_for_each_key_it_presents(start_gateway, mock_upstream):
    """A keep-alive connection keeps the key it presented (its next requests skip the hash): every
    request is still answered as its own key says, a wrong key after a right one included. (One
    worker: with two, the balance may end the connection to move it. Each request in one write: a
    401 given before its body came would end the connection, as it must.)"""
    gateway = start_gateway(keys_config(mock_upstream.base, TWO_KEYS), workers=1)
    body = json.dumps({"model": "m", "messages": MESSAGES, "max_tokens": 5}).encode()
    answers = []
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        for fields in (f"Authorization: Bearer {KEY_A}", f"Authorization: Bearer {KEY_A}",
                       f"Authorization: Bearer {KEY_A[:-1]}0",      # its length, not it
                       f"Authorization: Bearer {KEY_A[:-1]}", f"x-api-key: {KEY_A}",
                       f"Authorization: Bearer {KEY_B}", f"Authorization: Bearer {KEY_A}x", "x-no-key: 1"):
            sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{fields}\r\nContent-Type: "
                         f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            resp = http.client.HTTPResponse(sock)
            resp.begin()
            resp.read()
            answers.append(resp.status)
            assert resp.getheader("Connection") != "close", (len(answers), resp.status)   # one connection
    assert answers == [200, 200, 401, 401, 200, 200, 401, 401]
    assert mock_upstream.stats()["requests"] == 4
    text = metrics_text(gateway)
    assert [metric_value(text, f'fastinfer_key_requests_total{{key="{key}",code="200"}}')
            for key in ("team-a", "team-b")] == [3, 1]


def test_the_key_is_taken_from_any_of_its_headers_and_never_forwarded(gateway, mock_upstream):
    for headers in ({"Authorization": f"Bearer {KEY_A}"}, {"x-api-key": KEY_A}, {"api-key": KEY_B}):
        status, _, body = chat(gateway, headers)
        assert status == 200, body
    received = mock_upstream.received()
    assert len(received) == 3
    for entry in received:
        seen = json.dumps(entry)
        assert KEY_A not in seen and KEY_B not in seen
        assert entry["headers"]["authorization"] == "Bearer sk-replica-secret"


def test_a_model_outside_the_keys_globs_is_403(gateway, mock_upstream):
    status, _, body = chat(gateway, {"Authorization": f"Bearer {KEY_A}"}, model="claude-mock")
    assert status == 403 and body["error"]["code"] == "model_not_allowed"
    status, _, body = chat(gateway, {"x-api-key": KEY_A}, model="claude-mock", path="/v1/messages")
    assert status == 403 and body["error"]["type"] == "permission_error"
    assert chat(gateway, {"x-api-key": KEY_B}, model="claude-mock", path="/v1/messages")[0] == 200
    status, _, body = chat(gateway, {"x-api-key": KEY_A}, model="nope")
    assert status == 403                                   # outside the globs: not even its existence is told
    assert chat(gateway, {"x-api-key": KEY_B}, model="nope")[0] == 404
    assert mock_upstream.stats()["requests"] == 1


def test_the_sdks_raise_authentication_and_permission_errors(gateway):
    bad = openai.OpenAI(base_url=gateway.base + "/v1", api_key="sk-wrong", max_retries=0, timeout=20)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    team_a = openai.OpenAI(base_url=gateway.base + "/v1", api_key=KEY_A, max_retries=0, timeout=20)
    with pytest.raises(openai.PermissionDeniedError):
        team_a.chat.completions.create(model="claude-mock", messages=MESSAGES)
    assert team_a.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
    bad_ant = anthropic.Anthropic(base_url=gateway.base, api_key="sk-wrong", max_retries=0, timeout=20)
    with pytest.raises(anthropic.AuthenticationError):
        bad_ant.messages.create(model="m", max_tokens=5, messages=MESSAGES)
    ant_a = anthropic.Anthropic(base_url=gateway.base, api_key=KEY_A, max_retries=0, timeout=20)
    with pytest.raises(anthropic.PermissionDeniedError):
        ant_a.messages.create(model="claude-mock", max_tokens=5, messages=MESSAGES)
    assert ant_a.messages.create(model="m", max_tokens=5, messages=MESSAGES).content


def test_models_lists_only_what_the_key_may_use(gateway):
    listed = lambda key: [m["id"] for m in http_json(  # noqa: E731
        "GET", gateway.base + "/v1/models", headers={"Authorization": f"Bearer {key}"})[2]["data"]]
    assert listed(KEY_A) == ["m"]
    assert listed(KEY_B) == ["m", "claude-mock"]
    assert http_json("GET", gateway.base + "/v1/models")[0] == 401


def test_the_keys_priority_is_the_default_and_its_ceiling_lowers_what_is_asked(start_gateway, mock_upstream):
    gw = start_gateway(keys_config(mock_upstream.base, TWO_KEYS, max_concurrency=1))
    mock_upstream.script([{"hold": "slot"}])
    threads = [threading.Thread(target=chat, args=(gw, {"x-api-key": KEY_B}))]
    threads[0].start()
    assert mock_upstream.wait_in_flight(1)

    def queued() -> dict:
        state = http_json("GET", gw.base + "/admin/state", headers={"Authorization": f"Bearer {ADMIN}"})[2]
        return next(d for d in state["deployments"] if d["name"] == "m")["queue_by_priority"]

    for headers, fields in (({"x-api-key": KEY_A}, {}),                      # none asked: the key's background
                            ({"x-api-key": KEY_A, "x-priority": "critical"}, {}),    # lowered to its ceiling, high
                            ({"x-api-key": KEY_B, "x-priority": "critical"}, {}),    # no ceiling
                            ({"x-api-key": KEY_A}, {"priority": "critical"}),        # the body's: lowered too
                            ({"x-api-key": KEY_A}, {"priority": "normal"})):         # within the ceiling
        threads.append(threading.Thread(target=chat, args=(gw, headers), kwargs=fields))
        threads[-1].start()
    assert wait_for(lambda: queued() == {"critical": 1, "high": 2, "normal": 1, "background": 1})
    mock_upstream.release("slot")
    for t in threads:
        t.join(30)


def test_keys_appear_by_name_only(start_gateway, mock_upstream, workdir):
    gw = start_gateway(keys_config(mock_upstream.base, TWO_KEYS))
    assert chat(gw, {"x-api-key": KEY_A})[0] == 200
    assert chat(gw, {"x-api-key": "sk-wrong"})[0] == 401
    admin = {"Authorization": f"Bearer {ADMIN}"}
    shown = [http_json("GET", gw.base + path, headers=admin)[2] for path in ("/admin/keys", "/admin/state",
                                                                             "/admin/stats")]
    keys = shown[0]["keys"]
    assert [k["name"] for k in keys] == ["team-a", "team-b"]
    assert keys[0]["models"] == ["m"] and keys[1]["models"] == ["*"]
    import urllib.request
    with urllib.request.urlopen(gw.base + "/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'fastinfer_key_requests_total{key="team-a",code="200"} 1' in metrics
    config = write_config(workdir, keys_config(mock_upstream.base, TWO_KEYS))
    checked = subprocess.run([sys.executable, "-m", "fastinfer", "check-config", str(config)],
                             capture_output=True, text=True, cwd=workdir, timeout=60)
    assert "key team-a: from value:**** models=m limits=none" in checked.stdout
    everything = json.dumps(shown) + metrics + checked.stdout + checked.stderr + gw.stderr_when_stopped()
    for secret in (KEY_A, KEY_B, hashlib.sha256(KEY_A.encode()).hexdigest(),
                   hashlib.sha256(KEY_B.encode()).hexdigest()):
        assert secret not in everything


def test_keys_from_the_environment_and_files_are_read_at_start(start_gateway, mock_upstream, workdir):
    key_file = workdir / "team-b.key"
    key_file.write_text(KEY_B + "\n")
    gw = start_gateway(keys_config(mock_upstream.base, f"""
        [[keys]]
        name = "team-a"
        key = {{ env = "FI_TEST_GATEWAY_KEY" }}
        [[keys]]
        name = "team-b"
        key = {{ file = "{key_file}" }}
    """), env={"FI_TEST_GATEWAY_KEY": KEY_A})
    assert chat(gw, {"x-api-key": KEY_A})[0] == 200
    assert chat(gw, {"Authorization": f"Bearer {KEY_B}"})[0] == 200


def serve_refuses(workdir, text: str, env: dict | None = None) -> str:
    """Run ``serve`` on a bad config: it must exit 2 before listening; its stderr."""
    import os
    path = write_config(workdir, textwrap.dedent(text))
    out = subprocess.run([sys.executable, "-m", "fastinfer", "serve", "--config", str(path), "--port", "0"],
                         capture_output=True, text=True, cwd=workdir, timeout=60,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 2, out.stdout + out.stderr
    return out.stderr


@pytest.mark.parametrize("keys, problem", [
    ('[[keys]]\nname = "a"\nkey = "k1"\n[[keys]]\nname = "a"\nkey = "k2"',
     "keys[1].name: duplicate key name 'a'"),
    ('[[keys]]\nname = "a"\nkey_sha256 = "abc"', "keys[0].key_sha256: expected a 64-character hex SHA-256 digest"),
    ('[[keys]]\nname = "a"\nkey_sha256 = "' + "g" * 64 + '"',
     "keys[0].key_sha256: expected a 64-character hex SHA-256 digest"),
    ('[[keys]]\nname = "a"\nkey = "k"\nmodels = ["m", "gpt-*"]', "keys[0].models[1]: 'gpt-*' matches no deployment"),
    ('[[keys]]\nname = "a"', "keys[0]: exactly one of key (a secret source) or key_sha256 is required"),
    ('[[keys]]\nname = "a"\nkey = "k"\nkey_sha256 = "' + "a" * 64 + '"',
     "keys[0]: exactly one of key (a secret source) or key_sha256 is required"),
    ('[[keys]]\nname = "a"\nkey = "k"\npriority = "critical"\nmax_priority = "normal"',
     "keys[0].priority: 'critical' is above max_priority 'normal'"),
    ('[[keys]]\nname = "a"\nkey = "k"\nbudget = { usd = 5, period = "year" }',
     "keys[0].budget.period: must be one of day, week, month, total"),
    ('[[keys]]\nname = "a"\nkey = "same"\n[[keys]]\nname = "b"\nkey = "same"',
     "keys[1].key: the same key as key 'a'"),
    ('[[keys]]\nname = "a"\nkey = { env = "FI_TEST_UNSET_GATEWAY_KEY" }',
     "keys[0].key: environment variable FI_TEST_UNSET_GATEWAY_KEY is not set"),
])
def test_a_bad_key_config_exits_2_naming_the_key(workdir, keys, problem):
    stderr = serve_refuses(workdir, keys + '\n[[deployments]]\nname = "m"\nprovider = "mock"\n')
    assert problem in stderr


def test_burst_without_rpm_is_refused(workdir):
    stderr = serve_refuses(workdir, '[[deployments]]\nname = "m"\nprovider = "mock"\nrate_limit = { burst = 5 }\n')
    assert "deployments[0].rate_limit.burst: needs rpm" in stderr


def test_a_key_may_use_a_deployment_by_its_alias(start_gateway, mock_upstream):
    """A key's globs name deployments; a client may still call one by an alias (listed for the key too),
    while an alias of a deployment outside the globs stays 403."""
    gw = start_gateway(keys_config(mock_upstream.base, TWO_KEYS, aliases='["m-alias"]')
                       .replace('model = "claude-mock"\n', 'model = "claude-mock"\naliases = ["claude-alias"]\n', 1))
    assert chat(gw, {"x-api-key": KEY_A}, model="m-alias")[0] == 200
    status, _, body = chat(gw, {"x-api-key": KEY_A}, model="claude-alias")
    assert status == 403 and body["error"]["code"] == "model_not_allowed"
    assert chat(gw, {"x-api-key": KEY_B}, model="claude-alias")[0] == 200    # the alias exists
    listed = [m["id"] for m in http_json("GET", gw.base + "/v1/models", headers={"x-api-key": KEY_A})[2]["data"]]
    assert listed == ["m", "m-alias"]
