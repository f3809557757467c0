"""Wrong-typed bodies, at every depth of the real shapes, through every data route and every
upstream format: never a 5xx other than 502/503/504, always the caller's error shape. Valid
bodies: answered, or (translated) refused by a 400 naming a part they have.

Topology: a raw HTTP client -> fastinfer serve (2 workers) -> mock-upstream, which speaks
OpenAI chat, Anthropic messages and Gemini; one deployment per upstream format plus the
built-in mock. Each drawn body goes to all four. ``FASTINFER_FUZZ_EXAMPLES`` sets the
examples per route (default 60); ``tests/fuzz_bodies.py`` run as a script counts thousands.
"""
from __future__ import annotations

import http.client
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from conftest import every_format_config
from fuzz_bodies import ROUTES, valid_bodies, with_model, wrong_bodies
from procs import metrics_text, start_gateway_proc, start_mock

MODELS = ("oa", "an", "ge", "mk")
EXAMPLES = int(os.environ.get("FASTINFER_FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fuzz")
    upstream = start_mock(workdir)
    gateway = start_gateway_proc(workdir, every_format_config(upstream.base, server="max_body_bytes = 65536"))
    yield gateway, upstream
    for client in _clients.values():   # a draining gateway keeps idle connections until drain_grace_s ends
        client.conn.close()
    _clients.clear()
    gateway.stop()
    upstream.kill()
    # neither side wrote a traceback: nothing failed inside, even where the answer looked fine
    assert "Traceback" not in gateway.stderr(), gateway.stderr()[-3000:]
    assert "Traceback" not in upstream.stderr(), upstream.stderr()[-3000:]


class Client:
    """One keep-alive connection; reopened when the gateway closes it."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)

    def post(self, path: str, body) -> tuple[int, dict, bytes]:
        data = json.dumps(body).encode()
        for attempt in range(2):
            try:
                self.conn.request("POST", path, data, {"content-type": "application/json"})
                resp = self.conn.getresponse()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def assert_answer_is_sound(route: str, body, status: int, headers: dict, raw: bytes) -> None:
    sent = json.dumps(body)[:1500]
    assert status < 500 or status in (502, 503, 504), f"{status} for {route} {sent}: {raw[:500]!r}"
    assert headers.get("x-request-id"), f"no x-request-id on {status} for {route}"
    if status < 400:
        return
    answer = json.loads(raw)
    if route.startswith("/v1/messages"):
        assert answer["type"] == "error", raw
        assert isinstance(answer["error"]["type"], str) and isinstance(answer["error"]["message"], str), raw
    else:
        error = answer["error"]
        assert isinstance(error["message"], str) and isinstance(error["type"], str), raw
        assert "code" in error and "param" in error, raw
    if status == 400 and isinstance(body, dict):
        assert "Internal" not in raw.decode(), raw


def _fuzz(edge, route: str, body) -> None:
    gateway, _ = edge
    client = _clients.setdefault(gateway.port, Client(gateway.port))
    for model in MODELS:
        sent = with_model(body, model)
        status, headers, raw = client.post(route, sent)
        assert_answer_is_sound(route, sent, status, headers, raw)


_clients: dict[int, Client] = {}
_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.function_scoped_fixture])


@pytest.mark.timeout(900)
@pytest.mark.parametrize("route", ROUTES)
def test_wrong_typed_bodies_never_answer_500(edge, route):
    @_SETTINGS
    @given(body=wrong_bodies(route))
    def run(body):
        _fuzz(edge, route, body)
    run()


#: (route, deployment) pairs where the body goes as the client wrote it: a valid body is answered
NATIVE = {("/v1/chat/completions", "oa"), ("/v1/chat/completions", "mk"), ("/v1/messages", "an"),
          ("/v1/completions", "oa"), ("/v1/embeddings", "oa"),
          *(("/v1/messages/count_tokens", model) for model in MODELS)}     # counted by the gateway for any


def _part_at(body, path: str):
    """The node of ``body`` a refusal's ``param`` names (``messages[1].content[0]`` or ``messages.1.content.0``)."""
    node = body
    for step in re.findall(r"[^.\[\]]+", path):
        node = node[int(step)] if isinstance(node, list) else node[step]
    return node


@pytest.mark.timeout(900)
@pytest.mark.parametrize("route", ROUTES)
def test_valid_bodies_are_answered_or_refused_by_name(edge, route):
    """Valid bodies, in the full shape, to every deployment: answered where the body goes as it is;
    where it is translated, answered or refused with a 400 that names a part the body has."""
    gateway, _ = edge
    client = _clients.setdefault(gateway.port, Client(gateway.port))

    @_SETTINGS
    @given(body=valid_bodies(route))
    def run(body):
        for model in MODELS:
            sent = with_model(body, model)
            status, headers, raw = client.post(route, sent)
            assert_answer_is_sound(route, sent, status, headers, raw)
            if (route, model) in NATIVE:
                assert status == 200, f"{status} for {model} {json.dumps(sent)[:1000]}: {raw[:300]!r}"
                continue
            if route in ("/v1/completions", "/v1/embeddings"):   # forwarded only where the upstream has it
                assert status == 400 and b"does not serve" in raw, raw
                continue
            assert status in (200, 400), raw
            message = json.loads(raw)["error"]["message"] if status == 400 else ""
            if "cannot be sent to this model's upstream" in message:
                _part_at(sent, message.split(": ", 1)[0])     # names a part the body has
    run()


#: one recorded body per place the translators crashed on before the gateway checked bodies
#: (tests/fuzz_bodies.py against the gateway of d07067d: 90 of 5,136 bodies answered 500, at 17 places)
REGRESSIONS = json.loads((Path(__file__).parent / "data" / "edge_fuzz_regressions.json").read_text())


@pytest.mark.parametrize("case", REGRESSIONS, ids=[c["crashed_in"].rsplit("/", 1)[-1] + "-" + c["error"]
                                                    for c in REGRESSIONS])
def test_bodies_that_crashed_a_translator_are_answered(edge, case):
    gateway, _ = edge
    status, headers, raw = Client(gateway.port).post(case["route"], case["body"])
    assert_answer_is_sound(case["route"], case["body"], status, headers, raw)
    assert status != 500


#: (route, body, deployment, the refused part's param): content the deployment's format has no place
#: for, which the gateway used to leave out of the upstream's request without a word
UNCARRIED = [
    ("/v1/chat/completions", {"n": 2, "messages": [{"role": "user", "content": "hi"}]}, "an", "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "summarise"}, {"type": "file", "file": {"file_id": "file-abc"}}]}]},
     "an", "messages[0].content[1]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}}]}]}, "an", "messages[1].content[0]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-abc"}}]}]}, "ge", "messages[0].content[0]"),
    ("/v1/messages", {"max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "summarise"},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]}]},
     "oa", "messages.0.content.1"),
    ("/v1/messages", {"max_tokens": 9, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/shot.png"}}]}]}]},
     "ge", "messages.0.content.0.content.0"),
    # a compatible server's own role (Llama's ipython) has no turn in Anthropic's or Gemini's API
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}, {"role": "ipython", "content": "42"}]},
     "an", "messages[1].role"),
    ("/v1/chat/completions", {"messages": [{"role": "ipython", "content": "42"}]}, "ge", "messages[0].role"),
]


