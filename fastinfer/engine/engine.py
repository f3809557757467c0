"""The engine: admission, route, attempt loop, and the stream back.

Data flows one way: the gateway hands a ``GatewayRequest`` in, the engine
picks a replica, makes attempts through the deployment's provider, and hands
an ``EngineResult`` out. The engine never touches the client connection; the
stream it returns is an async iterator the gateway writes out.
"""
from __future__ import annotations

import asyncio
import logging
import random
from typing import Protocol

import orjson

from ..config import Config, DeploymentConfig
from ..errors import GatewayError, RateLimited, UnknownModel, UpstreamFailure
from ..providers import Provider, StreamRelay, UpstreamReply, make_provider
from ..routing import ReplicaPicker
from ..session import SessionRegistry
from .request import EngineResult, GatewayRequest

log = logging.getLogger("fastinfer.engine")

_RETRYABLE_STATUS = frozenset((408, 409, 429, 500, 502, 503, 504, 529))


class Deployment:
    """Everything the engine holds for one deployment in this worker."""

    __slots__ = ("config", "provider", "picker")

    def __init__(self, config: DeploymentConfig):
        self.config = config
        self.provider: Provider = make_provider(config)
        self.picker = ReplicaPicker(config)


class Engine:
    def __init__(self, config: Config, sessions: SessionRegistry):
        self.config = config
        self.sessions = sessions
        self.deployments = {d.name: Deployment(d) for d in config.deployments}
        self._rng = random.SystemRandom()

    def deployment(self, name: str) -> Deployment:
        dep = self.deployments.get(name)
        if dep is None:
            raise UnknownModel(f"The model `{name}` does not exist or you do not have access to it.",
                               param="model")
        return dep

    async def chat(self, req: GatewayRequest) -> EngineResult:
        dep = self.deployment(req.model)
        cfg = dep.config
        loop = asyncio.get_running_loop()
        tried: set[int] = set()
        last_error: GatewayError | None = None
        upstream_s = 0.0
        for attempt in range(1, cfg.retry.max_attempts + 1):
            index = dep.picker.pick(tried)
            if index is None:  # every replica tried once: start over
                tried.clear()
                index = dep.picker.pick(tried)
            tried.add(index)
            session = self.sessions.get(cfg.name, index)
            dep.picker.started(index)
            started = loop.time()
            try:
                reply = await dep.provider.send(session, req, cfg.timeouts)
            except GatewayError as e:
                dep.picker.finished(index, None)
                upstream_s += loop.time() - started
                last_error = e
                if attempt < cfg.retry.max_attempts:
                    await self._backoff(cfg, attempt, None)
                continue
            upstream_s += loop.time() - started
            if reply.status != 200:
                dep.picker.finished(index, None)
                last_error = _upstream_error(reply)
                if reply.status in _RETRYABLE_STATUS and attempt < cfg.retry.max_attempts:
                    await self._backoff(cfg, attempt, last_error.retry_after)
                    continue
                break
            replica = session.replica.name
            if not req.stream:
                dep.picker.finished(index, loop.time() - started)
                body = dep.provider.reply_body(reply.body, req)
                return EngineResult(200, body=body, replica=replica, attempts=attempt, upstream_s=upstream_s)
            stream = RelayedStream(reply, dep.provider.stream_relay(req),
                                   lambda: dep.picker.finished(index, loop.time() - started))
            return EngineResult(200, stream=stream, replica=replica, attempts=attempt, upstream_s=upstream_s)
        assert last_error is not None
        last_error.headers["x-fastinfer-attempts"] = str(attempt)
        raise last_error

    async def _backoff(self, cfg: DeploymentConfig, attempt: int, retry_after: float | None) -> None:
        retry = cfg.retry
        if retry_after is not None and retry.respect_retry_after:
            delay = retry_after
        else:
            cap = min(retry.max_ms, retry.base_ms * (2 ** (attempt - 1))) / 1000
            if retry.jitter == "full":
                delay = self._rng.uniform(0, cap)
            elif retry.jitter == "equal":
                delay = cap / 2 + self._rng.uniform(0, cap / 2)
            else:
                delay = cap
        if delay > 0:
            await asyncio.sleep(delay)


class ClientWriter(Protocol):
    """The gateway's side of a stream: synchronous, non-blocking writes."""

    def write(self, data: bytes) -> bool:
        """Queue ``data`` for the client; False when its buffer is full (pause the upstream)."""

    async def drain(self) -> None:
        """Wait until the client has taken enough of what was written."""


class RelayedStream:
    """An upstream stream on its way to the client, relayed chunk by chunk by callback.

    Each upstream read goes through the provider's relay (translation, usage)
    and straight to the client writer, with no task switch per chunk. A stream
    that fails after its first byte ends with the relay's error event.
    """

    __slots__ = ("reply", "relay", "_on_done", "_client", "_done", "_resumer")

    def __init__(self, reply: UpstreamReply, relay: StreamRelay, on_done):
        self.reply = reply
        self.relay = relay
        self._on_done = on_done
        self._client: ClientWriter | None = None
        self._done: asyncio.Future | None = None
        self._resumer: asyncio.Task | None = None

    async def pump(self, client: ClientWriter) -> None:
        """Relay the whole stream to ``client``; returns when it has ended either way."""
        self._client = client
        self._done = asyncio.get_running_loop().create_future()
        try:
            self._on_chunk(self.reply.first)
            self.reply.stream.start(self._on_chunk, self._on_end)
            await self._done
        finally:
            self.reply.close()  # aborts the upstream if the client left first
            if self._resumer is not None:
                self._resumer.cancel()
            self._on_done()

    def _on_chunk(self, chunk: bytes) -> None:
        out = self.relay.feed(chunk)
        if out and not self._client.write(out) and self._resumer is None:
            self.reply.stream.pause()
            self._resumer = asyncio.get_running_loop().create_task(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        await self._client.drain()
        self._resumer = None
        self.reply.stream.resume()

    def _on_end(self, error: GatewayError | None) -> None:
        relay = self.relay
        if error is not None:
            self._client.write(relay.error_event(error))
        elif not relay.finished and relay.error is None:
            self._client.write(relay.error_event(
                UpstreamFailure("upstream ended the stream before it was complete")))
        if not self._done.done():
            self._done.set_result(None)


def _upstream_error(reply: UpstreamReply) -> GatewayError:
    """An upstream's non-200 answer as a typed error, keeping its message."""
    status = reply.status
    message = f"upstream answered {status}"
    code = None
    try:
        err = orjson.loads(reply.body or b"{}").get("error")
        if isinstance(err, dict):
            message = err.get("message") or message
            code = err.get("code")
        elif isinstance(err, str):
            message = err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    retry_after = _retry_after(reply.headers.get("retry-after") if reply.headers else None)
    if status == 429:
        return RateLimited(message, retry_after=retry_after)
    if status >= 500:
        return UpstreamFailure(f"upstream failure: {message}", retry_after=retry_after)
    return GatewayError(message, status=status, type="invalid_request_error", code=code)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None

