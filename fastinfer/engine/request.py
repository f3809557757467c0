"""The request as the engine sees it, the result it hands back to the gateway, and the clock
both measure the gateway's own time with."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._core.attempts import clock
from .._core.slotted import record_maker
from .._core.constants import NORMAL, PRIORITY_NAMES

#: the overhead clock (``time.perf_counter``), defined once beside the attempts that read it (``_core.attempts``)
__all__ = ["clock", "EngineResult", "GatewayRequest", "PRIORITY_LEVELS", "new_request", "new_result"]

#: what a client may send as ``priority`` / ``x-priority``, and the admission queue's number for it
PRIORITY_LEVELS = {name: level for level, name in enumerate(PRIORITY_NAMES)}


@dataclass(slots=True)
class GatewayRequest:
    """A parsed, validated client request; the gateway builds it, the engine consumes it."""

    api: str                      # the caller's API: "openai" | "anthropic" (its format in formats.FORMATS)
    model: str                    # the deployment name the client asked for
    body: dict                    # the client's body (gateway-only fields removed)
    stream: bool
    request_id: str
    received_at: float            # loop.time() when the request arrived
    priority: int = NORMAL        # PRIORITY_LEVELS value
    session_id: str | None = None  # x-session-id, checked (routing.session_id_problem)
    session_close: bool = False   # x-session-close: true: end the session once this request's generation is over
    deadline: float | None = None  # loop.time() by which the whole request must end
    client_wants_usage: bool = False
    endpoint: str = "chat"        # OpenAI endpoint: "chat" | "completions" | "embeddings"
    key: str | None = None        # the gateway key's name (never the key), set by authentication
    # filled in as the request goes; the access log, traces and budgets read them at its end
    usage: dict | None = None     # the answer's normalized usage (``Engine._account_usage``)
    cost_usd: float | None = None
    attempts: int = 0             # upstream attempts made, fallback deployments' included
    replica: str | None = None    # the replica of the latest attempt
    fallback: str | None = None   # the fallback deployment that served it, when one did
    trace: Any = None             # observe.RequestTrace when tracing is on; None costs nothing


@dataclass(slots=True)
class EngineResult:
    """What the gateway writes back: a whole body or a stream of caller-format bytes."""

    status: int
    body: bytes | None = None
    # engine.stream.RelayedStream: ``await stream.pump(client_writer)``, then ``stream.take_ending()``
    # goes out with the response's end
    stream: Any = None
    replica: str | None = None
    attempts: int = 0
    upstream_s: float = 0.0       # time spent waiting on the upstream before the head / body (``clock``)
    overhead_s: float = 0.0       # time in the gateway itself, set when the answer starts (``clock``)
    ttft_s: float | None = None   # streams: time until the first byte went to the client
    headers: dict = field(default_factory=dict)
    # the limits' x-ratelimit-* fields of a served answer, encoded for its head (``Grant.rate_fields``):
    # written as they are, where a dict of them cost each answer its strings and its walk
    rate_fields: bytes = b""


# the request path makes both with these: ``cls(*values)``, without running the dataclass's ``__init__``
# (``_core.slotted``: one assignment per field in Python, an opcode-heavy call on every request)
new_request = record_maker(GatewayRequest)
new_result = record_maker(EngineResult)
