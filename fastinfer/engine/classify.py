"""Every upstream outcome as a typed verdict: what the client sees, and what the engine does next.

Owns: the one table that maps an upstream failure — a transport error from
the HTTP client, a non-200 answer (status, lower-case headers, body), or an
error event inside a stream — to a ``Verdict``: the ``GatewayError`` to show
the client, whether another attempt may help (``retry``), whether it is a
failure of the replica for its circuit breaker, whether another deployment
may serve (``fallback`` / ``context_window``), the upstream's wait hint, and
whether the gateway's own credential was refused (``reauth``).

Must not touch: sleeping, retry counting, the breaker, sessions, metrics, the
client. It decides nothing about *when*; ``backoff`` does, the engine acts.

The rules:

- Breaker: only 5xx (and Anthropic's 529), timeouts (transport timeouts and
  an upstream 408) and network errors count as failures of the replica; 429
  is neutral (``breaker is None``); every other answer proves the replica
  alive (``breaker is False``).
- 401 / 403 from the upstream mean the *gateway's* credential for this replica
  was refused: not the client's fault, so the client sees **502**
  (``upstream_auth_failed``), never a 401 that would make it drop its own,
  valid gateway key. ``reauth=True`` asks the engine to re-read the replica's
  credential (``CredentialSource.refresh``) and, when it changed, retry once;
  ``retry`` stays False so the plain retry budget is not spent on it. The
  upstream's message is not passed on: auth messages quote key fragments.
- Context length exceeded (OpenAI ``context_length_exceeded`` or the message
  patterns of OpenAI, Anthropic, Gemini, vLLM): 400, no retry, no ordinary
  fallback; ``context_window=True`` lets the engine try the deployment's
  ``context_window_fallbacks`` (and only those).
- Content filter (``content_filter``, ``content_policy_violation``, Azure's
  ``ResponsibleAIPolicyViolation``): 400, never retried, never fallen back:
  another model must not be used to get around a policy refusal.
- OpenAI ``insufficient_quota`` (429): the quota will not come back in
  seconds; no retry, but another deployment may serve.
- Other 4xx keep the upstream's status (422 shows as 400) and message, so the
  client sees what the upstream said; only 408/409/429 are retried.
- In-stream error events (``classify_stream_error``): the same table, keyed by
  the event's ``code`` / ``type`` / ``status``. ``retry`` there means "a new
  attempt could help *if nothing reached the client yet*": the engine must
  not retry once the first byte went out.

Usage::

    try:
        reply = await provider.send(session, req, body, timeouts)
    except GatewayError as e:
        v = classify_exception(e)
    else:
        if reply.status != 200:
            v = classify_reply(reply.status, reply.headers, reply.body, provider_kind)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import orjson

from ..errors import (BackendSessionFailed, BadRequest, BodyTooLarge, GatewayError, Overloaded, RateLimited,
                      UnknownModel, UpstreamFailure, UpstreamTimeout)
from ..redact import redact
from .backoff import parse_duration, parse_retry_after

__all__ = ["Verdict", "Rule", "STATUS_RULES", "classify_reply", "classify_exception", "classify_stream_error",
           "is_context_window_message", "past_deadline"]


@dataclass(frozen=True, slots=True)
class Verdict:
    error: GatewayError          # what the client sees if this is the last word
    outcome: str                 # metrics label: server_error | timeout | network_error | rate_limited |
                                 #   client_error | auth_error | content_filter | context_window
    retry: bool                  # another attempt (same deployment) may succeed
    counts_for_breaker: bool     # a failure of the replica for its circuit breaker
    fallback: bool               # another deployment (``fallbacks``) may serve this request
    context_window: bool = False  # the prompt is too long: only ``context_window_fallbacks`` may serve
    retry_after_s: float | None = None  # the upstream's wait hint, seconds
    reauth: bool = False         # the gateway's credential was refused: refresh it, retry once if it changed
    caller_deadline: bool = False  # the caller's deadline cut the attempt: nothing said of the replica
    # the value for ``BreakerSet.record(..., failed)``: True failure, False success, None neutral;
    # made once with the verdict (every attempt's end reads it: a property was a call each time)
    breaker: bool | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "breaker", True if self.counts_for_breaker
                           else None if self.caller_deadline or self.outcome == "rate_limited" else False)


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: how an upstream status is treated."""

    outcome: str
    client_status: int | None    # None: keep the upstream's status
    type: str                    # error type as both client APIs spell it
    retry: bool
    breaker: bool
    fallback: bool
    code: str | None = None      # default error code when the upstream gave none


