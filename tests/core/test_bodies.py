"""What every request reads of a body (``fastinfer._core.bodies``) and its pure-Python reference.

Owns: that the compiled readers and the reference give the same answer for any body, and what
that answer is on the edges: the prompt's quick count on the edges of the common shape
(``tests/test_limits_unit.py`` holds the count to the walk of every text field), an OpenAI
usage with counts and details of every type (``tests/test_formats.py`` holds the formats to it).
Must not touch: limits, HTTP.
"""
from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from fastinfer._core import bodies as compiled
from fastinfer._core.ref import bodies as reference


@pytest.fixture(params=[compiled, reference], ids=["compiled", "reference"])
def m(request):
    return request.param


def test_the_common_shape_is_counted(m):
    body = {"model": "m", "system": "be brief", "messages": [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "user", "content": "caf\xe9"}]}
    assert m.chat_chars(body) == len("be brief") + len("hello") + len("caf\xe9")
    assert m.chat_chars({"messages": []}) == 0
    assert m.chat_chars({"messages": [], "system": None}) == 0


@pytest.mark.parametrize("body", [
    {},
    {"messages": "hello"},
    {"messages": [], "prompt": "x"},
    {"messages": [], "input": "x"},
    {"messages": [], "contents": []},
    {"messages": [], "systemInstruction": {}},
    {"messages": [], "system": [{"type": "text", "text": "x"}]},
    {"messages": ["hello"]},
    {"messages": [{"role": "user", "content": ["a"]}]},
    {"messages": [{"role": "user", "content": 3}]},
    {"messages": [{"content": "a", "text": "b"}]},
    {"messages": [{"role": "assistant", "content": None, "thinking": "b"}]},
    {"messages": [{"role": "user", "content": "a", "parts": []}]},
], ids=repr)
def test_any_other_shape_is_left_to_the_walk(m, body):
    assert m.chat_chars(body) == -1


_TEXT = st.text(max_size=8)
_VALUE = st.one_of(st.none(), _TEXT, st.integers(), st.lists(_TEXT, max_size=2),
                   st.dictionaries(st.sampled_from(["text", "type"]), _TEXT, max_size=2))
_MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.one_of(_TEXT, st.none())}),
    st.dictionaries(st.sampled_from(["role", "content", "text", "parts", "thinking", "name"]), _VALUE, max_size=4),
    _VALUE)
_BODY = st.dictionaries(
    st.sampled_from(["messages", "messages", "system", "model", "prompt", "input", "contents", "systemInstruction"]),
    st.one_of(st.lists(_MESSAGE, max_size=5), _VALUE), max_size=4)


@settings(max_examples=300, deadline=None)
@given(_BODY)
def test_compiled_equals_reference(body):
    assert compiled.chat_chars(body) == reference.chat_chars(body)


def test_a_requests_charge_is_its_prompt_in_tokens_and_the_completion_it_may_ask_for(m):
    body = {"messages": [{"role": "user", "content": "x" * 37}]}        # 37 characters: 10 tokens
    assert m.request_tokens(body) == 10
    assert m.request_tokens({**body, "max_tokens": 100}) == 110
    assert m.request_tokens({**body, "max_completion_tokens": 100, "n": 3}) == 310
    assert m.request_tokens({**body, "max_tokens": 0, "max_completion_tokens": 5}) == 15   # 0 is no limit
    assert m.request_tokens({**body, "max_tokens": 7, "n": True}) == 17      # a bool n is one choice
    assert m.request_tokens({**body, "max_tokens": True}) == 10              # a bool is not a count
    assert m.request_tokens({**body, "max_tokens": 10**30, "n": 2}) == 10 + 2 * 10**30
    walked = {"system": "y" * 8, "messages": [{"role": "user", "content": [{"type": "text", "text": "z" * 8}]}]}
    assert m.request_tokens(walked) == 4
    assert m.request_tokens({}) == 0


