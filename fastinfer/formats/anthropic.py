"""The Anthropic Messages wire format, and its translation to and from OpenAI chat.

Owns: both directions of the mapping (system prompt, content parts and images,
tools / tool calls / tool results, stop sequences, max tokens, sampling,
usage, stop reasons), the two incremental stream translators,
``AnthropicStreamRelay`` (Anthropic upstream to Anthropic caller, forwarded as
bytes), and ``ANTHROPIC``, the ``Format``: an upstream body always has a
``max_tokens`` (required there; the deployment's ``default_max_tokens`` when
the caller gave none), and the Anthropic error body and event are built here.
Must not touch: I/O, the engine, config objects beyond the deployment's model,
``default_max_tokens`` and ``drop_params``.
"""
from __future__ import annotations

import time

import orjson

from .._core.bodies import reply_usage_span, usage_estimate
from .._core.relay import is_error_frame
from .._core.sse import SSEParser, encode_event, plain_prefix, whole_events
from ..errors import GatewayError, UpstreamFailure
from ..redact import redact_bytes
from .base import Format
from .common import (ANTHROPIC_STOP_TO_OPENAI, DONE, ERROR, OPENAI_FINISH_TO_ANTHROPIC, anthropic_usage,
                     data_url, dumps, error_item, estimate_tokens, make_usage, new_id, openai_usage, parse_arguments,
                     parse_data_url, text_of, usage_from_anthropic, usage_from_openai)
from .common import (cannot_carry, file_part_bytes, json_object, params_without_place,
                     reasoning_budget, refuse_answer_shapes, text_only, unknown_role)
from .relay import StreamRelay

# ================================================================ requests

_ANTHROPIC = "speaks Anthropic's Messages API"
#: OpenAI's parameters the Messages API has no place for (``common.params_without_place``)
_NO_PLACE_IN_ANTHROPIC = ("seed", "presence_penalty", "frequency_penalty", "logit_bias", "top_logprobs", "audio",
                          "modalities")
_NOT_ANTHROPIC = "does not speak Anthropic's Messages API"   # reached through the OpenAI chat format

