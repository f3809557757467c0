"""Request bodies for fuzzing the gateway's edge: real shapes, then wrong types anywhere.

``valid_bodies(route)`` draws a body in the full shape a client of that route
may send (OpenAI chat with content parts, images, files, tool calls, tools,
tool_choice, stop, response_format ...; Anthropic messages with system blocks,
images, documents, tool use and results, thinking ...; completions;
embeddings). ``wrong_bodies(route)`` takes such a body and replaces one to
three of its nodes, at any depth, with a value of another JSON type (or an
out-of-range number), which is what a buggy or hostile client sends.

Run as a script against a running gateway to count answers by status::

    python tests/fuzz_bodies.py http://127.0.0.1:8000 5000 openai_model anthropic_model ...
"""
from __future__ import annotations

import string

from hypothesis import strategies as st

ROUTES = ("/v1/chat/completions", "/v1/messages", "/v1/completions", "/v1/embeddings", "/v1/messages/count_tokens")

_text = st.text(alphabet=string.ascii_letters + " éß☃", max_size=12)
_words = st.sampled_from(["hello", "what is the weather in Paris", "tell me a story", "", "x y z"])
_name = st.sampled_from(["get_weather", "lookup", "f"])
_data_url = st.sampled_from(["data:image/png;base64,iVBORw0KGgo=", "data:application/pdf;base64,JVBERi0=",
                             "data:image/jpeg;base64,", "data:;base64,AAAA"])
_http_url = st.sampled_from(["https://example.com/cat.png", "https://example.com/a.jpg?x=1", "http://h/i"])
_url = st.one_of(_data_url, _http_url)

_schema_leaf = st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "number", "boolean"])},
                                     optional={"description": _text, "enum": st.lists(_text, max_size=3)})
_schema = st.recursive(
    _schema_leaf,
    lambda inner: st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(_name, inner, max_size=3)},
        optional={"required": st.lists(_name, max_size=2), "additionalProperties": st.booleans(),
                  "$schema": st.just("http://json-schema.org/draft-07/schema#")})
    | st.fixed_dictionaries({"type": st.just("array"), "items": inner}),
    max_leaves=6)


# ------------------------------------------------------------------ OpenAI chat

_openai_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": _words}),
    st.fixed_dictionaries({"type": st.just("image_url"),
                           "image_url": st.fixed_dictionaries({"url": _url},
                                                              optional={"detail": st.sampled_from(["auto", "low"])})}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": _url}),   # the legacy string form
    st.fixed_dictionaries({"type": st.just("file"),
                           "file": st.fixed_dictionaries({}, optional={"file_data": _data_url,
                                                                       "filename": _text, "file_id": _text})}),
    st.fixed_dictionaries({"type": st.just("input_audio"),
                           "input_audio": st.fixed_dictionaries({"data": _text, "format": st.just("wav")})}),
)
_openai_content = st.one_of(_words, st.lists(_openai_part, min_size=1, max_size=3))
_tool_call = st.fixed_dictionaries({
    "id": st.sampled_from(["call_1", "call_2"]), "type": st.just("function"),
    "function": st.fixed_dictionaries({"name": _name, "arguments": st.sampled_from(['{"city": "Paris"}', "", "{}",
                                                                                   "[1]", "not json"])})})
_openai_message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]),
                           "content": st.one_of(_words, st.lists(st.fixed_dictionaries(
                               {"type": st.just("text"), "text": _words}), min_size=1, max_size=2))},
                          optional={"name": _name}),
    st.fixed_dictionaries({"role": st.just("user"), "content": _openai_content}, optional={"name": _name}),
    st.fixed_dictionaries({"role": st.just("assistant")},
                          optional={"content": st.one_of(st.none(), _openai_content),
                                    "tool_calls": st.lists(_tool_call, min_size=1, max_size=2),
                                    "refusal": st.none(), "name": _name}),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": st.sampled_from(["call_1", "call_9"]),
                           "content": st.one_of(_words, st.lists(st.fixed_dictionaries(
                               {"type": st.just("text"), "text": _words}), min_size=1, max_size=2))}),
    st.fixed_dictionaries({"role": st.just("function"), "name": _name, "content": _words}),
)
_openai_tool = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": _name}, optional={"description": _text, "parameters": _schema, "strict": st.booleans()})})
_openai_tool_choice = st.one_of(
    st.sampled_from(["auto", "none", "required"]),
    st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": _name})}))
_response_format = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
    st.fixed_dictionaries({"type": st.just("json_schema"), "json_schema": st.fixed_dictionaries(
        {"name": _name}, optional={"schema": _schema, "strict": st.booleans(), "description": _text})}))

