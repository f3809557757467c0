"""A provider: a ``kinds.ProviderKind`` bound to one deployment, making its upstream calls over HTTP.

A ``Provider`` is a kind bound to one deployment: ``send`` makes exactly one upstream call for a request, on the
replica session it is given, and hands back the ``transport``'s
``UpstreamReply``. It never chooses replicas, retries, reads replies or touches
the client connection.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from ..formats import Format
from ..transport import UpstreamReply, post

if TYPE_CHECKING:
    from .kinds import ProviderKind


class Provider:
    """One deployment's upstream calls, over HTTP."""

    __slots__ = ("deployment", "kind", "format")

    def __init__(self, deployment, kind: "ProviderKind"):
        self.deployment = deployment
        self.kind = kind
        self.format: Format = kind.format

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The OpenAI endpoints this upstream has ("chat", and for OpenAI-shaped ones "completions", "embeddings")."""
        return self.format.endpoints

    async def send(self, session, req, caller: Format, timeouts, extra: dict | None = None) -> UpstreamReply:
        """One upstream call for ``req`` (in ``caller``'s format) on ``session``'s replica;
        ``extra`` fields are added to the upstream body (a backend session's ``session_params``)."""
        deployment = self.deployment
        body = self.format.upstream_body(req, caller, deployment)
        if extra:
            body.update(extra)
        body = orjson.dumps(body)
        url = self.kind.url(session.replica, deployment.upstream_model, req.endpoint, req.stream)
        headers = self.kind.request_headers(session.credential)
        if req.trace is not None:       # this attempt's span is the upstream's parent (W3C trace context)
            headers["traceparent"] = req.trace.traceparent
        return await post(session.pool, url, headers, body, req.stream, timeouts)
