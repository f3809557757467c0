"""What an attempt holds is given back however it ends, and a stream's attempt ends with the stream.

Real processes: ``fastinfer serve`` (one worker, so ``/admin/state``'s per-worker
``in_flight_here`` is the whole story) in front of ``mock-upstream``.
"""
from __future__ import annotations

import collections
import urllib.request

import pytest

from procs import http_json, metric_value, metrics_text, raw_post, start_gateway_proc, start_mock, wait_for

ADMIN = {"Authorization": "Bearer adm"}
MESSAGES = [{"role": "user", "content": "hello there"}]


def state(gw, deployment: str) -> dict:
    (entry,) = [d for d in http_json("GET", gw.base + "/admin/state", headers=ADMIN)[2]["deployments"]
                if d["name"] == deployment]
    return entry


def replica_state(gw, deployment: str, replica: str) -> dict:
    (entry,) = [r for r in state(gw, deployment)["replicas"] if r["name"] == replica]
    return entry


def assert_nothing_held(gw, deployment: str) -> None:
    entry = state(gw, deployment)
    assert entry["in_flight"] == 0, entry                         # the admission slot
    for r in entry["replicas"]:
        assert r["in_flight_here"] == 0, r                        # routing's count on the replica
        assert r["circuit"]["probes_in_flight"] == 0, r           # the half-open probe


def outcomes(gw, deployment: str, replicas: tuple[str, ...]) -> collections.Counter:
    text = metrics_text(gw)
    counts = collections.Counter()
    for replica in replicas:
        for outcome in ("success", "client_error", "rate_limited", "server_error", "timeout", "network_error",
                        "auth_error", "content_filter", "context_window"):
            counts[outcome] += metric_value(
                text, f'fastinfer_upstream_requests_total{{deployment="{deployment}",replica="{replica}",'
                      f'outcome="{outcome}"}}')
    return +counts


