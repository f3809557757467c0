"""The Gemini ``generateContent`` wire format, and its translation to and from OpenAI chat.

Owns: OpenAI chat body -> Gemini body (system instruction, parts with inline /
file images, function declarations, function calls and responses, generation
config incl. JSON response format), Gemini reply -> OpenAI completion, the
incremental Gemini chunk -> OpenAI chunk translator, and ``GEMINI``, the
``Format``. Gemini is an upstream format only: no client speaks it to the
gateway, so Anthropic callers reach Gemini through the OpenAI pivot.
Must not touch: I/O, SSE bytes, config objects.
"""
from __future__ import annotations

import time

import orjson

from .._core.sse import encode_data
from ..errors import GatewayError
from .base import Format
from .common import (DONE, ERROR, GEMINI_FINISH_TO_OPENAI, cannot_carry, dumps, error_item, file_part_bytes,
                     guess_media_type, make_usage, new_id, openai_usage, params_without_place, parse_arguments,
                     parse_data_url,
                     reasoning_budget, refuse_answer_shapes, text_only, unknown_role, usage_from_gemini)

# ================================================================ request

_SCHEMA_DROP = frozenset(("additionalProperties", "$schema", "strict", "$id", "examples", "default"))


def _clean_schema(schema):
    """JSON Schema -> the OpenAPI subset Gemini's ``parameters`` accepts (drops unsupported keys)."""
    if isinstance(schema, dict):
        # "properties" maps names to schemas; any other value (enum data, a wrong schema) is cleaned as is
        return {k: {p: _clean_schema(s) for p, s in v.items()} if k == "properties" and isinstance(v, dict)
                else _clean_schema(v) for k, v in schema.items() if k not in _SCHEMA_DROP}
    if isinstance(schema, list):
        return [_clean_schema(s) for s in schema]
    return schema


_GEMINI = "speaks Gemini's API"
#: OpenAI's parameters Gemini's API has no place for (``common.params_without_place``)
_NO_PLACE_IN_GEMINI = ("logit_bias", "top_logprobs", "audio", "modalities")