def openai_to_anthropic_request(body: dict, model: str, default_max_tokens: int) -> dict:
    """An OpenAI chat body as an Anthropic Messages body for ``model``."""
    refuse_answer_shapes(body, _ANTHROPIC, several_choices=False)
    system: list[str] = []
    messages: list[dict] = []
    for i, m in enumerate(body.get("messages") or ()):
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(text_only(m.get("content"), f"messages[{i}].content[{{}}]", _ANTHROPIC))
        elif role == "user":
            _append(messages, "user", _openai_parts_to_anthropic(m.get("content"), i))
        elif role == "assistant":
            _append(messages, "assistant", _openai_assistant_to_anthropic(m, i))
        elif role in ("tool", "function"):
            _append(messages, "user", [{
                "type": "tool_result", "tool_use_id": m.get("tool_call_id") or m.get("name") or "",
                "content": _openai_tool_result_to_anthropic(m.get("content"), i)}])
        else:
            raise unknown_role(i, _ANTHROPIC)
    out: dict = {"model": model, "messages": messages}
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    callers_max = isinstance(max_tokens, int) and max_tokens > 0
    out["max_tokens"] = max_tokens if callers_max else default_max_tokens
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("temperature") is not None:
        out["temperature"] = min(1.0, body["temperature"])  # Anthropic's range is 0..1
    for name in ("top_p", "top_k"):      # ``top_k``: a compatible server's, or an Anthropic caller's
        if body.get(name) is not None:
            out[name] = body[name]
    tools = [_openai_tool_to_anthropic(t) for t in body.get("tools") or () if t.get("type", "function") == "function"]
    answer_schema = _json_answer_schema(body)
    if answer_schema is not None:
        if tools:
            raise cannot_carry("response_format", "a JSON answer together with tools", _ANTHROPIC,
                               " (the answer is asked for as a forced tool call)")
        out["tools"] = [{"name": JSON_ANSWER_TOOL, "description": _JSON_ANSWER_DESCRIPTION,
                         "input_schema": answer_schema}]
        out["tool_choice"] = {"type": "tool", "name": JSON_ANSWER_TOOL}
    if tools:
        out["tools"] = tools
        choice = _openai_tool_choice_to_anthropic(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False:
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice is not None:
            out["tool_choice"] = choice
    effort = body.get("reasoning_effort")
    if effort is not None:
        _ask_for_thinking(out, effort, callers_max)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


def _ask_for_thinking(out: dict, effort: str, callers_max: bool) -> None:
    """OpenAI's ``reasoning_effort`` as Anthropic's extended thinking (``thinking.budget_tokens``, as
    LiteLLM maps it): inside the caller's ``max_tokens`` (``callers_max``), as OpenAI counts
    reasoning, or on top of the deployment's default. What Anthropic refuses beside thinking (a
    ``temperature`` other than 1, ``top_p`` under 0.95, a forced tool call, no room for its least
    budget) is refused here, naming both."""
    budget = reasoning_budget(effort, _ANTHROPIC)
    if not budget or _in_a_tool_loop(out["messages"]):
        return
    budget = max(budget, _LEAST_THINKING_BUDGET)
    if not callers_max:
        out["max_tokens"] += budget
    if out.get("temperature", 1.0) != 1.0 or out.get("top_p", 1.0) < 0.95:
        raise cannot_carry("reasoning_effort", "reasoning together with `temperature` other than 1 or `top_p` "
                           "under 0.95", _ANTHROPIC)
    if (out.get("tool_choice") or {}).get("type") in ("any", "tool"):
        raise cannot_carry("reasoning_effort", "reasoning together with a forced tool call (`tool_choice`, or a "
                           "JSON `response_format`)", _ANTHROPIC)
    budget = min(budget, out["max_tokens"] - 1)
    if budget < _LEAST_THINKING_BUDGET:
        raise cannot_carry("reasoning_effort", f"reasoning within `max_tokens` {out['max_tokens']}", _ANTHROPIC,
                           f" (its least thinking budget is {_LEAST_THINKING_BUDGET} tokens, and the answer's "
                           "text needs room after it)")
    out["thinking"] = {"type": "enabled", "budget_tokens": budget}


_LEAST_THINKING_BUDGET = 1024


def _in_a_tool_loop(messages: list[dict]) -> bool:
    """Whether the last assistant turn called a tool. With thinking on, Anthropic wants that turn to
    start with its signed thinking block, which an OpenAI client never has to send back: this turn
    of the loop goes without thinking (the model answers the tool's result), as LiteLLM does."""
    for message in reversed(messages):
        if message["role"] == "assistant":
            return any(block.get("type") == "tool_use" for block in message["content"])
    return False


#: Anthropic has no ``response_format``: a JSON answer is asked for as the input of one tool the
#: model must call, and that call comes back to the caller as the answer's text (as LiteLLM does)
JSON_ANSWER_TOOL = "json_answer"
_JSON_ANSWER_DESCRIPTION = "Give your whole answer as this tool's input: it is the reply, as JSON."


def _json_answer(body: dict) -> dict | None:
    """The ``response_format`` of an OpenAI body that asks for a JSON answer, or None."""
    fmt = body.get("response_format")
    return fmt if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema") else None


def _json_answer_schema(body: dict) -> dict | None:
    """The object schema of the JSON answer an OpenAI body asks for, or None for a text answer. A
    schema whose top is not an object cannot be a tool's input: refused."""
    fmt = _json_answer(body)
    if fmt is None:
        return None
    if fmt["type"] == "json_object":
        return {"type": "object"}
    schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    if schema.get("type") != "object":
        raise cannot_carry("response_format.json_schema.schema", "a schema whose top is not an object",
                           _ANTHROPIC, " (the answer is asked for as a tool's input, an object)")
    return schema


def answer_tool_of(body: dict) -> str | None:
    """The tool whose call is the answer's text, for a request in OpenAI's format (``body``)."""
    return None if _json_answer(body) is None else JSON_ANSWER_TOOL


def _append(messages: list[dict], role: str, blocks: list[dict]) -> None:
    """Anthropic wants alternating roles: consecutive same-role turns are merged."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _openai_parts_to_anthropic(content, message: int) -> list[dict]:
    """The content of OpenAI message ``message`` as Anthropic blocks; a part Anthropic has no
    block for (audio, an OpenAI file id, another kind) is refused (``cannot_carry``)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":       # an assistant's past refusal is what it said
            blocks.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "image_url":
            url = part["image_url"]["url"] if isinstance(part.get("image_url"), dict) else part.get("image_url", "")
            inline = parse_data_url(url)
            source = ({"type": "base64", "media_type": inline[0], "data": inline[1]} if inline
                      else {"type": "url", "url": url})
            blocks.append({"type": "image", "source": source})
        elif kind == "file":
            media_type, data = file_part_bytes(part, f"messages[{message}].content[{j}]", _ANTHROPIC)
            blocks.append({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}})
        else:
            raise cannot_carry(f"messages[{message}].content[{j}]", f"a part of type `{kind}`", _ANTHROPIC)
    return blocks


