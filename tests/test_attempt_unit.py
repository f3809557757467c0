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

from fastinfer.breaker import PROBE, deployment_breakers
from fastinfer.config import parse_config
from fastinfer._core import attempts as compiled
from fastinfer._core.ref import attempts as reference
from fastinfer.engine.attempt import SUCCESS
from fastinfer.errors import UpstreamFailure
from fastinfer.engine.classify import classify_exception, classify_reply, classify_stream_error, past_deadline
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
    reference.judged_by(classify_exception, classify_stream_error, SUCCESS, past_deadline)     # the engine's verdicts, as engine.attempt gives them
    return {"compiled": compiled, "reference": reference}[request.param]


@pytest.fixture
def host(core):
    config = parse_config(CONFIG)
    state = HostState.create(config, 1)
    state.segment.register_worker(0, os.getpid(), state.wake_fds[0])
    (deployment,) = config.deployments
    metrics = Metrics(state.metrics_layout, state.segment)
    dep = SimpleNamespace(config=deployment, router=DeploymentRouter(state.segment, 0, 0, deployment),
                          breakers=deployment_breakers(state.segment, 0, deployment, 0), series=metrics.series("d"))
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


def test_answered_returns_the_wait_that_upstream_s_then_keeps(host):
    with attempt(host) as a:
        waited_s = a.answered()
        assert waited_s >= 0.0 and a.upstream_s == waited_s     # the same clock readings, not a second one
        a.end(SUCCESS)


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
    with host.core.Slot(shared, 0):
        pass
    assert shared.in_flight == 0
    assert shared.try_acquire(0)
    with host.core.Slot(shared, 0) as slot:
        release = slot.hand_over()
    assert shared.in_flight == 1                      # the stream holds it now
    release()
    release()
    assert shared.in_flight == 0
    assert shared.try_acquire(0)
    with pytest.raises(ZeroDivisionError):
        with host.core.Slot(shared, 0):
            1 / 0
    assert shared.in_flight == 0


# ---------------------------------------------------------------- the stream that takes an attempt over

class Upstream:
    """The live rest of an upstream stream (``reply.stream``): the test feeds it."""

    def __init__(self):
        self.on_chunk = self.on_end = None
        self.paused = self.closed = False

    def start(self, on_chunk, on_end) -> None:
        self.on_chunk, self.on_end = on_chunk, on_end

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True


class Reply:
    def __init__(self, first: bytes):
        self.first = first
        self.stream = Upstream()

    def close(self) -> None:
        self.stream.close()


class Relay:
    """Passes bytes on; ``[DONE]`` finishes the stream, ``garbage`` is a stream it cannot read, an
    ``error`` event is the upstream's."""

    def __init__(self):
        self.finished = False
        self.failure = self.error = None

    def feed(self, chunk: bytes) -> bytes:
        if b"garbage" in chunk:
            raise ValueError("a stream event of a shape the relay cannot read")
        if b'"error"' in chunk:
            self.error = chunk
        self.finished = self.finished or b"[DONE]" in chunk
        return chunk

    def error_event(self, error) -> bytes:
        return b"event: error: " + error.message.encode() + b"\n\n"


class Client:
    def __init__(self, room: bool = True):
        self.written: list[bytes] = []
        self.room = room
        self.drained = asyncio.Event()

    def write(self, data: bytes) -> bool:
        self.written.append(data)
        return self.room

    async def drain(self) -> None:
        await self.drained.wait()


def relayed(host, first: bytes, script, *, client: Client | None = None, leave: bool = False):
    """A stream over an attempt of the replica, pumped into ``client`` while ``script(upstream)``
    drives the upstream side; (stream, client, what happened in order) once it has ended."""
    client = client or Client()
    happened: list[str] = []

    async def run():
        loop = asyncio.get_running_loop()
        with attempt(host) as a:
            a.answered()
            stream = host.core.RelayedStream(Reply(first), Relay(), a, "openai_compatible", loop)
        stream.also_before_end(lambda: happened.append(f"accounted, {len(client.written)} writes out"))
        stream.also_before_end(happened.append, "settled")     # a callback and its arguments, in turn
        stream.also_on_done(lambda: happened.append("done"))
        pump = loop.create_task(stream.pump(client))
        await asyncio.sleep(0)
        await script(stream.reply.stream, client)
        if leave:       # the client went: the gateway's handler, awaiting the pump, is cancelled
            pump.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pump
        else:
            await asyncio.wait_for(pump, 5)
        return stream

    return asyncio.run(run()), client, happened


