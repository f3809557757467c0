"""The OpenAI client API: checking chat-completions, completions and embeddings bodies.

Owns: the shape of every field the translators and providers read from an OpenAI
body (content parts, images, files, tool calls, tools, tool_choice, stop,
response_format, the numeric limits of the contract) and turning a body into a
``GatewayRequest``. A wrong field is a ``BadRequest`` whose ``param`` is its path,
``messages[0].content[1].image_url.url``. Must not touch: translation, the engine,
HTTP objects.
"""
from __future__ import annotations

from ..engine import PRIORITY_LEVELS, GatewayRequest, new_request
from ..errors import BadRequest
from ..routing import session_id_problem
from .validate import ANY_OBJECT, INT32_MAX, Arr, Bool, Int, Num, Obj, OneOf, Str, Tagged, check_body, openai_path

#: the contract's limits, shared with the Anthropic API
MAX_TOKENS = Int(1, INT32_MAX)
CHOICES = Int(1, 128)
STOP = OneOf(Str(), Arr(Str()))

_TEXT = Obj(required={"text": Str()})
_PART = Tagged("type", {
    "text": _TEXT,
    "image_url": Obj(required={"image_url": OneOf(
        Str(), Obj(required={"url": Str()}, optional={"detail": Str()}))}),
    "file": Obj(required={"file": Obj(optional={"file_data": Str(), "file_id": Str(), "filename": Str()})}),
    "input_audio": Obj(required={"input_audio": Obj(required={"data": Str(), "format": Str()})}),
    "refusal": Obj(required={"refusal": Str()}),
}, other=ANY_OBJECT)
_CONTENT = OneOf(Str(), Arr(_PART))
_TOOL_CALL = Obj(required={"function": Obj(required={"name": Str()}, optional={"arguments": Str()})},
                 optional={"id": Str(), "type": Str()})
_SPEAKER = Obj(required={"content": _CONTENT}, optional={"name": Str()})
_MESSAGE = Tagged("role", {
    "system": _SPEAKER,
    "developer": _SPEAKER,
    "user": _SPEAKER,
    "assistant": Obj(optional={"content": _CONTENT, "tool_calls": Arr(_TOOL_CALL), "name": Str(), "refusal": Str(),
                               "function_call": Obj(optional={"name": Str(), "arguments": Str()}),
                               "reasoning_content": Str()}),
    "tool": Obj(required={"content": _CONTENT, "tool_call_id": Str()}),
    "function": Obj(required={"name": Str()}, optional={"content": Str()}),
}, other=Obj(optional={"content": _CONTENT, "name": Str()}))   # compatible servers' own roles
_TOOL = Tagged("type", {
    "function": Obj(required={"function": Obj(required={"name": Str()},
                                              optional={"description": Str(), "parameters": ANY_OBJECT,
                                                        "strict": Bool()})}),
}, other=ANY_OBJECT, default="function")
_TOOL_CHOICE = OneOf(Str(choices=("none", "auto", "required")),
                     Obj(optional={"type": Str(), "function": Obj(required={"name": Str()})}))
_RESPONSE_FORMAT = Obj(required={"type": Str()}, optional={"json_schema": Obj(optional={
    "name": Str(), "description": Str(), "schema": ANY_OBJECT, "strict": Bool()})})
_STREAM_OPTIONS = Obj(optional={"include_usage": Bool()})
_SAMPLING = {"temperature": Num(), "top_p": Num(), "presence_penalty": Num(), "frequency_penalty": Num(),
             "seed": Int(), "stop": STOP, "user": Str(), "logit_bias": ANY_OBJECT, "priority": Str(),
             "n": CHOICES, "max_tokens": MAX_TOKENS, "stream": Bool(), "stream_options": _STREAM_OPTIONS}

CHAT = Obj(required={"model": Str(nonempty=True), "messages": Arr(_MESSAGE, min_items=1)}, optional={
    **_SAMPLING,
    "max_completion_tokens": MAX_TOKENS,
    "tools": Arr(_TOOL),
    "tool_choice": _TOOL_CHOICE,
    "parallel_tool_calls": Bool(),
    "response_format": _RESPONSE_FORMAT,
    "logprobs": Bool(),
    "top_logprobs": Int(0),
    "reasoning_effort": Str(),
    "metadata": ANY_OBJECT,
})
_PROMPT = OneOf(Str(), Arr(OneOf(Str(), Int(), Arr(Int()))))
COMPLETIONS = Obj(required={"model": Str(nonempty=True), "prompt": _PROMPT}, optional={
    **_SAMPLING, "echo": Bool(), "suffix": Str(), "logprobs": Int(0), "best_of": Int(1)})