def post(gw, model: str, stream: bool = False) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(gw.base + "/v1/chat/completions", method="POST",
                                 data=_json({"model": model, "messages": MESSAGES, "stream": stream}),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _json(value) -> bytes:
    import json
    return json.dumps(value).encode()


def config(base: str, provider: str, path: str, replicas: int, **deployment) -> str:
    """Deployment ``m`` of ``provider`` with ``replicas`` replicas r0, r1, ... at ``base + path``; admin key."""
    lines = ['[server]', 'admin_key = { value = "adm" }', '[[deployments]]', 'name = "m"',
             f'provider = "{provider}"', 'model = "mock-model"']
    lines += [f"{key} = {value}" for key, value in deployment.items()]
    for i in range(replicas):
        lines += ["[[deployments.replicas]]", f'name = "r{i}"', f'base_url = "{base}{path}"']
    return "\n".join(lines) + "\n"


# ------------------------------------------- an exception inside an attempt

# a 200 whose candidates are not objects: the Gemini format raised AttributeError reading it,
# inside the attempt, and the attempt's bookkeeping was skipped
BROKEN_GEMINI_REPLY = {"body": '{"candidates": [5]}'}


def test_a_reply_that_breaks_the_format_leaves_nothing_held(start_gateway, mock_upstream):
    gw = start_gateway(config(mock_upstream.base, "gemini", "/v1beta", 2, routing='"least_loaded"',
                              retry="{ max_attempts = 1 }",
                              circuit_breaker="{ failure_threshold = 1, open_s = 0.3, max_open_s = 0.3 }"),
                       workers=1)

    mock_upstream.script([BROKEN_GEMINI_REPLY])
    status, _, body = post(gw, "m")
    assert status == 502 and b"could not be read" in body      # an upstream failure, not a 500
    assert_nothing_held(gw, "m")
    (failed,) = [r["name"] for r in state(gw, "m")["replicas"] if r["circuit"]["state"] == "open"]
    assert outcomes(gw, "m", ("r0", "r1")) == {"network_error": 1}   # exactly one verdict
    other = "r1" if failed == "r0" else "r0"

    # the failed replica's half-open probe meets the same reply: the probe comes back too
    assert http_json("POST", f"{gw.base}/admin/circuits/m/{other}", {"action": "force_open", "duration_s": 60},
                     headers=ADMIN)[0] == 200
    assert wait_for(lambda: replica_state(gw, "m", failed)["circuit"]["state"] == "half_open", timeout=10)
    mock_upstream.script([BROKEN_GEMINI_REPLY])
    assert post(gw, "m")[0] == 502
    assert_nothing_held(gw, "m")
    assert replica_state(gw, "m", failed)["circuit"]["state"] == "open"       # the failed probe re-opened it
    # ... and the next probe is admitted (a held probe would make this 503) and closes the circuit
    assert wait_for(lambda: replica_state(gw, "m", failed)["circuit"]["state"] == "half_open", timeout=10)
    status, headers, _ = post(gw, "m")
    assert status == 200 and headers["x-fastinfer-replica"] == failed
    assert replica_state(gw, "m", failed)["circuit"]["state"] == "closed"

    # least loaded sees both replicas idle again: sequential requests alternate
    assert http_json("POST", f"{gw.base}/admin/circuits/m/{other}", {"action": "reset"}, headers=ADMIN)[0] == 200
    served = collections.Counter(post(gw, "m")[1]["x-fastinfer-replica"] for _ in range(40))
    assert served == {"r0": 20, "r1": 20}
    assert_nothing_held(gw, "m")


# ------------------------------------------------ how a stream ends

@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("streams")
    upstream = start_mock(workdir)
    gw = start_gateway_proc(workdir, config(upstream.base, "openai_compatible", "/v1", 1,
                                            retry="{ max_attempts = 1 }", timeouts="{ idle_s = 0.5 }",
                                            circuit_breaker="{ failure_threshold = 1000 }"), workers=1)
    yield gw, upstream
    try:
        gw.stop()
    finally:
        upstream.kill()


@pytest.mark.parametrize("step, outcome", [
    ({"cut_after": 3}, "network_error"),         # the upstream vanished mid-stream
    ({"stream_error_at": 2}, "server_error"),    # the upstream's own error event (type server_error)
    ({"garbage_at": 2}, "network_error"),        # an event that is not JSON
    ({"idle_after": 2}, "timeout"),              # silence past idle_s
])
def test_a_failed_stream_is_one_breaker_failure_and_one_outcome(streaming, step, outcome):
    gw, upstream = streaming
    before_outcomes = outcomes(gw, "m", ("r0",))
    before_failures = replica_state(gw, "m", "r0")["circuit"]["consecutive_failures"]
    upstream.script([{**step, "tokens": 6}])
    status, _, body = post(gw, "m", stream=True)
    assert status == 200 and b"[DONE]" not in body and b'"error"' in body
    after = outcomes(gw, "m", ("r0",))
    assert after - before_outcomes == {outcome: 1}
    assert sum(after.values()) == sum(before_outcomes.values()) + 1
    assert replica_state(gw, "m", "r0")["circuit"]["consecutive_failures"] == before_failures + 1
    assert_nothing_held(gw, "m")


def test_a_complete_stream_is_one_success(streaming):
    gw, upstream = streaming
    before = outcomes(gw, "m", ("r0",))
    status, _, body = post(gw, "m", stream=True)
    assert status == 200 and body.rstrip().endswith(b"data: [DONE]")
    assert outcomes(gw, "m", ("r0",)) - before == {"success": 1}
    assert replica_state(gw, "m", "r0")["circuit"]["consecutive_failures"] == 0   # a success resets the count
    assert_nothing_held(gw, "m")


def test_a_stream_the_client_left_gets_no_verdict(streaming):
    gw, upstream = streaming
    before = outcomes(gw, "m", ("r0",))
    failures = replica_state(gw, "m", "r0")["circuit"]["consecutive_failures"]
    upstream.script([{"tokens": 200, "itl_ms": 50}])
    sock = raw_post(gw.port, {"model": "m", "messages": MESSAGES, "stream": True})
    got = b""
    while got.count(b"data: ") < 3:
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    sock.close()
    assert wait_for(lambda: replica_state(gw, "m", "r0")["in_flight_here"] == 0, timeout=10)
    assert_nothing_held(gw, "m")
    assert outcomes(gw, "m", ("r0",)) == before
    assert replica_state(gw, "m", "r0")["circuit"]["consecutive_failures"] == failures
