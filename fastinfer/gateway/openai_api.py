"""The OpenAI client API: validating bodies into ``GatewayRequest``s."""
from __future__ import annotations

from ..engine import PRIORITY_LEVELS, GatewayRequest
from ..errors import BadRequest
from .validate import check_optional_types

_OPTIONAL_TYPES = {
    "stream": (bool,),
    "stream_options": (dict,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "n": (int,),
    "temperature": (int, float),
    "top_p": (int, float),
    "stop": (str, list),
    "tools": (list,),
    "user": (str,),
    "response_format": (dict,),
}


def parse_priority(value, param: str) -> int:
    if value is None:
        return PRIORITY_LEVELS["normal"]
    level = PRIORITY_LEVELS.get(value.lower()) if isinstance(value, str) else None
    if level is None:
        raise BadRequest(f"{param} must be one of critical, high, normal, background; got {value!r}", param=param)
    return level


def chat_request(body, headers, request_id: str, now: float) -> GatewayRequest:
    """Validate an OpenAI chat-completions body; raise ``BadRequest`` naming the bad field."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array.", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'.", param=f"messages[{i}]")
    check_optional_types(body, _OPTIONAL_TYPES, "'{key}' must be {wanted}; got {got}.")
    priority = parse_priority(headers.get("x-priority") or body.pop("priority", None), "priority")
    body.pop("priority", None)
    stream = bool(body.get("stream"))
    options = body.get("stream_options")
    if options is not None and not stream:
        raise BadRequest("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    return GatewayRequest(
        api="openai", model=model, body=body, stream=stream, request_id=request_id, received_at=now,
        priority=priority, session_id=headers.get("x-session-id"),
        client_wants_usage=bool(options and options.get("include_usage")),
    )


def passthrough_request(body, headers, request_id: str, now: float, endpoint: str) -> GatewayRequest:
    """Validate an OpenAI ``/v1/completions`` or ``/v1/embeddings`` body (forwarded as is)."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string.", param="model")
    field = "prompt" if endpoint == "completions" else "input"
    if body.get(field) is None:
        raise BadRequest(f"'{field}' is required.", param=field)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean.", param="stream")
    priority = parse_priority(headers.get("x-priority") or body.get("priority"), "priority")
    body.pop("priority", None)
    options = body.get("stream_options")
    return GatewayRequest(
        api="openai", model=model, body=body, stream=bool(stream) and endpoint == "completions",
        request_id=request_id, received_at=now, priority=priority, session_id=headers.get("x-session-id"),
        client_wants_usage=bool(isinstance(options, dict) and options.get("include_usage")), endpoint=endpoint,
    )
