"""Pieces every translator shares: usage, finish reasons, images, ids, stream items.

Must not touch: anything format-specific beyond these small mappings; no I/O.

Stream translators exchange *items*: ``(event, payload)`` pairs. OpenAI and
Gemini chunks have ``event`` ``None`` and a dict payload; Anthropic events carry
their event name. ``DONE`` is the OpenAI end marker, and ``(ERROR, {"message",
"type"})`` an upstream in-stream error, passed through every stage unchanged.

Usage is normalized to OpenAI names: ``prompt_tokens`` (all input, cached
included), ``completion_tokens`` (all output, reasoning included),
``total_tokens``, and when known ``cached_tokens`` / ``reasoning_tokens``;
``usage_estimated`` is True when the upstream sent no count and it was
estimated from text length (~4 characters per token).
"""
from __future__ import annotations

import itertools
import os

import orjson

from .._core.bodies import chat_chars, openai_usage, usage_estimate, walked_chars
from .._core.constants import CHARS_PER_TOKEN
from ..errors import BadRequest

DONE = "[DONE]"       # payload of the OpenAI end-of-stream marker
ERROR = "error"       # event name of an upstream in-stream error item


def error_item(data) -> tuple[str, dict]:
    """An upstream's in-stream error as a translator's ``(ERROR, {"message", "type"})`` item, whatever
    API shaped it: ``{"error": {...}}`` (OpenAI, Gemini, an OpenAI-compatible server's ``event: error``),
    Anthropic's ``{"type": "error", "error": {...}}``, the error object itself, or a bare string. The
    type is the upstream's, else Gemini's 400 an ``invalid_request_error``, else ``api_error``."""
    err = data.get("error", data) if isinstance(data, dict) else data
    if not isinstance(err, dict):
        err = {"message": err}
    message, kind = err.get("message"), err.get("type")
    if not isinstance(kind, str) or not kind or kind == "error":
        kind = "invalid_request_error" if err.get("code") == 400 else "api_error"
    return ERROR, {"message": str(message) if message else "upstream error", "type": kind}

_ids = itertools.count(1)
_prefix = os.urandom(4).hex()


def new_id(prefix: str) -> str:
    """A process-unique id such as ``msg_<hex>`` / ``call_<hex>`` / ``chatcmpl-<hex>``."""
    return f"{prefix}{_prefix}{next(_ids):08x}"


# ------------------------------------------------------------------ usage

def make_usage(prompt: int, completion: int, cached: int | None = None, reasoning: int | None = None,
               estimated: bool = False) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        usage["cached_tokens"] = cached
    if reasoning:
        usage["reasoning_tokens"] = reasoning
    if estimated:
        usage["usage_estimated"] = True
    return usage


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


#: OpenAI's ``usage``, normalized; a count that is not an integer is 0 (compiled: every
#: OpenAI-shaped answer goes through it; its reference is ``_core/ref/bodies.py``)
usage_from_openai = openai_usage


def usage_from_anthropic(u) -> dict | None:
    """Anthropic's ``input_tokens`` excludes cache reads and writes; ours includes them."""
    if not isinstance(u, dict):
        return None
    cached = _int(u.get("cache_read_input_tokens"))
    prompt = _int(u.get("input_tokens")) + cached + _int(u.get("cache_creation_input_tokens"))
    return make_usage(prompt, _int(u.get("output_tokens")), cached)


def usage_from_gemini(u) -> dict | None:
    """Gemini counts thoughts apart from candidates; ours counts them in the completion."""
    if not isinstance(u, dict):
        return None
    reasoning = _int(u.get("thoughtsTokenCount"))
    return make_usage(_int(u.get("promptTokenCount")), _int(u.get("candidatesTokenCount")) + reasoning,
                      _int(u.get("cachedContentTokenCount")), reasoning)


