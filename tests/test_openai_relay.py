"""The OpenAI passthrough relay, chunk by chunk, without processes."""
from __future__ import annotations

import orjson
import pytest

from fastinfer.formats.openai import OpenAIStreamRelay


def event(payload) -> bytes:
    return b"data: " + (payload if isinstance(payload, bytes) else orjson.dumps(payload)) + b"\n\n"


TOKEN = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}],
         "usage": None}
USAGE = {"id": "c", "object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def test_token_chunks_pass_through_byte_for_byte():
    relay = OpenAIStreamRelay(client_wants_usage=False)
    chunk = event(TOKEN) * 3
    assert relay.feed(chunk) == chunk
    assert relay.failure is None and not relay.finished


def test_partial_events_are_held_until_whole():
    relay = OpenAIStreamRelay(client_wants_usage=False)
    whole = event(TOKEN)
    assert relay.feed(whole[:20]) == b""
    assert relay.feed(whole[20:] + whole[:5]) == whole
    assert relay.feed(whole[5:]) == whole


@pytest.mark.parametrize("wants_usage", [True, False])
def test_usage_chunk_is_read_and_dropped_unless_asked_for(wants_usage):
    relay = OpenAIStreamRelay(client_wants_usage=wants_usage)
    out = relay.feed(event(TOKEN) + event(USAGE) + event(b"[DONE]"))
    assert relay.usage["completion_tokens"] == 2 and not relay.usage.get("usage_estimated")
    assert relay.finished
    assert (b'"prompt_tokens":3' in out) is wants_usage
    assert out.endswith(b"data: [DONE]\n\n")


def test_garbage_between_good_events_is_caught_even_in_one_read():
    relay = OpenAIStreamRelay(client_wants_usage=False)
    out = relay.feed(event(TOKEN) + b"data: {not json at all\n\n" + event(TOKEN))
    assert relay.failure is not None and "malformed" in relay.failure.message
    assert out == event(TOKEN)  # only what came before the garbage


def test_an_upstream_error_event_is_passed_on_and_remembered():
    relay = OpenAIStreamRelay(client_wants_usage=False)
    err = event({"error": {"message": "overloaded", "type": "server_error"}})
    assert relay.feed(err) == err
    assert relay.error is not None and relay.failure is None


def test_no_usage_from_the_upstream_is_estimated_and_marked():
    relay = OpenAIStreamRelay(client_wants_usage=False, request_body={"messages": [{"role": "user",
                                                                                      "content": "x" * 40}]})
    relay.feed(event(TOKEN) * 5 + event(b"[DONE]"))
    assert relay.usage["usage_estimated"] is True
    assert relay.usage["prompt_tokens"] >= 10