def openai_to_gemini_request(body: dict) -> dict:
    """An OpenAI chat body as a Gemini ``generateContent`` body (the model is in the URL)."""
    refuse_answer_shapes(body, _GEMINI, several_choices=True)
    system: list[str] = []
    contents: list[dict] = []
    names: dict[str, str] = {}   # tool_call_id -> function name (Gemini answers by name)
    for i, m in enumerate(body.get("messages") or ()):
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(text_only(m.get("content"), f"messages[{i}].content[{{}}]", _GEMINI))
        elif role == "user":
            _append(contents, "user", _openai_parts_to_gemini(m.get("content"), i))
        elif role == "assistant":
            parts = _openai_parts_to_gemini(m.get("content"), i)
            for call in m.get("tool_calls") or ():
                fn = call.get("function") or {}
                names[call.get("id", "")] = fn.get("name", "")
                parts.append({"functionCall": {"name": fn.get("name", ""), "args": parse_arguments(fn.get("arguments"))}})
            _append(contents, "model", parts)
        elif role in ("tool", "function"):
            name = names.get(m.get("tool_call_id", ""), m.get("name") or "")
            text = text_only(m.get("content"), f"messages[{i}].content[{{}}]", _GEMINI)
            result = parse_arguments(text) if text.startswith("{") else {}
            if not result or "_raw" in result:
                result = {"content": text}
            _append(contents, "user", [{"functionResponse": {"name": name, "response": result}}])
        else:
            raise unknown_role(i, _GEMINI)
    out: dict = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(s for s in system if s)}]}
    config: dict = {}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(max_tokens, int):
        config["maxOutputTokens"] = max_tokens
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("n", "candidateCount"),
                     ("seed", "seed"), ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if body.get(src) is not None:
            config[dst] = body[src]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            config["responseSchema"] = _clean_schema(schema)
    effort = body.get("reasoning_effort")
    if effort is not None:
        config["thinkingConfig"] = {"thinkingBudget": reasoning_budget(effort, _GEMINI)}
    if config:
        out["generationConfig"] = config
    declarations = []
    for tool in body.get("tools") or ():
        if tool.get("type", "function") != "function":
            continue   # an offer of a tool Gemini cannot declare (validated as an opaque object): left out
        fn = tool.get("function") or {}
        decl = {"name": fn.get("name", "")}
        if fn.get("description"):
            decl["description"] = fn["description"]
        if fn.get("parameters") and fn["parameters"].get("properties"):
            decl["parameters"] = _clean_schema(fn["parameters"])
        declarations.append(decl)
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        choice = body.get("tool_choice")
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice) if isinstance(choice, str) else None
        if isinstance(choice, dict):
            out["toolConfig"] = {"functionCallingConfig": {
                "mode": "ANY", "allowedFunctionNames": [(choice.get("function") or {}).get("name", "")]}}
        elif mode:
            out["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    return out


def _append(contents: list[dict], role: str, parts: list[dict]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _openai_parts_to_gemini(content, message: int) -> list[dict]:
    """The content of OpenAI message ``message`` as Gemini parts; a part Gemini has no place for (an
    OpenAI file id, another kind) is refused (``cannot_carry``)."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for j, part in enumerate(content or ()):
        kind = part.get("type")
        if kind == "text":
            parts.append({"text": part.get("text", "")})
        elif kind == "refusal":       # an assistant's past refusal is what it said
            parts.append({"text": part.get("refusal", "")})
        elif kind == "input_audio":
            audio = part["input_audio"]
            parts.append({"inlineData": {"mimeType": f"audio/{audio['format']}", "data": audio["data"]}})
        elif kind == "image_url":
            url = part["image_url"]["url"] if isinstance(part.get("image_url"), dict) else part.get("image_url", "")
            inline = parse_data_url(url)
            parts.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}} if inline
                         else {"fileData": {"mimeType": guess_media_type(url), "fileUri": url}})
        elif kind == "file":
            media_type, data = file_part_bytes(part, f"messages[{message}].content[{j}]", _GEMINI)
            parts.append({"inlineData": {"mimeType": media_type, "data": data}})
        else:
            raise cannot_carry(f"messages[{message}].content[{j}]", f"a part of type `{kind}`", _GEMINI)
    return parts


# =================================================================== reply

def _candidate_to_openai(candidate: dict) -> tuple[str, str, list[dict]]:
    """(text, reasoning, tool_calls) of one Gemini candidate."""
    text, reasoning, calls = [], [], []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "functionCall" in part:
            call = part["functionCall"]
            calls.append({"id": call.get("id") or new_id("call_"), "type": "function",
                          "function": {"name": call.get("name", ""), "arguments": dumps(call.get("args") or {})}})
        elif "text" in part:
            (reasoning if part.get("thought") else text).append(part["text"])
    return "".join(text), "".join(reasoning), calls


def _finish(candidate: dict, has_calls: bool) -> str | None:
    reason = candidate.get("finishReason")
    if reason is None:
        return None
    if has_calls and reason == "STOP":
        return "tool_calls"
    return GEMINI_FINISH_TO_OPENAI.get(reason, "stop")


def gemini_to_openai_reply(reply: dict, model: str) -> dict:
    """A whole Gemini reply as an OpenAI ``chat.completion`` (every candidate a choice)."""
    choices = []
    for position, candidate in enumerate(reply.get("candidates") or ()):
        text, reasoning, calls = _candidate_to_openai(candidate)
        message: dict = {"role": "assistant", "content": text if text or not calls else None}
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": candidate.get("index", position), "message": message, "logprobs": None,
                        "finish_reason": _finish(candidate, bool(calls)) or "stop"})
    if not choices:  # the prompt itself was blocked
        choices.append({"index": 0, "message": {"role": "assistant", "content": None}, "logprobs": None,
                        "finish_reason": "content_filter"})
    usage = usage_from_gemini(reply.get("usageMetadata")) or make_usage(0, 0)
    return {"id": reply.get("responseId") or new_id("chatcmpl-"), "object": "chat.completion",
            "created": int(time.time()), "model": reply.get("modelVersion") or model,
            "choices": choices, "usage": openai_usage(usage)}


# ================================================================== stream

class GeminiToOpenAIStream:
    """Gemini stream chunks -> OpenAI chunk items, chunk by chunk.

    Gemini sends whole function calls (no argument deltas) and has no end
    marker: the chunk carrying ``finishReason`` is the last, so it produces the
    finish chunk, the usage chunk (when ``include_usage``) and ``[DONE]``.
    """

    def __init__(self, model: str, include_usage: bool, estimate=None):
        self.include_usage = include_usage
        self.estimate = estimate         # callable(completion_chars) -> usage dict, or None
        self.usage: dict | None = None
        self.finished = False
        self.chars = 0
        self._head = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk",
                      "created": int(time.time()), "model": model}
        self._started = False
        self._calls = 0

    def _chunk(self, delta: dict, finish=None) -> tuple[None, dict]:
        return None, {**self._head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def push(self, event: str | None, data) -> list:
        if event == ERROR or "error" in data:
            return [error_item(data)]
        out = []
        if not self._started:
            self._started = True
            if data.get("responseId"):
                self._head["id"] = data["responseId"]
            out.append(self._chunk({"role": "assistant", "content": ""}))
        if data.get("usageMetadata"):
            self.usage = usage_from_gemini(data["usageMetadata"])
        candidates = data.get("candidates") or ()
        finish = None
        for candidate in candidates:
            if candidate.get("index", 0) != 0:
                continue
            text, reasoning, calls = _candidate_to_openai(candidate)
            if reasoning:
                self.chars += len(reasoning)
                out.append(self._chunk({"reasoning_content": reasoning}))
            if text:
                self.chars += len(text)
                out.append(self._chunk({"content": text}))
            if calls:
                for call in calls:
                    call["index"] = self._calls
                    self._calls += 1
                    self.chars += len(call["function"]["arguments"])
                out.append(self._chunk({"tool_calls": calls}))
            finish = _finish(candidate, self._calls > 0)
        block = (data.get("promptFeedback") or {}).get("blockReason")
        if finish is None and block and not candidates:
            finish = "content_filter"
        if finish is None:
            return out
        self.finished = True
        out.append(self._chunk({}, finish))
        if self.include_usage:
            usage = self.usage or (self.estimate(self.chars) if self.estimate is not None
                                   else make_usage(0, (self.chars + 3) // 4, estimated=True))
            out.append((None, {**self._head, "choices": [], "usage": openai_usage(usage)}))
        out.append((None, DONE))
        return out


# ================================================================= format

#: HTTP status -> the google.rpc.Code name Gemini's error bodies carry
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                 499: "CANCELLED", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class GeminiFormat(Format):
    name = "gemini"

    def upstream_body(self, req, caller: Format, deployment) -> dict:
        """``Format.upstream_body``; a count asks of the whole request it would make (the system
        instruction and the tools count too), as ``countTokens`` takes it."""
        body = Format.upstream_body(self, req, caller, deployment)
        if req.endpoint != "count_tokens":
            return body
        return {"generateContentRequest": {"model": "models/" + deployment.upstream_model.removeprefix("models/"),
                                           **body}}

    def counted(self, reply: dict):
        return reply.get("totalTokens")

    def request_from_pivot(self, body: dict, deployment, stream: bool) -> dict:
        params_without_place(body, _NO_PLACE_IN_GEMINI, _GEMINI, deployment.drop_params)
        n = body.get("n")
        if stream and type(n) is int and n > 1:
            # the stream is read as one candidate's (``GeminiToOpenAIStream``): the others would be lost
            raise cannot_carry("n", f"asking for {n} choices in a stream", _GEMINI,
                               " (several choices are answered whole: send the request without `stream`)")
        return openai_to_gemini_request(body)

    def reply_to_pivot(self, reply: dict, model: str, req) -> dict:
        return gemini_to_openai_reply(reply, model)

    def reply_usage(self, reply: dict) -> dict | None:
        return usage_from_gemini(reply.get("usageMetadata"))

    def reply_text(self, reply: dict) -> str:
        return "".join(p.get("text", "") for c in reply.get("candidates") or ()
                       for p in (c.get("content") or {}).get("parts") or ())

    def stream_to_pivot(self, model: str, include_usage: bool, estimate, req):
        return GeminiToOpenAIStream(model, include_usage, estimate)

    def error_body(self, err: GatewayError) -> bytes:
        return orjson.dumps({"error": {"code": err.status, "message": err.message,
                                       "status": _STATUS_NAMES.get(err.status, "INTERNAL")}})

    def error_event(self, err: GatewayError) -> bytes:
        return encode_data(self.error_body(err))


GEMINI = GeminiFormat()
