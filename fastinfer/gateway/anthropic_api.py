"""The Anthropic Messages client API: validating bodies into ``GatewayRequest``s.

Owns: the checks an Anthropic Messages body must pass before it reaches the
engine; failures are ``BadRequest`` naming the field (the gateway renders
them in Anthropic's error shape). Must not touch: translation (providers do
it), the engine, HTTP objects.
"""
from __future__ import annotations

from ..engine import GatewayRequest
from ..errors import BadRequest
from .openai_api import parse_priority
from .validate import check_optional_types

_OPTIONAL_TYPES = {
    "stream": (bool,),
    "max_tokens": (int,),
    "system": (str, list),
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": (int,),
    "stop_sequences": (list,),
    "tools": (list,),
    "tool_choice": (dict,),
    "metadata": (dict,),
}


def _check_content(content, where: str) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or an array of content blocks.", param=f"{where}.content")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise BadRequest(f"{where}.content.{j} must be an object with a string 'type'.",
                             param=f"{where}.content.{j}")


def messages_request(body, headers, request_id: str, now: float) -> GatewayRequest:
    """Validate an Anthropic Messages body; raise ``BadRequest`` naming the bad field."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required and must be a string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: Field required and must be a non-empty array.", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}.role must be 'user' or 'assistant'.", param=f"messages.{i}.role")
        _check_content(m.get("content"), f"messages.{i}")
    check_optional_types(body, _OPTIONAL_TYPES, "{key}: must be {wanted}; got {got}.")
    if body.get("max_tokens") is not None and body["max_tokens"] < 1:
        raise BadRequest("max_tokens: must be at least 1.", param="max_tokens")
    priority = parse_priority(headers.get("x-priority") or body.get("priority"), "priority")
    body.pop("priority", None)
    return GatewayRequest(
        api="anthropic", model=model, body=body, stream=bool(body.get("stream")), request_id=request_id,
        received_at=now, priority=priority, session_id=headers.get("x-session-id"), client_wants_usage=True,
    )