EMBEDDINGS = Obj(required={"model": Str(nonempty=True), "input": _PROMPT}, optional={
    "dimensions": Int(1, INT32_MAX), "encoding_format": Str(choices=("float", "base64")), "user": Str(),
    "priority": Str()})
_PASSTHROUGH = {"completions": COMPLETIONS, "embeddings": EMBEDDINGS}

_MESSAGE_FORMAT = "'{path}' {what}."


def check(shape, body) -> None:
    """Raise ``BadRequest`` (OpenAI's wording, ``param`` = the path) for the first wrong field."""
    check_body(shape, body, openai_path, _MESSAGE_FORMAT)


_NORMAL = PRIORITY_LEVELS["normal"]


def request_options(body: dict, headers, key=None) -> tuple[int, str | None, bool]:
    """What both APIs read besides the body's own fields: the priority (``x-priority`` over the body's
    ``priority``, which is taken out of the body: it is the gateway's), with a gateway ``key`` as the
    key allows it (``GatewayKey.priority_of``: what was asked, else the key's default, never above its
    ceiling), ``x-session-id`` and ``x-session-close``; ``BadRequest`` naming the field. (One call for
    the three: the common request has none of them, and a call costs every request. The key's rule is
    applied here because only here is it known whether a priority was asked: the body's is gone after.)"""
    in_body = body.pop("priority", None)
    value = headers.get("x-priority") or in_body
    asked = None if value is None else parse_priority(value, "priority")
    if key is not None:
        priority = key.priority_of(asked)
    else:
        priority = _NORMAL if asked is None else asked
    if "x-session-id" in headers or "x-session-close" in headers:
        return (priority, *parse_session(headers))
    return priority, None, False


def parse_priority(value, param: str) -> int:
    if value is None:
        return _NORMAL
    level = PRIORITY_LEVELS.get(value.lower()) if isinstance(value, str) else None
    if level is None:
        raise BadRequest(f"{param} must be one of {', '.join(PRIORITY_LEVELS)}; got {value!r}", param=param)
    return level


def parse_session(headers) -> tuple[str | None, bool]:
    """``x-session-id`` (at most 256 bytes, no control characters) and ``x-session-close``
    (``true`` | ``false``), or ``BadRequest`` naming the header."""
    session_id = headers.get("x-session-id") or None
    if session_id is not None:
        problem = session_id_problem(session_id)
        if problem is not None:
            raise BadRequest(f"x-session-id {problem}.", param="x-session-id")
    close = headers.get("x-session-close")
    if close is None:
        return session_id, False
    flag = close.strip().lower()
    if flag not in ("true", "false"):
        raise BadRequest(f"x-session-close must be true or false; got {close[:24]!r}", param="x-session-close")
    return session_id, flag == "true"


def chat_request(body, headers, request_id: str, now: float, key=None) -> GatewayRequest:
    """Check an OpenAI chat-completions body; raise ``BadRequest`` naming the bad field. ``key``: the
    gateway key the request carries (its priority rules: ``request_options``), None without keys."""
    check_body(CHAT, body, openai_path, _MESSAGE_FORMAT)
    priority, session_id, session_close = request_options(body, headers, key)
    stream = bool(body.get("stream"))
    options = body.get("stream_options")
    if options is not None and not stream:
        raise BadRequest("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    # api, model, body, stream, request_id, received_at, priority, session_id, session_close, deadline,
    # client_wants_usage: ``GatewayRequest``'s fields in order (``new_request`` takes them positionally)
    return new_request("openai", body["model"], body, stream, request_id, now, priority, session_id,
                       session_close, None, bool(options and options.get("include_usage")))


def passthrough_request(body, headers, request_id: str, now: float, endpoint: str, key=None) -> GatewayRequest:
    """Check an OpenAI ``/v1/completions`` or ``/v1/embeddings`` body (forwarded as is); ``key`` as
    ``chat_request``'s."""
    check(_PASSTHROUGH[endpoint], body)
    priority, session_id, session_close = request_options(body, headers, key)
    options = body.get("stream_options")
    # in the fields' order (see ``chat_request``), and the endpoint
    return new_request("openai", body["model"], body, bool(body.get("stream")) and endpoint == "completions",
                       request_id, now, priority, session_id, session_close, None,
                       bool(options and options.get("include_usage")), endpoint)