# ---------------------------------------------------------------- the table

_CLIENT = Rule("client_error", None, "invalid_request_error", retry=False, breaker=False, fallback=False)
_AUTH = Rule("auth_error", 502, "api_error", retry=False, breaker=False, fallback=True, code="upstream_auth_failed")
_SERVER = Rule("server_error", 502, "api_error", retry=True, breaker=True, fallback=True, code="upstream_error")
_OVERLOADED = Rule("server_error", 503, "overloaded_error", retry=True, breaker=True, fallback=True,
                   code="upstream_overloaded")

STATUS_RULES: dict[int, Rule] = {
    400: _CLIENT,
    401: _AUTH,
    403: _AUTH,
    404: Rule("client_error", 404, "not_found_error", retry=False, breaker=False, fallback=True, code="model_not_found"),
    408: Rule("timeout", 504, "timeout_error", retry=True, breaker=True, fallback=True, code="upstream_timeout"),
    409: Rule("client_error", 502, "api_error", retry=True, breaker=False, fallback=True, code="upstream_conflict"),
    413: Rule("client_error", 413, "request_too_large", retry=False, breaker=False, fallback=False,
              code="request_too_large"),
    422: Rule("client_error", 400, "invalid_request_error", retry=False, breaker=False, fallback=False),
    429: Rule("rate_limited", 429, "rate_limit_error", retry=True, breaker=False, fallback=True,
              code="rate_limit_exceeded"),
    500: _SERVER,
    501: Rule("server_error", 502, "api_error", retry=False, breaker=True, fallback=True, code="upstream_error"),
    502: _SERVER,
    503: _OVERLOADED,
    504: Rule("server_error", 504, "timeout_error", retry=True, breaker=True, fallback=True, code="upstream_timeout"),
    529: _OVERLOADED,   # Anthropic: overloaded
}
_OTHER_5XX = _SERVER
_OTHER_4XX = _CLIENT
_UNEXPECTED = Rule("server_error", 502, "api_error", retry=False, breaker=False, fallback=True,
                   code="upstream_error")   # 1xx/3xx: a misconfigured upstream, not a flaky one

# body-level overrides, whatever the status
_CONTEXT_WINDOW = Rule("context_window", 400, "invalid_request_error", retry=False, breaker=False, fallback=False,
                       code="context_length_exceeded")
_CONTENT_FILTER = Rule("content_filter", 400, "invalid_request_error", retry=False, breaker=False, fallback=False,
                       code="content_filter")
_NO_QUOTA = Rule("rate_limited", 429, "rate_limit_error", retry=False, breaker=False, fallback=True,
                 code="insufficient_quota")

_CONTEXT_CODES = frozenset(("context_length_exceeded", "string_above_max_length", "context_window_exceeded"))
_CONTENT_CODES = frozenset(("content_filter", "content_policy_violation", "responsibleaipolicyviolation"))
_QUOTA_CODES = frozenset(("insufficient_quota", "billing_hard_limit_reached"))

_CONTEXT_PATTERN = re.compile(
    r"maximum context length|context length exceeded|context_length_exceeded|context window"
    r"|prompt is too long|input is too long|too many tokens|exceeds the maximum number of tokens"
    r"|input token count .{0,40}exceeds|reduce the length of the messages|maximum model length"
    r"|longer than the model'?s? context", re.IGNORECASE)

#: an error named in the body (Anthropic ``error.type``, Gemini ``error.status``,
#: OpenAI ``error.type`` / ``error.code`` in stream events) -> the status it stands for
_NAMED_STATUS: dict[str, int] = {
    # Anthropic
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
    "api_error": 500, "overloaded_error": 529, "timeout_error": 504,
    # OpenAI (stream events carry no status)
    "server_error": 500, "rate_limit_exceeded": 429, "insufficient_quota": 429,
    "invalid_api_key": 401, "service_unavailable": 503,
    # Gemini / google.rpc.Code
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ABORTED": 409, "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "INTERNAL": 500, "UNKNOWN": 500, "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}


#: the client-facing status -> the typed error the rest of the gateway checks with isinstance
_ERROR_CLASS: dict[int, type[GatewayError]] = {
    400: BadRequest, 404: UnknownModel, 413: BodyTooLarge, 429: RateLimited,
    502: UpstreamFailure, 503: Overloaded, 504: UpstreamTimeout,
}


# ------------------------------------------------------------- error bodies

class _Parsed:
    __slots__ = ("message", "code", "type", "status_name", "numeric", "retry_delay_s")

    def __init__(self):
        self.message: str | None = None
        self.code: str | None = None
        self.type: str | None = None
        self.status_name: str | None = None
        self.numeric: int | None = None
        self.retry_delay_s: float | None = None

    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.code, self.type, self.status_name) if n)


