"""The Anthropic passthrough relay, read by read, without processes."""
from __future__ import annotations

import orjson
from hypothesis import given, settings, strategies as st

from fastinfer._core.sse import SSEParser, whole_events
from fastinfer.formats.anthropic import AnthropicStreamRelay
from relays import fed_whole_and_apart


def event(name: str, payload) -> bytes:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


START = event("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 7,
                                                                              "output_tokens": 1}}})
DELTA = event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "text_delta", "text": "hi"}})
DELTA_SAYING_ERROR = event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": "an error, message_"}})
USAGE = event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                "usage": {"output_tokens": 5}})
STOP = event("message_stop", {"type": "message_stop"})
ERROR = event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
GARBAGE = event("content_block_delta", b"{not json")
BODY = {"messages": [{"role": "user", "content": "x" * 40}]}


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.sampled_from([START, DELTA, DELTA_SAYING_ERROR, USAGE, STOP, ERROR, GARBAGE]),
                       min_size=1, max_size=12))
def test_one_read_or_one_read_per_event_relay_the_same(pieces):
    """A fast upstream's whole stream in one read relays as it does event by event."""
    out_whole, out_apart = fed_whole_and_apart(lambda: AnthropicStreamRelay(BODY), pieces)
    assert out_whole == out_apart


# ------------------------------------------------- only the events that need it are parsed

PING = event("ping", {"type": "ping"})
BLOCK_START = event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}})
BLOCK_STOP = event("content_block_stop", {"type": "content_block_stop", "index": 0})
REDACTABLE = event("error", {"type": "error", "error": {"type": "authentication_error",
                                                       "message": "bad key sk-abcdefghijklmnopqrstuvwxyz0123"}})
# brace-ended but not JSON: garbage only to a relay that decodes it
BRACED_NOT_JSON = event("content_block_delta", b'{"type":"content_block_delta" oops}')


def sse_events(stream: bytes) -> list[tuple[str, bytes]]:
    return [(e.event, e.data) for e in SSEParser().feed(stream)]


class ParseEveryEvent:
    """The relay's meaning, read the slow way: every event of a read that holds a start, a usage, the
    end, an error or garbage parsed and decoded, as the relay did before it parsed only those. Each
    event is read by the relay's own ``_attend`` (its rules have their own tests below): what this
    checks is which events get read and what of the read goes out."""

    def __init__(self, request_body: dict):
        self.inner = AnthropicStreamRelay(request_body)
        self.carry = b""

    def feed(self, chunk: bytes) -> bytes:
        if self.inner.error is not None:
            return b""          # an error event ended the stream
        out, self.carry = whole_events(self.carry, chunk)
        if not out:
            return b""
        inner = self.inner
        if not (b"message_" in out or b"error" in out or out.count(b"\n\n") != out.count(b"}\n\n")):
            inner._deltas += out.count(b"content_block_delta") >> 1
            return out
        events = inner._parser.feed(out)
        kept = inner._attend(events)
        return out if kept is None else b"".join(kept)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from([START, DELTA, DELTA_SAYING_ERROR, USAGE, STOP, ERROR, REDACTABLE, GARBAGE,
                                        PING, BLOCK_START, BLOCK_STOP, DELTA.replace(b"\n", b"\r\n")]),
                       min_size=1, max_size=16),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=4))
def test_parsing_only_the_events_that_need_it_relays_as_parsing_every_one(pieces, cuts):
    """Fed the same bytes cut at the same places, the relay and one that parses every event of a read
    that needs reading send the same events out of every read and end alike (finished, usage, error);
    the same bytes unless an event had to change or the read was cut (then the slow way re-encodes the
    whole read, CR line ends and all, where the relay re-encodes that event alone)."""
    stream = b"".join(pieces)
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    relays = AnthropicStreamRelay(BODY), ParseEveryEvent(BODY)
    for a, b in zip(bounds, bounds[1:]):
        outs = [r.feed(stream[a:b]) for r in relays]
        assert sse_events(outs[0]) == sse_events(outs[1])
        if REDACTABLE not in pieces and GARBAGE not in pieces and ERROR not in pieces:
            assert outs[0] == outs[1]
        if relays[1].failure is not None:
            break
    ends = [(r.finished, r.error, r.failure and r.failure.message, r.usage) for r in relays]
    assert ends[0] == ends[1]


def test_the_plain_events_read_with_the_start_and_end_are_not_parsed():
    """A fast upstream's whole stream in one read: its start, usage and end are read, the events
    between go out untouched, never decoded (a brace-ended one that is not JSON would fail the
    stream if it were), as they would have, each in a read of its own."""
    stream = START + BLOCK_START + DELTA + BRACED_NOT_JSON + DELTA + PING + BLOCK_STOP + USAGE + STOP
    relay = AnthropicStreamRelay(BODY)
    assert relay.feed(stream) == stream
    assert relay.failure is None and relay.finished
    assert relay.usage["prompt_tokens"] == 7 and relay.usage["completion_tokens"] == 5
    assert "usage_estimated" not in relay.usage
    one_by_one = AnthropicStreamRelay(BODY)
    assert b"".join(one_by_one.feed(piece) for piece in (START, BLOCK_START, DELTA, BRACED_NOT_JSON, DELTA, PING,
                                                         BLOCK_STOP, USAGE, STOP)) == stream
    assert one_by_one.failure is None and one_by_one.usage == relay.usage


def test_deltas_are_counted_for_the_estimate_around_the_events_read():
    relay = AnthropicStreamRelay(BODY)
    start = START.replace(b'"usage"', b'"other"')      # read, and no usage in it
    relay.feed(start + DELTA * 3 + start + DELTA * 2 + STOP)
    assert relay.finished and relay.error is None
    assert relay.usage["completion_tokens"] == 5 and relay.usage["usage_estimated"]


def test_an_error_event_amid_plain_events_goes_out_redacted_and_ends_the_stream():
    """What came before it goes out as it came; nothing after it does (a message_stop would tell a raw
    client its answer was complete), in this read or any other; the deltas sent are the estimate's."""
    relay = AnthropicStreamRelay(BODY)
    out = relay.feed(START.replace(b'"usage"', b'"other"') + DELTA * 2 + REDACTABLE + DELTA + STOP)
    assert b"sk-abcdefghijklmnop" not in out and b"sk-abcdefghijklmnop" not in relay.error
    assert out.startswith(START.replace(b'"usage"', b'"other"') + DELTA * 2)
    assert [name for name, _ in sse_events(out)][-1] == "error" and not relay.finished
    assert relay.feed(DELTA + STOP) == b""
    assert relay.usage["completion_tokens"] == 2 and relay.usage["usage_estimated"]


def test_garbage_after_plain_events_cuts_the_read_there():
    relay = AnthropicStreamRelay(BODY)
    out = relay.feed(START + DELTA * 2 + USAGE + DELTA + GARBAGE + DELTA + STOP)
    assert relay.failure is not None and not relay.finished
    assert out == START + DELTA * 2 + USAGE + DELTA