_openai_chat = st.fixed_dictionaries(
    {"model": st.just("MODEL"), "messages": st.lists(_openai_message, min_size=1, max_size=4)},
    optional={
        "stream": st.booleans(),
        "max_tokens": st.integers(1, 64),
        "max_completion_tokens": st.integers(1, 64),
        "n": st.integers(1, 2),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "seed": st.integers(0, 1000),
        "presence_penalty": st.floats(-2, 2),
        "frequency_penalty": st.floats(-2, 2),
        "logit_bias": st.dictionaries(st.sampled_from(["9", "50256"]), st.integers(-100, 100), max_size=2),
        "top_logprobs": st.integers(0, 3),
        "top_k": st.integers(1, 50),          # a compatible server's (vLLM, SGLang)
        "modalities": st.sampled_from([["text"], ["text", "audio"]]),
        "stop": st.one_of(_text, st.lists(_text, max_size=4)),
        "tools": st.lists(_openai_tool, max_size=3),
        "tool_choice": _openai_tool_choice,
        "parallel_tool_calls": st.booleans(),
        "response_format": _response_format,
        "user": _text,
        "logprobs": st.booleans(),
        "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high"]),
        "metadata": st.dictionaries(_name, _text, max_size=2),
        "priority": st.sampled_from(["high", "normal", "background"]),
    })


# ------------------------------------------------------------- Anthropic messages

_b64_source = st.fixed_dictionaries({"type": st.just("base64"), "media_type": st.sampled_from(["image/png",
                                                                                             "image/jpeg"]),
                                     "data": st.just("iVBORw0KGgo=")})
_url_source = st.fixed_dictionaries({"type": st.just("url"), "url": _http_url})
_text_block = st.fixed_dictionaries({"type": st.just("text"), "text": _words},
                                    optional={"cache_control": st.just({"type": "ephemeral"})})
_image_block = st.fixed_dictionaries({"type": st.just("image"), "source": st.one_of(_b64_source, _url_source)})
_document_block = st.fixed_dictionaries({"type": st.just("document"), "source": st.one_of(
    st.fixed_dictionaries({"type": st.just("base64"), "media_type": st.just("application/pdf"),
                           "data": st.just("JVBERi0=")}),
    st.fixed_dictionaries({"type": st.just("text"), "media_type": st.just("text/plain"), "data": _words}),
    _url_source)}, optional={"title": _text})
_tool_use_block = st.fixed_dictionaries({"type": st.just("tool_use"), "id": st.sampled_from(["toolu_1", "toolu_2"]),
                                         "name": _name, "input": st.dictionaries(_name, _text, max_size=2)})
_tool_result_block = st.fixed_dictionaries(
    {"type": st.just("tool_result"), "tool_use_id": st.sampled_from(["toolu_1", "toolu_9"])},
    optional={"content": st.one_of(_words, st.lists(st.one_of(_text_block, _image_block), max_size=2)),
              "is_error": st.booleans()})
_thinking_block = st.fixed_dictionaries({"type": st.just("thinking"), "thinking": _words, "signature": _text})
_anthropic_message = st.one_of(
    st.fixed_dictionaries({"role": st.just("user"), "content": st.one_of(_words, st.lists(st.one_of(
        _text_block, _image_block, _document_block, _tool_result_block), min_size=1, max_size=3))}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.one_of(_words, st.lists(st.one_of(
        _text_block, _tool_use_block, _thinking_block), min_size=1, max_size=3))}),
)
_anthropic_tool = st.one_of(
    st.fixed_dictionaries({"name": _name, "input_schema": _schema}, optional={"description": _text,
                                                                              "cache_control": st.just(
                                                                                  {"type": "ephemeral"})}),
    st.fixed_dictionaries({"type": st.just("web_search_20250305"), "name": st.just("web_search")}),
)
_anthropic_tool_choice = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "none"])},
                          optional={"disable_parallel_tool_use": st.booleans()}),
    st.fixed_dictionaries({"type": st.just("tool"), "name": _name}))

