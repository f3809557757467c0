"""The engine: admission, route, attempt loop, and the stream back.

Data flows one way: the gateway hands a ``GatewayRequest`` in; the engine
admits it (host-wide slots and priority queue), picks a replica whose
circuit admits it, makes attempts through the deployment's provider, falls
back to other deployments when this one cannot serve, and hands an
``EngineResult`` out. The engine never touches the client connection: a
stream leaves as a ``RelayedStream`` the gateway pumps into its writer.
What an attempt and an admitted request hold is given back by ``attempt``'s
``with`` blocks, whatever happens in them.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random

from ..breaker import PROBE, REJECTED, BreakerSet
from ..config import Config, DeploymentConfig
from ..errors import GatewayError, Overloaded, UnknownModel, UpstreamFailure
from ..formats import FORMATS
from ..formats.common import json_object
from ..limits import AdmissionControl, CapacityExhausted, Limits, price_of
from ..metrics import Metrics
from ..providers import Provider, make_provider
from ..routing import DeploymentRouter, SessionDirectory
from ..session import SessionRegistry
from ..transport import FixedTimeouts, UpstreamReply
from .affinity import Affinity
from .attempt import DEADLINE_SLACK_S, SUCCESS, UNTIMED_SUCCESS, Attempt, Slot
from .backoff import delay_s
from .classify import Verdict, classify_reply
from .request import EngineResult, GatewayRequest, clock, new_result
from .stream import RelayedStream

log = logging.getLogger("fastinfer.engine")


class AllCircuitsOpen(Overloaded):
    """Every replica of the deployment has an open circuit."""

    fallback = True


class Deployment:
    """Everything the engine holds for one deployment in this worker."""

    __slots__ = ("index", "config", "provider", "router", "breakers", "base", "session_generation", "rebuilding",
                 "price", "series")

    def __init__(self, index: int, config: DeploymentConfig, breakers: BreakerSet, router: DeploymentRouter,
                 series, base: "Deployment | None" = None):
        self.index = index
        self.config = config
        self.series = series                     # its metrics (``Metrics.series``)
        self.price = price_of(config)            # its own price, or the package's table's
        self.provider: Provider = make_provider(config)
        self.router = router
        self.breakers = breakers
        self.base = base or self                 # a PROVIDER/* deployment serving one model: the wildcard's
        self.session_generation = 0              # the host-wide generation our sessions match
        self.rebuilding: asyncio.Task | None = None

    def serving(self, model: str) -> "Deployment":
        """This ``PROVIDER/*`` deployment serving ``model``: its own upstream model id, and the
        wildcard's replicas, load, breakers, limits and metrics."""
        return Deployment(self.index, dataclasses.replace(self.config, model=model), self.breakers, self.router,
                          self.series, base=self)


_MAX_WILDCARD_MODELS = 1024   # models a PROVIDER/* deployment keeps ready per worker (then starts afresh)


class Engine:
    def __init__(self, config: Config, sessions: SessionRegistry, *, admission: AdmissionControl,
                 breakers: list[BreakerSet], metrics: Metrics, segment, limits: Limits | None = None,
                 directory: SessionDirectory | None = None):
        self.config = config
        self.sessions = sessions
        self.admission = admission
        self.metrics = metrics
        self.limits = limits
        # None when no key is configured and no deployment is rate-limited: nothing to do per request
        self._limits = limits if limits is not None and limits.active else None
        # built inside the worker's loop; on Python 3.11 every get_running_loop() is a getpid() syscall
        self._loop = asyncio.get_running_loop()
        worker = self._worker = admission.worker
        # each deployment's host-wide slots, taken and given back by direct compiled calls on the request
        # path (``AdmissionControl``'s are for the queue's waits)
        self._admissions = admission.admissions
        self.affinity = Affinity(segment, worker, metrics, sessions, self._loop, directory)
        self.deployments: dict[str, Deployment] = {}
        for i, d in enumerate(config.deployments):
            router = DeploymentRouter(segment, worker, i, d, events=self.affinity, directory=self.affinity.directory)
            dep = self.deployments[d.name] = Deployment(i, d, breakers[i], router, metrics.series(d.name))
            self.affinity.add(i, d, dep.provider, breakers[i])
        self._aliases = {alias: dep for dep in self.deployments.values() for alias in dep.config.aliases}
        # longest prefix first: "openai/azure/*" before "openai/*"
        self._wildcards = sorted(((dep.config.wildcard_prefix, dep) for dep in self.deployments.values()
                                  if dep.config.wildcard_prefix), key=lambda item: -len(item[0]))
        self._wildcard_models: dict[str, Deployment] = {}
        self._rng = random.SystemRandom()

    def deployment(self, name: str) -> Deployment:
        """The deployment a client's model name means (``find``), else ``UnknownModel`` (404)."""
        dep = self.find(name)
        if dep is None:
            raise UnknownModel(f"The model `{name}` does not exist or you do not have access to it.",
                               param="model")
        return dep

    def find(self, name: str) -> Deployment | None:
        """The deployment a client's model name means: a name, an alias, or ``PROVIDER/<model>`` under
        a ``PROVIDER/*`` deployment; None for none."""
        dep = self.deployments.get(name) or self._aliases.get(name) or self._wildcard_models.get(name)
        if dep is None:
            wildcard, prefix = self._wildcard_of(name)
            if wildcard is not None:
                if len(self._wildcard_models) >= _MAX_WILDCARD_MODELS:
                    self._wildcard_models.clear()
                dep = self._wildcard_models[name] = wildcard.serving(name[len(prefix):])
        return dep

    def owner(self, name: str) -> Deployment | None:
        """The configured deployment a client's model name falls under (a ``PROVIDER/*`` one for
        ``PROVIDER/<model>``), made nothing for: whose series counts a request refused before it is served."""
        return (self.deployments.get(name) or self._aliases.get(name) or self._wildcard_models.get(name)
                or self._wildcard_of(name)[0])

    def _wildcard_of(self, name: str) -> tuple[Deployment | None, str]:
        """The ``PROVIDER/*`` deployment serving ``name``, and its prefix; (None, "") for none."""
        for prefix, wildcard in self._wildcards:
            if name.startswith(prefix) and len(name) > len(prefix):
                return wildcard, prefix
        return None, ""

    def start(self) -> None:
        """Start the host work this worker may be asked to do (session reaper, health prober)."""
        self.affinity.start()

    async def drain(self) -> None:
        """The worker stops: end the host work; close the backend sessions left open."""
        await self.affinity.drain()

    async def end_session(self, namespace: str, session_id: str) -> list[str]:
        """``DELETE /v1/sessions/{id}``: the deployments where the session was bound, ended now."""
        return await self.affinity.end(namespace, session_id)

    async def chat(self, req: GatewayRequest, primary: Deployment) -> EngineResult:
        """Serve ``req`` from ``primary``, the deployment its model names (``find``: the gateway has
        looked it up), or from its fallbacks in order when it cannot.

        With limits, the request's key limits are taken first (429 when short), each
        deployment's rate limit before its slot, and everything is settled — tokens
        corrected to the usage, spend added — before the answer's last byte is sent.
        """
        if self._limits is None:
            try:
                return await self._serve(primary, req, None)
            except GatewayError as e:
                return (await self._fall_back(primary, req, None, e))[0]
        # a strict cluster asks Redis: the only case where admission awaits
        grant = self._limits.admit(req) if self._limits.synchronous else await self._limits.admit_async(req)
        try:
            try:
                result, served = await self._serve(primary, req, grant), primary
            except GatewayError as e:
                result, served = await self._fall_back(primary, req, grant, e)
        except GatewayError as e:
            grant.settle()
            e.headers.update(grant.rate_headers())
            raise
        except BaseException:
            grant.settle()
            raise
        # the x-ratelimit-* fields encoded once for the head (no dict of strings); a whole answer's
        # after its settling, a stream's as its head goes out (it settles before its last byte)
        if result.stream is None:
            result.rate_fields = grant.settle_answered(served.index)
        else:
            result.stream.also_before_end(grant.settle, served.index)
            result.rate_fields = grant.rate_fields()
        return result

    async def count_tokens(self, req: GatewayRequest, dep: Deployment) -> int | None:
        """Anthropic's ``count_tokens`` (``req.endpoint``) asked of ``dep``'s upstream when its API has
        a count (Anthropic's, Gemini's): the input tokens it says; None when it has none or its answer
        holds no count. A slot, a replica, breakers and retries as any request's; no limits (a count
        spends nothing) and no fallbacks."""
        if req.endpoint not in dep.provider.endpoints:
            return None
        reply = json_object((await self._serve(dep, req, None)).body)
        tokens = None if reply is None else dep.provider.format.counted(reply)
        return tokens if type(tokens) is int and tokens >= 0 else None

    async def _fall_back(self, primary: Deployment, req: GatewayRequest, grant,
                         error: GatewayError) -> tuple[EngineResult, Deployment]:
        """``primary`` refused ``req`` with ``error``: the answer of the first fallback that gives
        one, and that deployment; else the last error is raised.

        An error whose ``context_window`` is set may only go to the deployment's
        ``context_window_fallbacks``; one whose ``fallback`` is set to its
        ``fallbacks``; any other error is the answer. (Called only on an error, so a request
        its deployment serves awaits one coroutine less.)
        """
        candidate, used = primary, {primary.config.name}
        while True:
            options = (primary.config.context_window_fallbacks if error.context_window
                       else primary.config.fallbacks if error.fallback else ())
            following = next((name for name in options if name not in used), None)
            if following is None:
                raise error
            self.metrics.fallback(primary.config.name, following)
            log.debug("deployment %s cannot serve (%s); falling back to %s",
                      candidate.config.name, error.message, following)
            used.add(following)
            candidate = self.deployments[following]
            try:
                result = await self._serve(candidate, req, grant)
            except GatewayError as e:
                error = e
                continue
            result.headers["x-fastinfer-deployment"] = req.fallback = candidate.config.name
            return result, candidate

    async def _serve(self, dep: Deployment, req: GatewayRequest, grant) -> EngineResult:
        """Admission (the deployment's rate limit, then a slot), then the attempt loop; the slot is
        held until the answer (or stream) ends."""
        cfg = dep.config
        metrics = self.metrics
        if dep.series.session_generation() != dep.base.session_generation:
            await self.sync_sessions(dep.base)
        if dep.breakers.all_open():
            metrics.rejected(cfg.name, "circuit_open")
            raise AllCircuitsOpen("Every replica of this deployment is failing; try again later.",
                                  retry_after=dep.breakers.retry_after_s())
        shared = self._admissions[dep.index]
        timeout = cfg.queue_timeout_s
        if req.deadline is not None:
            timeout = min(timeout, max(0.0, req.deadline - self._loop.time()))
        try:
            # the deployment's rate limit: taken in one compiled call, or decided by the limits
            if grant is not None and not grant.take_deployment(dep.index):
                waiting = self._limits.take_deployment(grant, dep.index, req, timeout)
                if waiting is not None:     # in the deployment's rate queue
                    waited_from = self._loop.time()
                    await waiting
                    timeout = max(0.0, timeout - (self._loop.time() - waited_from))
            if not shared.try_acquire(self._worker):
                await self.admission.acquire(dep.index, req.priority, cfg.on_capacity_exhausted, timeout)
        except CapacityExhausted as e:
            metrics.rejected(cfg.name, e.reason)
            if req.deadline is not None and self._loop.time() >= req.deadline - DEADLINE_SLACK_S:
                e.fallback = False      # the caller's deadline ended the wait: no time is left for a fallback
            raise
        except asyncio.CancelledError:
            metrics.rejected(cfg.name, "client_gone")
            raise
        with Slot(shared, self._worker) as slot:
            route = dep.router.route(req)
            if route.needs_claim:
                await route.claim()
            if route.session_key is None:
                result = await self._attempt_loop(dep, req, route, None)
            else:
                result = await self._session_attempts(dep, req, route)
            if result.stream is not None:
                result.stream.also_on_done(slot.hand_over())
            return result

    async def sync_sessions(self, dep: Deployment) -> None:
        """Rebuild this worker's sessions of ``dep`` if another worker was asked to (admin rebuild)."""
        if dep.rebuilding is None:
            async def rebuild(target: int) -> None:
                try:
                    await self.sessions.rebuild(dep.config.name, "admin")
                    dep.session_generation = target
                finally:
                    dep.rebuilding = None
            dep.rebuilding = self._loop.create_task(
                rebuild(dep.series.session_generation()))
        await asyncio.shield(dep.rebuilding)

    async def request_rebuild(self, name: str) -> int:
        """Ask every worker to rebuild ``name``'s sessions; this one does it before answering."""
        dep = self.deployment(name).base
        name = dep.config.name
        self.metrics.bump_session_generation(name)
        self.metrics.session_rebuild(name, "admin")
        await self.sync_sessions(dep)
        return dep.session_generation

    async def _session_attempts(self, dep: Deployment, req: GatewayRequest, route) -> EngineResult:
        """The attempts of a request in a session; a session the request ends (``x-session-close``)
        is ended once the generation is over, however it went."""
        after: list = []      # what runs when the generation is over: ending the session, an orphan's close
        if req.session_close:
            after.append(lambda: self.affinity.end_later(dep.index, route.session_key))
        try:
            result = await self._attempt_loop(dep, req, route, after)
        except BaseException:
            for callback in after:
                callback()
            raise
        for callback in after:
            if result.stream is not None:
                result.stream.also_on_done(callback)
            else:
                callback()
        return result

    async def _attempt_loop(self, dep: Deployment, req: GatewayRequest, route, after: list | None) -> EngineResult:
        """Attempts on the deployment's replicas until one answers, the verdict says stop,
        the retry budget is spent, or the deadline leaves no time for another."""
        cfg = dep.config
        loop = self._loop
        metrics = self.metrics
        caller = FORMATS[req.api]
        provider = dep.provider
        # the upstream's body, once for every attempt: what its API cannot carry is refused before any
        body = provider.format.upstream_body(req, caller, provider.deployment)
        backend_key = route.session_key     # a session's, on a deployment with backend sessions
        if backend_key is not None and not self.affinity.has_backend_sessions(dep.index):
            backend_key = None
        tried = 0          # replicas tried, a bit mask
        verdict: Verdict | None = None
        upstream_s = 0.0
        attempt = 0
        # one extra attempt after re-reading a refused credential: 0 or 1, an int (``max_attempts + True``
        # is an addition 3.11 does not specialize, on every request)
        reauthed = 0
        while attempt < cfg.retry.max_attempts + reauthed:
            index, probe = self._choose_replica(dep, route, tried)
            if index < 0:
                if verdict is None:
                    metrics.rejected(cfg.name, "circuit_open")
                    raise AllCircuitsOpen("Every replica of this deployment is failing; try again later.",
                                          retry_after=dep.breakers.retry_after_s())
                break
            # the replica is counted on: from here, the attempt's with block gives the count back
            with Attempt(dep, index, probe, dep.router.names[index], req.trace) as current:
                session = self.sessions.get(cfg.name, index)
                attempt += 1
                req.attempts += 1
                req.replica = current.replica
                if attempt > 1:
                    metrics.retry(cfg.name)
                tried |= 1 << index
                credential_version = session.source.version
                if req.deadline is None:
                    timeouts = cfg.timeouts
                else:
                    now = loop.time()
                    timeouts = _attempt_timeouts(cfg.timeouts, req.deadline, now)
                    current.deadline = clock() + (req.deadline - now)   # a timeout there is the caller's
                extra = None
                if backend_key is not None:
                    extra = await self.affinity.open_backend(dep.index, backend_key, index, timeouts, after)
                reply = await provider.send(session, req, body, timeouts, extra)
                waited_s = current.answered()
                if reply.status != 200:
                    current.verdict = classify_reply(reply.status, reply.headers, reply.body, cfg.provider)
                else:
                    result = self._answer(dep, req, caller, reply, current, upstream_s + waited_s)
                    route.served(index)     # a session a retry took elsewhere follows its answer
                    return result
            # the attempt failed (its exit recorded the verdict); an unexpected error did not get here
            upstream_s += current.upstream_s
            verdict = current.verdict
            if verdict.reauth and not reauthed and await session.source.refresh(
                    "auth", seen_version=credential_version):
                # the key was rotated under us: the same replica, once more, with the new one
                reauthed = 1
                tried &= ~(1 << index)
                metrics.session_rebuild(cfg.name, "auth")
                continue
            if not verdict.retry or attempt >= cfg.retry.max_attempts + reauthed:
                break
            remaining = None if req.deadline is None else req.deadline - loop.time()
            wait = delay_s(attempt, cfg.retry, verdict.retry_after_s, self._rng, remaining_s=remaining)
            if wait is None:
                break
            if wait > 0:
                await asyncio.sleep(wait)
        error = verdict.error
        error.fallback = verdict.fallback
        error.context_window = verdict.context_window
        # every attempt of the request, a fallback's included, as the access log counts them
        error.headers["x-fastinfer-attempts"] = str(req.attempts)
        raise error

    def _answer(self, dep: Deployment, req: GatewayRequest, caller, reply: UpstreamReply, current: Attempt,
                upstream_s: float) -> EngineResult:
        """The answer of a 200: read whole (a reply that cannot be read fails the attempt), or a stream
        that takes the attempt over. Its attempts are the request's, on every deployment it tried."""
        attempt = req.attempts
        fmt = dep.provider.format
        model = dep.config.upstream_model
        if req.endpoint == "count_tokens":     # a count, not an answer: no tokens spent, no answer's latency
            current.end(UNTIMED_SUCCESS)
            return new_result(200, reply.body, None, current.replica, attempt, upstream_s)
        if not req.stream:
            body, usage = fmt.reply(reply.body, req, caller, model)
            current.end(SUCCESS)
            self._account_usage(dep, req, usage)
            # status, body, stream, replica, attempts, upstream_s: ``EngineResult``'s first fields in order
            return new_result(200, body, None, current.replica, attempt, upstream_s)
        if reply.stream is None:
            # answered whole (JSON) where a stream was asked for: nothing has gone to the client, so the
            # attempt fails here (a 502, or another replica or deployment) instead of a 200 whose
            # stream is one error event
            raise UpstreamFailure("the upstream answered a stream request with a whole JSON answer, not a stream")
        try:
            relay = fmt.relay(req, caller, model)
        except BaseException:
            reply.close()   # nobody will own the live upstream exchange: abort it now
            raise
        stream = RelayedStream(reply, relay, current, dep.config.provider, self._loop)
        stream.also_before_end(lambda: self._account_usage(dep, req, relay.usage))
        return new_result(200, None, stream, current.replica, attempt, upstream_s)

    def _account_usage(self, dep: Deployment, req: GatewayRequest, usage: dict | None) -> None:
        """Tokens and cost of one answer, into the host-wide counters, and left on the request
        (``req.usage``, ``req.cost_usd``) for whoever reads it after (limits, logs, traces)."""
        if usage:
            req.usage = usage
            req.cost_usd = dep.series.account(usage, dep.price)     # counted and priced in one call

    def _choose_replica(self, dep: Deployment, route, tried: int) -> tuple[int, bool]:
        """A replica whose circuit admits an attempt, preferring ones not yet tried (``tried``, a
        bit mask), counted on by the route; (-1, False) when none admits one."""
        avoid = tried
        breakers = dep.breakers
        for _ in range(2):
            while True:
                index = route.choose(avoid, tried)
                if index < 0:
                    break
                verdict = breakers.check(index)
                if verdict != REJECTED:
                    return index, verdict == PROBE
                dep.router.release(index)
                avoid |= 1 << index
            avoid &= ~tried  # every untried replica is open: a tried one may still serve a retry
        return -1, False


def _attempt_timeouts(configured, deadline: float, now: float):
    """The deployment's timeouts, each capped by what is left of the client's deadline."""
    left = max(0.001, deadline - now)
    return FixedTimeouts(min(configured.connect_s, left), min(configured.first_byte_s, left),
                     min(configured.idle_s, left), min(configured.total_s, left))