async def _nothing(upstream, client):
    pass


async def _ends(upstream, client):
    upstream.on_end(None)        # in the same read as the bytes before it


def test_a_stream_whose_end_came_with_its_finishing_bytes_holds_them_for_the_response_end(host):
    stream, client, happened = relayed(host, b"data: a\n\ndata: [DONE]\n\n", _ends)
    # the finishing bytes stay held for the response's end (one write with the terminator)
    assert client.written == [] and stream.take_ending() == b"data: a\n\ndata: [DONE]\n\n"
    assert stream.take_ending() == b""
    assert happened == ["accounted, 0 writes out", "settled", "done"]
    assert stream.attempt.verdict is SUCCESS and stream.failure is None
    assert held(host) == (0, 0) and outcomes(host) == {"success": 1}


class EndedUpstream(Upstream):
    """An upstream whose end came in the first read: ``start`` tells it at once, as ``Exchange`` does."""

    def start(self, on_chunk, on_end) -> None:
        on_end(None)


class CountingLoop:
    """The running loop, counting the callbacks asked of it (``call_soon``)."""

    def __init__(self, loop):
        self.loop, self.soon = loop, 0

    def call_soon(self, *args):
        self.soon += 1
        return self.loop.call_soon(*args)

    def __getattr__(self, name):
        return getattr(self.loop, name)


@pytest.mark.parametrize("ended_in_the_first_read", [True, False])
def test_a_stream_whole_in_its_first_read_ends_without_a_turn_of_the_loop(host, ended_in_the_first_read):
    """A short stream (or nginx's) comes whole in one read: its ending is held for the response's end
    and nothing is left for the loop to run. One whose end has not come asks for one turn, to send
    its finishing bytes alone if the end is still missing by then."""
    async def run():
        loop = CountingLoop(asyncio.get_running_loop())
        with attempt(host) as a:
            a.answered()
            reply = Reply(b"data: a\n\ndata: [DONE]\n\n")
            if ended_in_the_first_read:
                reply.stream = EndedUpstream()
            stream = host.core.RelayedStream(reply, Relay(), a, "openai_compatible", loop)
        pump = asyncio.ensure_future(stream.pump(Client()))
        await asyncio.sleep(0)
        if not ended_in_the_first_read:
            reply.stream.on_end(None)
        await pump
        return stream, loop.soon

    stream, soon = asyncio.run(run())
    assert soon == (0 if ended_in_the_first_read else 1)
    assert stream.take_ending() == b"data: a\n\ndata: [DONE]\n\n"
    assert stream.attempt.verdict is SUCCESS and held(host) == (0, 0)


def test_chunks_go_to_the_client_as_they_come_and_the_end_is_the_attempts_verdict(host):
    async def script(upstream, client):
        upstream.on_chunk(b"data: b\n\n")
        upstream.on_chunk(b"data: [DONE]\n\n")
        upstream.on_end(None)

    stream, client, happened = relayed(host, b"data: a\n\n", script)
    assert client.written == [b"data: a\n\n", b"data: b\n\n"]
    assert stream.take_ending() == b"data: [DONE]\n\n"
    assert happened == ["accounted, 2 writes out", "settled", "done"] and stream.attempt.verdict is SUCCESS
    assert held(host) == (0, 0) and outcomes(host) == {"success": 1}


def test_a_stream_cut_before_its_end_fails_its_attempt_and_tells_the_client(host):
    async def script(upstream, client):
        upstream.on_end(None)

    stream, client, _ = relayed(host, b"data: a\n\n", script)
    assert client.written[0] == b"data: a\n\n"
    assert client.written[1].startswith(b"event: error: upstream ended the stream before it was complete")
    assert stream.failure is not None and stream.attempt.verdict.outcome == "network_error"
    assert held(host) == (0, 0) and outcomes(host) == {"network_error": 1}


