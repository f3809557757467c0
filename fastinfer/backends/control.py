"""Control calls to a replica's server, beside generation (health probes, backend sessions).

Owns: ``server_root`` (a replica's ``base_url`` without its path: where SGLang
serves ``/open_session`` and a health route lives), and ``ReplicaControl``,
one deployment's control calls made the way its generation requests are: the
replica's current credential in the provider's auth header, the replica's
keep-alive pool, the given timeouts, and -- when asked -- its circuit breaker
(an open circuit refuses the call; the outcome is recorded as a request's is:
5xx, timeouts and network errors count as failures, any other answer proves
the replica alive). Must not touch: what the calls are for.
"""
from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit

import orjson

from ..breaker import PROBE, REJECTED
from ..errors import GatewayError, UpstreamTimeout
from ..transport import request


def server_root(base_url: str) -> str:
    """``https://host:port`` of ``https://host:port/v1``."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


class Outcome(NamedTuple):
    ok: bool               # a 2xx answer
    outcome: str           # the upstream outcome label: success | client_error | server_error | timeout |
                           #   network_error | circuit_open
    replica_failed: bool   # a failure of the replica (what its breaker counts)
    detail: str            # for logs and error messages: "HTTP 503", "timed out", ...


class ReplicaControl:
    """Control calls to one deployment's replicas."""

    __slots__ = ("deployment", "kind", "sessions", "breakers")

    def __init__(self, deployment: str, kind, sessions, breakers):
        self.deployment = deployment
        self.kind = kind              # providers.ProviderKind: the auth header and fixed headers
        self.sessions = sessions      # session.SessionRegistry: each replica's credential and pool now
        self.breakers = breakers      # breaker.BreakerSet

    def replica_name(self, replica: int) -> str:
        return self.sessions.get(self.deployment, replica).replica.name

    def retry_after_s(self, replica: int) -> float:
        """Seconds until ``replica``'s open circuit lets a probe through (0: it is not open)."""
        return self.breakers.breakers[replica].retry_after_s

    async def call(self, replica: int, method: str, path: str, body: dict | None, timeouts, *,
                   breaker: bool = True) -> Outcome:
        """``method {server root}{path}`` on ``replica`` with ``body`` as JSON."""
        verdict = self.breakers.check(replica) if breaker else None
        if verdict == REJECTED:
            return Outcome(False, "circuit_open", False, "its circuit is open")
        failed = None   # the breaker's verdict: True failure, False alive, None none (cancelled)
        try:
            session = self.sessions.get(self.deployment, replica)
            url = server_root(session.replica.base_url) + path
            headers = self.kind.request_headers(session.credential)
            try:
                reply = await request(session.pool, method, url, headers, b"" if body is None else orjson.dumps(body),
                                      False, timeouts)
            except GatewayError as e:
                failed = True
                timeout = isinstance(e, UpstreamTimeout)
                return Outcome(False, "timeout" if timeout else "network_error", True, e.message)
            status = reply.status
            failed = status >= 500 or status == 408
            ok = 200 <= status < 300
            outcome = ("success" if ok else "server_error" if status >= 500 else "timeout" if status == 408
                       else "client_error")
            return Outcome(ok, outcome, failed, f"HTTP {status}")
        finally:
            if verdict is not None:
                self.breakers.record(replica, verdict == PROBE, failed)
