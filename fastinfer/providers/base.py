"""A provider: a ``kinds.ProviderKind`` bound to one deployment, making its upstream calls over HTTP.

A ``Provider`` is a kind bound to one deployment: ``send`` makes exactly one upstream call for a request, on the
replica session it is given, and hands back the ``transport``'s
``UpstreamReply``. It never chooses replicas, retries, reads replies or touches
the client connection.

A request's head (its URL, the kind's headers, the credential) is the same for every request to
one replica with one credential, endpoint and stream flag: it is built once and kept
(``_heads``), and each request's body is framed with it. A credential that rotates, or a pool a
rebuild replaces, is a new key; the few heads a deployment has are all kept until there are
``_MAX_HEADS``, then built afresh. A traced request's head carries its own ``traceparent`` and is
not kept.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable

import orjson

from ..formats import Format
from ..transport import UpstreamReply, exchange, framed, request_head

if TYPE_CHECKING:
    from .kinds import ProviderKind


_MAX_HEADS = 64   # heads kept per deployment: (replica, credential, endpoint, stream) combinations


class Provider:
    """One deployment's upstream calls, over HTTP."""

    __slots__ = ("deployment", "kind", "format", "endpoints", "_heads")

    def __init__(self, deployment, kind: "ProviderKind"):
        self.deployment = deployment
        self.kind = kind
        self.format: Format = kind.format
        #: the endpoints this upstream is asked for: its format's ("chat"; OpenAI-shaped ones
        #: "completions", "embeddings"), and "count_tokens" where it counts (``ProviderKind.counts_tokens``)
        self.endpoints: tuple[str, ...] = self.format.endpoints + (
            ("count_tokens",) if kind.counts_tokens(deployment.count_tokens) else ())
        self._heads: dict[tuple, bytes] = {}

    def send(self, session, req, body: dict, timeouts, extra: dict | None = None) -> Awaitable[UpstreamReply]:
        """One upstream call for ``req`` with ``body`` (its body in this upstream's format, made once a
        request by ``format.upstream_body``) on ``session``'s replica, to await; ``extra`` fields are
        added to this call's body (a backend session's ``session_params``). (The exchange's own
        coroutine, not one awaiting it: a coroutine level costs every request.)"""
        if extra:
            body = {**body, **extra}
        return exchange(session.pool, framed(self._head(session, req), orjson.dumps(body)), req.stream, timeouts)

    def _head(self, session, req) -> bytes:
        """The head of ``req``'s upstream request on ``session``'s replica (kept: the module's docstring)."""
        # the session's ``credential``, without its property: a read 3.11 cannot specialize, and a frame
        credential = session.source.current()
        if req.trace is not None:   # this attempt's span is the upstream's parent (W3C trace context)
            return self._build_head(session, credential, req, {"traceparent": req.trace.traceparent})
        key = (session.pool, credential, req.endpoint, req.stream)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= _MAX_HEADS:
                self._heads.clear()
            head = self._heads[key] = self._build_head(session, credential, req, None)
        return head

    def _build_head(self, session, credential: str | None, req, extra: dict | None) -> bytes:
        url = self.kind.url(session.replica, self.deployment.upstream_model, req.endpoint, req.stream)
        headers = self.kind.request_headers(credential)
        if extra:
            headers.update(extra)
        pool = session.pool
        return request_head("POST", pool.path_of(url), pool.host_header, headers)
