"""Rendering typed errors in the caller's API shape."""
from __future__ import annotations

import math

import orjson
from aiohttp import web

from ..errors import GatewayError

JSON = "application/json"


def openai_error_body(err: GatewayError) -> bytes:
    return orjson.dumps({"error": {"message": err.message, "type": err.type, "code": err.code, "param": err.param}})


def anthropic_error_body(err: GatewayError) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": err.type, "message": err.message}})


_RENDERERS = {"openai": openai_error_body, "anthropic": anthropic_error_body}


def error_response(err: GatewayError, api: str, request_id: str) -> web.Response:
    headers = {"x-request-id": request_id, **err.headers}
    if err.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(err.retry_after)))
    elif err.status in (429, 503):
        headers["retry-after"] = "1"
    return web.Response(status=err.status, body=_RENDERERS[api](err), content_type=JSON, headers=headers)
