"""The access log and the log format, from a real gateway (2 workers) in front of the mock upstream.

Every answer leaves one line — 200s, streams (when they end), 4xx, a 502 after retries, a 499 when
the client left, the middleware's own errors — parsed here and checked field by field; the text
format, ``access_log = false``, JSON for every other line too, and the rate limit on the lines a
flood of bad requests can cause.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import time
from datetime import datetime, timezone

import pytest

from procs import http_json, metric_value, metrics_text, raw_post, wait_for
from test_admin_access import get_from

CLIENT_KEY = "sk-client-own-key-0123456789"
REPLICA_KEY = "sk-replica-secret-abcdef"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "four words of prompt"}]}
FIELDS = ["ts", "level", "logger", "pid", "request_id", "key", "deployment", "fallback", "replica", "status", "attempts",
          "stream", "duration_ms", "ttft_ms", "overhead_ms", "prompt_tokens", "completion_tokens", "cost_usd",
          "error", "method", "path"]


def config(base: str, logging: str) -> str:
    return f"""
        [server]
        drain_grace_s = 5

        [logging]
        {logging}

        [[deployments]]
        name = "m"
        provider = "openai_compatible"
        model = "mock-model"
        price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}
        retry = {{ max_attempts = 3, base_ms = 1, max_ms = 2 }}
        circuit_breaker = {{ failure_threshold = 1000 }}

        [[deployments.replicas]]
        name = "a"
        base_url = "{base}/v1"
        credential = {{ value = "{REPLICA_KEY}" }}

        [[deployments.replicas]]
        name = "b"
        base_url = "{base}/v1"
        credential = {{ value = "{REPLICA_KEY}" }}

        [[deployments]]
        name = "hosted"
        provider = "openai"

        [[deployments.replicas]]
        base_url = "{base}/v1"

        [[deployments]]
        name = "down"
        provider = "openai_compatible"
        model = "mock-model"
        retry = {{ max_attempts = 1 }}
        fallbacks = ["m"]

        [[deployments.replicas]]
        name = "gone"
        base_url = "http://127.0.0.1:9/v1"
    """


def access_lines(gw) -> dict[str, dict]:
    """The JSON access lines written so far, by request id (each id at most once)."""
    lines: dict[str, dict] = {}
    for line in gw.stderr().splitlines():
        if '"fastinfer.access"' in line:
            entry = json.loads(line)
            assert entry["request_id"] not in lines, f"two lines for {entry['request_id']}"
            lines[entry["request_id"]] = entry
    return lines


def line_of(gw, request_id: str) -> dict:
    entry = wait_for(lambda: access_lines(gw).get(request_id), timeout=10)
    assert entry, f"no access line for {request_id}:\n{gw.stderr()[-3000:]}"
    assert list(entry) == FIELDS
    return entry


def post(gw, body: dict, request_id: str, **headers):
    return http_json("POST", gw.base + "/v1/chat/completions", body,
                     headers={"x-request-id": request_id, "Authorization": f"Bearer {CLIENT_KEY}", **headers})


def assert_timing(entry: dict, started: float) -> None:
    ts = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    assert started - 1 <= ts <= time.time() + 1
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] > 0


@pytest.fixture(scope="module")
def json_gateway(upstream, tmp_path_factory):
    from procs import start_gateway_proc
    gw = start_gateway_proc(tmp_path_factory.mktemp("gw"), config(upstream.base, 'format = "json"'))
    yield gw
    gw.stop()


@pytest.fixture
def gw(json_gateway, upstream):
    upstream.reset()
    return json_gateway


def test_a_200_is_one_line_with_every_field(gw):
    started = time.time()
    status, headers, body = post(gw, CHAT, "al-ok")
    assert status == 200
    entry = line_of(gw, "al-ok")
    assert_timing(entry, started)
    usage = body["usage"]
    assert entry["level"] == "info" and entry["logger"] == "fastinfer.access" and isinstance(entry["pid"], int)
    assert entry["key"] is None          # no gateway keys configured: no key name
    assert entry["deployment"] == "m" and entry["replica"] == headers["x-fastinfer-replica"]
    assert entry["fallback"] is None
    assert entry["status"] == 200 and entry["attempts"] == 1 and entry["stream"] is False
    assert entry["ttft_ms"] is None
    assert 0 <= entry["overhead_ms"] <= entry["duration_ms"]
    assert entry["overhead_ms"] == pytest.approx(float(headers["x-fastinfer-overhead-ms"]), abs=0.002)
    assert entry["prompt_tokens"] == usage["prompt_tokens"] > 0
    assert entry["completion_tokens"] == usage["completion_tokens"] > 0
    assert entry["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6)
    assert entry["error"] is None and entry["method"] == "POST" and entry["path"] == "/v1/chat/completions"


def test_a_request_a_fallback_served_names_both_deployments(gw):
    """Counted under the deployment it asked for (as its metrics are), with the fallback that
    answered and that fallback's replica beside it."""
    def counts() -> tuple:
        text = metrics_text(gw)
        return tuple(metric_value(text, series) for series in (
            'fastinfer_requests_total{deployment="down",code="200"}', 'fastinfer_requests_total{deployment="m",code="200"}',
            'fastinfer_tokens_total{deployment="m",direction="output"}',
            'fastinfer_tokens_total{deployment="down",direction="output"}',
            'fastinfer_fallbacks_total{deployment="down",to="m"}'))
    before = counts()
    status, headers, body = post(gw, {**CHAT, "model": "down"}, "al-fallback")
    assert status == 200 and headers["x-fastinfer-deployment"] == "m"
    # the request under the deployment asked for; the tokens under the one that made them
    expected = [1, 0, body["usage"]["completion_tokens"], 0, 1]
    assert wait_for(lambda: [a - b for a, b in zip(counts(), before)] == expected, timeout=5), \
        [a - b for a, b in zip(counts(), before)]
    entry = line_of(gw, "al-fallback")
    assert (entry["deployment"], entry["fallback"]) == ("down", "m")
    assert entry["replica"] == headers["x-fastinfer-replica"] and entry["replica"] in ("a", "b")
    assert entry["attempts"] == 2 and entry["status"] == 200 and entry["error"] is None


