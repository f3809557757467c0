"""What the fake model answers, whatever the wire format, and how a fake stream is paced.

Owns: the format-neutral answer (text words, or a tool call), the tool rules
(a tool the request forces is called, and when tools are offered and the last
user message mentions "weather" the first one, either with ``{"city": "Paris"}``;
the last message is a tool result: answer with text quoting it), the OpenAI rendering of tool answers, the shared stream
writer (``itl_ms``, ``cut_after``, ``garbage_at``, ``stream_error_at``,
``idle_after``), and re-shaping the mock's OpenAI error bodies for other formats.
Must not touch: the gateway; it imports nothing from fastinfer but the
token-splitting helpers, so the mock behaves like a foreign server.
"""
from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from ..providers.mock import completion_words

TOOL_ARGS = {"city": "Paris"}
TOOL_ARGS_PIECES = ('{"city": ', '"Paris"}')  # streamed as two argument deltas

# ids unique across requests, resets and mock processes (a client may key on them)
_ids = itertools.count(1)
_id_prefix = os.urandom(4).hex()


def new_id(prefix: str) -> str:
    """``chatcmpl-mock<random><n>``, ``msg_mock…``: never repeated, not even after /_mock/reset."""
    return f"{prefix}mock{_id_prefix}{next(_ids)}"


def length_and_finish(natural: int, max_tokens) -> tuple[int, str]:
    """How long an answer of ``natural`` tokens is under ``max_tokens``, and why it ended.

    One rule for every format, streamed or not: an answer cut short by
    ``max_tokens`` ends with "length"; one that fits (exactly, too) with "stop".
    """
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and 0 <= max_tokens < natural:
        return max_tokens, "length"
    return natural, "stop"


@dataclass
class View:
    """What the fake model reads from a request, in any format."""

    last_text: str = ""
    tool_result: str | None = None   # the last message is a tool result with this content
    tools: list[str] = field(default_factory=list)
    forced_tool: str | None = None   # the tool the request makes the model call (Anthropic's tool_choice)
    prompt_tokens: int = 1
    max_tokens: int | None = None


@dataclass
class Answer:
    words: list[str]
    tool: str | None                 # name of the tool to call, or None for a text answer
    finish: str                      # "stop" | "length" | "tool"
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.words) if self.tool is None else len(TOOL_ARGS_PIECES) + 1

    @property
    def text(self) -> str:
        return "".join(self.words)


def wants_tools(view: View) -> bool:
    return view.tool_result is not None or bool(view.tools and "weather" in view.last_text.lower())


def plan(view: View, default_tokens: int, behaviour: dict) -> Answer:
    if view.forced_tool is not None:
        return Answer([], view.forced_tool, "tool", view.prompt_tokens)
    if view.tool_result is not None:
        words = [w + " " for w in f"The tool said: {view.tool_result}".split()]
        return Answer(words, None, "stop", view.prompt_tokens)
    if wants_tools(view):
        return Answer([], view.tools[0], "tool", view.prompt_tokens)
    n, finish = length_and_finish(behaviour.get("tokens", default_tokens), view.max_tokens)
    words = completion_words({"messages": [{"content": view.last_text}]}, n)
    return Answer(words, None, finish, view.prompt_tokens)


def count_words(*texts: str) -> int:
    return max(1, sum(len(t.split()) for t in texts))


# ----------------------------------------------------------------- streams

