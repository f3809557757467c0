"""The Anthropic passthrough relay, read by read, without processes."""
from __future__ import annotations

import orjson
from hypothesis import given, settings, strategies as st

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
