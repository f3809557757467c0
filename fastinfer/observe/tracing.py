"""Traces: one span per request, a child span per upstream attempt, exported over OTLP/HTTP.

Owns: ``Tracing`` (one per worker, built after the fork: the OpenTelemetry SDK's
tracer provider with a ``ParentBased(TraceIdRatioBased(sample_ratio))`` sampler
and a batch processor exporting to ``{otlp_endpoint}/v1/traces``), ``RequestTrace``
(a request's span, continued from the client's W3C ``traceparent`` when it sent
one; its attempts' spans; the ``traceparent`` the attempt in progress sends
upstream), and ``tracing_unavailable`` (why ``[telemetry]`` cannot work here: the
optional ``otel`` extra is not installed).

The SDK is imported only when ``[telemetry]`` is configured. With tracing off
nothing here exists: the gateway and the engine test one attribute for None.
No context is attached to the running task (no contextvars work): spans are
parented explicitly.

Must not touch: the request path's decisions; it is told when things start and end.
"""
from __future__ import annotations

from .. import __version__
from ..redact import redact

INSTALL_HINT = "pip install 'fastinfer[otel]'"


def tracing_unavailable() -> str | None:
    """Why traces cannot be exported from this installation, or None when they can."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as e:
        missing = e.name or "opentelemetry"
        return (f"traces need the OpenTelemetry SDK and its OTLP/HTTP exporter, and {missing} cannot be "
                f"imported: {INSTALL_HINT}")
    return None


def traceparent_of(span) -> str:
    """The W3C ``traceparent`` header naming ``span`` as the parent."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


class Tracing:
    """A worker's tracer: exports in a background thread, never on the event loop."""

    def __init__(self, otlp_endpoint: str, service_name: str, sample_ratio: float):
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.endpoint = otlp_endpoint.rstrip("/") + "/v1/traces"
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}),
                                        sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=self.endpoint)))
        self.tracer = self._provider.get_tracer("fastinfer", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self.SERVER = trace.SpanKind.SERVER
        self.CLIENT = trace.SpanKind.CLIENT
        self.in_context = trace.set_span_in_context
        self.error_status = trace.Status(trace.StatusCode.ERROR)

    def start(self, method: str, path: str, headers) -> "RequestTrace":
        """The span of a request that just arrived, the client's trace continued if it sent a ``traceparent``."""
        parent = self._propagator.extract(headers) if "traceparent" in headers else None
        span = self.tracer.start_span(f"{method} {path}", context=parent, kind=self.SERVER,
                                      attributes={"http.request.method": method, "url.path": path})
        return RequestTrace(self, span)

    def shutdown(self) -> None:
        """Export what is pending and stop the exporter (blocking: call it off the loop)."""
        self._provider.shutdown()


class RequestTrace:
    """One request's span and its attempts' child spans."""

    __slots__ = ("_tracing", "span", "_parent", "traceparent")

    def __init__(self, tracing: Tracing, span):
        self._tracing = tracing
        self.span = span
        self._parent = None
        self.traceparent = ""         # the attempt in progress's, set when it starts

    def attempt_started(self, deployment: str, replica: str):
        """A child span for an upstream attempt; its ``traceparent`` goes upstream with the attempt."""
        tracing = self._tracing
        if self._parent is None:
            self._parent = tracing.in_context(self.span)
        span = tracing.tracer.start_span("upstream attempt", context=self._parent, kind=tracing.CLIENT,
                                         attributes={"fastinfer.deployment": deployment,
                                                     "fastinfer.replica": replica})
        self.traceparent = traceparent_of(span)
        return span

    def attempt_ended(self, span, outcome: str | None) -> None:
        """``outcome``: the attempt's (``success``, ``server_error``, ...); None when the client left."""
        span.set_attribute("fastinfer.outcome", outcome or "client_gone")
        if outcome != "success":
            span.set_status(self._tracing.error_status)
        span.end()

    def end(self, status: int, request_id: str, key: str | None, deployment: str | None, attempts: int,
            stream: bool, usage: dict | None, cost_usd: float | None, error: str | None) -> None:
        """The request's span ends (``request_id`` as the gateway shows it: a client's redacted)."""
        span = self.span
        # an unknown model's name is the client's choice: redacted like the access log's (the request
        # id comes shown: a client's redacted by the gateway)
        attributes = {"http.response.status_code": status, "fastinfer.request_id": request_id,
                      "fastinfer.attempts": attempts, "fastinfer.stream": stream}
        if key is not None:
            attributes["fastinfer.key"] = key
        if deployment is not None:
            attributes["fastinfer.deployment"] = redact(deployment[:256])
        if usage:
            attributes["gen_ai.usage.input_tokens"] = usage.get("prompt_tokens") or 0
            attributes["gen_ai.usage.output_tokens"] = usage.get("completion_tokens") or 0
        if cost_usd is not None:
            attributes["fastinfer.cost_usd"] = cost_usd
        if error is not None:
            attributes["error.message"] = redact(error)
        span.set_attributes(attributes)
        if status >= 500:
            span.set_status(self._tracing.error_status)
        span.end()