def _openai_tool_result_to_anthropic(content, message: int):
    """A tool's result: its text, or blocks when it holds more than text (a screenshot)."""
    if isinstance(content, list) and any(part.get("type") != "text" for part in content):
        return _openai_parts_to_anthropic(content, message)
    return text_of(content)


def _openai_assistant_to_anthropic(m: dict, message: int) -> list[dict]:
    blocks = _openai_parts_to_anthropic(m.get("content"), message)
    for call in m.get("tool_calls") or ():
        fn = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id") or new_id("toolu_"), "name": fn.get("name", ""),
                       "input": parse_arguments(fn.get("arguments"))})
    return blocks


def _openai_tool_to_anthropic(tool: dict) -> dict:
    fn = tool.get("function") or {}
    out = {"name": fn.get("name", ""),
           "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _openai_tool_choice_to_anthropic(choice) -> dict | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name", "")}
    return None


def anthropic_to_openai_request(body: dict, model: str) -> dict:
    """An Anthropic Messages body as an OpenAI chat body for ``model``."""
    messages: list[dict] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": text_of(system)})
    for i, m in enumerate(body.get("messages") or ()):
        content = m.get("content")
        if m.get("role") == "assistant":
            messages.append(_anthropic_assistant_to_openai(content))
        else:
            messages.extend(_anthropic_user_to_openai(content, i))
    out: dict = {"model": model, "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"),
                     ("stop_sequences", "stop")):
        if body.get(src) is not None:
            out[dst] = body[src]
    # a tool is an offer, not content: one Anthropic runs itself (web search, code execution: no
    # ``input_schema``) is left out, and the model answers without it
    tools = [_anthropic_tool_to_openai(t) for t in body.get("tools") or () if "input_schema" in t]
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice") or {}
        mapped = {"auto": "auto", "any": "required", "none": "none"}.get(choice.get("type"))
        if choice.get("type") == "tool":
            mapped = {"type": "function", "function": {"name": choice.get("name", "")}}
        if mapped is not None:
            out["tool_choice"] = mapped
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _anthropic_image_to_openai(block: dict, path: str) -> dict:
    source = block["source"]
    kind = source.get("type")
    if kind == "base64":
        return {"type": "image_url", "image_url": {"url": data_url(source.get("media_type", "image/png"),
                                                                   source.get("data", ""))}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url", "")}}
    raise cannot_carry(path, f"an `image` block whose source is `{kind}`", _NOT_ANTHROPIC,
                       "; send it as base64 or a URL")


def _anthropic_document_to_openai(block: dict, path: str) -> dict:
    source = block["source"]
    kind = source.get("type")
    if kind == "base64":
        return {"type": "file", "file": {"file_data": data_url(source.get("media_type", ""), source.get("data", ""))}}
    if kind == "text":
        return {"type": "text", "text": source.get("data", "")}
    raise cannot_carry(path, f"a `document` block whose source is `{kind}`", _NOT_ANTHROPIC,
                       "; send it as base64 or text")


#: an earlier turn's reasoning, signed for Anthropic alone: no other format can take it back, and it is
#: the model's own, not the caller's content, so it is left out (as every translating gateway does)
_SIGNED_REASONING = ("thinking", "redacted_thinking")


def _anthropic_user_to_openai(content, message: int) -> list[dict]:
    """One Anthropic user turn (``messages.<message>``): tool results become ``tool`` messages, placed
    first as OpenAI requires. A block the OpenAI format has no part for is refused (``cannot_carry``)."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages, parts = [], []
    for j, block in enumerate(content or ()):
        kind = block.get("type")
        path = f"messages.{message}.content.{j}"
        if kind == "tool_result":
            tool_messages.append(_anthropic_tool_result_to_openai(block, path))
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_anthropic_image_to_openai(block, path))
        elif kind == "document":
            parts.append(_anthropic_document_to_openai(block, path))
        elif kind not in _SIGNED_REASONING:
            raise cannot_carry(path, f"a block of type `{kind}`", _NOT_ANTHROPIC)
    out = tool_messages
    if parts:
        simple = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "".join(p["text"] for p in parts) if simple else parts})
    return out


def _anthropic_assistant_to_openai(content) -> dict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    text, calls = [], []
    for block in content or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id", ""), "type": "function",
                          "function": {"name": block.get("name", ""), "arguments": dumps(block.get("input") or {})}})
    message: dict = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _anthropic_tool_result_to_openai(block: dict, path: str) -> dict:
    """A ``tool_result`` block as an OpenAI ``tool`` message, whose content is text only."""
    text = text_only(block.get("content"), path + ".content.{}", _NOT_ANTHROPIC)
    if block.get("is_error") and text:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}


def _anthropic_tool_to_openai(tool: dict) -> dict:
    fn = {"name": tool.get("name", ""), "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


# ================================================================= replies

def anthropic_to_openai_reply(reply: dict, created: int | None = None, answer_tool: str | None = None) -> dict:
    """A whole Anthropic message as an OpenAI ``chat.completion``; a call of ``answer_tool`` (the
    request's JSON answer, ``JSON_ANSWER_TOOL``) is the answer's text, and the answer a finished one."""
    text, reasoning, calls = [], [], []
    stop = reply.get("stop_reason")
    for block in reply.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use" and answer_tool is not None and block.get("name") == answer_tool:
            text.append(dumps(block.get("input") or {}))
            stop = "end_turn" if stop == "tool_use" else stop
        elif kind == "tool_use":
            calls.append({"id": block.get("id", ""), "type": "function",
                          "function": {"name": block.get("name", ""), "arguments": dumps(block.get("input") or {})}})
    message: dict = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    usage = usage_from_anthropic(reply.get("usage")) or make_usage(0, 0)
    return {
        "id": reply.get("id") or new_id("chatcmpl-"), "object": "chat.completion",
        "created": created or int(time.time()), "model": reply.get("model", ""),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": ANTHROPIC_STOP_TO_OPENAI.get(stop, "stop")}],
        "usage": openai_usage(usage),
    }


def openai_to_anthropic_reply(reply: dict, usage: dict | None = None) -> dict:
    """A whole OpenAI ``chat.completion`` as an Anthropic message (choice 0)."""
    choices = reply.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = text_of(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if refusal and isinstance(refusal, str):      # the model declined: what it said is the answer
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or new_id("toolu_"), "name": fn.get("name", ""),
                        "input": parse_arguments(fn.get("arguments"))})
    if usage is None:
        usage = usage_from_openai(reply.get("usage")) or make_usage(0, 0)
    finish = choice.get("finish_reason")
    if message.get("tool_calls") and finish in (None, "stop"):
        finish = "tool_calls"  # some compatible servers say "stop" after a tool call
    elif refusal and isinstance(refusal, str) and finish in (None, "stop"):
        finish = "content_filter"       # Anthropic's "refusal"
    return {
        "id": _message_id(reply.get("id")), "type": "message", "role": "assistant",
        "model": reply.get("model", ""), "content": content,
        "stop_reason": OPENAI_FINISH_TO_ANTHROPIC.get(finish, "end_turn"), "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }


def _message_id(upstream_id) -> str:
    return upstream_id if isinstance(upstream_id, str) and upstream_id.startswith("msg_") else new_id("msg_")


# ================================================================= streams

class AnthropicToOpenAIStream:
    """Anthropic stream events -> OpenAI ``chat.completion.chunk`` items, event by event.

    ``push(event, data)`` returns the items to send now. The ``[DONE]`` item is
    produced only on ``message_stop``; ``include_usage`` adds the usage-only
    chunk before it. ``usage`` (normalized) and ``finished`` are kept up to date.
    """

    def __init__(self, include_usage: bool, estimate=None, answer_tool: str | None = None):
        self.include_usage = include_usage
        self.estimate = estimate         # callable(completion_chars) -> usage dict, or None
        self.answer_tool = answer_tool   # its call is the answer's text (``anthropic_to_openai_reply``)
        self._answer_block = None        # the Anthropic block index of that call
        self.usage: dict | None = None
        self.finished = False
        self.chars = 0                 # text sent, for an estimate when no usage comes
        self._head: dict = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk",
                            "created": int(time.time()), "model": ""}
        self._tools: dict[int, int] = {}   # Anthropic block index -> OpenAI tool_calls index
        self._argued: set[int] = set()     # the OpenAI tool_calls indexes that were sent arguments
        self._input: dict = {}

    def _chunk(self, delta: dict, finish=None) -> tuple[None, dict]:
        return None, {**self._head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def push(self, event: str | None, data) -> list:
        kind = data.get("type", event) if isinstance(data, dict) else event
        if event == ERROR or kind == "error":
            return [error_item(data)]
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                self.chars += len(delta.get("text", ""))
                return [self._chunk({"content": delta.get("text", "")})]
            if dtype == "input_json_delta":
                if self._answer_block is not None and data.get("index") == self._answer_block:
                    self.chars += len(delta.get("partial_json", ""))
                    return [self._chunk({"content": delta.get("partial_json", "")})]
                at = self._tools.get(data.get("index"))
                if at is None:
                    return []
                arguments = delta.get("partial_json", "")
                if not arguments:
                    return []
                self.chars += len(arguments)
                self._argued.add(at)
                return [self._chunk({"tool_calls": [{"index": at, "function": {"arguments": arguments}}]})]
            if dtype == "thinking_delta":
                self.chars += len(delta.get("thinking", ""))
                return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
            return []
        if kind == "message_start":
            message = data.get("message") or {}
            if message.get("id"):
                self._head["id"] = message["id"]
            self._head["model"] = message.get("model", "")
            self._input = message.get("usage") or {}
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use" and self.answer_tool is not None and block.get("name") == self.answer_tool:
                self._answer_block = data.get("index")
                return []
            if block.get("type") == "tool_use":
                at = self._tools[data.get("index")] = len(self._tools)
                return [self._chunk({"tool_calls": [{"index": at, "id": block.get("id", ""), "type": "function",
                                                     "function": {"name": block.get("name", ""), "arguments": ""}}]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "message_delta":
            self.usage = usage_from_anthropic({**self._input, **{k: v for k, v in (data.get("usage") or {}).items()
                                                                 if v is not None}})
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop == "tool_use" and self._answer_block is not None:
                stop = "end_turn"        # the answer's own call ended it: a finished answer
            return [self._chunk({}, ANTHROPIC_STOP_TO_OPENAI.get(stop, "stop"))]
        if kind == "message_stop":
            self.finished = True
            out = []
            if self.include_usage:
                usage = self.usage or (self.estimate(self.chars) if self.estimate is not None
                                       else make_usage(0, estimate_tokens(self.chars), estimated=True))
                out.append((None, {**self._head, "choices": [], "usage": openai_usage(usage)}))
            out.append((None, DONE))
            return out
        if kind == "content_block_stop":
            at = self._tools.get(data.get("index"))
            if at is not None and at not in self._argued:
                # a call without parameters streams no JSON (or ""): its arguments are "{}", as whole
                self._argued.add(at)
                return [self._chunk({"tool_calls": [{"index": at, "function": {"arguments": "{}"}}]})]
        return []  # ping, a text block's stop, unknown events


class OpenAIToAnthropicStream:
    """OpenAI chunk items -> Anthropic stream events, chunk by chunk.

    Opens a content block per kind of delta (``thinking`` for
    ``reasoning_content``, ``text``, one ``tool_use`` per tool call) and closes
    it when another starts. ``message_delta`` (stop reason, usage) and
    ``message_stop`` wait for ``[DONE]``, since OpenAI sends usage after the
    finish reason. ``estimate`` gives the usage when the upstream sent none.
    """

    def __init__(self, model: str, estimate=None):
        self.model = model
        self.estimate = estimate         # callable(completion_chars) -> usage dict, or None
        self.usage: dict | None = None
        self.finished = False
        self.chars = 0
        self._started = False
        self._block = -1                 # index of the open block, -1 when none
        self._block_kind: str | None = None
        self._blocks = 0
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index -> Anthropic block index
        self._finish: str | None = None
        self._saw_tools = False
        self._refused = False            # the model declined (OpenAI's ``refusal``): the stop reason says so

    def _start(self, message_id) -> list:
        self._started = True
        return [("message_start", {"type": "message_start", "message": {
            "id": _message_id(message_id), "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            ("ping", {"type": "ping"})]

    def _close(self) -> list:
        if self._block_kind is None:
            return []
        self._block_kind = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._block})]

    def _open(self, block: dict) -> list:
        out = self._close()
        self._block = self._blocks
        self._blocks += 1
        self._block_kind = block["type"]
        out.append(("content_block_start", {"type": "content_block_start", "index": self._block,
                                            "content_block": block}))
        return out

    def _delta(self, delta: dict) -> tuple[str, dict]:
        return "content_block_delta", {"type": "content_block_delta", "index": self._block, "delta": delta}

    def push(self, event: str | None, data) -> list:
        if data == DONE:
            return self._end()
        if event == ERROR or is_error_frame(data):
            return [error_item(data)]
        out = [] if self._started else self._start(data.get("id"))
        if data.get("usage"):
            self.usage = usage_from_openai(data["usage"])
        for choice in data.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                if self._block_kind != "thinking":
                    out += self._open({"type": "thinking", "thinking": "", "signature": ""})
                self.chars += len(reasoning)
                out.append(self._delta({"type": "thinking_delta", "thinking": reasoning}))
            refusal = delta.get("refusal")
            if refusal and isinstance(refusal, str):    # the model declined: its words are the text
                self._refused = True
            for text in (delta.get("content"), refusal):
                if text and isinstance(text, str):
                    if self._block_kind != "text":
                        out += self._open({"type": "text", "text": ""})
                    self.chars += len(text)
                    out.append(self._delta({"type": "text_delta", "text": text}))
            for position, call in enumerate(delta.get("tool_calls") or ()):
                at = call.get("index", position)
                fn = call.get("function") or {}
                if at not in self._tools:
                    self._saw_tools = True
                    out += self._open({"type": "tool_use", "id": call.get("id") or new_id("toolu_"),
                                       "name": fn.get("name", ""), "input": {}})
                    self._tools[at] = self._block
                arguments = fn.get("arguments")
                if arguments:
                    if self._tools[at] != self._block:
                        continue  # arguments of an earlier, closed call: cannot be reopened
                    self.chars += len(arguments)
                    out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                out += self._close()
        return out

    def _end(self) -> list:
        out = [] if self._started else self._start(None)
        out += self._close()
        self.finished = True
        if self.usage is None:
            self.usage = (self.estimate(self.chars) if self.estimate is not None
                          else make_usage(0, estimate_tokens(self.chars), estimated=True))
        finish = self._finish
        if self._saw_tools and finish in (None, "stop"):
            finish = "tool_calls"
        elif self._refused and finish in (None, "stop"):
            finish = "content_filter"       # Anthropic's "refusal"
        usage = anthropic_usage(self.usage)
        out.append(("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": OPENAI_FINISH_TO_ANTHROPIC.get(finish, "end_turn"),
                                                "stop_sequence": None},
                                      "usage": usage}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out


# ============================================================ passthrough

#: what makes an Anthropic event need reading: its start or usage (``message_start``, ``message_delta``),
#: its end (``message_stop``), an error (and not ending like a JSON object: ``plain_prefix``)
_MARKERS = (b"message_", b"error")
_DELTA = b"content_block_delta"     # twice an event: its ``event:`` line and its ``type`` field


class AnthropicStreamRelay(StreamRelay):
    """Anthropic upstream -> Anthropic caller: whole events forwarded as bytes.

    Only the events that may carry usage, the end or an error are parsed, one by one; the runs of
    plain events around them (``content_block_delta`` and the like: ``_core.sse.plain_prefix``)
    are forwarded untouched (their deltas counted for an estimate until a start brings the usage),
    and the read goes out as it came unless an event in it had to change (a redacted error) or
    garbage cut it short. (A fast upstream's whole stream comes in one read, its start first:
    parsing every event of it cost 5.6x this, ``bench/micro/test_bench_relay.py``.)
    """

    __slots__ = ("_parser", "_carry", "_input", "_usage", "_deltas", "_request_body", "finished", "error",
                 "failure")

    def __init__(self, request_body: dict):
        self._parser = SSEParser()
        self._carry = b""
        self._input: dict = {}
        self._usage: dict | None = None
        self._deltas = 0
        self._request_body = request_body
        self.finished = False
        self.error: bytes | None = None
        self.failure = None

    @property
    def usage(self) -> dict | None:
        if self._usage is not None:
            return self._usage
        if self._input:
            return usage_from_anthropic(self._input)
        return usage_estimate(self._request_body, self._deltas)

    def feed(self, chunk: bytes) -> bytes:
        if self.error is not None:
            return b""      # nothing follows an error event: not a message_stop that would read as success
        out, self._carry = whole_events(self._carry, chunk)
        if not out:
            return b""
        plain, _ = plain_prefix(out, _MARKERS)
        if not self._input:         # the deltas are counted for an estimate, needed only without a start's usage
            self._deltas += out.count(_DELTA, 0, plain) >> 1
        if plain == len(out):
            return out
        return self._read(out, plain)

    def _read(self, out: bytes, at: int) -> bytes:
        """``out`` from ``at``, an event that needs reading, on: each such event parsed (up to the
        next blank line: the event, or with CR line ends the rest of the read), each plain run after
        one counted. What of ``out`` goes to the client."""
        pieces = None       # what goes out, once it is not ``out`` as it came
        sent = 0            # out[sent:at] goes out as it came (not yet in ``pieces``)
        n = len(out)
        while at < n:
            stop = out.find(b"\n\n", at)
            end = n if stop < 0 else stop + 2
            kept = self._attend(self._parser.feed(out[at:end]))
            if kept is not None:        # the events went out changed, or garbage cut them short
                pieces = [] if pieces is None else pieces
                pieces.append(memoryview(out)[sent:at])
                pieces += kept
                sent = end
            if self.failure is not None or self.error is not None:
                # garbage or an error event ends the stream: nothing after it goes out
                if pieces is None:
                    return out[:end]
                pieces.append(memoryview(out)[sent:end])
                return b"".join(pieces)
            at, _ = plain_prefix(out, _MARKERS, end)
            if not self._input:
                self._deltas += out.count(_DELTA, end, at) >> 1
        if pieces is None:
            return out
        pieces.append(memoryview(out)[sent:])
        return b"".join(pieces)

    def _attend(self, events: list) -> list | None:
        """Parsed events read for the usage, the end and errors: None when they go out as they came,
        else the encoded events that go out instead (a redacted error; up to garbage, which sets
        ``failure``)."""
        kept = []           # (data, event name) of each event as it goes out
        changed = False
        for event in events:
            data = json_object(event.data)
            if data is None:
                # garbage: forward what came before it; the engine ends the stream with an error event
                self.failure = UpstreamFailure("upstream sent a malformed stream event")
                return [encode_event(d, event=name.encode()) for d, name in kept]
            name = event.event
            if name == "content_block_delta":
                self._deltas += 1
            elif name == "message_start":
                self._input = (data.get("message") or {}).get("usage") or {}
            elif name == "message_delta":
                given = data.get("usage") or {}
                self._usage = usage_from_anthropic({**self._input, **{k: v for k, v in given.items()
                                                                      if v is not None}})
            elif name == "message_stop":
                self.finished = True
            elif name == "error":
                self.error = redact_bytes(event.data)
                kept.append((self.error, name))
                # it ends the stream: nothing after it goes out (a message_stop would read as success);
                # re-encoded when the upstream's text quoted a key, or when events followed it
                changed = changed or self.error is not event.data or event is not events[-1]
                break
            kept.append((event.data, name))
        return [encode_event(d, event=name.encode()) for d, name in kept] if changed else None

    def error_event(self, err) -> bytes:
        return ANTHROPIC.error_event(err)


# ================================================================= format

class AnthropicFormat(Format):
    name = "anthropic"

    def upstream_body(self, req, caller: Format, deployment) -> dict:
        """``Format.upstream_body``; an Anthropic caller's body is the upstream's with its model and,
        unless it is a count (which takes none), a ``max_tokens``, made here: one call a request."""
        if caller is not self:
            return Format.upstream_body(self, req, caller, deployment)
        out = {**req.body, "model": deployment.upstream_model}
        if req.endpoint != "count_tokens":
            out.setdefault("max_tokens", deployment.default_max_tokens)
        return out

    def counted(self, reply: dict):
        return reply.get("input_tokens")

    def request_to_pivot(self, body: dict, model: str) -> dict:
        return anthropic_to_openai_request(body, model)

    def request_from_pivot(self, body: dict, deployment, stream: bool) -> dict:
        params_without_place(body, _NO_PLACE_IN_ANTHROPIC, _ANTHROPIC, deployment.drop_params)
        return openai_to_anthropic_request(body, deployment.upstream_model, deployment.default_max_tokens)

    def reply(self, body: bytes, req, caller: Format, model: str) -> tuple[bytes, dict]:
        """``Format.reply``; to an Anthropic caller the body goes as it came, and when the compiled scan
        is sure it is a JSON object (``_core.bodies.reply_usage_span``) only its usage is parsed."""
        if caller is self and type(body) is bytes:
            span = reply_usage_span(body)
            if span is not None and span[0] >= 0:
                usage = usage_from_anthropic(orjson.loads(body[span[0]:span[1]]))
                if usage is not None and usage["total_tokens"]:
                    return body, usage
        return Format.reply(self, body, req, caller, model)     # parsed whole: orjson decides, text estimated

    def reply_to_pivot(self, reply: dict, model: str, req) -> dict:
        return anthropic_to_openai_reply(reply, answer_tool=answer_tool_of(req.body))

    def reply_from_pivot(self, reply: dict, usage: dict) -> dict:
        return openai_to_anthropic_reply(reply, usage)

    def reply_usage(self, reply: dict) -> dict | None:
        return usage_from_anthropic(reply.get("usage"))

    def reply_text(self, reply: dict) -> str:
        return text_of(reply.get("content"))

    def stream_to_pivot(self, model: str, include_usage: bool, estimate, req):
        return AnthropicToOpenAIStream(include_usage, estimate, answer_tool_of(req.body))

    def stream_from_pivot(self, model: str, estimate):
        return OpenAIToAnthropicStream(model, estimate)

    def passthrough_relay(self, req) -> StreamRelay:
        return AnthropicStreamRelay(req.body)

    def error_body(self, err: GatewayError) -> bytes:
        kind = err.type
        if kind == "invalid_request_error":     # OpenAI's word for its 404s and 413s; Anthropic has one each
            kind = _ANTHROPIC_TYPE_OF_STATUS.get(err.status, kind)
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": err.message}})

    def error_event(self, err: GatewayError) -> bytes:
        return encode_event(self.error_body(err), event=b"error")


#: Anthropic's error type for a status where OpenAI's API says ``invalid_request_error`` (the gateway's
#: own errors are named in OpenAI's words): what the Anthropic SDKs and their users read
_ANTHROPIC_TYPE_OF_STATUS = {404: "not_found_error", 413: "request_too_large"}

ANTHROPIC = AnthropicFormat()
