"""The upstream request heads a provider keeps: byte for byte the head it built per request before,
a new one when the credential rotates or the pool is replaced, none kept for a traced request."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from fastinfer.config import parse_config
from fastinfer.engine import GatewayRequest
from fastinfer.providers import base, make_provider
from fastinfer.transport import Pool, framed
from fastinfer.transport.h1 import build_request

REPLICA = {"name": "r0", "base_url": "http://127.0.0.1:9/v1/", "api_version": "2024-10-21"}


def provider_of(kind: str):
    config = parse_config({"deployments": [{"name": "d", "provider": kind, "model": "gpt-4o-mini",
                                            "replicas": [{**REPLICA, "credential": {"value": "sk-one"}}]}]})
    (deployment,) = config.deployments
    return make_provider(deployment), deployment.replicas[0]


class Session:
    """A replica session whose credential the test turns: as a ``ReplicaSession``, its ``source`` is
    asked for the credential now (``current()``) on every request."""

    def __init__(self, replica, credential: str):
        self.replica = replica
        self.credential = credential
        self.source = self
        self.pool = Pool(replica.base_url)

    def current(self) -> str:
        return self.credential


def request(endpoint: str = "chat", stream: bool = False, trace=None) -> GatewayRequest:
    return GatewayRequest(api="openai", model="d", body={}, stream=stream, request_id="r", received_at=0.0,
                          endpoint=endpoint, trace=trace)


def built_before(provider, session, req, extra_headers=()) -> bytes:
    """The request as ``Provider.send`` framed it before heads were kept (``h1.build_request``, as ``transport.post`` did)."""
    url = provider.kind.url(session.replica, provider.deployment.upstream_model, req.endpoint, req.stream)
    headers = provider.kind.request_headers(session.credential)
    headers.update(extra_headers)
    return build_request("POST", session.pool.path_of(url), session.pool.host_header, headers, b'{"x":1}')


@pytest.mark.parametrize("kind", ["openai", "azure_openai", "anthropic", "gemini", "openai_compatible"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_kept_head_frames_the_same_bytes_as_before(kind, stream):
    provider, replica = provider_of(kind)
    session = Session(replica, "sk-one")
    req = request(stream=stream)
    first = provider._head(session, req)
    assert provider._head(session, req) is first            # kept
    assert framed(first, b'{"x":1}') == built_before(provider, session, req)


def test_a_rotated_credential_or_a_new_pool_gets_a_new_head():
    provider, replica = provider_of("openai")
    session = Session(replica, "sk-one")
    old = provider._head(session, request())
    session.credential = "sk-two"
    rotated = provider._head(session, request())
    assert b"Bearer sk-two" in rotated and b"sk-one" not in rotated
    session.pool = Pool(replica.base_url)       # a rebuild's fresh pool
    assert provider._head(session, request()) is not rotated
    session.credential = "sk-one"
    assert provider._head(session, request()) == old


def test_each_endpoint_has_its_own_head():
    provider, replica = provider_of("openai")
    session = Session(replica, "sk-one")
    heads = {endpoint: provider._head(session, request(endpoint)) for endpoint in ("chat", "completions", "embeddings")}
    assert heads["chat"].startswith(b"POST /v1/chat/completions ")
    assert heads["completions"].startswith(b"POST /v1/completions ")
    assert heads["embeddings"].startswith(b"POST /v1/embeddings ")


def test_a_traced_request_carries_its_traceparent_and_its_head_is_not_kept():
    provider, replica = provider_of("openai")
    session = Session(replica, "sk-one")
    trace = SimpleNamespace(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    traced = provider._head(session, request(trace=trace))
    assert framed(traced, b'{"x":1}') == built_before(provider, session, request(trace=trace),
                                                           {"traceparent": trace.traceparent})
    assert provider._heads == {}
    assert b"traceparent" not in provider._head(session, request())


def test_the_kept_heads_are_bounded():
    provider, replica = provider_of("openai")
    session = Session(replica, "sk-0")
    for i in range(base._MAX_HEADS * 3):
        session.credential = f"sk-{i}"
        provider._head(session, request())
        assert len(provider._heads) <= base._MAX_HEADS
