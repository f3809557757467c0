"""The operator's API: /admin/* behind the admin key.

Owns: admin authentication (``Authorization: Bearer <admin key>``; the API is
disabled when no admin key is configured), checking admin bodies, and turning
admin requests into engine calls. Errors are raised as ``GatewayError``s: the
gateway's middleware renders them (OpenAI's shape, with the request id).
Must not touch: request routing or providers directly.
"""
from __future__ import annotations

import asyncio
import hmac
import os
import signal

import orjson
from aiohttp import web

from ..config import ConfigError, load_config
from ..engine.state import describe_state
from ..errors import BadRequest, GatewayError
from .errors import JSON

#: force_open's duration_s must be a positive number below this (a longer one overflows the clock)
MAX_FORCE_OPEN_S = 1e9


class AdminApi:
    def __init__(self, engine, admin_key: str | None):
        self.engine = engine
        self._key = admin_key.encode() if admin_key else None

    def register(self, app: web.Application) -> None:
        app.router.add_get("/admin/state", self.state)
        app.router.add_post("/admin/circuits/{deployment}/{replica}", self.circuit)
        app.router.add_post("/admin/sessions/{deployment}/rebuild", self.rebuild_sessions)
        app.router.add_post("/admin/reload", self.reload)

    def _authorize(self, request: web.Request) -> None:
        if self._key is None:
            raise GatewayError("The admin API is disabled: set server.admin_key to enable it.",
                               status=404, type="invalid_request_error", code="admin_disabled")
        given = request.headers.get("Authorization", "")
        token = given[7:].encode() if given.startswith("Bearer ") else b""
        if not hmac.compare_digest(token, self._key):
            raise GatewayError("Missing or wrong admin key.", status=401, type="authentication_error",
                               code="invalid_admin_key")

    async def state(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return web.Response(body=orjson.dumps(describe_state(self.engine)), content_type=JSON)

    async def circuit(self, request: web.Request) -> web.Response:
        self._authorize(request)
        dep = self.engine.deployment(request.match_info["deployment"])
        names = [r.name for r in dep.config.replicas]
        replica = request.match_info["replica"]
        if replica not in names:
            raise GatewayError(f"Deployment {dep.config.name} has no replica {replica!r}; "
                               f"it has {', '.join(names)}.", status=404, type="invalid_request_error")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise BadRequest("The body must be JSON.") from None
        action = body.get("action") if isinstance(body, dict) else None
        breaker = dep.breakers.breakers[names.index(replica)]
        if action == "force_open":
            breaker.force_open(_duration_s(body.get("duration_s")))
        elif action == "reset":
            breaker.reset()
        else:
            raise BadRequest('action must be "force_open" or "reset".', param="action")
        return web.Response(body=orjson.dumps({"deployment": dep.config.name, "replica": replica,
                                               "state": ("closed", "open", "half_open")[breaker.state]}),
                            content_type=JSON)

    async def rebuild_sessions(self, request: web.Request) -> web.Response:
        """Re-read credentials and rebuild pools, in every worker; in-flight requests finish on the old ones."""
        self._authorize(request)
        name = request.match_info["deployment"]
        generation = await self.engine.request_rebuild(name)
        return web.Response(body=orjson.dumps({"deployment": name, "generation": generation}),
                            content_type=JSON)

    async def reload(self, request: web.Request) -> web.Response:
        """Check the config file now (errors answer 400), then have the supervisor roll onto it."""
        self._authorize(request)
        source = self.engine.config.source
        if not source.startswith("<"):
            try:
                await asyncio.to_thread(load_config, source)
            except ConfigError as e:
                raise BadRequest("The config file is invalid; the running config stays: "
                                 + "; ".join(e.problems)) from None
        os.kill(os.getppid(), signal.SIGHUP)
        return web.Response(status=202, body=b'{"status":"reloading"}', content_type=JSON)


def _duration_s(value) -> float:
    """force_open's ``duration_s``: a positive number below ``MAX_FORCE_OPEN_S`` (the contract), else 400."""
    if type(value) not in (int, float) or not 0 < value < MAX_FORCE_OPEN_S:
        raise BadRequest(f"force_open needs a duration_s that is a positive number of seconds below 10^9; "
                         f"got {repr(value)[:40]}", param="duration_s")
    return float(value)
