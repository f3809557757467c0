"""Request parameters another API has no place for, end to end: a real gateway in front of the
project's mock upstream. Such a parameter is refused by name (400 in the caller's shape, nothing
sent upstream) unless it asks for nothing, or the deployment says ``drop_params = true``; where
the upstream has a place for it (Gemini's ``seed`` and penalties, ``top_k`` for Anthropic, Gemini
and compatible servers) it is carried.

Topology: a raw HTTP client -> fastinfer serve (1 worker) -> mock-upstream (OpenAI, Anthropic
and Gemini), deployments: ``an`` (anthropic), ``an-drop`` (anthropic, ``drop_params``), ``ge``
(gemini), ``gpt`` (openai: OpenAI's own API), ``oa`` (openai_compatible).
"""
from __future__ import annotations

import json
import textwrap

import pytest

from procs import http_json, start_gateway_proc, start_mock

_DEPLOYMENTS = (("an", "anthropic", "/v1", ""), ("an-drop", "anthropic", "/v1", "drop_params = true"),
                ("ge", "gemini", "/v1beta", ""), ("gpt", "openai", "/v1", ""), ("oa", "openai_compatible", "/v1", ""))


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("params")
    upstream = start_mock(workdir)
    config = "".join(textwrap.dedent(f"""
        [[deployments]]
        name = "{name}"
        provider = "{provider}"
        retry = {{ max_attempts = 1 }}
        {extra}
        [[deployments.replicas]]
        base_url = "{upstream.base}{path}"
        credential = {{ value = "sk-{name}" }}
    """) for name, provider, path, extra in _DEPLOYMENTS)
    gateway = start_gateway_proc(workdir, config, workers=1)
    yield gateway, upstream
    gateway.stop()
    upstream.kill()
    assert "Traceback" not in gateway.stderr(), gateway.stderr()[-3000:]


def _openai(model: str, **params) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **params}


def _anthropic(model: str, **params) -> dict:
    return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], **params}


def _post(gateway, route: str, body: dict):
    return http_json("POST", f"http://127.0.0.1:{gateway.port}{route}", body)


def _sent_upstream(upstream, before: int) -> list[dict]:
    """The bodies the mock received since it had received ``before``."""
    return [entry["body"] for entry in upstream.received()[before:]]


@pytest.mark.parametrize("param, value", [
    ("seed", 7), ("presence_penalty", 0.5), ("frequency_penalty", -1.0), ("logit_bias", {"50256": -100}),
    ("top_logprobs", 2), ("modalities", ["text", "audio"])])
@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_parameter_anthropic_has_no_place_for_is_refused_by_name(edge, param, value, stream):
    gateway, upstream = edge
    before = len(upstream.received())
    status, _, answer = _post(gateway, "/v1/chat/completions", _openai("an", stream=stream, **{param: value}))
    assert status == 400, answer
    error = answer["error"]
    assert error["param"] == param and error["code"] == "unsupported_parameter", error
    assert error["type"] == "invalid_request_error"
    assert "drop_params" in error["message"] and error["message"].startswith(f"{param}: "), error
    assert _sent_upstream(upstream, before) == []      # refused, never sent without it


def test_parameters_set_to_what_asks_nothing_are_left_out_without_a_word(edge):
    gateway, upstream = edge
    before = len(upstream.received())
    status, _, answer = _post(gateway, "/v1/chat/completions", _openai(
        "an", presence_penalty=0, frequency_penalty=0.0, logit_bias={}, top_logprobs=0, modalities=["text"]))
    assert status == 200, answer
    [sent] = _sent_upstream(upstream, before)
    assert not {"presence_penalty", "frequency_penalty", "logit_bias", "top_logprobs", "modalities"} & set(sent)


def test_drop_params_leaves_them_out_and_the_request_is_answered(edge):
    gateway, upstream = edge
    before = len(upstream.received())
    status, _, answer = _post(gateway, "/v1/chat/completions", _openai(
        "an-drop", seed=7, presence_penalty=0.5, logit_bias={"50256": -100}, temperature=0.2, top_k=3))
    assert status == 200, answer
    [sent] = _sent_upstream(upstream, before)
    assert not {"seed", "presence_penalty", "logit_bias"} & set(sent), sent
    assert sent["temperature"] == 0.2 and sent["top_k"] == 3      # what has a place still goes


def test_gemini_takes_seed_penalties_and_top_k_and_refuses_logit_bias(edge):
    gateway, upstream = edge
    before = len(upstream.received())
    status, _, answer = _post(gateway, "/v1/chat/completions", _openai(
        "ge", seed=7, presence_penalty=0.5, frequency_penalty=0.25, top_k=4))
    assert status == 200, answer
    [sent] = _sent_upstream(upstream, before)
    config = sent["generationConfig"]
    assert (config["seed"], config["presencePenalty"], config["frequencyPenalty"], config["topK"]) == (7, 0.5, 0.25, 4)
    status, _, answer = _post(gateway, "/v1/chat/completions", _openai("ge", logit_bias={"9": 5}))
    assert status == 400 and answer["error"]["param"] == "logit_bias", answer
    assert len(upstream.received()) == before + 1


@pytest.mark.parametrize("model, carried", [("oa", "top_k"), ("ge", "topK"), ("gpt", None)])
def test_an_anthropic_callers_top_k_goes_where_it_has_a_place(edge, model, carried):
    """Compatible servers (vLLM, SGLang) and Gemini take ``top_k``; OpenAI's own API has none."""
    gateway, upstream = edge
    before = len(upstream.received())
    status, _, answer = _post(gateway, "/v1/messages", _anthropic(model, top_k=5))
    if carried is None:
        assert status == 400, answer
        assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error", answer
        assert answer["error"]["message"].startswith("top_k: a `top_k` of 5 cannot be sent"), answer
        assert _sent_upstream(upstream, before) == []
        return
    assert status == 200, answer
    [sent] = _sent_upstream(upstream, before)
    config = sent.get("generationConfig", sent)
    assert config[carried] == 5, json.dumps(sent)


@pytest.mark.parametrize("asked, param", [({"n": 2}, "n"), ({"logprobs": True}, "logprobs")])
def test_drop_params_never_drops_what_shapes_the_answer(edge, asked, param):
    gateway, upstream = edge
    before = len(upstream.received())
    status, _, answer = _post(gateway, "/v1/chat/completions", _openai("an-drop", **asked))
    assert status == 400, answer
    assert (answer["error"]["param"], answer["error"]["code"]) == (param, "unsupported_content"), answer
    assert _sent_upstream(upstream, before) == []
