"""The JSON shape checker (``fastinfer._core.shapes``) and its pure-Python reference.

Owns: that the compiled walk and the reference give the same verdict on any JSON value — pass,
or the same ``Invalid`` message at the same path — for a schema that uses every shape; and the
rules themselves on a few hand-picked values. ``tests/test_validate.py`` checks the gateway's
error wording on top of them.

Must not touch: HTTP, the gateway's own shapes (``openai_api``, ``anthropic_api``).
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from fastinfer._core import shapes as compiled
from fastinfer._core.ref import shapes as reference


def schema(m):
    """A chat-like body in ``m``'s shapes: every class, every option."""
    part = m.Tagged("type", {"text": m.Obj(required={"text": m.Str()}),
                             "image": m.Obj(required={"url": m.OneOf(m.Str(), m.Obj(required={"url": m.Str()}))})},
                    other=m.Obj())
    content = m.OneOf(m.Str(), m.Arr(part))
    message = m.Tagged("role", {"user": m.Obj(required={"content": content}, optional={"name": m.Str()}),
                                "assistant": m.Obj(optional={"content": content, "calls": m.Arr(m.Obj(
                                    required={"name": m.Str(nonempty=True)}, optional={"args": m.Str()}))})},
                       default="user")
    return m.Obj(required={"model": m.Str(nonempty=True), "messages": m.Arr(message, min_items=1)}, optional={
        "n": m.Int(1, 8), "seed": m.Int(), "temperature": m.Num(0, 2), "top_p": m.Num(), "stream": m.Bool(),
        "mode": m.Str(choices=("fast", "slow")), "stop": m.OneOf(m.Str(), m.Arr(m.Str())), "meta": m.Obj()})


SCHEMAS = {compiled: schema(compiled), reference: schema(reference)}


def verdict(m, value):
    try:
        SCHEMAS[m].check(value)
    except m.Invalid as e:
        return e.what, list(e.path)
    return None


@pytest.fixture(params=[compiled, reference], ids=["compiled", "reference"])
def m(request):
    return request.param


def test_a_good_body_passes(m):
    body = {"model": "x", "messages": [{"content": "hi"}, {"role": "assistant", "calls": [{"name": "f"}],
                                                            "content": [{"type": "text", "text": "t"},
                                                                        {"type": "other", "any": 1}]}],
            "n": 2, "temperature": 1, "stream": None, "stop": ["a"], "unknown": object()}
    assert verdict(m, body) is None


@pytest.mark.parametrize("body, expected", [
    ({"messages": []}, ("is required", ["model"])),
    ({"model": "", "messages": [{}]}, ("must not be empty", ["model"])),
    ({"model": "x", "messages": []}, ("must not be empty", ["messages"])),
    ({"model": "x", "messages": [{"role": 1}]}, ("must be an object with a string 'role'", [0, "messages"])),
    ({"model": "x", "messages": [{"role": "bot"}]}, ("must be one of 'user', 'assistant'; got 'bot'",
                                                     ["role", 0, "messages"])),
    ({"model": "x", "messages": [{"content": [{"type": "image", "url": 3}]}]},
     ("must be a string or an object; got int", ["url", 0, "content", 0, "messages"])),
    ({"model": "x", "messages": [{"content": "c"}], "n": 9}, ("must be between 1 and 8; got 9", ["n"])),
    ({"model": "x", "messages": [{"content": "c"}], "n": True}, ("must be an integer; got bool", ["n"])),
    ({"model": "x", "messages": [{"content": "c"}], "top_p": "1"}, ("must be a number; got str", ["top_p"])),
    ({"model": "x", "messages": [{"content": "c"}], "mode": "x" * 50},
     ("must be one of 'fast', 'slow'; got '" + "x" * 36 + "...", ["mode"])),
    ([1], ("must be an object; got list", [])),
])
def test_the_first_wrong_value_and_its_path(m, body, expected):
    assert verdict(m, body) == expected


_json = st.recursive(st.none() | st.booleans() | st.integers(-3, 12) | st.floats(-1, 3, allow_nan=False)
                     | st.sampled_from(["", "x", "fast", "user", "assistant", "text", "image"]),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                         st.sampled_from(["model", "messages", "role", "content", "type", "text", "url", "name",
                                          "calls", "args", "n", "seed", "temperature", "stream", "mode", "stop",
                                          "meta", "other"]), inner, max_size=5), max_leaves=20)


@settings(max_examples=600, deadline=None)
@given(st.one_of(_json, st.fixed_dictionaries({"model": st.sampled_from(["m", ""]), "messages": _json}, optional={
    "n": _json, "stop": _json, "mode": _json, "temperature": _json})))
def test_compiled_and_reference_give_the_same_verdict(value):
    assert verdict(compiled, value) == verdict(reference, value)
