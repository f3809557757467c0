"""The operator's HTTP routes: /admin/* behind the admin key, and the /dashboard page.

Owns: turning admin requests into engine and ops calls and their answers into
JSON. Authentication (the admin key or the run's one-time token, throttled
per client address) is ``ops.AdminAuth``; the numbers are ``ops.host_stats``.
Must not touch: request routing or providers directly.
"""
from __future__ import annotations

import asyncio
import functools
import math
import os
import signal

import orjson
from aiohttp import web

from .._core.constants import BREAKER_STATE_NAMES
from ..config import ConfigError
from ..config.servable import load_servable
from ..engine.state import describe_state
from ..errors import BadRequest, GatewayError, MetricsHandedOver
from ..limits.report import describe_keys
from ..ops import AdminAuth, host_stats
from ..ops.dashboard import PAGE, load_assets
from .errors import JSON

_MAX_FORCE_OPEN_S = 1e9
_NO_STORE = {"Cache-Control": "no-store"}   # admin answers describe the live system: never cached


def _json(body, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=JSON, headers=_NO_STORE)


def _admin_route(handler):
    """Authenticate first; a ``GatewayError`` (auth or the handler's own) goes to the gateway's
    error middleware, which renders it in OpenAI's shape with the request id, uncached like every
    admin answer."""
    @functools.wraps(handler)
    async def route(self: "AdminApi", request: web.Request) -> web.StreamResponse:
        try:
            self.auth.check(request.headers.get("Authorization"), request.remote, f"{request.method} {request.path}")
            return await handler(self, request)
        except GatewayError as e:
            e.headers = {**e.headers, **_NO_STORE}
            raise
    return route


class AdminApi:
    def __init__(self, engine, admin_key: str | None, throttle=None):
        self.engine = engine
        self.auth = AdminAuth(admin_key, throttle)
        self.assets = load_assets()

    def register(self, app: web.Application, counted=lambda route, handler: handler) -> None:
        """Add the routes to ``app``; ``counted(route, handler)`` wraps each handler to count its answers."""
        app.router.add_get("/admin/state", counted("admin", self.state))
        app.router.add_get("/admin/stats", counted("admin", self.stats))
        app.router.add_get("/admin/keys", counted("admin", self.keys))
        app.router.add_post("/admin/circuits/{deployment}/{replica}", counted("admin", self.circuit))
        app.router.add_post("/admin/sessions/{deployment}/rebuild", counted("admin", self.rebuild_sessions))
        app.router.add_post("/admin/reload", counted("admin", self.reload))
        dashboard = counted("dashboard", self.dashboard)
        app.router.add_get("/dashboard", dashboard)
        app.router.add_get("/dashboard/", dashboard)
        app.router.add_get("/dashboard/{name}", dashboard)

    async def dashboard(self, request: web.Request) -> web.Response:
        """The page and its files: public (the data behind them needs the admin key)."""
        asset = self.assets.get(request.match_info.get("name", PAGE))
        if asset is None:
            raise web.HTTPNotFound()
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers={"ETag": asset.etag})
        return web.Response(body=asset.body, headers=asset.headers)

    @_admin_route
    async def state(self, request: web.Request) -> web.Response:
        state = describe_state(self.engine)
        state["keys"] = describe_keys(self.engine.limits) if self.engine.limits is not None else []
        return _json(state)

    @_admin_route
    async def stats(self, request: web.Request) -> web.Response:
        """The host's totals, as /metrics shows them (``Metrics.live_source``: during a reload, the
        previous generation's until the new one takes over, then without what is left of the limits)."""
        own = self.engine.metrics
        source = own.live_source()
        if source is not None:
            stats = (host_stats(own, self.engine.config, self.engine.limits) if source is own
                     else host_stats(source, source.config))
            if source.live:
                return _json(stats)
        raise MetricsHandedOver()

    @_admin_route
    async def keys(self, request: web.Request) -> web.Response:
        """Gateway keys by name: limits, what is left, spend, budget (never the key or its hash)."""
        return _json({"keys": describe_keys(self.engine.limits) if self.engine.limits is not None else []})

    @_admin_route
    async def circuit(self, request: web.Request) -> web.Response:
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
            if (not isinstance(duration, (int, float)) or isinstance(duration, bool)
                    or not 0 < duration < _MAX_FORCE_OPEN_S or not math.isfinite(duration)):
                raise BadRequest("force_open needs duration_s, a positive number of seconds below 10^9.",
                                 param="duration_s")
            breaker.force_open(float(duration))
        elif action == "reset":
            breaker.reset()
        else:
            raise BadRequest('action must be "force_open" or "reset".', param="action")
        return _json({"deployment": dep.config.name, "replica": replica,
                      "state": BREAKER_STATE_NAMES[breaker.state]})

    @_admin_route
    async def rebuild_sessions(self, request: web.Request) -> web.Response:
        """Re-read credentials and rebuild pools, in every worker; in-flight requests finish on the old ones."""
        name = request.match_info["deployment"]
        generation = await self.engine.request_rebuild(name)
        return _json({"deployment": name, "generation": generation})

    @_admin_route
    async def reload(self, request: web.Request) -> web.Response:
        """Check the config file now as the supervisor will (errors answer 400), then have it roll onto it."""
        source = self.engine.config.source
        if not source.startswith("<"):
            try:
                await asyncio.to_thread(load_servable, source)
            except ConfigError as e:
                raise BadRequest("The config file is invalid; the running config stays: "
                                 + "; ".join(e.problems)) from None
        os.kill(os.getppid(), signal.SIGHUP)
        return _json({"status": "reloading"}, status=202)
