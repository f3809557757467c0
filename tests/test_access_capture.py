"""What the request path keeps of an answered request for the access log (``_core.access``): its
line's values read from the gateway's record of it, the error the line shows, and when the kept
lines are flushed — on the compiled module and on its source run as Python (``_core.ref.access``).
(That the lines then written are right end to end: ``test_access_log.py``.)"""
from __future__ import annotations

import pytest

from fastinfer._core import access as compiled
from fastinfer._core.ref import access as reference
from fastinfer.engine.request import new_request, new_result
from fastinfer.errors import BadRequest, GatewayError
from fastinfer.gateway.app import DataRequest
from fastinfer.observe.access import FIELDS

PREFIX = "0a1b2c3d4e5f-"


@pytest.fixture(params=["compiled", "reference"])
def core(request):
    return compiled if request.param == "compiled" else reference


class Loop:
    """The calls a buffer makes on its loop: each ``call_later`` recorded, its handle cancellable."""

    def __init__(self):
        self.timers: list[Handle] = []

    def call_later(self, delay, callback):
        handle = Handle(delay, callback)
        self.timers.append(handle)
        return handle


class Handle:
    def __init__(self, delay, callback):
        self.delay, self.callback, self.cancelled = delay, callback, False

    def cancel(self):
        self.cancelled = True


def buffer(core, loop=None, flushes=None, max_pending=4):
    flushes = [] if flushes is None else flushes
    return core.AccessBuffer(loop or Loop(), lambda: flushes.append(1), 0.01, max_pending, PREFIX,
                             lambda text: f"<{text}>")


def answered_request(stream=False):
    """A record as the gateway leaves it for a keyed request its engine answered."""
    data = DataRequest(100.0, None, deployment="gpt-4o", key="team-a")
    data.req = new_request("openai", "gpt-4o", {}, stream, PREFIX + "7", 5.0)
    data.req.replica, data.req.attempts = "r1", 2
    data.req.usage, data.req.cost_usd = {"prompt_tokens": 11, "completion_tokens": 22}, 0.003
    data.result = new_result(200, b"{}", None, "r1", 2)
    data.result.overhead_s, data.result.ttft_s = 0.0004, 0.25
    return data


def line(buf, *args):
    buf.answered(*args)
    ts, values = buf.pending[-1]
    assert len(values) == len(FIELDS)
    return ts, dict(zip(FIELDS, values))


def test_an_answered_requests_line_holds_what_its_record_says(core):
    ts, fields = line(buffer(core), 1.7e9, PREFIX + "7", answered_request(), 200, None, 0.5, "POST", "/v1/x")
    assert ts == 1.7e9
    assert fields == {"request_id": PREFIX + "7", "key": "team-a", "deployment": "gpt-4o", "fallback": None,
                      "replica": "r1",
                      "status": 200, "attempts": 2, "stream": False, "duration_ms": 0.5, "ttft_ms": 0.25,
                      "overhead_ms": 0.0004, "prompt_tokens": 11, "completion_tokens": 22, "cost_usd": 0.003,
                      "error": None, "method": "POST", "path": "/v1/x"}


def test_a_request_a_fallback_served_names_it_beside_the_deployment_asked_for(core):
    data = answered_request()
    data.req.fallback, data.req.replica = "llama", "l0"
    _, fields = line(buffer(core), 1.0, PREFIX + "7", data, 200, None, 0.1, "POST", "/v1/x")
    assert (fields["deployment"], fields["fallback"], fields["replica"]) == ("gpt-4o", "llama", "l0")


def test_a_request_refused_before_the_engine_has_no_attempts_tokens_or_times(core):
    data = DataRequest(100.0, None, deployment="nope")
    _, fields = line(buffer(core), 1.0, PREFIX + "8", data, 404, BadRequest("no such model"), 0.1, "POST", "/v1/x")
    assert (fields["key"], fields["fallback"], fields["replica"], fields["attempts"], fields["stream"]) == \
        (None, None, None, 0, False)
    assert (fields["ttft_ms"], fields["overhead_ms"], fields["prompt_tokens"], fields["cost_usd"]) == (None,) * 4
    assert fields["error"] == "no such model"


def test_an_answer_without_usage_has_no_token_counts(core):
    data = answered_request(stream=True)
    data.req.usage = None
    _, fields = line(buffer(core), 1.0, PREFIX + "9", data, 200, None, 0.1, "POST", "/v1/x")
    assert (fields["prompt_tokens"], fields["completion_tokens"], fields["stream"]) == (None, None, True)


def test_a_clients_request_id_is_redacted_and_the_gateways_own_is_not(core):
    buf = buffer(core)
    assert line(buf, 1.0, "client-chosen", answered_request(), 200, None, 0.1, "POST", "/")[1]["request_id"] \
        == "<client-chosen>"
    assert line(buf, 1.0, PREFIX + "1", answered_request(), 200, None, 0.1, "POST", "/")[1]["request_id"] \
        == PREFIX + "1"


class Failing:
    def __init__(self, failure):
        self.failure = failure


@pytest.mark.parametrize("status, error, cut, failure, shown", [
    (400, BadRequest("bad body"), None, None, "bad body"),
    (499, None, None, None, "the client closed the connection before the answer was complete"),
    (200, None, GatewayError("The gateway is shutting down.", status=503), None, "The gateway is shutting down."),
    (200, None, None, GatewayError("upstream cut the stream"), "upstream cut the stream"),
    (200, None, None, None, None),
    (502, None, None, None, "Internal gateway error."),
    (429, None, None, None, None),
])
def test_the_error_a_line_shows(core, status, error, cut, failure, shown):
    data = answered_request(stream=True)
    data.cut = cut
    data.result.stream = Failing(failure)
    assert core.error_text(data, status, error) == shown
    assert line(buffer(core), 1.0, PREFIX + "2", data, status, error, 0.1, "POST", "/")[1]["error"] == shown


def test_the_first_line_arms_one_timer_and_take_disarms_it_and_hands_the_lines_over(core):
    loop = Loop()
    buf = buffer(core, loop)
    buf.answered(1.0, PREFIX + "1", answered_request(), 200, None, 0.1, "POST", "/")
    buf.add(2.0, ("x",) * len(FIELDS))
    assert len(loop.timers) == 1 and loop.timers[0].delay == 0.01
    taken = buf.take()
    assert [ts for ts, _ in taken] == [1.0, 2.0] and buf.pending == [] and loop.timers[0].cancelled
    buf.add(3.0, ("x",) * len(FIELDS))
    assert len(loop.timers) == 2            # a line kept after a take arms a new one


def test_past_max_pending_or_once_closed_each_line_is_flushed_at_once(core):
    loop, flushes = Loop(), []
    buf = buffer(core, loop, flushes, max_pending=3)
    for i in range(3):
        buf.add(float(i), ("x",) * len(FIELDS))
    assert flushes == [1]       # the third reached max_pending (nothing took the lines: the test's flush)
    buf.take()
    buf.closed = True
    buf.add(9.0, ("x",) * len(FIELDS))
    buf.add(10.0, ("x",) * len(FIELDS))
    assert flushes == [1, 1, 1] and len(loop.timers) == 1      # no timer once closed