async def write_stream(upstream, request: web.Request, frames: list[bytes], behaviour: dict,
                       error_frame: bytes, headers: dict | None = None) -> web.StreamResponse:
    """Write encoded events with the chaos knobs of ``behaviour`` / the upstream's chaos."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       **(headers or {}), **behaviour.get("headers", {})})
    await resp.prepare(request)
    request["mock_streaming"] = True   # from here an error cannot become a 400 answer
    itl = behaviour.get("itl_ms", upstream.chaos.itl_ms) / 1000
    cut_after = behaviour.get("cut_after")
    ended = getattr(upstream, "_ended", None) or (lambda request, end: None)
    for i, frame in enumerate(frames):
        if cut_after is not None and i >= cut_after:
            ended(request, "cut")
            request.transport.close()  # vanish mid-stream: no end event
            return resp
        if i == behaviour.get("stream_error_at"):
            await resp.write(error_frame)
            ended(request, "stream_error")
            await resp.write_eof()
            return resp
        if i == behaviour.get("idle_after"):
            await asyncio.sleep(3600)
        if i == behaviour.get("garbage_at"):
            await resp.write(b"data: {not json at all\n\n")
            continue
        await resp.write(frame)
        if itl and i < len(frames) - 1:
            await asyncio.sleep(itl)
    await resp.write_eof()
    return resp


# ------------------------------------------------------------------- errors

#: the in-stream error event an OpenAI-shaped mock stream sends at ``stream_error_at`` when the
#: behaviour scripts no ``stream_error`` payload of its own
DEFAULT_STREAM_ERROR_MESSAGE = "mock upstream stream error"
DEFAULT_STREAM_ERROR = {"error": {"message": DEFAULT_STREAM_ERROR_MESSAGE, "type": "server_error",
                                  "param": None, "code": None}}


def openai_stream_error_event(behaviour: dict) -> bytes:
    """The encoded error event of an OpenAI-shaped stream: the scripted ``stream_error`` or the default."""
    return b"data: " + orjson.dumps(behaviour.get("stream_error") or DEFAULT_STREAM_ERROR) + b"\n\n"


def stream_error_message(behaviour: dict, default: str) -> str:
    """The message of a scripted ``stream_error`` payload, for formats that re-shape it: OpenAI's
    ``{"error": {...}}``, or the error object sent bare (vLLM's ``{"object": "error", "message": ...}``)."""
    payload = behaviour.get("stream_error") or {}
    error = payload.get("error", payload)
    return error.get("message", default) if isinstance(error, dict) else default


def reshape_error(resp: web.StreamResponse, render) -> web.StreamResponse:
    """The mock's OpenAI-shaped early error answer, re-rendered by ``render(status, message)``."""
    if resp.status == 200 or not isinstance(resp, web.Response) or resp.prepared:
        return resp
    try:
        message = orjson.loads(resp.body)["error"]["message"]
    except (TypeError, ValueError, KeyError):
        message = f"mock upstream error {resp.status}"
    out = web.Response(status=resp.status, body=orjson.dumps(render(resp.status, message)),
                       content_type="application/json")
    for k, v in resp.headers.items():
        if k.lower() not in ("content-type", "content-length"):
            out.headers[k] = v
    return out


# ----------------------------------------------------------- OpenAI + tools

def openai_view(body: dict) -> View:
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    users = [m for m in messages if m.get("role") == "user"]
    texts = [_openai_text(m.get("content")) for m in messages]
    return View(
        last_text=_openai_text(users[-1].get("content")) if users else "",
        tool_result=_openai_text(last.get("content")) if last.get("role") == "tool" else None,
        tools=[(t.get("function") or {}).get("name", "") for t in body.get("tools") or ()],
        prompt_tokens=count_words(*texts),
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
    )


def _openai_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


async def openai_tool_answer(upstream, request: web.Request, body: dict, behaviour: dict) -> web.StreamResponse:
    """An OpenAI chat answer for a tool-calling conversation (text or ``tool_calls``)."""
    answer = plan(openai_view(body), upstream.chaos.tokens, behaviour)
    head = {"id": new_id("chatcmpl-"), "created": upstream._created, "model": body.get("model", "mock")}
    usage = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
             "total_tokens": answer.prompt_tokens + answer.completion_tokens}
    call = {"id": new_id("call_"), "type": "function",
            "function": {"name": answer.tool, "arguments": "".join(TOOL_ARGS_PIECES)}}
    finish = {"tool": "tool_calls"}.get(answer.finish, answer.finish)
    if not body.get("stream"):
        message = ({"role": "assistant", "content": None, "tool_calls": [call]} if answer.tool
                   else {"role": "assistant", "content": answer.text})
        return web.json_response({**head, "object": "chat.completion", "usage": usage, "choices": [
            {"index": 0, "message": message, "finish_reason": finish}]}, dumps=lambda o: orjson.dumps(o).decode())
    head["object"] = "chat.completion.chunk"

    def chunk(delta: dict, finish_reason=None) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": [
            {"index": 0, "delta": delta, "finish_reason": finish_reason}]}) + b"\n\n"

    frames = [chunk({"role": "assistant", "content": None if answer.tool else ""})]
    if answer.tool:
        frames.append(chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                             "function": {"name": answer.tool, "arguments": ""}}]}))
        frames += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                   for piece in TOOL_ARGS_PIECES]
    else:
        frames += [chunk({"content": w}) for w in answer.words]
    frames.append(chunk({}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        frames.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return await write_stream(upstream, request, frames, behaviour, openai_stream_error_event(behaviour))