def test_a_stream_is_logged_when_it_ends(gw, upstream):
    upstream.script([{"tokens": 6, "itl_ms": 40}])
    started = time.time()
    sock = raw_post(gw.port, {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    try:
        sock.settimeout(10)
        first = sock.recv(65536)
        assert b" 200 " in first.split(b"\r\n", 1)[0]
        request_id = re.search(rb"x-request-id: (\S+)", first, re.I).group(1).decode()
        # the head and the first chunk are out, the stream is not over: no line yet
        assert request_id not in access_lines(gw)
        received = first
        while not received.endswith(b"\r\n0\r\n\r\n"):     # the end of the answer, not only [DONE]
            data = sock.recv(65536)
            assert data, "the stream ended before its end"
            received += data
        assert b"[DONE]" in received
    finally:
        sock.close()
    entry = line_of(gw, request_id)
    assert_timing(entry, started)
    assert entry["status"] == 200 and entry["stream"] is True and entry["attempts"] == 1
    assert entry["replica"] in ("a", "b") and entry["error"] is None
    # six tokens 40 ms apart: the line covers the whole stream, the first byte came long before its end
    assert 0 < entry["ttft_ms"] < entry["duration_ms"] and entry["duration_ms"] >= 150
    assert entry["completion_tokens"] == 6 and entry["prompt_tokens"] > 0 and entry["cost_usd"] > 0


def test_a_stream_cut_by_the_upstream_is_a_200_with_its_error(gw, upstream):
    upstream.script([{"tokens": 8, "cut_after": 3}])
    sock = raw_post(gw.port, {**CHAT, "stream": True})
    try:
        sock.settimeout(10)
        received = b""
        while data := sock.recv(65536):
            received += data
            if received.endswith(b"0\r\n\r\n"):
                break
    finally:
        sock.close()
    request_id = re.search(rb"x-request-id: (\S+)", received, re.I).group(1).decode()
    entry = line_of(gw, request_id)
    assert entry["status"] == 200 and entry["stream"] is True
    assert "mid-stream" in entry["error"] or "before it was complete" in entry["error"]


def test_an_unknown_model_is_a_404_line(gw):
    status, _, _ = post(gw, {**CHAT, "model": "no-such-model"}, "al-404")
    assert status == 404
    entry = line_of(gw, "al-404")
    assert entry["status"] == 404 and entry["deployment"] == "no-such-model"
    assert entry["replica"] is None and entry["attempts"] == 0
    assert entry["prompt_tokens"] is None and entry["cost_usd"] is None and entry["overhead_ms"] is None
    assert "does not exist" in entry["error"]


def test_a_bad_body_is_a_400_line(gw):
    status, _, _ = http_json("POST", gw.base + "/v1/chat/completions", b'{"model": "m", "messages": [',
                             headers={"x-request-id": "al-400"})
    assert status == 400
    entry = line_of(gw, "al-400")
    assert entry["status"] == 400 and entry["deployment"] is None and entry["attempts"] == 0
    assert "not valid JSON" in entry["error"]


def test_a_body_its_checks_refuse_is_a_400_line_of_the_deployment_it_names(gw):
    status, _, _ = post(gw, {**CHAT, "max_tokens": 0}, "al-400-named")
    assert status == 400
    entry = line_of(gw, "al-400-named")
    assert entry["status"] == 400 and entry["deployment"] == "m" and entry["attempts"] == 0
    assert "max_tokens" in entry["error"]


def test_the_model_list_is_a_200_line(gw):
    status, _, body = http_json("GET", gw.base + "/v1/models", headers={"x-request-id": "al-models",
                                                                      "Authorization": f"Bearer {CLIENT_KEY}"})
    assert status == 200 and body["data"]
    entry = line_of(gw, "al-models")
    assert entry["status"] == 200 and entry["method"] == "GET" and entry["path"] == "/v1/models"
    assert entry["deployment"] is None and entry["error"] is None


def test_a_502_after_three_attempts_is_logged_with_them(gw, upstream):
    upstream.script([{"status": 500, "message": "boom one"}, {"status": 500, "message": "boom two"},
                     {"status": 500, "message": f"boom three {REPLICA_KEY}"}])
    status, headers, body = post(gw, CHAT, "al-502")
    assert status == 502 and headers["x-fastinfer-attempts"] == "3"
    entry = line_of(gw, "al-502")
    assert entry["status"] == 502 and entry["attempts"] == 3 and entry["replica"] in ("a", "b")
    assert entry["error"] == body["error"]["message"] and "boom three" in entry["error"]
    assert entry["prompt_tokens"] is None and entry["completion_tokens"] is None


def test_a_client_that_leaves_is_a_499_line(gw, upstream):
    upstream.script([{"hold": "leave"}])
    sock = raw_post(gw.port, CHAT)
    try:
        assert upstream.wait_in_flight(1)
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()
    try:
        entry = wait_for(lambda: next((e for e in access_lines(gw).values() if e["status"] == 499), None))
        assert entry, gw.stderr()[-3000:]
    finally:
        upstream.release("leave")
    assert entry["deployment"] == "m" and entry["attempts"] == 1 and entry["replica"] in ("a", "b")
    assert entry["error"] == "the client closed the connection before the answer was complete"


@pytest.mark.parametrize("method, path, status", [("GET", "/v1/chat/completions", 405), ("GET", "/nowhere", 404),
                                                  ("POST", "/admin/reload", 401)])
def test_the_middlewares_own_errors_are_logged(gw, method, path, status):
    request_id = f"al-mw-{status}"
    answer = http_json(method, gw.base + path, b"" if method == "POST" else None,
                       headers={"x-request-id": request_id, "Authorization": "Bearer wrong-admin-guess"})
    assert answer[0] == status
    entry = line_of(gw, request_id)
    assert entry["status"] == status and entry["method"] == method and entry["path"] == path
    assert entry["deployment"] is None and entry["error"] == answer[2]["error"]["message"]


def test_no_secret_is_ever_written(gw, upstream):
    upstream.script([{"status": 401, "message": f"bad key {REPLICA_KEY}"}] * 4)
    post(gw, CHAT, "al-secret")
    line_of(gw, "al-secret")
    text = gw.stderr()
    assert REPLICA_KEY not in text and CLIENT_KEY not in text and "wrong-admin-guess" not in text


def test_every_line_is_json(start_gateway, upstream):
    """Not only the access log: a start-up warning (a hosted replica with no credential) too."""
    upstream.reset()
    gw = start_gateway(config(upstream.base, 'format = "json"'))
    assert post(gw, CHAT, "al-json")[0] == 200
    lines = [json.loads(line) for line in gw.stderr_when_stopped().splitlines()]
    warning = [e for e in lines if e["level"] == "warning" and "credential: none set" in e["msg"]]
    assert warning and warning[0]["logger"] == "fastinfer" and {"ts", "pid"} <= set(warning[0])
    assert [e["request_id"] for e in lines if e["logger"] == "fastinfer.access"] == ["al-json"]


def test_text_format(start_gateway, upstream):
    upstream.reset()
    gw = start_gateway(config(upstream.base, 'format = "text"'))
    assert post(gw, {**CHAT, "model": "no such model"}, "al-text")[0] == 404
    line = wait_for(lambda: next((x for x in gw.stderr().splitlines() if "request_id=al-text" in x), None))
    assert line, gw.stderr()
    match = re.fullmatch(r"(\S+Z) INFO fastinfer\.access\[(\d+)\]: (.*)", line)
    assert match, line
    pairs = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', match.group(3)))
    assert list(pairs) == FIELDS[4:]
    assert pairs["status"] == "404" and pairs["deployment"] == '"no such model"' and pairs["replica"] == "-"
    assert json.loads(pairs["error"]).startswith("The model `no such model` does not exist")


def test_access_log_off(start_gateway, upstream):
    upstream.reset()
    gw = start_gateway(config(upstream.base, "access_log = false"))
    assert post(gw, CHAT, "al-off")[0] == 200
    assert post(gw, {**CHAT, "model": "nope"}, "al-off-404")[0] == 404
    text = gw.stderr_when_stopped()    # whatever was kept is written at the drain
    assert "credential: none set" in text and "fastinfer.access" not in text and "al-off" not in text


def test_a_flood_of_bad_requests_gives_a_bounded_number_of_lines_and_a_count(start_gateway, upstream):
    """Refused admin keys from 8 addresses, 6 each (the throttle answers 429 after 5 failures per
    address, or fewer when two addresses share its slot): each worker writes one line, then one line
    counting the rest when its 10 s window ends."""
    upstream.reset()
    gw = start_gateway(config(upstream.base, 'format = "json"').replace(
        "drain_grace_s = 5", 'drain_grace_s = 5\nadmin_key = { value = "the-admin-key" }'))
    refused = 0
    started = time.monotonic()
    for i in range(8):
        for _ in range(6):
            status = get_from(f"127.0.0.{i + 2}", gw.port, "/admin/state",
                              {"Authorization": "Bearer flood-guess"})[0]
            assert status in (401, 429)
            refused += status == 401
    windows = 1 + int((time.monotonic() - started) // 10)    # a slow machine may need more than one

    def logged():
        lines = [json.loads(x) for x in gw.stderr().splitlines()]
        failures = [e for e in lines if "admin authentication failed" in e.get("msg", "")]
        counts = [int(re.match(r"(\d+) more admin authentication failures", e["msg"]).group(1))
                  for e in lines if "more admin authentication failures" in e.get("msg", "")]
        return failures, counts

    assert refused >= 20
    assert wait_for(lambda: sum(logged()[1]) + len(logged()[0]) == refused, timeout=25), logged()
    failures, counts = logged()
    assert 1 <= len(failures) <= 2 * windows and 1 <= len(counts) <= 2 * windows   # per worker and window
    assert all(e["level"] == "warning" for e in failures) and "flood-guess" not in gw.stderr()


def test_a_reload_applies_a_changed_logging_table(start_gateway, upstream):
    """text, then SIGHUP with format = "json": the new generation of workers writes JSON lines."""
    upstream.reset()
    gw = start_gateway(config(upstream.base, 'format = "text"'))
    assert post(gw, CHAT, "al-before")[0] == 200
    assert wait_for(lambda: "INFO fastinfer.access" in gw.stderr() and "request_id=al-before" in gw.stderr())
    config_path = gw.args[gw.args.index("--config") + 1]
    with open(config_path) as f:
        text = f.read()
    with open(config_path, "w") as f:
        f.write(text.replace('format = "text"', 'format = "json"'))
    os.kill(gw.pid, signal.SIGHUP)

    def json_line_after_reload():      # the old generation drains: soon every answer is a new worker's
        post(gw, CHAT, "al-after")
        return any(line.startswith("{") and '"request_id":"al-after"' in line for line in gw.stderr().splitlines())
    assert wait_for(json_line_after_reload, timeout=20, interval=0.2), gw.stderr()[-3000:]


def test_a_key_shaped_request_id_is_redacted(gw):
    chosen = "sk-chosen-as-request-id-0123456789"
    assert post(gw, CHAT, chosen)[0] == 200
    entry = wait_for(lambda: next((e for e in access_lines(gw).values() if e["request_id"].startswith("sk-")), None))
    assert entry and entry["request_id"] == "sk-****" and chosen not in gw.stderr()


def test_a_request_id_made_by_the_gateway_is_logged_as_it_is_and_a_client_cannot_pass_for_one(gw):
    """Ids the worker made are shown unredacted (no search a line); a client's id that starts like them
    is not kept (on one connection: the same worker), so a key-shaped id cannot slip through as one."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {CLIENT_KEY}"}
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(CHAT), headers)
        made = conn.getresponse()
        made.read()
        made_id = made.getheader("x-request-id")
        prefix = made_id.rsplit("-", 1)[0] + "-"
        posing = prefix + "sk-posing-as-made-0123456789"
        conn.request("POST", "/v1/chat/completions", json.dumps(CHAT), {**headers, "x-request-id": posing})
        answer = conn.getresponse()
        answer.read()
    finally:
        conn.close()
    assert made.status == answer.status == 200
    given_id = answer.getheader("x-request-id")
    assert given_id != posing and given_id.startswith(prefix) and given_id != made_id
    assert line_of(gw, made_id)["request_id"] == made_id and line_of(gw, given_id)
    assert "sk-posing" not in gw.stderr()


_NOT_HTTP = [b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
             b"GET / HTTP/1.1\r\nAuthorization " + CLIENT_KEY.encode() + b"\r\n\r\n",
             b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"]


def test_requests_that_are_not_http_leave_warning_lines_without_tracebacks(start_gateway, upstream):
    """aiohttp would answer them 400 in plain text and log each with a traceback: here each is a JSON 400
    (gateway/protocol.py) and one warning line, within the malformed requests' budget, and the bytes
    the client sent are not quoted."""
    gw = start_gateway(config(upstream.base, 'format = "json"'), workers=1)
    for _ in range(4):
        for garbage in _NOT_HTTP:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
                sock.sendall(garbage)
                assert b" 400 " in sock.recv(100).split(b"\r\n", 1)[0]
    text = gw.stderr_when_stopped()
    lines = [json.loads(line) for line in text.splitlines()]
    refused = [e for e in lines if "malformed HTTP request" in e.get("msg", "")]
    assert refused and len(refused) <= 10          # the budget: 10 lines per 10 s
    assert all(e["level"] == "warning" and e["logger"] == "fastinfer.gateway" and "exc" not in e for e in refused)
    assert "Traceback" not in text and CLIENT_KEY not in text and "aaaaaaaa" not in text


def test_the_drains_end_leaves_its_error_on_the_lines_it_cut(start_gateway):
    """SIGTERM with a short grace: a stream still running is a 200 ended by the drain, a request still
    waiting for its answer a 503; both lines say why."""
    gw = start_gateway("""
        [server]
        drain_grace_s = 1

        [logging]
        format = "json"

        [[deployments]]
        name = "slow"
        provider = "mock"
        mock = { tokens = 400, itl_ms = 50 }

        [[deployments]]
        name = "hang"
        provider = "mock"
        mock = { ttft_ms = 600000 }
    """, workers=1)
    messages = [{"role": "user", "content": "hi"}]
    stream = raw_post(gw.port, {"model": "slow", "stream": True, "messages": messages})
    waiting = raw_post(gw.port, {"model": "hang", "messages": messages})
    try:
        stream.settimeout(10)
        head = b""
        while b"data: " not in head:        # the head and the first event are out: the stream runs
            data = stream.recv(65536)
            assert data
            head += data
        assert b" 200 " in head.split(b"\r\n", 1)[0]
        assert wait_for(lambda: metric_value(metrics_text(gw), 'fastinfer_in_flight{deployment="hang"}') == 1)
        os.kill(gw.pid, signal.SIGTERM)
        text = gw.stderr_when_stopped()
    finally:
        stream.close()
        waiting.close()
    lines = [json.loads(line) for line in text.splitlines() if '"fastinfer.access"' in line]
    by_model = {e["deployment"]: e for e in lines}
    cut, unanswered = by_model["slow"], by_model["hang"]
    assert cut["status"] == 200 and cut["stream"] is True and "shutting down" in cut["error"]
    assert unanswered["status"] == 503 and "shutting down" in unanswered["error"]


def test_lines_name_the_gateway_key_and_the_resolved_deployment(start_gateway, upstream):
    """With gateway keys: the key's name on its 200, 403 and 429 lines (none on a 401), the deployment by
    its own name when the client named an alias, and DELETE /v1/sessions/{id} logged like a data route."""
    key = "sk-team-key-0123456789abcdef"
    gw = start_gateway(config(upstream.base, 'format = "json"').replace(
        'name = "m"\n', 'name = "m"\n        aliases = ["alias-m"]\n', 1) + f"""
        [[keys]]
        name = "team"
        key = {{ value = "{key}" }}
        models = ["m"]
        rpm = 1
    """, workers=1)
    auth = {"Authorization": f"Bearer {key}"}

    def ask(request_id, model, headers):
        return http_json("POST", gw.base + "/v1/chat/completions", {**CHAT, "model": model},
                         headers={"x-request-id": request_id, **headers})[0]

    assert ask("k-401", "m", {}) == 401
    assert ask("k-403", "hosted", auth) == 403
    assert ask("k-200", "alias-m", auth) == 200
    assert ask("k-429", "m", auth) == 429
    status, _, _ = http_json("DELETE", gw.base + "/v1/sessions/no-such-session",
                             headers={"x-request-id": "k-del", **auth})
    assert status == 404
    # a count draws no limit (the key's one request a minute is spent) and is logged like a data route
    status, _, _ = http_json("POST", gw.base + "/v1/messages/count_tokens",
                             {"model": "alias-m", "messages": [{"role": "user", "content": "hi"}]},
                             headers={"x-request-id": "k-count", **auth})
    assert status == 200
    count = line_of(gw, "k-count")
    assert (count["key"], count["deployment"], count["status"], count["method"], count["path"]) == \
        ("team", "m", 200, "POST", "/v1/messages/count_tokens")
    lines = {rid: line_of(gw, rid) for rid in ("k-401", "k-403", "k-200", "k-429", "k-del")}
    assert lines["k-401"]["key"] is None and lines["k-401"]["status"] == 401
    assert [lines[r]["key"] for r in ("k-403", "k-200", "k-429", "k-del")] == ["team"] * 4
    assert [lines[r]["status"] for r in ("k-403", "k-200", "k-429", "k-del")] == [403, 200, 429, 404]
    assert lines["k-200"]["deployment"] == "m" and lines["k-429"]["deployment"] == "m"
    assert lines["k-del"]["method"] == "DELETE" and lines["k-del"]["path"] == "/v1/sessions/no-such-session"
    assert lines["k-del"]["deployment"] is None and lines["k-del"]["error"]
    # and each keyed answer, the DELETE's too, is counted in the key's series (the 401 has no key)
    metrics = metrics_text(gw)
    for code, answers in ((403, 1), (200, 2), (429, 1), (404, 1)):    # 200: the chat and the count
        assert f'fastinfer_key_requests_total{{key="team",code="{code}"}} {answers}' in metrics, code
    assert key not in gw.stderr_when_stopped()


def test_a_gateway_key_or_the_admin_key_pasted_as_a_request_id_is_masked(start_gateway, upstream):
    """Every secret the gateway reads (a key's ``value``, ``env`` or ``file``; the admin key) is
    remembered for redaction, as a replica's credential is: a client that sends one as its request id
    (or as anything else that reaches a log) finds it masked there."""
    upstream.reset()
    secrets = {"value": "gk-value-key-0123456789", "env": "gk-env-key-0123456789", "admin": "adm-key-0123456789"}
    gw = start_gateway(config(upstream.base, 'format = "json"').replace("[logging]", f"""
        admin_key = {{ value = "{secrets['admin']}" }}

        [[keys]]
        name = "by-value"
        key = {{ value = "{secrets['value']}" }}

        [[keys]]
        name = "by-env"
        key = {{ env = "FI_TEST_GATEWAY_KEY" }}

        [logging]"""), env={"FI_TEST_GATEWAY_KEY": secrets["env"]})
    for name, secret in secrets.items():
        presented = secrets["env"] if name == "env" else secrets["value"]
        assert post(gw, CHAT, f"id-{secret}", Authorization=f"Bearer {presented}")[0] == 200, name

    def written():
        entries = [json.loads(line) for line in gw.stderr().splitlines() if '"fastinfer.access"' in line]
        return entries if len(entries) >= 3 else None
    lines = wait_for(written, timeout=10)
    assert lines is not None and [e["request_id"] for e in lines] == ["id-****"] * 3, lines
    assert sorted(e["key"] for e in lines) == ["by-env", "by-value", "by-value"]
    text = gw.stderr()
    for secret in secrets.values():
        assert secret not in text
