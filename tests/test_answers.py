"""What an answered data request leaves behind (``_core.answers``): its deployment's series, its key's
series and its access line, told in one call — on the compiled module and on its source run as
Python (``_core.ref.answers``). (That the counts then show in ``/metrics`` and the lines in the log,
end to end: ``test_metrics_exposition.py``, ``test_access_log.py``.)"""
from __future__ import annotations

import pytest

from fastinfer._core import answers as compiled
from fastinfer._core.ref import answers as reference
from fastinfer.engine.request import new_result
from fastinfer.errors import BadRequest
from fastinfer.gateway.app import DataRequest


@pytest.fixture(params=["compiled", "reference"])
def core(request):
    if request.param == "compiled":
        assert compiled.__file__.endswith(".so"), "the core is not built"
        return compiled
    return reference


class Series:
    """Records what a series is told."""

    def __init__(self, name=""):
        self.name, self.calls = name, []

    def answered(self, status, duration, overhead, ttft):
        self.calls.append(("answered", status, duration, overhead, ttft))

    def request(self, status):
        self.calls.append(("request", status))


class Recorded:
    def __init__(self, core, access=True, now=10.5, wall=1_700_000_000.0):
        self.by_name: dict[str, Series] = {}
        self.lines: list[tuple] = []
        self.recorder = core.AnswerRecorder(lambda: now, lambda: wall, self.series_of,
                                            (lambda *line: self.lines.append(line)) if access else None)

    def series_of(self, name):
        return self.by_name.setdefault(name, Series(name))


def test_an_answered_request_is_counted_in_its_deployments_and_its_keys_series_and_logged(core):
    rec = Recorded(core)
    deployment, key = Series("m"), Series("k")
    data = DataRequest(10.0, None, deployment="m", series=deployment, key="team", key_series=key)
    data.result = new_result(200, b"{}", None, "r0", 1, 0.2)
    data.result.overhead_s, data.result.ttft_s = 0.001, 0.3
    rec.recorder.answered("abc-1", "POST", "/v1/chat/completions", data, 200, None)
    assert deployment.calls == [("answered", 200, 0.5, 0.001, 0.3)]
    assert key.calls == [("request", 200)]
    assert rec.lines == [(1_700_000_000.0 - 0.5, "abc-1", data, 200, None, 0.5, "POST", "/v1/chat/completions")]
    assert rec.by_name == {}        # its deployment's series was known: no lookup


def test_a_request_refused_before_its_deployment_counts_under_its_name_without_overhead(core):
    rec = Recorded(core, access=False)
    error = BadRequest("bad")
    unnamed = DataRequest(10.25, None)
    rec.recorder.answered("abc-2", "POST", "/v1/messages", unnamed, 400, error)
    named = DataRequest(10.25, None, deployment="m")       # named, refused before it was resolved
    rec.recorder.answered("abc-3", "POST", "/v1/messages", named, 404, None)
    assert rec.by_name[""].calls == [("answered", 400, 0.25, None, None)]
    assert rec.by_name["m"].calls == [("answered", 404, 0.25, None, None)]
    assert rec.lines == []          # no access log: nothing kept
