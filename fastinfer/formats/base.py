"""``Format``: one wire format, as the upstream's and as the caller's.

As the upstream's format it builds the upstream request body for a caller's
request, turns a whole reply into the caller's format (with its usage), and
makes the relay that turns its stream into the caller's stream. As the
caller's format it writes the error body and the error event.

Formats translate through OpenAI chat, the pivot: each one says only how its
requests, replies and streams go to and from the pivot (the hooks below), and
``Format`` composes the upstream's half with the caller's half. An Anthropic
caller on a Gemini upstream goes Anthropic -> OpenAI -> Gemini and back. When
the caller speaks the upstream's format, bodies and streams pass through.

Must not touch: HTTP, sockets, the engine, configuration beyond the
deployment's ``upstream_model``, ``provider``, ``default_max_tokens`` and
``drop_params`` (whether a parameter without a place is left out or refused).
"""
from __future__ import annotations

import orjson

from ..errors import GatewayError, UpstreamFailure
from .common import estimated_usage, json_object
from .relay import StreamRelay, TranslatingRelay

#: why a successful whole reply is refused: a 200 whose body is not a JSON object is an upstream failure
NOT_AN_OBJECT = "upstream sent a reply that is not a JSON object"


class Format:
    #: the format's name, and the caller API name for the formats clients speak
    name: str = ""
    #: the endpoints an upstream of this format has: "chat", OpenAI's "completions" and "embeddings"
    #: (whether it counts tokens is the provider table's: ``ProviderKind.counts_tokens``)
    endpoints: tuple[str, ...] = ("chat",)

    # ------------------------------------------ what the engine asks of a format

    def upstream_body(self, req, caller: "Format", deployment) -> dict:
        """``req.body`` (in ``caller``'s format) as this upstream's body, for ``deployment.upstream_model``."""
        if caller is self:
            return self.passthrough_request(req.body, deployment, req.stream)
        pivot = caller.request_to_pivot(req.body, deployment.upstream_model)
        return self.request_from_pivot(pivot, deployment, req.stream)

    def reply(self, body: bytes, req, caller: "Format", model: str) -> tuple[bytes, dict]:
        """A successful whole upstream reply: (the body in ``caller``'s format, its normalized usage).

        Raises ``UpstreamFailure`` when the body is not a JSON object: a 200 with garbage is an
        upstream failure, and this is the one parse every successful whole reply goes through.
        """
        reply = json_object(body)
        if reply is None:
            raise UpstreamFailure(NOT_AN_OBJECT)
        usage = self._usage(reply, req)
        if caller is self:
            return body, usage
        pivot = self.reply_to_pivot(reply, model, req)
        return orjson.dumps(caller.reply_from_pivot(pivot, usage)), usage

    def relay(self, req, caller: "Format", model: str) -> StreamRelay:
        """A fresh relay turning this upstream's stream into ``caller``'s stream."""
        if caller is self:
            return self.passthrough_relay(req)

        def estimate(chars: int) -> dict:
            return estimated_usage(req.body, chars)

        to_caller = caller.stream_from_pivot(model, estimate)
        # a stage after the pivot reads the pivot's usage chunk, so it must be produced for it
        from_upstream = self.stream_to_pivot(model, to_caller is not None or req.client_wants_usage, estimate, req)
        stages = [s for s in (from_upstream, to_caller) if s is not None]
        return TranslatingRelay(stages, caller, req.body)

    def counted(self, reply: dict):
        """The input tokens an upstream's answer to a ``count_tokens`` request says (an upstream that
        counts: ``ProviderKind.counts_tokens``); not checked here."""
        raise NotImplementedError(f"{self.name} has no token count")

    def error_body(self, err: GatewayError) -> bytes:
        """The whole error answer in this format (the caller's)."""
        raise NotImplementedError

    def error_event(self, err: GatewayError) -> bytes:
        """The event that ends a stream in this format (the caller's) which failed after its first byte."""
        raise NotImplementedError

    # ---------------------------------------------- each format's half: hooks

    def request_to_pivot(self, body: dict, model: str) -> dict:
        """A caller's body in this format as an OpenAI chat body for ``model``."""
        raise NotImplementedError(f"{self.name} is not a caller API")

    def request_from_pivot(self, body: dict, deployment, stream: bool) -> dict:
        """An OpenAI chat body (a fresh dict, this call's to change) as this upstream's body."""
        raise NotImplementedError

    def passthrough_request(self, body: dict, deployment, stream: bool) -> dict:
        """The caller's body, already in this format, as this upstream's body."""
        return self.request_from_pivot(self.request_to_pivot(body, deployment.upstream_model), deployment, stream)

    def reply_to_pivot(self, reply: dict, model: str, req) -> dict:
        """A whole reply of this upstream to ``req`` as an OpenAI ``chat.completion``."""
        raise NotImplementedError

    def reply_from_pivot(self, reply: dict, usage: dict) -> dict:
        """An OpenAI ``chat.completion`` as this (caller) format's reply; ``usage`` is normalized."""
        raise NotImplementedError(f"{self.name} is not a caller API")

    def reply_usage(self, reply: dict) -> dict | None:
        """The normalized usage a whole reply carries, or None."""
        raise NotImplementedError

    def reply_text(self, reply: dict) -> str:
        """The text of a whole reply, for a usage estimate when it carries none."""
        raise NotImplementedError

    def stream_to_pivot(self, model: str, include_usage: bool, estimate, req):
        """A stream translator from this upstream's events (answering ``req``) to OpenAI chunks; None
        for OpenAI itself."""
        raise NotImplementedError

    def stream_from_pivot(self, model: str, estimate):
        """A stream translator from OpenAI chunks to this (caller) format; None for OpenAI itself."""
        raise NotImplementedError(f"{self.name} is not a caller API")

    def passthrough_relay(self, req) -> StreamRelay:
        """The relay for a caller that speaks this upstream's format: events forwarded as bytes."""
        raise NotImplementedError(f"{self.name} is not a caller API")

    # ------------------------------------------------------------------ shared

    def _usage(self, reply: dict, req) -> dict:
        usage = self.reply_usage(reply)
        if usage is not None and usage["total_tokens"]:
            return usage
        return estimated_usage(req.body, len(self.reply_text(reply)))

    def __repr__(self) -> str:
        return f"<Format {self.name}>"
