"""What every provider offers the engine.

A provider turns a gateway request into one upstream call on a replica
session it is given, and hands back an ``UpstreamReply`` (``transport``). It
never chooses replicas, retries or touches the client connection.
"""
from __future__ import annotations

from ..config import DeploymentConfig
from ..formats import pivot
from ..formats.base import StreamRelay
from ..transport import UpstreamReply


class Provider:
    """Base of all providers; one instance per deployment.

    ``req`` is the engine's ``GatewayRequest``: ``req.api`` names the caller's API
    ("openai" or "anthropic") and ``req.body`` is in that API's shape. A provider
    whose wire format (``wire``) equals the caller's passes bodies and streams
    through; otherwise the defaults below translate in both directions
    (``formats.pivot``), so a provider only says how to reach its upstream.
    """

    #: client APIs this provider can serve
    apis: tuple[str, ...] = ("openai", "anthropic")
    #: the upstream's wire format: "openai" | "anthropic" | "gemini"
    wire: str = "openai"
    #: OpenAI endpoints this provider has ("chat", and for OpenAI-shaped upstreams "completions", "embeddings")
    endpoints: tuple[str, ...] = ("chat",)

    def __init__(self, deployment: DeploymentConfig):
        self.deployment = deployment

    async def send(self, session, req, timeouts) -> UpstreamReply:
        """Make one upstream call for ``req`` on ``session``'s replica."""
        raise NotImplementedError

    def upstream_body(self, req) -> dict:
        """``req.body`` in this upstream's wire format, for its upstream model."""
        return pivot.translate_request(self.wire, req, self.deployment)

    def reply_body(self, body: bytes, req) -> bytes:
        """A successful non-streamed upstream body, in the caller's format."""
        if req.api == self.wire:
            return body
        return pivot.convert_reply(self.wire, body, req, self.deployment.upstream_model)

    def reply_usage(self, body: bytes, req) -> dict:
        """Normalized usage of a successful non-streamed upstream body (see ``formats.common``):
        prompt/completion/total tokens, cached/reasoning when known, ``usage_estimated`` when guessed.
        Raises ``UpstreamFailure`` when the body is not a JSON object."""
        return pivot.reply_usage(self.wire, body, req)

    def stream_relay(self, req) -> "StreamRelay":
        """A fresh relay turning this upstream's stream into the caller's stream."""
        return pivot.make_relay(self.wire, req, self.deployment.upstream_model)
