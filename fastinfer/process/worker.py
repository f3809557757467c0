"""One worker process: a uvloop event loop running the gateway and the engine.

The worker inherits the listening socket from the supervisor and accepts on
it. On SIGTERM/SIGINT (the host stops) or SIGUSR1 (a reload retires its
generation) it drains (``process.drain``), then exits 0. It publishes its own
process metrics (``process.probe``) while it lives.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket

import uvloop
from aiohttp import web

from .._core.proc import release_free_memory
from ..breaker import deployment_breakers
from ..config import Config
from ..config.secrets import SecretUnavailable
from ..engine import Engine
from ..gateway import Gateway
from ..gateway.drain import GatewayDrain
from ..gateway.protocol import EdgeAppRunner
from ..limits import AdmissionControl, Limits
from ..metrics import Metrics
from ..ops import FailureThrottle
from ..session import SessionRegistry
from .balance import ConnectionBalance
from .drain import CLEANUP_TIMEOUT_S, WorkerDrain
from .hostwide import HostState
from .probe import WorkerProbe

log = logging.getLogger("fastinfer.worker")
# the young generation is collected every 2,000 net allocations (Python's default: 700): with the
# start-up heap frozen a collection walks only what requests made since the last one. Requests
# leave no reference cycle behind (tests/test_reference_cycles.py; the young generation then
# hardly grows and collections are rare: fastinfer_worker_gc_collections_total); when they did, at
# 20,000 the cycles piled up between collections (each worker grew ~4.5 MiB over its first 60,000
# requests), so a cycle that comes back is caught at 2,000
_GC_THRESHOLDS = (2_000, 20, 20)


def run_worker(index: int, config: Config, sock: socket.socket, host: HostState,
               admin_sock: socket.socket | None = None, stops: list[float] | None = None,
               predecessor: tuple[Config, HostState] | None = None) -> int:
    """Entry point in the forked child; returns the exit status. With ``admin_sock``, the
    operator's routes (admin API, dashboard, metrics) are served there and not on ``sock``.
    ``stops``: when stop signals came (``time.monotonic()``) before the worker's own handlers.
    ``predecessor``: a reload's generation still answering /metrics (its config and host state)."""
    uvloop.install()
    try:
        asyncio.run(_serve(index, config, sock, host, admin_sock, stops or [], predecessor))
    except Exception:
        log.exception("worker %d crashed", index)
        return 1
    return 0


async def _admin_key(server) -> str | None:
    if server.admin_key is None:
        return None
    try:
        if not server.admin_key.may_block:      # a value or the one-time token: no thread for it
            return server.admin_key.read()
        return await asyncio.to_thread(server.admin_key.read)
    except SecretUnavailable as e:
        log.warning("admin key %s unavailable (%s): the admin API stays disabled",
                    server.admin_key.describe(), e)
        return None


async def _start_site(app: web.Application, sock: socket.socket, server, drain: GatewayDrain,
                      on_refused) -> EdgeAppRunner:
    runner = EdgeAppRunner(     # aiohttp's own 400s in the caller's shape, with a request id
        app,
        on_refused=on_refused,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=server.keepalive_timeout_s,
        # the drain (process.drain) closes every connection before the runner's cleanup runs
        shutdown_timeout=CLEANUP_TIMEOUT_S,
        handler_cancellation=True,
    )
    await runner.setup()
    drain.watch(runner.server)
    await web.SockSite(runner, sock).start()
    return runner


def _host_metrics(config: Config, host: HostState, admission: AdmissionControl, breakers: list) -> Metrics:
    """The metrics of ``host``'s segment as a worker records and renders them."""
    segment = host.segment
    return Metrics(host.metrics_layout, segment,
                   admissions=admission.views(config.deployments, host.index.rate_gates),
                   breakers={d.name: b.breakers for d, b in zip(config.deployments, breakers)},
                   buckets={name: segment.bucket(i) for name, i in host.index.buckets.items()})