def _parse_error_body(body: bytes | None) -> _Parsed:
    """Message, code, type from an OpenAI / Anthropic / Gemini error body; tolerant of anything else.
    The message is redacted: it reaches the client, and upstreams echo keys they refuse."""
    p = _parse_error_fields(body)
    if p.message:
        p.message = redact(p.message)
    return p


def _parse_error_fields(body: bytes | None) -> _Parsed:
    p = _Parsed()
    if not body:
        return p
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:300].decode("utf-8", "replace").strip()
        p.message = text or None
        return p
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):  # Gemini's JSON-array streams
        doc = doc[0]
    if not isinstance(doc, dict):
        return p
    err = doc.get("error", doc if "message" in doc else None)
    if isinstance(err, str):
        p.message = err
        return p
    if not isinstance(err, dict):
        return p
    msg = err.get("message")
    if isinstance(msg, str) and msg:
        p.message = msg
    for attr in ("code", "type"):
        value = err.get(attr)
        if isinstance(value, str) and value:
            setattr(p, attr, value)
        elif isinstance(value, int) and not isinstance(value, bool):
            p.numeric = value
    status = err.get("status")
    if isinstance(status, str) and status:
        p.status_name = status
    inner = err.get("innererror")  # Azure content filter
    if isinstance(inner, dict) and isinstance(inner.get("code"), str):
        p.code = p.code or inner["code"]
        if inner["code"].lower() in _CONTENT_CODES:
            p.code = inner["code"]
    details = err.get("details")  # Gemini RetryInfo
    if isinstance(details, list):
        for d in details:
            if isinstance(d, dict) and isinstance(d.get("retryDelay"), str):
                p.retry_delay_s = parse_duration(d["retryDelay"])
    return p


def is_context_window_message(message: str | None) -> bool:
    """Does an upstream message say the prompt does not fit the model's context window?"""
    return bool(message) and _CONTEXT_PATTERN.search(message) is not None


def _override(p: _Parsed, status: int) -> Rule | None:
    """Body-level rules that win over the status row."""
    names = {n.lower() for n in p.names()}
    if names & _CONTENT_CODES:
        return _CONTENT_FILTER
    if names & _CONTEXT_CODES:
        return _CONTEXT_WINDOW
    if names & _QUOTA_CODES:
        return _NO_QUOTA
    if (status in (400, 413, 422) or status == 0) and is_context_window_message(p.message):
        return _CONTEXT_WINDOW
    return None


def _rule_for_status(status: int) -> Rule:
    rule = STATUS_RULES.get(status)
    if rule is not None:
        return rule
    if 500 <= status < 600:
        return _OTHER_5XX
    if 400 <= status < 500:
        return _OTHER_4XX
    return _UNEXPECTED


def _verdict(rule: Rule, status: int, p: _Parsed, retry_after: float | None) -> Verdict:
    client_status = rule.client_status or status
    if rule is _AUTH:
        message = f"the upstream refused the gateway's credential for this replica ({status})"
    elif rule.outcome in ("server_error", "timeout") or rule is _UNEXPECTED or rule.client_status == 502:
        message = f"upstream failure ({status}): {p.message}" if p.message else f"upstream answered {status}"
    else:
        message = p.message or f"upstream answered {status}"
    code = rule.code if rule is _CONTEXT_WINDOW or rule is _AUTH else (p.code or rule.code)
    cls = _ERROR_CLASS.get(client_status, GatewayError)
    error = cls(message, status=client_status, type=rule.type, code=code, retry_after=retry_after)
    return Verdict(error=error, outcome=rule.outcome, retry=rule.retry, counts_for_breaker=rule.breaker,
                   fallback=rule.fallback, context_window=rule is _CONTEXT_WINDOW, retry_after_s=retry_after,
                   reauth=rule is _AUTH)


