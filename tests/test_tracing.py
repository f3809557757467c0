"""Traces from a real gateway (2 workers) to a fake OTLP/HTTP collector: an aiohttp server in this
process decoding the exported protobuf with ``opentelemetry-proto``'s classes.

A request is one span with a child span per upstream attempt; the trace continues the client's
``traceparent``; the mock upstream receives each attempt's ``traceparent``. A config asking for
traces where the OpenTelemetry packages cannot be imported is refused with the install hint.
"""
from __future__ import annotations

import asyncio
import gzip
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from aiohttp import web

from procs import http_json, raw_post, wait_for, write_config

trace_service_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

CHAT = {"model": "m", "messages": [{"role": "user", "content": "trace me"}]}
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Collector:
    """A fake OTLP/HTTP collector: ``POST /v1/traces`` (protobuf), every span kept with its resource."""

    def __init__(self):
        self.spans: list[dict] = []
        self.paths: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        self.base = f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()

    async def _export(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        data = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        export = trace_service_pb2.ExportTraceServiceRequest.FromString(data)
        for resource_spans in export.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "kind": span.kind, "status": span.status.code,
                        "attributes": {a.key: _value(a.value) for a in span.attributes}, "resource": resource,
                        "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                    })
        return web.Response(body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def trace(self, request_id: str, attempts: int, timeout: float = 20) -> tuple[dict, list[dict]]:
        """The request's span and its ``attempts`` child spans (in start order), once all arrived."""
        def complete():
            request = next((s for s in self.spans if s["attributes"].get("fastinfer.request_id") == request_id),
                           None)
            if request is None:
                return None
            children = sorted((s for s in self.spans if s["parent"] == request["span_id"]), key=lambda s: s["start"])
            return (request, children) if len(children) >= attempts else None
        found = wait_for(complete, timeout=timeout, interval=0.05)
        assert found, f"no complete trace for {request_id}: {self.spans}"
        return found

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@pytest.fixture(scope="module")
def collector():
    c = Collector()
    yield c
    c.close()


def traced_config(base: str, collector_base: str) -> str:
    return f"""
        [server]
        drain_grace_s = 5

        [telemetry]
        otlp_endpoint = "{collector_base}/"
        service_name = "fastinfer-under-test"

        [[deployments]]
        name = "m"
        provider = "openai_compatible"
        model = "mock-model"
        retry = {{ max_attempts = 3, base_ms = 1, max_ms = 2 }}
        circuit_breaker = {{ failure_threshold = 1000 }}

        [[deployments.replicas]]
        name = "a"
        base_url = "{base}/v1"

        [[deployments.replicas]]
        name = "b"
        base_url = "{base}/v1"
    """


@pytest.fixture(scope="module")
def traced(upstream, collector, tmp_path_factory):
    from procs import start_gateway_proc
    gw = start_gateway_proc(tmp_path_factory.mktemp("gw"), traced_config(upstream.base, collector.base),
                            env={"OTEL_BSP_SCHEDULE_DELAY": "100"})
    yield gw
    gw.stop()


def traceparent_parts(value: str) -> tuple[str, str, str]:
    version, trace_id, span_id, flags = value.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
    return trace_id, span_id, flags


def test_a_retried_request_is_one_span_with_an_attempt_span_each(traced, collector, upstream):
    upstream.reset()
    upstream.script([{"status": 500}, {}])
    status, headers, body = http_json("POST", traced.base + "/v1/chat/completions", CHAT,
                                      headers={"x-request-id": "tr-retried"})
    assert status == 200 and headers["x-fastinfer-attempts"] == "2"
    request, attempts = collector.trace("tr-retried", 2)
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    assert request["resource"]["service.name"] == "fastinfer-under-test"
    assert request["name"] == "POST /v1/chat/completions" and request["kind"] == 2      # SERVER
    attributes = request["attributes"]
    assert attributes["fastinfer.deployment"] == "m" and attributes["http.response.status_code"] == 200
    assert attributes["fastinfer.attempts"] == 2 and attributes["fastinfer.stream"] is False
    assert attributes["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"]
    assert "fastinfer.key" not in attributes           # no gateway keys: no key name
    assert len(attempts) == 2 and all(a["kind"] == 3 for a in attempts)                  # CLIENT
    assert [a["attributes"]["fastinfer.outcome"] for a in attempts] == ["server_error", "success"]
    assert {a["attributes"]["fastinfer.replica"] for a in attempts} == {"a", "b"}       # a retry moves on
    assert attempts[0]["status"] == 2 and attempts[1]["status"] != 2                     # ERROR, then not
    assert all(a["trace_id"] == request["trace_id"] for a in attempts)
    assert all(request["start"] <= a["start"] <= a["end"] <= request["end"] for a in attempts)
    # each attempt went upstream carrying its own span as the parent
    sent = [traceparent_parts(entry["headers"]["traceparent"]) for entry in upstream.received()]
    assert [(t, s) for t, s, _ in sent] == [(a["trace_id"], a["span_id"]) for a in attempts]
    assert all(int(flags, 16) & 1 for _, _, flags in sent)      # sampled


def test_the_clients_trace_is_continued(traced, collector, upstream):
    upstream.reset()
    upstream.script([{"status": 503}, {"status": 503}, {"status": 503}])
    status, _, _ = http_json("POST", traced.base + "/v1/chat/completions", CHAT,
                             headers={"x-request-id": "tr-client",
                                      "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    assert status in (502, 503)
    request, attempts = collector.trace("tr-client", 3)
    assert request["trace_id"] == CLIENT_TRACE and request["parent"] == CLIENT_SPAN
    assert request["status"] == 2 and request["attributes"]["http.response.status_code"] == status
    assert request["attributes"]["fastinfer.attempts"] == 3 and request["attributes"]["error.message"]
    assert len(attempts) == 3 and all(a["trace_id"] == CLIENT_TRACE for a in attempts)
    sent = [traceparent_parts(entry["headers"]["traceparent"]) for entry in upstream.received()]
    assert [t for t, _, _ in sent] == [CLIENT_TRACE] * 3
    assert [s for _, s, _ in sent] == [a["span_id"] for a in attempts]


def test_a_streams_attempt_span_ends_with_the_stream(traced, collector, upstream):
    upstream.reset()
    upstream.script([{"tokens": 5, "itl_ms": 30}])
    sock = raw_post(traced.port, {**CHAT, "stream": True})
    try:
        sock.settimeout(10)
        received = b""
        while not received.endswith(b"\r\n0\r\n\r\n"):    # the end of the answer, not only [DONE]
            data = sock.recv(65536)
            assert data
            received += data
    finally:
        sock.close()
    request_id = re.search(rb"x-request-id: (\S+)", received, re.I).group(1).decode()
    request, (attempt,) = collector.trace(request_id, 1)
    assert request["attributes"]["fastinfer.stream"] is True
    assert attempt["attributes"]["fastinfer.outcome"] == "success"
    assert (attempt["end"] - attempt["start"]) / 1e6 >= 100         # 5 tokens 30 ms apart: the whole stream


def test_a_request_refused_before_any_attempt_has_its_span(traced, collector):
    status, _, _ = http_json("POST", traced.base + "/v1/chat/completions", {**CHAT, "model": "absent"},
                             headers={"x-request-id": "tr-404"})
    assert status == 404
    request, _ = collector.trace("tr-404", 0)
    assert request["attributes"]["fastinfer.deployment"] == "absent"
    assert request["attributes"]["http.response.status_code"] == 404 and request["status"] != 2
    assert not [s for s in collector.spans if s["parent"] == request["span_id"]]


def test_a_client_chosen_secret_never_reaches_a_span(traced, collector, upstream):
    """An unknown model's name and a request id are the client's to choose: key-shaped, they are redacted."""
    upstream.reset()
    secret_model = "sk-pasted-as-model-0123456789"
    status, _, _ = http_json("POST", traced.base + "/v1/chat/completions", {**CHAT, "model": secret_model},
                             headers={"x-request-id": "tr-secret"})
    assert status == 404
    request, _ = collector.trace("tr-secret", 0)
    assert request["attributes"]["fastinfer.deployment"] == "sk-****"
    status, _, _ = http_json("POST", traced.base + "/v1/chat/completions", CHAT,
                             headers={"x-request-id": "sk-pasted-as-request-id-0123456789"})
    assert status == 200
    request, _ = collector.trace("sk-****", 1)
    assert "sk-pasted" not in repr(collector.spans)


_BLOCK_OTEL = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocked())
for loaded in [m for m in sys.modules if m.startswith("opentelemetry")]:
    del sys.modules[loaded]
from fastinfer.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", [["serve", "--port", "0", "--workers", "1"], ["check-config"]])
def test_traces_without_the_otel_packages_exit_2_with_the_install_hint(tmp_path, command):
    path = write_config(tmp_path, textwrap.dedent("""
        [telemetry]
        otlp_endpoint = "http://127.0.0.1:4318"

        [[deployments]]
        name = "echo"
        provider = "mock"
    """))
    args = [*command, "--config", str(path)] if command[0] == "serve" else [*command, str(path)]
    out = subprocess.run([sys.executable, "-c", _BLOCK_OTEL, *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert f"{path}: telemetry: traces need the OpenTelemetry SDK" in out.stderr
    assert "pip install 'fastinfer[otel]'" in out.stderr
    assert "serving on" not in out.stdout


def test_without_telemetry_nothing_of_opentelemetry_is_imported(tmp_path):
    """Tracing off costs nothing: serving a request through the gateway and the engine never imports it."""
    script = textwrap.dedent("""
        import asyncio, sys
        from test_gateway_errors import CHAT, _serve_gateway
        import aiohttp

        async def main():
            gateway, metrics, runner, base = await _serve_gateway(None)
            async with aiohttp.ClientSession() as client:
                async with client.post(base + "/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
                    assert resp.status == 200 and b"[DONE]" in await resp.read()
            await runner.cleanup()
            assert gateway.tracing is None
        asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print("loaded:", loaded)
        sys.exit(1 if loaded else 0)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
