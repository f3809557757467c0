"""``Attempt`` and ``Slot`` over the real shared segment, router, breakers and metrics, in one process.

Every way out of an attempt's ``with`` block — its verdict, a ``GatewayError``,
cancellation, an unexpected exception before or after the upstream answered —
gives back the replica's in-flight count (taken when the route chose it) and the half-open probe, and tells the
breaker and the outcome metric exactly once (nothing when the client left).

Every test runs twice: over the compiled attempts the engine runs (``_core.attempts``) and over their
plain-Python reference (``_core.ref.attempts``), each judging as the engine does.
"""
from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest

from fastinfer.breaker import PROBE, DeploymentBreakers
from fastinfer.config import parse_config
from fastinfer._core import attempts as compiled
from fastinfer._core.ref import attempts as reference
from fastinfer.engine.attempt import SUCCESS
from fastinfer.engine.classify import classify_exception, classify_reply
from fastinfer.errors import UpstreamTimeout
from fastinfer.limits import AdmissionControl
from fastinfer.metrics import Metrics
from fastinfer.process.hostwide import HostState
from fastinfer.routing import DeploymentRouter

CONFIG = {"deployments": [{"name": "d", "provider": "openai_compatible", "model": "m",
                           "circuit_breaker": {"failure_threshold": 5, "open_s": 60, "max_open_s": 60},
                           "replicas": [{"base_url": "http://127.0.0.1:9/v1"}]}]}


@pytest.fixture(params=["compiled", "reference"])
def core(request):
    """The module the test's attempts and slots come from."""
    reference.judged_by(classify_exception, SUCCESS)     # the engine's verdicts, as engine.attempt gives them
    return {"compiled": compiled, "reference": reference}[request.param]


@pytest.fixture
def host(core):
    config = parse_config(CONFIG)
    state = HostState.create(config, 1)
    state.segment.register_worker(0, os.getpid(), state.wake_fds[0])
    (deployment,) = config.deployments
    metrics = Metrics(state.metrics_layout, state.segment)
    dep = SimpleNamespace(config=deployment, router=DeploymentRouter(state.segment, 0, 0, deployment),
                          breakers=DeploymentBreakers(state.segment, 0, deployment, 0), series=metrics.series("d"))
    admission = AdmissionControl(state.segment, 0, state.wake_fds[0], 1)
    yield SimpleNamespace(dep=dep, metrics=metrics, segment=state.segment, breaker=dep.breakers.breakers[0],
                          admission=admission, core=core)
    state.close()


def outcomes(host) -> dict:
    layout = host.metrics.layout
    values = host.segment.counters.snapshot()
    return {key[1][2]: int(values[i]) for key, i in layout.counter_index.items()
            if key[0] == "upstream_requests_total" and values[i]}


def attempt(host, probe: bool = False):
    """An attempt on the replica the router chose (and counted on), as the engine makes one."""
    assert host.dep.router.choose(0) == 0
    return host.core.Attempt(host.dep, 0, probe, "r0")


def take_probe(host) -> bool:
    host.breaker.force_open(0.0)      # open until now: the next check is a half-open probe
    assert host.dep.breakers.check(0) == PROBE and host.breaker.probes_in_flight == 1
    return True


def held(host) -> tuple[int, int]:
    return host.segment.replicas(0).in_flight(0), host.breaker.probes_in_flight


def test_the_verdict_set_in_the_block_is_recorded_once(host):
    with attempt(host) as a:
        assert held(host) == (1, 0)
        a.answered()
        a.verdict = classify_reply(503, {}, b"")
    a.end(SUCCESS)                                    # already ended: nothing more happens
    assert held(host) == (0, 0)
    assert outcomes(host) == {"server_error": 1} and host.breaker.consecutive_failures == 1


def test_a_gateway_error_is_classified_and_swallowed(host):
    with attempt(host) as a:
        raise UpstreamTimeout("upstream did not answer within 1s")
    assert a.verdict.outcome == "timeout" and a.verdict.error.status == 504
    assert held(host) == (0, 0) and outcomes(host) == {"timeout": 1}


def test_the_client_leaving_gives_everything_back_without_a_verdict(host):
    async def leave():
        with attempt(host, probe=take_probe(host)) as a:
            a.answered()
            raise asyncio.CancelledError
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(leave())
    assert held(host) == (0, 0) and outcomes(host) == {} and host.breaker.consecutive_failures == 0


def test_an_unexpected_error_before_the_upstream_answered_propagates_without_a_verdict(host):
    with pytest.raises(KeyError):
        with attempt(host, probe=take_probe(host)):
            raise KeyError("a bug while building the request")
    assert held(host) == (0, 0) and outcomes(host) == {}


def test_an_answer_that_cannot_be_read_is_an_upstream_failure(host):
    with attempt(host, probe=take_probe(host)) as a:
        a.answered()
        {}["candidates"]                              # the format tripped over the reply's shape
    assert a.verdict.outcome == "network_error" and "could not be read (KeyError)" in a.verdict.error.message
    assert held(host) == (0, 0) and outcomes(host) == {"network_error": 1}
    assert host.breaker.state == 1                    # the failed probe re-opened the circuit


def test_a_handed_over_attempt_ends_when_its_owner_ends_it(host):
    with attempt(host, probe=take_probe(host)) as a:
        a.answered()
        a.hand_over()
    assert held(host) == (1, 1)                       # the stream holds it now
    a.end(SUCCESS)
    assert held(host) == (0, 0) and outcomes(host) == {"success": 1} and host.breaker.state == 0


def test_a_slot_is_given_back_once_by_the_block_or_by_its_new_owner(host):
    shared = host.admission.admissions[0]
    assert shared.try_acquire(0)
    with host.core.Slot(host.admission, 0):
        pass
    assert shared.in_flight == 0
    assert shared.try_acquire(0)
    with host.core.Slot(host.admission, 0) as slot:
        release = slot.hand_over()
    assert shared.in_flight == 1                      # the stream holds it now
    release()
    release()
    assert shared.in_flight == 0
    assert shared.try_acquire(0)
    with pytest.raises(ZeroDivisionError):
        with host.core.Slot(host.admission, 0):
            1 / 0
    assert shared.in_flight == 0