def test_a_stream_the_relay_cannot_read_ends_with_an_error_and_aborts_the_upstream(host):
    async def script(upstream, client):
        upstream.on_chunk(b"data: garbage\n\n")

    stream, client, _ = relayed(host, b"data: a\n\n", script)
    assert stream.reply.stream.closed
    assert client.written[-1] == b"event: error: the upstream's stream could not be read\n\n"
    assert stream.attempt.verdict.outcome == "network_error" and outcomes(host) == {"network_error": 1}


def test_an_upstream_error_event_is_the_verdict_and_the_client_has_it_already(host):
    async def script(upstream, client):
        upstream.on_chunk(b'data: {"error":{"type":"server_error","message":"boom"}}\n\n')
        upstream.on_end(None)

    stream, client, _ = relayed(host, b"data: a\n\n", script)
    assert client.written == [b"data: a\n\n", b'data: {"error":{"type":"server_error","message":"boom"}}\n\n']
    assert stream.attempt.verdict.outcome == "server_error" and outcomes(host) == {"server_error": 1}


def test_a_whole_stream_stays_a_success_whatever_the_upstream_does_after_its_end(host):
    """An upstream (or a proxy before it) that holds the connection past the idle timeout, or resets
    it, after the stream's end: the client has its whole answer; no error event after it, no failure
    for the replica's breaker."""
    async def script(upstream, client):
        upstream.on_chunk(b"data: [DONE]\n\n")
        await asyncio.sleep(0.01)       # the end went out alone: the upstream's end did not follow it
        upstream.on_end(UpstreamFailure("upstream stream idle for more than 30s"))

    stream, client, happened = relayed(host, b"data: a\n\n", script)
    assert client.written == [b"data: a\n\n", b"data: [DONE]\n\n"] and stream.take_ending() == b""
    assert stream.attempt.verdict is SUCCESS and stream.failure is None
    assert happened == ["accounted, 1 writes out", "settled", "done"]
    assert held(host) == (0, 0) and outcomes(host) == {"success": 1}


def test_a_whole_stream_ends_soon_after_its_end_went_out_though_the_upstream_never_ends_it(host):
    """An upstream that sends its last event and then holds the connection open: the client's stream
    ends a moment later (an SDK reading to the end of the body would wait as long as the upstream
    held it), the upstream exchange aborted, the attempt a success."""
    async def script(upstream, client):
        upstream.on_chunk(b"data: [DONE]\n\n")    # and nothing more: neither the body's end nor a close

    stream, client, happened = relayed(host, b"data: a\n\n", script)
    assert client.written == [b"data: a\n\n", b"data: [DONE]\n\n"] and stream.take_ending() == b""
    assert stream.reply.stream.closed and stream.delivered
    assert stream.attempt.verdict is SUCCESS and stream.failure is None
    assert happened == ["accounted, 1 writes out", "settled", "done"]
    assert held(host) == (0, 0) and outcomes(host) == {"success": 1}


def test_a_slow_client_pauses_the_upstream_until_it_drained(host):
    async def script(upstream, client):
        upstream.on_chunk(b"data: b\n\n")
        assert upstream.paused
        client.drained.set()
        await asyncio.sleep(0.01)
        assert not upstream.paused
        upstream.on_chunk(b"data: [DONE]\n\n")
        upstream.on_end(None)

    stream, client, _ = relayed(host, b"data: a\n\n", script, client=Client(room=False))
    assert stream.attempt.verdict is SUCCESS and held(host) == (0, 0)


def test_a_client_that_left_gives_everything_back_without_a_verdict(host):
    stream, client, happened = relayed(host, b"data: a\n\n", _nothing, leave=True)
    assert stream.reply.stream.closed and stream.attempt.verdict is None
    assert happened == ["accounted, 1 writes out", "settled", "done"]
    assert held(host) == (0, 0) and outcomes(host) == {}


def test_a_client_that_left_after_its_whole_stream_went_out_ends_it_as_its_end_would_have(host):
    async def script(upstream, client):
        upstream.on_chunk(b"data: [DONE]\n\n")
        await asyncio.sleep(0.01)         # the finishing bytes go out alone: no end came with them

    stream, client, _ = relayed(host, b"data: a\n\n", script, leave=True)
    assert client.written == [b"data: a\n\n", b"data: [DONE]\n\n"] and stream.delivered
    assert stream.attempt.verdict is SUCCESS and outcomes(host) == {"success": 1} and held(host) == (0, 0)
