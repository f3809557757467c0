"""The optional-field type checks of both client APIs, in process: same rule
(JSON true/false is never a number), each API's own wording."""
from __future__ import annotations

import pytest

from fastinfer.errors import BadRequest
from fastinfer.gateway.anthropic_api import messages_request
from fastinfer.gateway.openai_api import chat_request

OPENAI = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def _error(validate, base: dict, **fields) -> BadRequest:
    with pytest.raises(BadRequest) as exc:
        validate({**base, **fields}, {}, "req-1", 0.0)
    return exc.value


@pytest.mark.parametrize("field, value, message", [
    ("max_tokens", "ten", "'max_tokens' must be an integer; got str."),
    ("max_tokens", True, "'max_tokens' must be an integer; got bool."),
    ("temperature", True, "'temperature' must be a number; got bool."),
    ("top_p", "high", "'top_p' must be a number; got str."),
    ("stop", 3, "'stop' must be a string or an array; got int."),
    ("stream", 1, "'stream' must be a boolean; got int."),
])
def test_openai_wrong_types(field, value, message):
    err = _error(chat_request, OPENAI, **{field: value})
    assert str(err) == message and err.param == field


@pytest.mark.parametrize("field, value, message", [
    ("max_tokens", 2.5, "max_tokens: must be an integer; got float."),
    ("temperature", False, "temperature: must be a number; got bool."),
    ("system", 7, "system: must be a string or an array; got int."),
    ("tool_choice", [], "tool_choice: must be an object; got list."),
])
def test_anthropic_wrong_types(field, value, message):
    err = _error(messages_request, ANTHROPIC, **{field: value})
    assert str(err) == message and err.param == field


@pytest.mark.parametrize("validate, base", [(chat_request, OPENAI), (messages_request, ANTHROPIC)])
def test_right_types_and_nulls_pass(validate, base):
    req = validate({**base, "temperature": 0, "top_p": 0.5, "stream": False, "tools": None}, {}, "req-1", 0.0)
    assert req.model == "m" and req.stream is False