def test_an_answer_its_upstream_did_not_count_is_estimated_from_the_prompt_in_openai_usages_shape(m):
    body = {"messages": [{"role": "user", "content": "x" * 37}]}        # 37 characters: 10 tokens
    assert m.prompt_tokens(body) == 10
    assert m.prompt_tokens({"messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 9}]}]}) == 3
    assert m.prompt_tokens({}) == 0
    estimate = m.usage_estimate(body, 5)
    assert estimate == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "usage_estimated": True}
    assert list(estimate) == ["prompt_tokens", "completion_tokens", "total_tokens", "usage_estimated"]
    assert m.usage_estimate({}, 0)["total_tokens"] == 0


@settings(max_examples=200, deadline=None)
@given(_BODY, st.integers(0, 10**6))
def test_an_estimate_compiled_equals_reference(body, completion):
    assert compiled.prompt_tokens(body) == reference.prompt_tokens(body)
    assert compiled.usage_estimate(body, completion) == reference.usage_estimate(body, completion)


@settings(max_examples=300, deadline=None)
@given(_BODY, st.one_of(st.none(), st.integers(-5, 10**6), st.booleans(), st.text(max_size=2)),
       st.one_of(st.none(), st.integers(-2, 8), st.booleans()))
def test_a_requests_charge_compiled_equals_reference(body, most, n):
    body = {**body, "max_tokens": most, "n": n}
    assert compiled.request_tokens(body) == reference.request_tokens(body)


def test_an_openai_usage_is_normalized_and_anything_not_a_count_is_zero(m):
    assert m.openai_usage({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 99,
                           "prompt_tokens_details": {"cached_tokens": 4},
                           "completion_tokens_details": {"reasoning_tokens": 2}}) == {
        "prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10, "cached_tokens": 4, "reasoning_tokens": 2}
    assert m.openai_usage({"prompt_tokens": True, "completion_tokens": 2.0, "prompt_tokens_details": [4],
                           "completion_tokens_details": {"reasoning_tokens": "2"}}) == {
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert m.openai_usage({"prompt_tokens_details": {"cached_tokens": 0}}) == {
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for not_an_object in (None, [], "usage", 3):
        assert m.openai_usage(not_an_object) is None


_COUNT = st.one_of(st.integers(-5, 10**12), st.booleans(), st.floats(allow_nan=False), st.none(), _TEXT)
_DETAILS = st.one_of(st.dictionaries(st.sampled_from(["cached_tokens", "reasoning_tokens", "audio_tokens"]), _COUNT,
                                     max_size=2), _COUNT, st.lists(_COUNT, max_size=2))
_USAGE = st.one_of(st.dictionaries(st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens",
                                                    "prompt_tokens_details", "completion_tokens_details"]),
                                   st.one_of(_COUNT, _DETAILS), max_size=5), _VALUE)


@settings(max_examples=300, deadline=None)
@given(_USAGE)
def test_openai_usage_compiled_equals_reference(u):
    assert compiled.openai_usage(u) == reference.openai_usage(u)


def test_a_whole_openai_replys_usage_is_read_from_its_bytes(m):
    reply = {"id": "x", "choices": [{"message": {"content": "hi"}}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 1}}}
    assert m.openai_reply_usage(orjson.dumps(reply)) == {"prompt_tokens": 5, "completion_tokens": 2,
                                                         "total_tokens": 7, "cached_tokens": 1}
    # none, one that counts nothing, or one that is no object: None, for the caller to estimate
    for usage in ({}, {"usage": None}, {"usage": {"prompt_tokens": 0}}, {"usage": [3]}):
        assert m.openai_reply_usage(orjson.dumps({"choices": [], **usage})) is None


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"text"', b"null", b'{"usage": {}', b"\xff{}"])
def test_a_whole_reply_that_is_not_a_json_object_is_a_value_error(m, body):
    with pytest.raises(ValueError):
        m.openai_reply_usage(body)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_USAGE, st.dictionaries(st.just("usage"), _USAGE, max_size=1)))
def test_openai_reply_usage_compiled_equals_reference(value):
    # The stdlib writes what an upstream might send and orjson cannot: integers past 64 bits, Infinity.
    body = json.dumps(value).encode()
    answers = []
    for m in (compiled, reference):
        try:
            answers.append(m.openai_reply_usage(body))
        except ValueError:
            answers.append(ValueError)
    assert answers[0] == answers[1]


