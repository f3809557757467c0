"""The classification table: every upstream outcome -> what the client sees and what the engine does."""
from __future__ import annotations

import orjson
import pytest

from fastinfer.engine.classify import STATUS_RULES, Verdict, classify_exception, classify_reply, \
    classify_stream_error, is_context_window_message
from fastinfer.errors import (BadRequest, BodyTooLarge, GatewayError, Overloaded, RateLimited, UnknownModel,
                              UpstreamFailure, UpstreamTimeout)


def openai_body(message="boom", type_="invalid_request_error", code=None, param=None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code, "param": param}})


def anthropic_body(type_, message="m") -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": type_, "message": message}})


def gemini_body(code, status, message="m", details=None) -> bytes:
    err = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return orjson.dumps({"error": err})


# (status, client status, error class, retry, breaker, fallback, outcome)
TABLE = [
    (400, 400, BadRequest, False, False, False, "client_error"),
    (401, 502, UpstreamFailure, False, False, True, "auth_error"),
    (403, 502, UpstreamFailure, False, False, True, "auth_error"),
    (404, 404, UnknownModel, False, False, True, "client_error"),
    (408, 504, UpstreamTimeout, True, True, True, "timeout"),
    (409, 502, UpstreamFailure, True, False, True, "client_error"),
    (413, 413, BodyTooLarge, False, False, False, "client_error"),
    (422, 400, BadRequest, False, False, False, "client_error"),
    (429, 429, RateLimited, True, False, True, "rate_limited"),
    (500, 502, UpstreamFailure, True, True, True, "server_error"),
    (501, 502, UpstreamFailure, False, True, True, "server_error"),
    (502, 502, UpstreamFailure, True, True, True, "server_error"),
    (503, 503, Overloaded, True, True, True, "server_error"),
    (504, 504, UpstreamTimeout, True, True, True, "server_error"),
    (529, 503, Overloaded, True, True, True, "server_error"),
    (599, 502, UpstreamFailure, True, True, True, "server_error"),
    (418, 418, GatewayError, False, False, False, "client_error"),
    (302, 502, UpstreamFailure, False, False, True, "server_error"),
]


@pytest.mark.parametrize("status,shown,cls,retry,breaker,fallback,outcome", TABLE)
def test_status_table(status, shown, cls, retry, breaker, fallback, outcome):
    v = classify_reply(status, {}, openai_body("upstream says no"))
    assert isinstance(v, Verdict)
    assert v.error.status == shown
    assert type(v.error) is cls
    assert (v.retry, v.counts_for_breaker, v.fallback, v.outcome) == (retry, breaker, fallback, outcome)
    assert not v.context_window
    assert v.reauth == (status in (401, 403))


def test_breaker_tristate_matches_design():
    # only 5xx, timeouts and network errors count; 429 is neutral; other 4xx prove the replica alive
    assert classify_reply(500, {}, b"").breaker is True
    assert classify_reply(408, {}, b"").breaker is True
    assert classify_reply(429, {}, b"").breaker is None
    for status in (400, 401, 403, 404, 409, 413, 422):
        assert classify_reply(status, {}, b"").breaker is False, status
    assert classify_exception(UpstreamTimeout("t")).breaker is True
    assert classify_exception(UpstreamFailure("n")).breaker is True


def test_client_4xx_keeps_the_upstream_message_and_code():
    v = classify_reply(400, {}, openai_body("'messages' must be a list", code="invalid_type", param="messages"))
    assert v.error.message == "'messages' must be a list"
    assert v.error.code == "invalid_type"
    v = classify_reply(404, {}, openai_body("The model `gpt-5` does not exist", code="model_not_found"))
    assert v.error.message == "The model `gpt-5` does not exist"


def test_5xx_message_says_upstream_and_keeps_its_text():
    v = classify_reply(500, {}, openai_body("The server had an error", type_="server_error"))
    assert "upstream" in v.error.message and "The server had an error" in v.error.message
    assert "500" in v.error.message
    v = classify_reply(502, {}, b"<html>Bad Gateway</html>")
    assert "Bad Gateway" in v.error.message
    v = classify_reply(503, {}, b"")
    assert v.error.message == "upstream answered 503"


