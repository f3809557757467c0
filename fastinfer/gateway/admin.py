"""The operator's API: /admin/* behind the admin key.

Owns: admin authentication (``Authorization: Bearer <admin key>``; the API is
disabled when no admin key is configured), and turning admin requests into
engine calls. Must not touch: request routing or providers directly.
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
from .errors import JSON, error_response


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
        try:
            self._authorize(request)
        except GatewayError as e:
            return error_response(e, "openai", request.headers.get("x-request-id", ""))
        return web.Response(body=orjson.dumps(describe_state(self.engine)), content_type=JSON)

    async def circuit(self, request: web.Request) -> web.Response:
        try:
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
                duration = body.get("duration_s")
                if not isinstance(duration, (int, float)) or isinstance(duration, bool) or duration <= 0:
                    raise BadRequest("force_open needs a positive duration_s.", param="duration_s")
                breaker.force_open(float(duration))
            elif action == "reset":
                breaker.reset()
            else:
                raise BadRequest('action must be "force_open" or "reset".', param="action")
        except GatewayError as e:
            return error_response(e, "openai", request.headers.get("x-request-id", ""))
        return web.Response(body=orjson.dumps({"deployment": dep.config.name, "replica": replica,
                                               "state": ("closed", "open", "half_open")[breaker.state]}),
                            content_type=JSON)

    async def rebuild_sessions(self, request: web.Request) -> web.Response:
        """Re-read credentials and rebuild pools, in every worker; in-flight requests finish on the old ones."""
        try:
            self._authorize(request)
            name = request.match_info["deployment"]
            generation = await self.engine.request_rebuild(name)
        except GatewayError as e:
            return error_response(e, "openai", request.headers.get("x-request-id", ""))
        return web.Response(body=orjson.dumps({"deployment": name, "generation": generation}),
                            content_type=JSON)

    async def reload(self, request: web.Request) -> web.Response:
        """Check the config file now (errors answer 400), then have the supervisor roll onto it."""
        try:
            self._authorize(request)
            source = self.engine.config.source
            if not source.startswith("<"):
                try:
                    await asyncio.to_thread(load_config, source)
                except ConfigError as e:
                    raise BadRequest("The config file is invalid; the running config stays: "
                                     + "; ".join(e.problems)) from None
        except GatewayError as e:
            return error_response(e, "openai", request.headers.get("x-request-id", ""))
        os.kill(os.getppid(), signal.SIGHUP)
        return web.Response(status=202, body=b'{"status":"reloading"}', content_type=JSON)