@pytest.mark.parametrize("body, expected", [
    # a repeated key counts as a dict keeps it: the last one
    (b'{"usage":{"prompt_tokens":1,"prompt_tokens":7,"completion_tokens":2}}', (7, 2, {})),
    (b'{"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3},'
     b'"prompt_tokens_details":{"audio_tokens":1}}}', (5, 2, {})),
    (b'{"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1,'
     b'"cached_tokens":4}}}', (5, 2, {"cached_tokens": 4})),
    # a key spelled with escapes is the same key once read
    (b'{"usage":{"prompt\\u005ftokens":5,"completion_tokens":2}}', (5, 2, {})),
    (b'{"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"c\\u0061ched_tokens":1}}}',
     (5, 2, {"cached_tokens": 1})),
    # a count that is no integer is 0; a longer or shorter name is another member
    (b'{"usage":{"prompt_tokens":5.0,"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":1e2}}}',
     (0, 2, {})),
    (b'{"usage":{"prompt_tokens":true,"completion_tokens":-3,"completion_tokens_details":{"reasoning_tokens":2}}}',
     (0, -3, {"reasoning_tokens": 2})),
    (b'{"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens_x":1,"cached":4,'
     b'"n":[1,{"cached_tokens":9}]}}}', (5, 2, {})),
    (b'{"usage" : { "prompt_tokens" : 5 , "completion_tokens" : 2 ,"x":{"y":[null,"}"]} } }', (5, 2, {})),
    (b'{"usage":[1]}', None), (b'{"usage":{}}', None), (b'{"usage":{"prompt_tokens":2,"completion_tokens":-2}}', None),
])
def test_a_replys_usage_read_from_its_bytes_is_what_its_parsed_dict_gives(m, body, expected):
    """The compiled reader takes a reply's usage from its bytes where they lie: the cases a reading
    of the bytes could get wrong, answered as the parsed dict (the reference) answers them."""
    want = None if expected is None else {"prompt_tokens": expected[0], "completion_tokens": expected[1],
                                          "total_tokens": expected[0] + expected[1], **expected[2]}
    assert m.openai_reply_usage(body) == want


# ---------------------------------------------------------------- the reply scan

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)
_REPLY = st.fixed_dictionaries({}, optional={"id": st.text(max_size=8), "choices": _JSON, "usage": _JSON | _USAGE,
                                             "model": st.text(max_size=8)})


def _written(value, ascii_only: bool, spaced: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only, separators=(", ", ": ") if spaced else (",", ":")).encode()


def _scan_agrees_with_orjson(body: bytes) -> None:
    """What the scan is sure of, orjson reads alike: a JSON object whose ``usage`` is the span's."""
    span = compiled.reply_usage_span(body)
    if span is None:
        return
    reply = orjson.loads(body)      # never raises when the scan was sure
    assert type(reply) is dict
    if span == (-1, -1):
        assert "usage" not in reply
    else:
        assert orjson.loads(body[span[0]:span[1]]) == reply["usage"]


# bytes that turn a valid reply into an invalid one, or into one outside the scan's subset
_TRICKY = st.sampled_from([b"\x00", b"\x01", b"\x1f", b"\x7f", b"\x80", b"\xc3\xa9", b"\xff", b'"', b"\\",
                           b"\\u", b"\\ud800", b"\\x", b"e", b"E9", b"e999", b"0", b"-", b".", b",", b":", b"}", b"]",
                           b"{", b"[", b" ", b"\t", b"\v", b"true", b"nul", b'"usage":'])


@settings(max_examples=600, deadline=None)
@given(_REPLY | _JSON, st.booleans(), st.booleans(),
       st.lists(st.tuples(st.floats(0, 1), _TRICKY | st.binary(max_size=3)), max_size=3))
def test_what_the_reply_scan_is_sure_of_orjson_reads_alike(value, ascii_only, spaced, edits):
    """The scan says "a JSON object, its usage here" only of bodies orjson reads so; of the rest it says
    nothing (orjson decides): generated replies, written every way, and the same with bytes replaced
    or inserted anywhere."""
    body = _written(value, ascii_only, spaced)
    _scan_agrees_with_orjson(body)
    for where, inserted in edits:
        at = int(where * len(body))
        _scan_agrees_with_orjson(body[:at] + inserted + body[at + 1:])
        _scan_agrees_with_orjson(body[:at] + inserted + body[at:])