def test_auth_failure_is_a_502_that_never_leaks_the_upstream_message():
    body = openai_body("Incorrect API key provided: sk-proj-****************************abcd.",
                       type_="invalid_request_error", code="invalid_api_key")
    v = classify_reply(401, {}, body)
    assert v.error.status == 502 and v.error.code == "upstream_auth_failed"
    assert v.reauth and not v.retry and not v.counts_for_breaker
    assert "abcd" not in v.error.message and "sk-" not in v.error.message
    assert classify_reply(403, {}, anthropic_body("permission_error")).reauth


@pytest.mark.parametrize("status,body", [
    (400, openai_body("This model's maximum context length is 8192 tokens. However, your messages resulted in "
                      "9000 tokens.", code="context_length_exceeded", param="messages")),
    (400, openai_body("This model's maximum context length is 4096 tokens")),          # vLLM: no code
    (400, anthropic_body("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum")),
    (400, gemini_body(400, "INVALID_ARGUMENT",
                      "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).")),
    (413, openai_body("Please reduce the length of the messages.")),
    (422, openai_body("Input is too long for this model")),
])
def test_context_window(status, body):
    v = classify_reply(status, {}, body)
    assert v.context_window and v.outcome == "context_window"
    assert not v.retry and not v.fallback and not v.counts_for_breaker
    assert v.error.status == 400 and v.error.code == "context_length_exceeded"


def test_context_window_patterns_do_not_fire_on_other_errors():
    assert not is_context_window_message("Invalid value for 'temperature'")
    assert not is_context_window_message(None)
    # a TPM rate-limit message mentions tokens but is a 429, not a context problem
    v = classify_reply(429, {}, openai_body("Rate limit reached: too many tokens per min", code="rate_limit_exceeded"))
    assert not v.context_window and v.outcome == "rate_limited"
    # a server error with "context" in it stays a server error
    assert not classify_reply(500, {}, openai_body("context length exceeded in cache")).context_window


@pytest.mark.parametrize("body", [
    openai_body("flagged", code="content_filter"),
    openai_body("Your request was rejected as a result of our safety system.", code="content_policy_violation"),
    orjson.dumps({"error": {"message": "filtered", "code": "content_filter",
                            "innererror": {"code": "ResponsibleAIPolicyViolation"}}}),
    orjson.dumps({"error": {"message": "filtered", "code": "BadRequest",
                            "innererror": {"code": "ResponsibleAIPolicyViolation"}}}),
])
def test_content_filter_is_never_retried_nor_fallen_back(body):
    v = classify_reply(400, {}, body)
    assert v.outcome == "content_filter"
    assert not v.retry and not v.fallback and not v.context_window and not v.counts_for_breaker
    assert v.error.status == 400


def test_content_filter_code_is_kept_for_sdk_users():
    v = classify_reply(400, {}, openai_body("no", code="content_policy_violation"))
    assert v.error.code == "content_policy_violation"


def test_insufficient_quota_is_not_retried_but_may_fall_back():
    v = classify_reply(429, {"retry-after": "1"}, openai_body("You exceeded your current quota",
                                                              type_="insufficient_quota", code="insufficient_quota"))
    assert isinstance(v.error, RateLimited) and v.error.status == 429
    assert not v.retry and v.fallback and v.breaker is None


def test_anthropic_overloaded_529():
    v = classify_reply(529, {}, anthropic_body("overloaded_error", "Overloaded"), "anthropic")
    assert v.retry and v.counts_for_breaker and v.fallback
    assert isinstance(v.error, Overloaded) and v.error.type == "overloaded_error"
    assert "Overloaded" in v.error.message


def test_gemini_resource_exhausted_with_retry_info():
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]
    v = classify_reply(429, {}, gemini_body(429, "RESOURCE_EXHAUSTED", "Quota exceeded", details), "gemini")
    assert isinstance(v.error, RateLimited) and v.retry and v.breaker is None
    assert v.retry_after_s == 37.0
    assert v.error.retry_after == 37.0
    assert v.error.message == "Quota exceeded"


def test_retry_after_header_wins_over_body_hint_and_reaches_the_error():
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]
    v = classify_reply(429, {"retry-after": "3"}, gemini_body(429, "RESOURCE_EXHAUSTED", details=details))
    assert v.retry_after_s == 3.0 and v.error.retry_after == 3.0


