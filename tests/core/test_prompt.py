"""The prompt's quick count (``fastinfer._core.prompt``) and its pure-Python reference.

Owns: that the compiled count and the reference give the same answer for any body, and what
that answer is on the edges of the common shape (``tests/test_limits_unit.py`` holds the count
to the walk of every text field). Must not touch: limits, HTTP.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from fastinfer._core import prompt as compiled
from fastinfer._core.ref import prompt as reference


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


@settings(max_examples=1000, deadline=None)
@given(_BODY)
def test_compiled_equals_reference(body):
    assert compiled.chat_chars(body) == reference.chat_chars(body)
