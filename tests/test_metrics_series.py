"""A deployment's and a key's series (the segment's ``RequestSeries``): what the request path records
through its resolved slots lands in the series ``/metrics`` names by key, for every deployment, code,
replica and outcome, and nowhere else."""
from __future__ import annotations

import pytest

from fastinfer.config import parse_config
from fastinfer.metrics import Metrics
from fastinfer.metrics.registry import CODES, COST_SCALE, OUTCOMES
from fastinfer.process.hostwide import HostState

CONFIG = {"deployments": [
    {"name": "a", "provider": "openai_compatible", "model": "m",
     "replicas": [{"name": "a0", "base_url": "http://127.0.0.1:9/v1"},
                  {"name": "a1", "base_url": "http://127.0.0.1:10/v1"}]},
    {"name": "b", "provider": "openai_compatible", "model": "m",
     "replicas": [{"name": "b0", "base_url": "http://127.0.0.1:11/v1"}]}]}


@pytest.fixture
def metrics():
    state = HostState.create(parse_config(CONFIG), 1)
    yield Metrics(state.metrics_layout, state.segment)
    state.close()


def changed(metrics: Metrics, before: list) -> dict:
    """The counter words that moved since ``before``, by key, and by how much."""
    after = metrics.counters.snapshot()
    return {key: int(after[i] - before[i]) for key, i in metrics.layout.counter_index.items() if after[i] != before[i]}


def histogram_counts(metrics: Metrics) -> dict:
    """Observations per histogram series, by key."""
    return {key: metrics.histograms.snapshot(i)[1] for key, i in metrics.layout.histogram_index.items()
            if metrics.histograms.snapshot(i)[1]}


def histogram_sums(metrics: Metrics) -> dict:
    """Seconds observed per histogram series, by key (rounded to the nanoseconds they are kept in)."""
    return {key: round(metrics.histograms.snapshot(i)[2], 9) for key, i in metrics.layout.histogram_index.items()
            if metrics.histograms.snapshot(i)[1]}


@pytest.mark.parametrize("deployment", ["a", "b"])
@pytest.mark.parametrize("status", [200, 404, 429, 499, 503, 201, 418])
def test_an_answer_counts_its_code_and_observes_its_times_under_its_deployment(metrics, deployment, status):
    before = metrics.counters.snapshot()
    metrics.series(deployment).answered(status, 0.002, 0.0001, 0.0005)
    code = str(status) if str(status) in CODES else "other"
    assert changed(metrics, before) == {("requests_total", (deployment, code)): 1}
    # each time in its own histogram
    assert histogram_sums(metrics) == {("request_duration_seconds", deployment): 0.002,
                                       ("overhead_seconds", deployment): 0.0001, ("ttft_seconds", deployment): 0.0005}


def test_an_answer_without_engine_times_observes_its_duration_only(metrics):
    metrics.series("a").answered(400, 0.001, None, None)
    assert histogram_counts(metrics) == {("request_duration_seconds", "a"): 1}


def test_a_model_the_config_does_not_have_is_counted_as_no_deployment(metrics):
    before = metrics.counters.snapshot()
    unknown = metrics.series("gpt-made-up")
    assert unknown is metrics.series("")
    unknown.answered(404, 0.001, 0.0001, None)
    unknown.usage(5, 5, 0, 1.0)            # no deployment: no tokens, no cost
    unknown.upstream("a0", "success")      # nor another deployment's replica
    assert changed(metrics, before) == {("requests_total", ("", "404")): 1}
    assert histogram_counts(metrics) == {}  # nor a histogram (none is kept for "")


@pytest.mark.parametrize("deployment, replica", [("a", "a0"), ("a", "a1"), ("b", "b0")])
@pytest.mark.parametrize("outcome", OUTCOMES)
def test_an_upstream_outcome_lands_on_its_replica(metrics, deployment, replica, outcome):
    before = metrics.counters.snapshot()
    metrics.series(deployment).upstream(replica, outcome)
    metrics.series(deployment).upstream("not-a-replica", outcome)
    assert changed(metrics, before) == {("upstream_requests_total", (deployment, replica, outcome)): 1}


@pytest.mark.parametrize("deployment", ["a", "b"])
def test_usage_adds_tokens_cost_and_the_estimated_count(metrics, deployment):
    before = metrics.counters.snapshot()
    series = metrics.series(deployment)
    series.usage(120, 30, 100, 0.0025, True)
    series.usage(7, 3, 0, 0.0)
    assert changed(metrics, before) == {
        ("tokens_total", (deployment, "input")): 127, ("tokens_total", (deployment, "output")): 33,
        ("tokens_total", (deployment, "cached")): 100, ("cost_usd_total", (deployment,)): round(0.0025 * COST_SCALE),
        ("usage_estimated_total", (deployment,)): 1}


def test_the_session_generation_is_the_deployments_word(metrics):
    metrics.bump_session_generation("b")
    metrics.bump_session_generation("b")
    assert (metrics.series("a").session_generation(), metrics.series("b").session_generation()) == (0, 2)


def test_the_keyed_request_call_records_through_the_series(metrics):
    before = metrics.counters.snapshot()
    metrics.request("a", 502)
    metrics.request("nope", 200)
    assert changed(metrics, before) == {("requests_total", ("a", "502")): 1, ("requests_total", ("", "200")): 1}


def test_a_keys_answers_tokens_and_cost_land_in_its_series_and_an_unknown_key_in_none():
    config = dict(CONFIG, keys=[{"name": "team", "key": "sk-team-key-0001"}])
    state = HostState.create(parse_config(config), 1)
    try:
        metrics = Metrics(state.metrics_layout, state.segment)
        before = metrics.counters.snapshot()
        metrics.key_series("team").request(200)
        metrics.key_series("team").request(418)
        assert metrics.key_series("stranger") is None       # a name the layout lacks: nothing counts it
        metrics.key_series("team").usage(12, 5, 3, 0.25)
        metrics.key_series("team").usage(1, 1, 0, 0)
        assert changed(metrics, before) == {
            ("key_requests_total", ("team", "200")): 1, ("key_requests_total", ("team", "other")): 1,
            ("key_tokens_total", ("team", "input")): 13, ("key_tokens_total", ("team", "output")): 6,
            ("key_tokens_total", ("team", "cached")): 3, ("key_cost_usd_total", ("team",)): int(0.25 * COST_SCALE)}
    finally:
        state.close()