def openai_usage(usage: dict) -> dict:
    """A normalized usage in the OpenAI wire shape."""
    out = {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
           "total_tokens": usage["total_tokens"]}
    if usage.get("cached_tokens"):
        out["prompt_tokens_details"] = {"cached_tokens": usage["cached_tokens"]}
    if usage.get("reasoning_tokens"):
        out["completion_tokens_details"] = {"reasoning_tokens": usage["reasoning_tokens"]}
    return out


def anthropic_usage(usage: dict) -> dict:
    """A normalized usage in the Anthropic wire shape (``input_tokens`` without cache reads)."""
    cached = usage.get("cached_tokens", 0)
    out = {"input_tokens": max(0, usage["prompt_tokens"] - cached), "output_tokens": usage["completion_tokens"]}
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def estimate_tokens(chars: int) -> int:
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def prompt_chars(body: dict) -> int:
    """Characters of a request's text (any format): what a token estimate is based on. The
    commonest chat body is counted in one compiled call (``_core.bodies.chat_chars``), any other
    by the compiled walk of every text field (``walked_chars``)."""
    chars = chat_chars(body)
    return chars if chars >= 0 else walked_chars(body)


def counted_input_tokens(body: dict) -> int:
    """A prompt's input tokens without the model's tokenizer (Anthropic's ``count_tokens``): its text
    (``prompt_chars``) and its tools' definitions as they are sent (JSON, which the model reads),
    ``CHARS_PER_TOKEN`` characters a token, as every estimate of the gateway."""
    chars = prompt_chars(body)
    tools = body.get("tools")
    if tools:
        chars += len(orjson.dumps(tools))
    return estimate_tokens(chars)


def estimated_usage(request_body: dict, completion_chars: int) -> dict:
    """The usage of an answer its upstream did not count, ``completion_chars`` of it (compiled:
    ``_core.bodies.usage_estimate``, ``make_usage``'s shape)."""
    return usage_estimate(request_body, estimate_tokens(completion_chars))


# ---------------------------------------------------------- finish reasons

ANTHROPIC_STOP_TO_OPENAI = {
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
    "pause_turn": "stop", "refusal": "content_filter", "model_context_window_exceeded": "length",
}
OPENAI_FINISH_TO_ANTHROPIC = {
    "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
    "content_filter": "refusal",
}
GEMINI_FINISH_TO_OPENAI = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter", "LANGUAGE": "content_filter",
}


# ------------------------------------------------------------------ content