def _predecessor_metrics(predecessor: tuple[Config, HostState], index: int) -> Metrics:
    """The previous generation's metrics, rendered (never recorded into) while it answers /metrics."""
    config, host = predecessor
    segment = host.segment
    admission = AdmissionControl(segment, index, host.wake_fds[index], len(segment.layout.deployments))
    breakers = [deployment_breakers(segment, i, d, index) for i, d in enumerate(config.deployments)]
    metrics = _host_metrics(config, host, admission, breakers)
    metrics.config = config       # /admin/stats reads the deployments through it
    return metrics


async def _serve(index: int, config: Config, sock: socket.socket, host: HostState,
                 admin_sock: socket.socket | None, stops: list[float],
                 predecessor: tuple[Config, HostState] | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = config.server
    drain = WorkerDrain(loop, delay_s=server.drain_delay_s, grace_s=server.drain_grace_s)
    drain.listen_for_signals(stops)  # first: a signal during start-up is kept for when serving begins
    segment = host.segment
    segment.register_worker(index, os.getpid(), host.wake_fds[index])
    # the deployments' admission structures, then their rate queues (process.hostwide.plan)
    admission = AdmissionControl(segment, index, host.wake_fds[index], len(segment.layout.deployments))
    admission.start(loop)
    breakers = [deployment_breakers(segment, i, d, index) for i, d in enumerate(config.deployments)]
    metrics = _host_metrics(config, host, admission, breakers)
    if predecessor is not None:
        metrics.predecessor = _predecessor_metrics(predecessor, index)
    store = cluster = directory = None
    if config.cluster is not None:     # this worker's Redis pool and its part in the host's sync
        # imported only here: redis brings OpenTelemetry and cryptography with it, ~10 MiB a worker
        from ..cluster.attach import attach_cluster, session_directory
        store, cluster = attach_cluster(config, host, index)
        directory = session_directory(cluster)     # sticky sessions bound across hosts, same pool
    limits = Limits.for_worker(config, host, index, admission, metrics, store=store, cluster=cluster)

    def on_rotate(deployment: str, cause: str) -> None:
        if cause == "file_changed":  # auth, admin and reload rebuilds are counted where they happen
            metrics.session_rebuild(deployment, cause)

    sessions = await SessionRegistry.open(config, on_rotate)
    engine = Engine(config, sessions, admission=admission, breakers=breakers, metrics=metrics, limits=limits,
                    segment=segment, directory=directory)
    engine.start()
    gateway = Gateway(engine, max_body_bytes=server.max_body_bytes, body_timeout_s=server.client_body_timeout_s,
                      admin_key=await _admin_key(server),
                      admin_throttle=FailureThrottle.in_segment(metrics, host.auth_salt))
    limits.start(loop)
    def refused(status: int) -> None:
        metrics.request("", status)      # bytes that were not HTTP named no deployment

    runners = [await _start_site(gateway.app(operator_routes=admin_sock is None), sock, server, gateway.drain,
                                 refused)]
    if admin_sock is not None:
        runners.append(await _start_site(gateway.operator_app(), admin_sock, server, gateway.drain, refused))
    # Everything built so far lives as long as the worker: move it out of the collector's
    # sight. The cyclic GC otherwise walked the whole heap of aiohttp and friends every few
    # hundred requests (8% of a streaming worker). Before the probe starts: the collections it
    # counts (fastinfer_worker_gc_*) are then the requests', not start-up's.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    release_free_memory()     # what start-up freed inside the heap stops counting as resident
    series = metrics.worker(index)
    # the probe publishes the worker's connections; past its share of the host's, some are let go
    probe = WorkerProbe(loop, series, [runner.server for runner in runners], ConnectionBalance(metrics, gateway.drain))
    probe.start()
    series.serving()
    log.debug("worker %d (pid %d) serving", index, os.getpid())
    await drain.wait()
    log.info("worker %d draining (%s)", index, "stop" if drain.stopping else "reload")
    if directory is not None:  # its last touches go out before the sync closes the Redis pool
        await directory.close()
    await limits.stop()       # the supervisor saves the final limit state once every worker is gone
    await drain.run(gateway.drain, runners, series.stopped_accepting)
    probe.stop()
    await engine.drain()      # backend sessions this generation still holds open are closed
    admission.stop(loop)
    await sessions.close()
    log.debug("worker %d closed", index)