# -------------------------------------------------------------- public API

def classify_reply(status: int, headers: Mapping[str, str] | None, body: bytes | None,
                   provider: str = "openai", *, now: float | None = None) -> Verdict:
    """A non-200 upstream answer as a verdict.

    ``headers`` have lower-case keys (as ``h1`` gives them); ``now`` is a
    ``time.time()`` value for HTTP-date ``Retry-After`` (tests pin it).
    ``provider`` is the upstream kind; bodies are recognised by their shape,
    so it only matters where a shape is ambiguous (none today).
    """
    p = _parse_error_body(body)
    rule = _override(p, status) or _rule_for_status(status)
    retry_after = parse_retry_after(headers, now, rate_limit_reset=status == 429)
    if retry_after is None:
        retry_after = p.retry_delay_s
    return _verdict(rule, status, p, retry_after)


def classify_exception(exc: BaseException) -> Verdict:
    """A failure raised before any answer: transport timeouts (504) and network errors (502), retried.

    Any other ``GatewayError`` (a provider refusing to build the request, for
    instance) is the client's to see as is: no retry, no breaker, no fallback.
    """
    if isinstance(exc, BackendSessionFailed):
        # the contract: an open that fails fails the request (502), nothing generated anywhere
        return Verdict(error=exc, outcome=exc.outcome, retry=False, counts_for_breaker=exc.replica_failed,
                       fallback=False)
    if isinstance(exc, UpstreamTimeout):
        return Verdict(error=exc, outcome="timeout", retry=True, counts_for_breaker=True, fallback=True)
    if isinstance(exc, UpstreamFailure):
        return Verdict(error=exc, outcome="network_error", retry=True, counts_for_breaker=True, fallback=True)
    if isinstance(exc, TimeoutError):
        return Verdict(error=UpstreamTimeout("upstream timed out"), outcome="timeout", retry=True,
                       counts_for_breaker=True, fallback=True)
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return Verdict(error=UpstreamFailure(f"cannot reach the upstream: {reason}"), outcome="network_error",
                       retry=True, counts_for_breaker=True, fallback=True)
    if isinstance(exc, GatewayError):
        return Verdict(error=exc, outcome="client_error" if exc.status < 500 else "server_error",
                       retry=False, counts_for_breaker=False, fallback=exc.status >= 500)
    raise TypeError(f"not an upstream failure: {type(exc).__name__}")


def past_deadline(verdict: Verdict) -> Verdict:
    """What an attempt's verdict becomes when it ended at the caller's deadline (``x-timeout-ms``).

    A timeout there is the caller's limit, not the replica's: neutral for the breaker (a client
    asking for 100 ms of a replica that answers in 300 would otherwise open its circuit for every
    client), and neither retried nor sent to a fallback, which would have no time left either. Any
    other verdict (a 500, a refused connection) says what it says of the replica and stands.
    """
    if verdict.outcome != "timeout":
        return verdict
    return Verdict(error=verdict.error, outcome="timeout", retry=False, counts_for_breaker=False,
                   fallback=False, caller_deadline=True)


def classify_stream_error(payload: bytes, provider: str = "openai") -> Verdict:
    """An error event inside a stream (its ``data`` JSON, or the whole raw event) as a verdict.

    OpenAI: ``{"error": {"message", "type", "code"}}``; Anthropic:
    ``{"type": "error", "error": {"type": "overloaded_error", ...}}``; Gemini:
    ``{"error": {"code": 503, "status": "UNAVAILABLE", ...}}``. The status is
    the error's numeric code, else the one its name stands for, else 500.
    """
    if payload[:6] in (b"event:", b"data: ") or payload[:5] == b"data:":
        lines = [line[5:].lstrip() for line in payload.splitlines() if line.startswith(b"data:")]
        payload = b"\n".join(lines)
    p = _parse_error_body(payload)
    status = p.numeric if p.numeric is not None and 100 <= p.numeric < 600 else 0
    if not status:
        for name in p.names():
            status = _NAMED_STATUS.get(name) or _NAMED_STATUS.get(name.lower()) or 0
            if status:
                break
    rule = _override(p, status) or _rule_for_status(status or 500)
    return _verdict(rule, status or 500, p, p.retry_delay_s)
