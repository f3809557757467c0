"""The OpenAI passthrough relay, chunk by chunk, without processes."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from fastinfer._core.sse import SSEParser
from fastinfer.formats.openai import OpenAIStreamRelay
from relays import fed_whole_and_apart


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
    # 40 characters at four a token; a token an event, the role's and the finish's not counted
    assert relay.usage == {"prompt_tokens": 10, "completion_tokens": relay.events - 2,
                           "total_tokens": 10 + relay.events - 2, "usage_estimated": True}
    assert relay.events >= 5
    assert OpenAIStreamRelay(client_wants_usage=False).usage["completion_tokens"] == 0    # no event, no body


def test_a_usage_that_is_not_an_object_is_estimated_as_none_would_be():
    """A compatible server's ``"usage": 7`` (read: the event ends in a space, not like an object) is
    no count: the usage is estimated, as when no usage came."""
    relay = OpenAIStreamRelay(client_wants_usage=False, request_body={"messages": [{"role": "user",
                                                                                      "content": "x" * 40}]})
    relay.feed(event(TOKEN) * 3 + b'data: {"choices":[],"usage":7} \n\n' + event(b"[DONE]"))
    assert relay.finished and relay.failure is None
    assert relay.usage["usage_estimated"] is True and relay.usage["prompt_tokens"] >= 10


def test_token_events_read_with_the_end_are_not_parsed():
    """A short stream comes in one read with its usage and ``[DONE]``: only the usage event is decoded.
    Token events that would fail to decode (a brace-ended non-JSON text) show it: decoded, they would
    end the stream as garbage."""
    undecodable = event(b"{not json, but ends like an object}")
    relay = OpenAIStreamRelay(client_wants_usage=False)
    stream = undecodable * 64 + event(USAGE) + undecodable + event(b"[DONE]")
    assert relay.feed(stream) == undecodable * 65 + event(b"[DONE]")
    assert relay.failure is None
    assert relay.usage["completion_tokens"] == 2 and relay.finished


GARBAGE = b"data: {not json at all\n\n"


def sse_events(stream: bytes) -> list[tuple[str, bytes]]:
    """What a client's SSE parser sees (a read re-encoded to drop a usage event ends lines in LF
    and leaves comments out)."""
    return [(e.event, e.data) for e in SSEParser().feed(stream)]
ERROR = event({"error": {"message": "overloaded", "type": "server_error"}})


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.sampled_from([event(TOKEN), event(USAGE), ERROR, GARBAGE, event(b"[DONE]"),
                                        event(TOKEN).replace(b"\n\n", b"\r\n\r\n"), b": keep-alive\n\n",
                                        event({**TOKEN, "usage": None, "choices": [{"delta": {"content": "[DONE]"}}]})]),
                       min_size=1, max_size=12),
       wants_usage=st.booleans())
def test_one_read_or_one_read_per_event_relay_the_same(pieces, wants_usage):
    """Skipping token events inside a read that needs attention changes nothing a client or the
    accounting sees: the same bytes, usage, end, error and failure as reading event by event."""
    out_whole, out_apart = fed_whole_and_apart(lambda: OpenAIStreamRelay(client_wants_usage=wants_usage), pieces)
    assert sse_events(out_whole) == sse_events(out_apart)
    if wants_usage and GARBAGE not in pieces and ERROR not in pieces:
        assert out_whole == out_apart       # nothing dropped or cut, nothing re-encoded: the very bytes


def test_a_read_with_its_end_goes_out_without_a_copy_of_its_plain_events():
    """A whole stream in one read: its token events go out unparsed; when the rest goes out as it came
    (the client asked for usage), the read itself is what goes out, no copy of it; when the usage
    event is dropped, the rest is joined to the token events once."""
    stream = event(TOKEN) * 64 + event(USAGE) + event(b"[DONE]")
    assert OpenAIStreamRelay(client_wants_usage=True).feed(stream) is stream
    assert OpenAIStreamRelay(client_wants_usage=False).feed(stream) == event(TOKEN) * 64 + event(b"[DONE]")


def test_an_event_needs_reading_when_it_holds_any_marker_the_plain_prefix_stops_at():
    from fastinfer._core.relay import MARKERS as _MARKERS, needs_parsing as _event_needs_parsing
    plain = b'{"choices":[{"delta":{"content":"hi"}}]}'
    assert not _event_needs_parsing(plain)
    assert _event_needs_parsing(plain[:-1])            # not ending like a JSON object
    for marker in _MARKERS:                             # the spelled-out test follows the tuple
        assert _event_needs_parsing(b'{"x":1,' + marker + b'}'), marker


REDACTABLE = event({"error": {"message": "bad key sk-abcdefghijklmnopqrstuvwxyz0123", "type": "auth"}})
# vLLM's and SGLang's in-stream error: the error object itself, no "error" key
BARE_ERROR = event({"object": "error", "message": "bad key sk-abcdefghijklmnopqrstuvwxyz0123",
                    "type": "BadRequestError", "code": 400})


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from([event(TOKEN), event(USAGE), ERROR, REDACTABLE, BARE_ERROR, GARBAGE,
                                        event(b"[DONE]"), event({"message": "m", "type": "t"}),
                                        event(TOKEN).replace(b"\n\n", b"\r\n\r\n"), b": keep-alive\n\n",
                                        event({**USAGE, "choices": [{"delta": {}}]}), event(b"{not json}")]),
                       min_size=1, max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=4),
       wants_usage=st.booleans())
def test_the_compiled_relay_reads_as_its_python_source(pieces, cuts, wants_usage):
    """``_core.relay`` compiled and its ``.py`` run as Python (``_core.ref.relay``), fed the same bytes
    cut at the same places: the same bytes out of every read, and the same end, usage, error, failure
    and event count."""
    from fastinfer._core import relay as compiled
    from fastinfer._core.ref import relay as reference
    assert compiled.__file__.endswith(".so"), "the core is not built"
    stream = b"".join(pieces)
    bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    reads = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    body = {"messages": [{"role": "user", "content": "x" * 41}]}
    relays = compiled.OpenAIPassthrough(wants_usage, body), reference.OpenAIPassthrough(wants_usage, body)
    for read in reads:
        outs = [r.feed(read) for r in relays]
        assert outs[0] == outs[1]
        if relays[1].failure is not None:
            break
    ends = [(r.finished, r.raw_usage, r.usage, r.error, r.events, r.failure and r.failure.message) for r in relays]
    assert ends[0] == ends[1]


def test_an_error_event_goes_out_redacted_and_is_remembered_so():
    relay = OpenAIStreamRelay(client_wants_usage=False)
    out = relay.feed(event(TOKEN) + REDACTABLE + event(b"[DONE]"))
    assert b"sk-abcdefghijklmnop" not in out and b"sk-abcdefghijklmnop" not in relay.error
    assert out.startswith(event(TOKEN)) and [name for name, _ in sse_events(out)] == ["message", "message"]


@pytest.mark.parametrize("bare", [BARE_ERROR, event({"message": "bad key sk-abcdefghijklmnopqrstuvwxyz0123"})])
def test_a_bare_error_object_goes_out_redacted_in_openais_shape_and_ends_the_stream(bare):
    """Not ``{"error": ...}``: an OpenAI SDK would read it as an empty chunk, and the key in it would
    reach the client. It ends the stream as any error does, wrapped so a client reads it as one."""
    relay = OpenAIStreamRelay(client_wants_usage=False)
    out = relay.feed(event(TOKEN) + bare + event(TOKEN) + event(b"[DONE]"))
    assert b"sk-abcdefghijklmnop" not in out and b"sk-abcdefghijklmnop" not in relay.error
    (_, first), (_, error) = sse_events(out)
    assert first == orjson.dumps(TOKEN)
    assert orjson.loads(error)["error"]["message"] == "bad key sk-****" and error == relay.error
    assert not relay.finished


@pytest.mark.parametrize("extra", [{"message": "a server's own field"}, {"error": None}])
def test_a_chunk_with_choices_and_a_message_key_is_not_an_error(extra):
    chunk = {**TOKEN, **extra}
    relay = OpenAIStreamRelay(client_wants_usage=True)
    assert relay.feed(event(chunk) + event(b"[DONE]")) == event(chunk) + event(b"[DONE]")
    assert relay.error is None and relay.finished


def test_nothing_follows_an_error_event_not_even_done():
    """vLLM ends a failed stream with an error event, then [DONE]: passed on, the [DONE] would tell a
    raw client its answer was complete. The error ends the stream, in its read and in any after."""
    relay = OpenAIStreamRelay(client_wants_usage=False)
    error = event({"error": {"message": "overloaded", "type": "server_error"}})
    assert relay.feed(event(TOKEN) + error + event(TOKEN) + event(b"[DONE]")) == event(TOKEN) + error
    assert relay.feed(event(TOKEN) + event(b"[DONE]")) == b""
    assert relay.error == orjson.dumps({"error": {"message": "overloaded", "type": "server_error"}})
    assert not relay.finished


def test_garbage_after_an_error_event_in_one_read_is_not_read():
    """The error ended the stream: the redacted error goes out after what came before it, and what
    follows it (garbage here) is neither sent nor judged."""
    relay = OpenAIStreamRelay(client_wants_usage=False)
    out = relay.feed(event(TOKEN) + REDACTABLE + GARBAGE)
    assert relay.failure is None and relay.error is not None
    assert b"sk-abcdefghijklmnop" not in out
    assert sse_events(out)[0] == ("message", orjson.dumps(TOKEN)) and len(sse_events(out)) == 2