def test_retry_after_http_date_against_fixed_now():
    now = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
    v = classify_reply(503, {"retry-after": "Sun, 06 Nov 1994 08:50:07 GMT"}, b"", now=now)
    assert v.retry_after_s == pytest.approx(30.0)


def test_ratelimit_reset_headers_only_for_429():
    headers = {"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-remaining-requests": "0"}
    assert classify_reply(429, headers, b"").retry_after_s == 360.0
    assert classify_reply(500, headers, b"").retry_after_s is None


def test_unparseable_bodies_are_tolerated():
    for body in (None, b"", b"not json", b"[]", b"[1,2]", b'"str"', b"{}", b'{"error": 5}',
                 b'{"error": "plain string"}', b"\xff\xfe"):
        v = classify_reply(500, {}, body)
        assert v.error.status == 502 and v.retry
    assert classify_reply(400, {}, b'{"error": "plain string"}').error.message == "plain string"


# ------------------------------------------------------------- transport

def test_transport_timeout_and_network_error():
    t = classify_exception(UpstreamTimeout("upstream did not answer within 60s"))
    assert t.error.status == 504 and t.retry and t.counts_for_breaker and t.fallback and t.outcome == "timeout"
    n = classify_exception(UpstreamFailure("cannot connect to upstream: Connection refused"))
    assert n.error.status == 502 and n.retry and n.counts_for_breaker and n.outcome == "network_error"
    assert n.error.message == "cannot connect to upstream: Connection refused"


def test_raw_os_errors_and_timeouts():
    assert classify_exception(ConnectionResetError(104, "Connection reset by peer")).error.status == 502
    assert classify_exception(TimeoutError()).error.status == 504
    assert classify_exception(TimeoutError()).counts_for_breaker


def test_other_gateway_errors_pass_through_untouched():
    err = BadRequest("cannot translate tool_choice for this provider")
    v = classify_exception(err)
    assert v.error is err and not v.retry and not v.counts_for_breaker and not v.fallback
    with pytest.raises(TypeError):
        classify_exception(ValueError("not an upstream failure"))


# ------------------------------------------------------------- in-stream

def test_stream_error_openai():
    v = classify_stream_error(b'{"error": {"message": "The server had an error", "type": "server_error"}}')
    assert v.retry and v.counts_for_breaker and v.error.status == 502
    assert "The server had an error" in v.error.message


def test_stream_error_accepts_a_whole_raw_event():
    raw = (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
           b'"message":"Overloaded"}}\n\n')
    v = classify_stream_error(raw, "anthropic")
    assert isinstance(v.error, Overloaded) and v.retry and v.counts_for_breaker


@pytest.mark.parametrize("payload,status,retry,breaker", [
    (anthropic_body("rate_limit_error"), 429, True, False),
    (anthropic_body("api_error"), 502, True, True),
    (anthropic_body("invalid_request_error", "bad"), 400, False, False),
    (gemini_body(503, "UNAVAILABLE"), 503, True, True),
    (orjson.dumps({"error": {"message": "m", "status": "DEADLINE_EXCEEDED"}}), 504, True, True),
    (orjson.dumps([{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "q"}}]), 429, True, False),
    (b'{"error": {"message": "?"}}', 502, True, True),       # nothing says what: assume the server failed
    (b"data: {garbage", 502, True, True),
])
def test_stream_error_table(payload, status, retry, breaker):
    v = classify_stream_error(payload)
    assert v.error.status == status
    assert (v.retry, v.counts_for_breaker) == (retry, breaker)


def test_stream_error_content_filter_and_context():
    v = classify_stream_error(openai_body("filtered", type_="invalid_request_error", code="content_filter"))
    assert v.outcome == "content_filter" and not v.retry and not v.fallback
    v = classify_stream_error(anthropic_body("invalid_request_error", "prompt is too long: 300000 tokens"))
    assert v.context_window and not v.retry


def test_the_table_lives_in_one_place():
    # every status the engine retried before this module is still retried, and 4xx other than 408/409/429 is not
    for status in (408, 409, 429, 500, 502, 503, 504, 529):
        assert STATUS_RULES[status].retry, status
    for status, rule in STATUS_RULES.items():
        if 400 <= status < 500 and status not in (408, 409, 429):
            assert not rule.retry, status
        if rule.breaker:
            assert status >= 500 or status == 408, status
