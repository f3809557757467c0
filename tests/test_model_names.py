"""Model aliases and ``PROVIDER/*`` wildcard deployments, as LiteLLM users expect them.

An alias is another name of a deployment; a deployment named ``oa/*`` serves any
``oa/<model>`` with the upstream model ``<model>``, under the deployment's own limits,
retries and metrics. Real processes: 2 workers, one mock upstream.
"""
from __future__ import annotations

import threading

import pytest

from fastinfer.config import ConfigError, parse_config
from procs import http_json, metric_value, metrics_text, wait_for

CONFIG = """
    [server]
    drain_grace_s = 10

    [[deployments]]
    name = "gpt-4o"
    provider = "openai_compatible"
    model = "gpt-4o-2024-08-06"
    aliases = ["gpt4", "best"]
    [[deployments.replicas]]
    base_url = "{base}/v1"

    [[deployments]]
    name = "oa/*"
    provider = "openai_compatible"
    max_concurrency = 1
    queue_capacity = 4
    retry = {{ max_attempts = 2, base_ms = 0, max_ms = 0 }}
    [[deployments.replicas]]
    base_url = "{base}/v1"
"""


def chat(base: str, model: str, path: str = "/v1/chat/completions"):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    return http_json("POST", base + path, body, headers={"connection": "close"})


def upstream_models(mock) -> list[str]:
    return [e["body"]["model"] for e in mock.received() if e["body"]]


def test_aliases_and_wildcards_reach_their_deployment(start_gateway, mock_upstream):
    gw = start_gateway(CONFIG.format(base=mock_upstream.base))
    listed = [m["id"] for m in http_json("GET", gw.base + "/v1/models")[2]["data"]]
    assert listed == ["gpt-4o", "gpt4", "best", "oa/*"]

    assert chat(gw.base, "gpt4")[0] == 200
    assert chat(gw.base, "best", "/v1/messages")[0] == 200
    assert chat(gw.base, "oa/gpt-4.1-mini")[0] == 200
    assert chat(gw.base, "oa/o3")[0] == 200
    assert upstream_models(mock_upstream) == ["gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "gpt-4.1-mini", "o3"]
    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_requests_total{deployment="gpt-4o",code="200"}') == 2
    assert metric_value(text, 'fastinfer_requests_total{deployment="oa/*",code="200"}') == 2

    for unknown in ("oa/", "gpt-5", "oa", "other/x"):
        status, _, body = chat(gw.base, unknown)
        assert status == 404 and body["error"]["code"] == "model_not_found", unknown


def test_every_model_of_a_wildcard_shares_its_limits_and_retries(start_gateway, mock_upstream):
    mock_upstream.script([{"hold": "first"}, {"status": 500}, {}])
    gw = start_gateway(CONFIG.format(base=mock_upstream.base))
    first: list = []
    holder = threading.Thread(target=lambda: first.append(chat(gw.base, "oa/a")))
    holder.start()
    assert mock_upstream.wait_in_flight(1)
    second: list = []
    waiter = threading.Thread(target=lambda: second.append(chat(gw.base, "oa/b")))
    waiter.start()
    # one slot for the whole wildcard: the other model waits in its queue
    assert wait_for(lambda: metric_value(metrics_text(gw), 'fastinfer_queue_depth{deployment="oa/*"}') == 1)
    mock_upstream.release("first")
    holder.join(30)
    waiter.join(30)
    assert first[0][0] == 200
    status, headers, _ = second[0]
    assert status == 200 and headers.get("x-fastinfer-attempts") == "2"     # its retry budget: the wildcard's
    assert upstream_models(mock_upstream) == ["a", "b", "b"]
    assert metric_value(metrics_text(gw), 'fastinfer_retries_total{deployment="oa/*"}') == 1


@pytest.mark.parametrize("deployments, problem", [
    ([{"name": "a", "provider": "mock", "aliases": ["x"]}, {"name": "b", "provider": "mock", "aliases": ["x"]}],
     "deployments[1].aliases[0]: 'x' is already taken by deployments[0].aliases[0]"),
    ([{"name": "a", "provider": "mock"}, {"name": "b", "provider": "mock", "aliases": ["a"]}],
     "deployments[1].aliases[0]: 'a' is already taken by deployments[0].name"),
    ([{"name": "a", "provider": "mock", "aliases": ["g*"]}], "deployments[0].aliases[0]: an alias is a model name"),
    ([{"name": "*", "provider": "mock"}], "deployments[0].name: a wildcard deployment is named PROVIDER/*"),
    ([{"name": "oa/x*", "provider": "mock"}], "deployments[0].name: a wildcard deployment is named PROVIDER/*"),
    ([{"name": "oa/*", "provider": "openai", "model": "gpt-4o"}], "deployments[0].model: a PROVIDER/* deployment"),
    ([{"name": "oa/*", "provider": "openai"}, {"name": "b", "provider": "mock", "fallbacks": ["oa/*"]}],
     "deployments[1].fallbacks[0]: 'oa/*' serves many models and none of its own"),
])
def test_model_names_that_would_collide_are_refused(deployments, problem):
    with pytest.raises(ConfigError) as e:
        parse_config({"deployments": deployments})
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems
