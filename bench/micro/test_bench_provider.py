"""What framing an upstream request costs a provider: its kept head (``Provider._head``) and the body,
against the way before (the URL formatted, the kind's headers built into a new dict, the request
target cut from the URL, and ``h1.build_request`` finding the head by a key of every field), in the
same run. Both give the same bytes (asserted first; ``tests/test_provider_heads.py`` for every kind).

Run:  python -m pytest bench/micro/test_bench_provider.py --benchmark-enable -p no:cacheprovider -s

With ``--benchmark-disable`` (the default in pyproject) the test runs once, quickly.
"""
from __future__ import annotations

import asyncio
import timeit

from fastinfer.config import parse_config
from fastinfer.engine import GatewayRequest
from fastinfer.providers import make_provider
from fastinfer.session.credentials import open_credential_source
from fastinfer.session.sessions import ReplicaSession
from fastinfer.transport import framed
from fastinfer.transport.h1 import request_head

BODY = b'{"model":"mock-model","messages":[{"role":"user","content":"hi"}],"max_tokens":8}'


_FORMER_HEADS: dict[tuple, bytes] = {}


def _former_build_request(method: str, target: str, host: str, headers: dict, body: bytes) -> bytes:
    """``h1.build_request`` as the data path used it before: its head found by a key of every field."""
    key = (method, target, host, *headers.items())
    head = _FORMER_HEADS.get(key)
    if head is None:
        head = _FORMER_HEADS[key] = request_head(method, target, host, headers)
    return framed(head, body)


def test_kept_head_against_the_head_built_per_request(benchmark):
    config = parse_config({"deployments": [{"name": "d", "provider": "openai_compatible", "model": "mock-model",
                                            "replicas": [{"base_url": "http://127.0.0.1:18432/v1",
                                                          "credential": {"value": "sk-bench-0123456789abcdef"}}]}]})
    (deployment,) = config.deployments
    provider = make_provider(deployment)
    replica = deployment.replicas[0]
    source = asyncio.run(open_credential_source(replica.credential, name="d/r0"))
    session = ReplicaSession(replica, source, ReplicaSession.new_pool(replica))     # as the engine's
    req = GatewayRequest(api="openai", model="d", body={}, stream=False, request_id="r", received_at=0.0)
    kind, model = provider.kind, deployment.upstream_model

    def kept() -> bytes:
        return framed(provider._head(session, req), BODY)

    def per_request() -> bytes:
        url = kind.url(session.replica, model, req.endpoint, req.stream)
        headers = kind.request_headers(session.credential)
        pool = session.pool
        return _former_build_request("POST", pool.path_of(url), pool.host_header, headers, BODY)

    assert kept() == per_request()
    n = 500 if benchmark.disabled else 200_000
    kept_us = min(timeit.repeat(kept, number=n, repeat=7)) / n * 1e6
    before_us = min(timeit.repeat(per_request, number=n, repeat=7)) / n * 1e6
    benchmark.extra_info.update({"kept_us": round(kept_us, 3), "per_request_us": round(before_us, 3),
                                 "kept_over_per_request": round(kept_us / before_us, 2)})
    print(f"\nan upstream request framed: {kept_us:.3f} us with its kept head, {before_us:.3f} us with the head "
          f"found per request (x{kept_us / before_us:.2f})")
    benchmark(kept)