def _upstream_attempts(gateway, deployment: str) -> float:
    """``fastinfer_upstream_requests_total`` of a deployment, every replica and outcome."""
    prefix = f'fastinfer_upstream_requests_total{{deployment="{deployment}",'
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text(gateway).splitlines() if line.startswith(prefix))


@pytest.mark.parametrize("route, body, model, param", UNCARRIED, ids=[f"{c[2]}-{c[3]}" for c in UNCARRIED])
def test_content_a_format_cannot_carry_is_refused_in_the_callers_shape_before_any_upstream(
        edge, route, body, model, param):
    gateway, upstream = edge
    before = len(upstream.received())
    attempts = _upstream_attempts(gateway, model)
    status, headers, raw = Client(gateway.port).post(route, {**body, "model": model})
    assert status == 400, raw
    answer = json.loads(raw)
    error = answer["error"]
    assert error["message"].startswith(param + ": ") and "cannot be sent" in error["message"], error
    if route == "/v1/messages":      # Anthropic's shape: no code or param fields
        assert answer["type"] == "error" and error["type"] == "invalid_request_error"
    else:
        assert error["param"] == param and error["code"] == "unsupported_content"
    assert len(upstream.received()) == before     # refused, not sent with the part left out
    assert _upstream_attempts(gateway, model) == attempts     # and no upstream request counted
    # the same deployment still answers what it can carry
    asked = {key: value for key, value in body.items() if key != "n"}
    status, _, raw = Client(gateway.port).post(route, {**asked, "model": model, "messages": [
        {"role": "user", "content": "hi"}]})
    assert status == 200, raw