@pytest.mark.parametrize("body", [
    rb'{"id":"c","choices":[{"message":{"content":"hi \\ \" \u00e9 \n"}}],"usage":{"prompt_tokens":3}}',
    b' {\n "usage" : {"prompt_tokens": 1, "completion_tokens": 2} ,\n "n": [1.5e-3, -0, true, false, null]}\t',
    b'{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2,"completion_tokens":1}}',   # the last one counts
    b'{}',
])
def test_a_plain_reply_is_scanned_not_parsed(body):
    # the fast way is taken for the replies upstreams send (ASCII, plain numbers): the scan is sure
    assert compiled.reply_usage_span(body) is not None
    _scan_agrees_with_orjson(body)
    assert compiled.openai_reply_usage(body) == reference.openai_reply_usage(body)


@pytest.mark.parametrize("body", [
    '{"choices":[{"message":{"content":"caf\u00e9"}}]}'.encode(),     # UTF-8 past ASCII
    rb'{"a":"\ud83d\ude00"}', b'{"a":123456789012345678901}', b'{"a":1e400}', rb'{"us\u0061ge":{"prompt_tokens":1}}',
    b'[{"usage":{}}]', b'{"a":' * 70 + b'1' + b'}' * 70, b'{"a":1,}', b'{"a":01}', b'{"a":"\x01"}',
])
def test_what_the_scan_is_unsure_of_is_left_to_orjson(body):
    assert compiled.reply_usage_span(body) is None
    try:
        expected = reference.openai_reply_usage(body)
    except ValueError:
        with pytest.raises(ValueError):
            compiled.openai_reply_usage(body)
    else:
        assert compiled.openai_reply_usage(body) == expected


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


# strings made of what could fool a byte count: brackets, quotes, backslashes (escaped in the text)
_tricky = st.text(alphabet='[]{}"\\ax\u00e9', max_size=10)
_json = st.recursive(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), _tricky),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky, inner, max_size=3),
                     max_leaves=50)


@settings(max_examples=400, deadline=None)
@given(value=_json, limit=st.integers(0, 10), indent=st.booleans())
def test_the_depth_of_a_body_is_its_trees_in_both(value, limit, indent):
    """One pass over the bytes (compiled) or the reference's bytes methods: brackets inside strings and
    escaped quotes never count, whatever the spacing; both equal the parsed tree's depth check."""
    import orjson
    raw = orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)
    expected = _depth(value) > limit
    assert compiled.json_depth_exceeds(raw, limit) == reference.json_depth_exceeds(raw, limit) == expected


@pytest.mark.parametrize("raw, limit, deeper", [
    (b"", 0, False), (b'"', 0, False), (b'"\\', 0, False),       # a string that never closes ends the scan
    (b'["\\"', 1, False), (b'["\\"', 0, True),                  # its escaped quote does not close it
    (b"[[[", 2, True), (b"[[[", 3, False), (b"]]]", 0, False),
    (b'{"a":"\\\\"}', 0, True), (b'{"a":"\\\\"}', 1, False),  # an escaped backslash does not escape the quote
    (b'["[[[", "\\"[["]', 1, False),                            # brackets in strings never count
])
def test_the_depth_of_edge_bytes(raw, limit, deeper):
    """Only valid JSON reaches the check (orjson parsed it first); bytes that are not still end the scan,
    and each of these is read as its brackets outside strings say."""
    assert compiled.json_depth_exceeds(raw, limit) is deeper


_leaf = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=6))
_tree = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["text", "content", "parts", "thinking", "type", "role", "name"]), inner, max_size=3),
    max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["system", "messages", "contents", "systemInstruction", "prompt", "input",
                                        "model", "tools"]), _tree, max_size=5))
def test_a_walked_prompt_counts_the_same_in_both(body):
    """Every string under the prompt's fields, under text keys or in lists: the same count compiled
    and in the reference (``test_limits_unit`` holds the quick count to the walk)."""
    assert compiled.walked_chars(body) == reference.walked_chars(body)


def test_a_walk_counts_text_parts_and_blocks_and_skips_the_rest():
    body = {"system": [{"type": "text", "text": "be brief"}], "tools": [{"description": "not prompt"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "h\xe9llo"},
                                                      {"type": "image_url", "image_url": {"url": "x"}}]},
                         {"role": "assistant", "content": None, "thinking": "hm", "parts": ["a", 3, None]}]}
    assert compiled.walked_chars(body) == reference.walked_chars(body) == len("be brief") + 5 + 2 + 1