def text_of(content) -> str:
    """The text of an OpenAI / Anthropic content value (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str))
    return "" if content is None else str(content)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:image/png;base64,AAAA`` -> ("image/png", "AAAA"); None for anything else."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head[:-7] or "application/octet-stream", data


def cannot_carry(path: str, what: str, upstream: str, instead: str = "", code: str = "unsupported_content"
                 ) -> BadRequest:
    """The error for a part of the caller's body the upstream's format has no place for (``upstream``
    says which format: "speaks Gemini's API"): the request is refused (400, ``param`` the part's
    ``path`` in the caller's notation), never sent without the part, which would answer a question
    the caller did not ask."""
    return BadRequest(f"{path}: {what} cannot be sent to this model's upstream, which {upstream}{instead}.",
                      param=path, code=code)


def unknown_role(index: int, upstream: str) -> BadRequest:
    """The error for a message whose role the upstream's API has no turn for: a compatible server's
    own (``ipython``) passes to OpenAI-shaped upstreams, but translated it would be dropped."""
    return cannot_carry(f"messages[{index}].role", "a role other than system, developer, user, assistant, "
                        "tool or function", upstream)


def text_only(content, part_path: str, upstream: str) -> str:
    """The text of ``content`` (``text_of``) where the upstream's API holds text alone (a system
    prompt, a Gemini function's response, an OpenAI tool result); a part of another type there is
    refused (``cannot_carry``), named by ``part_path`` with its index (``"messages[2].content[{}]"``)."""
    if isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type", "text")
            if kind != "text":
                raise cannot_carry(part_path.format(j), f"a part of type `{kind}`", upstream, " (text alone there)")
    return text_of(content)


#: OpenAI-shaped request parameters that some upstream API has no place for, each with the values
#: that ask for nothing (the API's defaults): such a value is left out wherever it goes
_ASKS_NOTHING = {"seed": (), "presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ({},),
                 "top_logprobs": (0,), "top_k": (), "audio": (), "modalities": (["text"],)}


def params_without_place(body: dict, names: tuple[str, ...], upstream: str, drop: bool) -> None:
    """Take the parameters ``names`` out of ``body`` (an OpenAI-shaped body of this call's own):
    ``upstream``'s API has no place for them. One set to a value that asks for something is refused
    (400, ``unsupported_parameter``, naming it) unless ``drop`` (the deployment's ``drop_params``)
    says to leave it out: sampled without it, the answer would not be the one the caller asked for,
    and only the operator may say that is good enough."""
    for name in names:
        value = body.pop(name, None)
        if value is None or drop or value in _ASKS_NOTHING[name]:
            continue
        raise cannot_carry(name, f"a `{name}` of {_shown(value)}", upstream, "; send the request without it, or "
                           "the operator may set `drop_params = true` on the deployment to have it left out",
                           code="unsupported_parameter")


def _shown(value) -> str:
    text = dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: OpenAI's ``reasoning_effort`` as a thinking budget in tokens (LiteLLM's for low to high; "minimal"
#: the least Gemini's models all take; "none" thinks not at all)
REASONING_BUDGETS = {"none": 0, "minimal": 128, "low": 1024, "medium": 2048, "high": 4096}


def reasoning_budget(effort, upstream: str) -> int:
    """The thinking budget ``reasoning_effort`` asks for; an effort not in ``REASONING_BUDGETS`` is refused."""
    budget = REASONING_BUDGETS.get(effort)
    if budget is None:
        raise cannot_carry("reasoning_effort", f"the effort `{effort}`", upstream,
                           f" (it knows {', '.join(REASONING_BUDGETS)})")
    return budget


def refuse_answer_shapes(body: dict, upstream: str, several_choices: bool) -> None:
    """Refuse what an OpenAI body asks of its answer's shape that the upstream's reply cannot give
    (``cannot_carry``): several choices (``n``) unless ``several_choices``, log probabilities. Left
    out, the client would read an answer of another shape than it asked for."""
    n = body.get("n")
    if not several_choices and n is not None and n > 1:
        raise cannot_carry("n", f"asking for {n} choices", upstream, " (one choice an answer)")
    if body.get("logprobs") is True:
        raise cannot_carry("logprobs", "asking for log probabilities", upstream)


def file_part_bytes(part: dict, path: str, upstream: str) -> tuple[str, str]:
    """An OpenAI ``file`` part's (media type, base64 data), from its ``file_data`` data URL; a part
    without its bytes (a ``file_id``: OpenAI's own files) is refused, as no other API can read it."""
    inline = parse_data_url(part["file"].get("file_data", ""))
    if inline is None:
        raise cannot_carry(path, "a `file` part without its bytes (`file_data`, a data URL)", upstream,
                           " (OpenAI's file ids mean nothing to it)")
    return inline


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


_MEDIA_BY_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
                 "webp": "image/webp", "pdf": "application/pdf"}


def guess_media_type(url: str) -> str:
    ext = url.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
    return _MEDIA_BY_EXT.get(ext, "image/jpeg")


def json_object(data: bytes | str) -> dict | None:
    """``data`` parsed as a JSON object, or None when it is not one (garbage, or another JSON type)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_arguments(arguments) -> dict:
    """OpenAI tool-call ``arguments`` (a JSON string) as an object; ``{}`` when empty or not an object."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"value": value}


def dumps(value) -> str:
    return orjson.dumps(value).decode()
