"""The gateway's error middleware, in process over real HTTP: an unexpected exception answers 500
in the caller's shape, is counted in ``fastinfer_requests_total``, and is logged through the one
rate limiter (``observe.ratelimit``), redacted, with its traceback once.

No input is known to raise inside the gateway any more (``test_edge_fuzz``), so the fault is
injected: the real engine's ``chat`` is replaced by one that raises.
"""
from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web

from fastinfer.breaker import deployment_breakers
from fastinfer.config import default_config
from fastinfer.engine import Engine
from fastinfer.gateway import Gateway
from fastinfer.gateway.protocol import EdgeAppRunner
from fastinfer.limits import AdmissionControl
from fastinfer.metrics import Metrics
from fastinfer.observe import RateLimitedLog, ratelimit
from fastinfer.process.hostwide import HostState
from fastinfer.redact import remember
from fastinfer.session import SessionRegistry

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
LEAKED = "sk-proj-leakedinsideatraceback0123"


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


async def _serve_gateway(fault: Exception | None):
    config = default_config()
    host = HostState.create(config, 1)
    metrics = Metrics(host.metrics_layout, host.segment)
    admission = AdmissionControl(host.segment, 0, host.wake_fds[0], len(config.deployments))
    breakers = [deployment_breakers(host.segment, i, d, 0) for i, d in enumerate(config.deployments)]
    engine = Engine(config, await SessionRegistry.open(config), admission=admission, breakers=breakers,
                    metrics=metrics, segment=host.segment)
    if fault is not None:
        async def broken(req, dep=None):
            raise type(fault)(*fault.args)     # a fresh one each time, as a real bug raises
        engine.chat = broken
    gateway = Gateway(engine, max_body_bytes=65536, body_timeout_s=5)
    runner = EdgeAppRunner(gateway.app(), access_log=None)    # the worker's: data routes go direct
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return gateway, metrics, runner, f"http://127.0.0.1:{port}"


def _count(metrics, code: str) -> float:
    for line in metrics.render().decode().splitlines():
        if line.startswith(f'fastinfer_requests_total{{deployment="echo",code="{code}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def errors(monkeypatch):
    """A fresh process budget for internal errors (no bug already seen), recorded."""
    budget = RateLimitedLog(logging.getLogger("fastinfer"))
    monkeypatch.setattr(ratelimit, "ERRORS", budget)
    records = Recorder()
    logging.getLogger("fastinfer").addHandler(records)
    yield budget, records
    logging.getLogger("fastinfer").removeHandler(records)


def test_an_unexpected_exception_is_a_counted_500_in_the_callers_shape(errors):
    _, records = errors

    async def scenario():
        remember(LEAKED)
        gateway, metrics, runner, base = await _serve_gateway(RuntimeError(f"bug holding {LEAKED}"))
        try:
            async with aiohttp.ClientSession() as client:
                async with client.post(base + "/v1/chat/completions", json=CHAT,
                                       headers={"x-request-id": "r-openai"}) as resp:
                    assert resp.status == 500 and resp.headers["x-request-id"] == "r-openai"
                    error = (await resp.json())["error"]
                    assert error["type"] == "api_error" and error["message"] == "Internal gateway error."
                async with client.post(base + "/v1/messages", json={**CHAT, "max_tokens": 5}) as resp:
                    assert resp.status == 500 and resp.headers["x-request-id"]
                    body = await resp.json()
                    assert body["type"] == "error" and body["error"]["type"] == "api_error"
                    assert LEAKED not in str(body)
                async with client.post(base + "/v1/chat/completions", json=CHAT,
                                       headers={"x-request-id": "r-again"}) as resp:
                    assert resp.status == 500
            assert _count(metrics, "500") == 3
        finally:
            await runner.cleanup()
    asyncio.run(scenario())
    # a bug is the exception raised through the same lines: both routes are served by the same code,
    # so the first request logs the traceback and the two after it one line each naming the request
    tracebacks = [m for m in records.messages if "Traceback" in m]
    assert len(tracebacks) == 1
    assert "r-openai" in tracebacks[0] and "RuntimeError: bug holding ****" in tracebacks[0]
    (again,) = [m for m in records.messages if "r-again" in m]
    (anthropic,) = [m for m in records.messages if "POST /v1/messages" in m]
    for line in (again, anthropic):
        assert "Traceback" not in line and line.endswith(
            "RuntimeError: bug holding **** (its traceback was logged when first seen)")
    assert all(LEAKED not in m for m in records.messages)


def test_internal_errors_are_logged_at_most_burst_times_per_interval_then_counted(errors):
    budget, records = errors
    budget.burst, budget.interval_s = 3, 0.5

    async def scenario():
        gateway, metrics, runner, base = await _serve_gateway(ValueError("always"))
        try:
            async with aiohttp.ClientSession() as client:
                for _ in range(20):
                    async with client.post(base + "/v1/chat/completions", json=CHAT) as resp:
                        assert resp.status == 500
            assert _count(metrics, "500") == 20    # every one is counted, logged or not
            assert len(records.messages) == 3
            for _ in range(200):                   # the interval ends: one line says what was left out
                if any("not logged" in m for m in records.messages):
                    break
                await asyncio.sleep(0.01)
        finally:
            await runner.cleanup()
    asyncio.run(scenario())
    assert sum("Traceback" in m for m in records.messages) == 1     # the bug's traceback, once
    summaries = [m for m in records.messages if "not logged" in m]
    assert summaries == ["17 more error lines in the last 0.5 s were not logged (rate limit)"]


def test_the_rate_limited_log_opens_a_new_window_after_the_interval():
    class Clock:
        now = 100.0

        def __call__(self):
            return self.now

    log = logging.getLogger("test.ratelimited")
    handler = Recorder()
    log.addHandler(handler)
    log.propagate = False
    clock = Clock()
    limited = RateLimitedLog(log, burst=2, interval_s=10, what="internal errors", clock=clock)
    written = [limited.log(f"e{i}") for i in range(5)]     # no loop running: no timer, the next line flushes
    assert written == [True, True, False, False, False] and limited.suppressed == 3
    clock.now += 10
    assert limited.log("later") is True
    assert handler.messages == ["e0", "e1", "3 more internal errors in the last 10 s were not logged (rate limit)",
                                "later"]


# a query string takes the router and the middleware chain instead of the direct path: the same answer
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/chat/completions?via=router"])
def test_a_healthy_request_is_untouched_by_the_middleware(path):
    async def scenario():
        _, metrics, runner, base = await _serve_gateway(None)
        try:
            async with aiohttp.ClientSession() as client:
                async with client.post(base + path, json={**CHAT, "max_tokens": 3}) as resp:
                    assert resp.status == 200 and resp.headers["x-request-id"]
                    await resp.read()
            assert _count(metrics, "200") == 1
        finally:
            await runner.cleanup()
    asyncio.run(scenario())
