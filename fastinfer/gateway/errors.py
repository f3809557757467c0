"""Rendering typed errors in the caller's API shape (the body itself is the caller's format's: ``formats``)."""
from __future__ import annotations

import math

from aiohttp import web

from ..errors import GatewayError
from ..formats import FORMATS

JSON = "application/json"


def error_response(err: GatewayError, api: str, request_id: str) -> web.Response:
    headers = {"x-request-id": request_id, **err.headers}
    if err.retry_after is not None:
        if err.retry_after != math.inf:      # inf: waiting will not help (a total budget spent)
            headers["retry-after"] = str(max(1, math.ceil(err.retry_after)))
    elif err.status in (429, 503):
        headers["retry-after"] = "1"
    return web.Response(status=err.status, body=FORMATS[api].error_body(err), content_type=JSON, headers=headers)
