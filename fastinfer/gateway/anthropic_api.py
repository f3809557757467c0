"""The Anthropic Messages client API: checking bodies into ``GatewayRequest``s.

Owns: the shape of every field the translators read from an Anthropic Messages
body (system blocks, content blocks: text, images and their sources, documents,
tool use and tool results, thinking; tools, tool_choice, stop sequences, the
numeric limits of the contract). A wrong field is a ``BadRequest`` naming its path
as Anthropic does, ``messages.0.content.1.source.data`` (the gateway renders it in
Anthropic's error shape). Must not touch: translation (providers do it), the
engine, HTTP objects.
"""
from __future__ import annotations

from ..engine import GatewayRequest, new_request
from .openai_api import MAX_TOKENS, request_options
from .validate import ANY_OBJECT, INT32_MAX, Arr, Bool, Int, Num, Obj, OneOf, Str, Tagged, anthropic_path, check_body

_TEXT = Obj(required={"text": Str()}, optional={"cache_control": ANY_OBJECT})
_BASE64 = Obj(required={"media_type": Str(), "data": Str()})
_URL = Obj(required={"url": Str()})
_IMAGE = Obj(required={"source": Tagged("type", {"base64": _BASE64, "url": _URL}, other=ANY_OBJECT)})
_DOCUMENT = Obj(required={"source": Tagged("type", {
    "base64": _BASE64, "url": _URL, "text": Obj(required={"data": Str()}, optional={"media_type": Str()}),
}, other=ANY_OBJECT)}, optional={"title": Str(), "context": Str()})
_RESULT_CONTENT = OneOf(Str(), Arr(Tagged("type", {"text": _TEXT, "image": _IMAGE, "document": _DOCUMENT},
                                          other=ANY_OBJECT)))
_BLOCK = Tagged("type", {
    "text": _TEXT,
    "image": _IMAGE,
    "document": _DOCUMENT,
    "tool_use": Obj(required={"id": Str(), "name": Str(), "input": ANY_OBJECT}),
    "tool_result": Obj(required={"tool_use_id": Str()}, optional={"content": _RESULT_CONTENT, "is_error": Bool()}),
    "thinking": Obj(required={"thinking": Str()}, optional={"signature": Str()}),
    "redacted_thinking": Obj(required={"data": Str()}),
}, other=ANY_OBJECT)
_MESSAGE = Obj(required={"role": Str(choices=("user", "assistant")), "content": OneOf(Str(), Arr(_BLOCK))})
_TOOL = Obj(required={"name": Str()}, optional={"description": Str(), "input_schema": ANY_OBJECT, "type": Str()})
_CHOICE_FLAGS = {"disable_parallel_tool_use": Bool()}
_TOOL_CHOICE = Tagged("type", {
    "auto": Obj(optional=_CHOICE_FLAGS), "any": Obj(optional=_CHOICE_FLAGS), "none": Obj(),
    "tool": Obj(required={"name": Str()}, optional=_CHOICE_FLAGS),
})

MESSAGES = Obj(required={"model": Str(nonempty=True), "messages": Arr(_MESSAGE, min_items=1)}, optional={
    "max_tokens": MAX_TOKENS,
    "system": OneOf(Str(), Arr(Tagged("type", {"text": _TEXT}))),
    "stream": Bool(),
    "temperature": Num(),
    "top_p": Num(),
    "top_k": Int(0, INT32_MAX),
    "stop_sequences": Arr(Str()),
    "tools": Arr(_TOOL),
    "tool_choice": _TOOL_CHOICE,
    "metadata": Obj(optional={"user_id": Str()}),
    "thinking": Obj(required={"type": Str()}, optional={"budget_tokens": Int(0, INT32_MAX)}),
    "priority": Str(),
})

_MESSAGE_FORMAT = "{path}: {what}."


def messages_request(body, headers, request_id: str, now: float, key=None) -> GatewayRequest:
    """Check an Anthropic Messages body; raise ``BadRequest`` naming the bad field. ``key``: the
    gateway key the request carries, as ``openai_api.chat_request``'s."""
    check_body(MESSAGES, body, anthropic_path, _MESSAGE_FORMAT)
    priority, session_id, session_close = request_options(body, headers, key)
    # in the fields' order (``GatewayRequest``; see ``openai_api.chat_request``)
    return new_request("anthropic", body["model"], body, bool(body.get("stream")), request_id, now, priority,
                       session_id, session_close, None, True)


def count_tokens_request(body, headers, request_id: str, now: float, key=None) -> GatewayRequest:
    """An Anthropic ``count_tokens`` body, read as ``messages_request`` reads a Messages body (the
    gateway's own fields taken out; ``max_tokens`` is not needed there): a request for a count,
    which neither streams nor ends a session."""
    req = messages_request(body, headers, request_id, now, key)
    req.endpoint = "count_tokens"
    req.stream = req.session_close = False
    return req