_anthropic = st.fixed_dictionaries(
    {"model": st.just("MODEL"), "max_tokens": st.integers(1, 64),
     "messages": st.lists(_anthropic_message, min_size=1, max_size=4)},
    optional={
        "system": st.one_of(_words, st.lists(_text_block, min_size=1, max_size=2)),
        "stream": st.booleans(),
        "temperature": st.floats(0, 1),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(1, 50),
        "stop_sequences": st.lists(_text, max_size=3),
        "tools": st.lists(_anthropic_tool, max_size=3),
        "tool_choice": _anthropic_tool_choice,
        "metadata": st.fixed_dictionaries({}, optional={"user_id": _text}),
        "thinking": st.just({"type": "enabled", "budget_tokens": 1024}),
        "priority": st.sampled_from(["high", "normal"]),
    })


# ----------------------------------------------------------- completions, embeddings

_completions = st.fixed_dictionaries(
    {"model": st.just("MODEL"), "prompt": st.one_of(_words, st.lists(_words, min_size=1, max_size=3),
                                                     st.lists(st.integers(0, 50000), min_size=1, max_size=5))},
    optional={"max_tokens": st.integers(1, 64), "n": st.integers(1, 2), "stream": st.booleans(),
              "stop": st.one_of(_text, st.lists(_text, max_size=4)), "temperature": st.floats(0, 2),
              "echo": st.booleans(), "suffix": _text, "logprobs": st.integers(0, 5), "user": _text})
_embeddings = st.fixed_dictionaries(
    {"model": st.just("MODEL"), "input": st.one_of(_words, st.lists(_words, min_size=1, max_size=3),
                                                   st.lists(st.integers(0, 50000), min_size=1, max_size=5))},
    optional={"dimensions": st.integers(1, 64), "encoding_format": st.sampled_from(["float", "base64"]),
              "user": _text})

_VALID = {"/v1/chat/completions": _openai_chat, "/v1/messages": _anthropic, "/v1/completions": _completions,
          "/v1/embeddings": _embeddings, "/v1/messages/count_tokens": _anthropic}


def valid_bodies(route: str):
    return _VALID[route]


# ------------------------------------------------------------------- mutation

#: values of every JSON type, and numbers just outside every range the contract names
WRONG_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 5, 2**31, 2**63, -2**63, 1.5, -0.0, 1e300, "", "s", "auto",
                     [], [5], ["s"], [None], [[]], {}, {"x": 5}, {"type": 5}, {"type": "text"}, {"url": 5},
                     [{"type": 5}], [{}], {"properties": 5}]),
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5),
)


def _paths(value, prefix=()):
    """Every node's path in a JSON value, the root's children first; never the model."""
    out = []
    if isinstance(value, dict):
        for key, child in value.items():
            if prefix == () and key == "model":
                continue
            out.append(prefix + (key,))
            out.extend(_paths(child, prefix + (key,)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out.append(prefix + (i,))
            out.extend(_paths(child, prefix + (i,)))
    return out


def _replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(value[head], rest, new)
    return copy


@st.composite
def wrong_bodies(draw, route: str):
    """A real-shaped body with one to three nodes replaced by wrong-typed values."""
    body = draw(valid_bodies(route))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        if not paths:
            break
        path = paths[draw(st.integers(0, len(paths) - 1))]
        body = _replace(body, path, draw(WRONG_VALUES))
    return body


def with_model(body, model: str):
    return {**body, "model": model} if isinstance(body, dict) else body


if __name__ == "__main__":   # the counting script: how many fuzzed bodies answer what
    import collections
    import json
    import sys
    import urllib.request
    import warnings

    warnings.filterwarnings("ignore")
    base, count, models = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    statuses: collections.Counter = collections.Counter()
    failures = []
    for i in range(count):
        route = ROUTES[i % len(ROUTES)]
        body = wrong_bodies(route).example()
        for model in models:
            sent = with_model(body, model)
            req = urllib.request.Request(base + route, data=json.dumps(sent).encode(), method="POST",
                                         headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status, text = resp.status, resp.read()
            except urllib.error.HTTPError as e:
                status, text = e.code, e.read()
            except TimeoutError:
                status, text = "timeout", b""
            statuses[status] += 1
            if status == "timeout" or (status >= 500 and status not in (502, 503, 504)):
                failures.append({"route": route, "model": model, "status": status, "body": sent,
                                 "answer": text[:300].decode(errors="replace")})
    print(json.dumps({"sent": sum(statuses.values()), "statuses": dict(statuses)}))
    for failure in failures:
        print(json.dumps(failure))
