"""The mock upstream's Anthropic Messages endpoint: ``POST /v1/messages``, streaming and not, and
its token count, ``POST /v1/messages/count_tokens`` (a word a token, as the mock's usage counts).

Owns: reading an Anthropic body into the neutral ``plan.View`` and writing the
answer as Anthropic does (message object, or ``message_start`` /
``content_block_*`` / ``message_delta`` / ``message_stop`` / ``ping`` events,
tool calls as ``tool_use`` with streamed ``input_json_delta``), Anthropic
error bodies, and the checks a real Anthropic API makes (``max_tokens`` and
``anthropic-version`` required). Chaos and scripts come from ``MockUpstream``.
Must not touch: the gateway.
"""
from __future__ import annotations

import orjson
from aiohttp import web

from .plan import (TOOL_ARGS, TOOL_ARGS_PIECES, Answer, View, count_words, new_id, plan, reshape_error,
                   stream_error_message, write_stream)

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def error_body(status: int, message: str) -> dict:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(error_body(status, message)), content_type="application/json")


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content or () if isinstance(b, dict) and b.get("type") == "text")


def view_of(body: dict) -> View:
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    results = [b for b in last.get("content") or () if isinstance(b, dict) and b.get("type") == "tool_result"] \
        if isinstance(last.get("content"), list) else []
    users = [m for m in messages if m.get("role") == "user" and _text(m.get("content")).strip()]
    system = body.get("system")
    choice = body.get("tool_choice")
    return View(
        last_text=_text(users[-1].get("content")) if users else "",
        tool_result=" ".join(_text(b.get("content")) for b in results) if results else None,
        tools=[t.get("name", "") for t in body.get("tools") or ()],
        forced_tool=choice.get("name") if isinstance(choice, dict) and choice.get("type") == "tool" else None,
        prompt_tokens=count_words(_text(system) if system else "", *(_text(m.get("content")) for m in messages)),
        max_tokens=body.get("max_tokens"),
    )


def _event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def frames_of(answer: Answer, message_id: str, model: str) -> list[bytes]:
    start = {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1}}
    frames = [_event("message_start", {"type": "message_start", "message": start}), _event("ping", {"type": "ping"})]
    if answer.tool:
        block = {"type": "tool_use", "id": f"toolu_{message_id}", "name": answer.tool, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in TOOL_ARGS_PIECES]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": w} for w in answer.words]
    frames.append(_event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}))
    frames += [_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas]
    frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    frames.append(_event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": STOP_REASONS[answer.finish], "stop_sequence": None},
                                           "usage": {"output_tokens": answer.completion_tokens}}))
    frames.append(_event("message_stop", {"type": "message_stop"}))
    return frames


def message_of(answer: Answer, message_id: str, model: str) -> dict:
    content = ([{"type": "tool_use", "id": f"toolu_{message_id}", "name": answer.tool, "input": TOOL_ARGS}]
               if answer.tool else [{"type": "text", "text": answer.text}])
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": STOP_REASONS[answer.finish], "stop_sequence": None,
            "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens}}


async def messages(upstream, request: web.Request) -> web.StreamResponse:
    async def answer(request, body, behaviour):
        if not isinstance(body.get("messages"), list):
            return _error(400, "messages: Field required")
        if not isinstance(body.get("max_tokens"), int):
            return _error(400, "max_tokens: Field required")
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        result = plan(view_of(body), upstream.chaos.tokens, behaviour)
        message_id = new_id("msg_")
        model = body.get("model", "mock")
        if body.get("stream"):
            error = _event("error", error_body(529, stream_error_message(behaviour, "Overloaded")))
            return await write_stream(upstream, request, frames_of(result, message_id, model), behaviour, error)
        return web.Response(body=orjson.dumps(message_of(result, message_id, model)), content_type="application/json")
    return reshape_error(await upstream._handle(request, answer), error_body)


async def count_tokens(upstream, request: web.Request) -> web.StreamResponse:
    async def answer(request, body, behaviour):
        if not isinstance(body.get("messages"), list):
            return _error(400, "messages: Field required")
        if "max_tokens" in body:        # as Anthropic: a count takes no answer's settings
            return _error(400, "max_tokens: Extra inputs are not permitted")
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        return web.json_response({"input_tokens": view_of(body).prompt_tokens})
    return reshape_error(await upstream._handle(request, answer), error_body)
