"""The mock upstream's Gemini endpoints: ``POST /v1beta/models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` and ``:countTokens`` (a word a token).

Owns: reading a Gemini body into the neutral ``plan.View`` and writing the
answer as Gemini does (candidates with text / ``functionCall`` parts,
``usageMetadata``, SSE chunks with CRLF framing and no end marker), Gemini
error bodies, and the key in ``x-goog-api-key``. Chaos and scripts come from
``MockUpstream``. Must not touch: the gateway.
"""
from __future__ import annotations

import orjson
from aiohttp import web

from .plan import DEFAULT_STREAM_ERROR_MESSAGE, TOOL_ARGS, Answer, View, count_words, new_id, plan, reshape_error, stream_error_message, write_stream

STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
            429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}


def error_body(status: int, message: str) -> dict:
    return {"error": {"code": status, "message": message,
                      "status": STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")}}


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(error_body(status, message)), content_type="application/json")


def _text(parts) -> str:
    return " ".join(p["text"] for p in parts or () if isinstance(p, dict) and isinstance(p.get("text"), str))


def view_of(body: dict) -> View:
    contents = [c for c in body.get("contents") or () if isinstance(c, dict)]
    last = contents[-1] if contents else {}
    results = [p["functionResponse"] for p in last.get("parts") or () if isinstance(p, dict) and "functionResponse" in p]
    users = [c for c in contents if c.get("role", "user") == "user" and _text(c.get("parts")).strip()]
    system = (body.get("systemInstruction") or {}).get("parts")
    declarations = [d for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
    return View(
        last_text=_text(users[-1].get("parts")) if users else "",
        tool_result=" ".join(orjson.dumps(r.get("response")).decode() for r in results) if results else None,
        tools=[d.get("name", "") for d in declarations],
        prompt_tokens=count_words(_text(system), *(_text(c.get("parts")) for c in contents)),
        max_tokens=(body.get("generationConfig") or {}).get("maxOutputTokens"),
    )


def _usage(answer: Answer, done: bool) -> dict:
    completion = answer.completion_tokens if done else 0
    return {"promptTokenCount": answer.prompt_tokens, "candidatesTokenCount": completion,
            "totalTokenCount": answer.prompt_tokens + completion}


def reply_of(answer: Answer, model: str, response_id: str) -> dict:
    parts = [{"functionCall": {"name": answer.tool, "args": TOOL_ARGS}}] if answer.tool else [{"text": answer.text}]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": FINISH[answer.finish],
                            "index": 0}],
            "usageMetadata": _usage(answer, True), "modelVersion": model, "responseId": response_id}


def frames_of(answer: Answer, model: str, response_id: str) -> list[bytes]:
    pieces = [[{"functionCall": {"name": answer.tool, "args": TOOL_ARGS}}]] if answer.tool \
        else [[{"text": w}] for w in answer.words] or [[{"text": ""}]]
    frames = []
    for i, parts in enumerate(pieces):
        last = i == len(pieces) - 1
        candidate = {"content": {"role": "model", "parts": parts}, "index": 0}
        if last:
            candidate["finishReason"] = FINISH[answer.finish]
        chunk = {"candidates": [candidate], "usageMetadata": _usage(answer, last), "modelVersion": model,
                 "responseId": response_id}
        frames.append(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n")
    return frames


async def generate(upstream, request: web.Request) -> web.StreamResponse:
    model, _, action = request.match_info["target"].partition(":")
    if action == "countTokens":
        return await _count_tokens(upstream, request)
    if action not in ("generateContent", "streamGenerateContent"):
        return _error(404, f"unknown method {action!r}")
    if action == "streamGenerateContent" and request.query.get("alt") != "sse":
        return _error(400, "this mock only streams with alt=sse")
    request = _keyed(request)

    async def answer(request, body, behaviour):
        if not isinstance(body.get("contents"), list) or not body["contents"]:
            return _error(400, "contents is required")
        result = plan(view_of(body), upstream.chaos.tokens, behaviour)
        response_id = new_id("resp")
        if action == "streamGenerateContent":
            error = error_body(500, stream_error_message(behaviour, DEFAULT_STREAM_ERROR_MESSAGE))
            return await write_stream(upstream, request, frames_of(result, model, response_id), behaviour,
                                      b"data: " + orjson.dumps(error) + b"\r\n\r\n")
        return web.Response(body=orjson.dumps(reply_of(result, model, response_id)), content_type="application/json")
    return reshape_error(await upstream._handle(request, answer), error_body)


def _keyed(request: web.Request) -> web.Request:
    key = request.headers.get("x-goog-api-key")
    if key is None:
        return request
    return request.clone(headers={**request.headers, "x-api-key": key})   # the mock's auth check reads x-api-key


async def _count_tokens(upstream, request: web.Request) -> web.StreamResponse:
    """``:countTokens``, of ``contents`` or of a whole ``generateContentRequest``: a word a token."""
    async def answer(request, body, behaviour):
        inner = body.get("generateContentRequest", body)
        if not isinstance(inner.get("contents"), list) or not inner["contents"]:
            return _error(400, "contents is required")
        return web.json_response({"totalTokens": view_of(inner).prompt_tokens})
    return reshape_error(await upstream._handle(_keyed(request), answer), error_body)
