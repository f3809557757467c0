# cython: language_level=3, annotation_typing=False
"""The OpenAI passthrough relay's reading of a stream, compiled: runs on every read of every
OpenAI-to-OpenAI stream (nearly all of them).

Owns: ``OpenAIPassthrough``, what of an OpenAI upstream's stream goes to an OpenAI client, read by
read: only whole events; the token events before the first that needs reading go out untouched,
never parsed (``sse.plain_prefix``: usually a whole read, or a short stream's all but its usage and
end); the usage-only event the gateway asked for on the client's behalf is dropped; an error
event's text is redacted; garbage ends the stream (``failure``). What it found: ``finished``,
``raw_usage`` (the last usage object, as it came), ``error`` (an error event's data), ``failure``,
``events`` (data lines forwarded, for an estimate when no usage came), and ``usage``, the stream's
usage as the engine accounts it: ``raw_usage`` normalized (``bodies.openai_usage``) or, when none
came (a compatible server's quirk), estimated (``bodies.usage_estimate``): the prompt from the
request's text, a token per forwarded event but the role and finish ones.

Why: in Python, the stream's end (its usage event, ``[DONE]``) cost ~300 opcodes a stream (the
read's split, an event loop, a generator re-encoding the events kept), about as much as the rest of
the relay's path; compiled with ``relay.pxd``'s types (Cython's pure-Python mode, as ``access.py``)
it is one call a read. ``usage`` is read once a stream, at its end: here it is one getter, where
in ``formats.openai`` it was six interpreted frames (the estimate's). The ``.py`` is its own
reference: ``ref/relay.py`` loads it uncompiled and ``tests/test_openai_relay.py`` holds the
compiled one to it.

Must not touch: the rules of usage normalization and estimates (``bodies``'), error events' shape
(``formats.openai`` subclasses this with it), HTTP, the engine.
"""
from __future__ import annotations

import orjson

from ..errors import UpstreamFailure
from ..redact import redact_bytes
from .bodies import openai_usage, usage_estimate
from .sse import SSEParser, encode_data, plain_prefix, whole_events

#: what makes an event need reading: the end, a usage object, an error (``"error"``, or an error object
#: sent bare: ``"message"``, a key no chunk has), and not ending like a JSON object
MARKERS = (b"[DONE]", b'"usage":{', b'"usage": {', b'"error"', b'"message"')
DONE = b"[DONE]"
MALFORMED = "upstream sent a malformed stream event"


def needs_parsing(data) -> bool:
    """``plain_prefix``'s test for one parsed event's data (not the end marker): a token event after
    the first that needs reading is skipped as it would have been in a read of its own."""
    return (data[-1:] != b"}" or b'"usage":{' in data or b'"usage": {' in data or b'"error"' in data
            or b'"message"' in data or DONE in data)


def is_error_frame(frame) -> bool:
    """Is an OpenAI-style stream event (its parsed data) an error? ``{"error": ...}`` (OpenAI, llama.cpp,
    Ollama), or, in an event with no ``choices``, the error object sent bare: vLLM's and SGLang's
    ``{"object": "error", "message": ...}``, or ``{"message": ..., "type": ...}``. Every one is redacted
    and ends the stream (an upstream that echoes its credential in any of them must not reach the
    client); a bare one reaches an OpenAI client wrapped as ``{"error": {...}}``."""
    if frame.get("error") is not None:
        return True
    return "choices" not in frame and ("message" in frame or frame.get("object") == "error")


class OpenAIPassthrough:
    """An OpenAI upstream's stream read for an OpenAI client (see the module)."""

    def __init__(self, client_wants_usage, request_body=None):
        self._parser = SSEParser()
        self._carry = b""
        self._client_wants_usage = client_wants_usage
        self._request_body = request_body if request_body is not None else {}
        self.raw_usage = None
        self.events = 0
        self.finished = False
        self.error = None
        self.failure = None

    @property
    def usage(self):
        """``raw_usage`` normalized; none, or not an object: estimated, a token per forwarded event
        (compatible servers stream about one a chunk) minus the role and finish events."""
        usage = openai_usage(self.raw_usage)
        if usage is not None:
            return usage
        return usage_estimate(self._request_body, self.events - 2 if self.events > 2 else 0)

    def feed(self, chunk):
        """What of ``chunk`` (bytes of the upstream's stream, as read) goes to the client now."""
        if self.error is not None:
            return b""      # nothing follows an error event: not a [DONE] that would read as success
        out, self._carry = whole_events(self._carry, chunk)
        if not out:
            return b""
        plain, lines = plain_prefix(out, MARKERS)
        self.events += lines
        if plain == len(out):
            return out
        if not plain:
            return self._read(out)
        rest = out[plain:]
        read = self._read(rest)
        # the plain events are not copied twice (a slice, then the sum) to go out with the rest:
        # not at all when the rest goes out as it came, else once (a 64-event read is ~11 KB)
        return out if read is rest else b"".join((memoryview(out)[:plain], read))

    def _read(self, out):
        """Whole events that may need attention, parsed: what of them goes to the client."""
        events = self._parser.feed(out)
        kept = []           # each event's data as it goes out, when one is dropped or changed
        changed = False
        n = len(events)
        self.events += n
        for i in range(n):
            data = events[i].data
            if data == DONE:
                self.finished = True
            elif needs_parsing(data):
                try:
                    parsed = orjson.loads(data)
                except orjson.JSONDecodeError:
                    parsed = None
                if not isinstance(parsed, dict):
                    # garbage: what came before it goes out, then the stream ends with an error event
                    self.failure = UpstreamFailure(MALFORMED)
                    return b"".join([encode_data(d) for d in kept])
                frame = parsed
                if is_error_frame(frame):
                    # a bare error object goes out in OpenAI's shape, which is what clients (the SDKs)
                    # read as an error; otherwise it would pass for a chunk with nothing in it
                    self.error = redact_bytes(data if frame.get("error") is not None else orjson.dumps({"error": frame}))
                    # it ends the stream: nothing after it goes out (a [DONE] would read as success),
                    # so the read is cut after it (it is re-encoded: rare, and redacted if need be)
                    changed = True
                    self.events -= n - i - 1
                    kept.append(self.error)
                    break
                else:
                    usage = frame.get("usage")
                    if usage:
                        self.raw_usage = usage
                        if not self._client_wants_usage and not frame.get("choices"):
                            changed = True
                            continue        # the usage-only event the client did not ask for
            kept.append(data)
        if not changed:
            return out
        return b"".join([encode_data(d) for d in kept])

