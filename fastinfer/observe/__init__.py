"""Observing the gateway from outside: logs, the access log, traces.

Owns: how every process logs (``logs``: ``[logging]`` level and text or JSON
format, one handler writing whole lines to standard error), the one rate limiter
for error lines that outside input can trigger (``ratelimit``: a budget per
interval, a count of what was held back, a bug's traceback once), the access log (``access``: one line per answered request,
kept on the request's path and written off it) and traces (``tracing``:
``[telemetry]``, OpenTelemetry spans per request and per upstream attempt, W3C
``traceparent``; the SDK is an optional extra, imported only when configured).

The gateway and the engine call in at a request's ends (arrival, answer, each
attempt's start and end); nothing here is called per streamed chunk, and with the
access log and tracing off nothing here is called per request at all.

Must not touch: routing, admission, retries, metrics, the client connection. It
observes; it decides nothing.
"""
from .access import FIELDS as ACCESS_FIELDS, AccessLog
from .logs import ACCESS_LOGGER, setup_logging
from .ratelimit import ERRORS, RateLimitedLog, log_bug
from .tracing import INSTALL_HINT, RequestTrace, Tracing, tracing_unavailable

__all__ = ["ACCESS_FIELDS", "ACCESS_LOGGER", "AccessLog", "ERRORS", "INSTALL_HINT", "RateLimitedLog", "RequestTrace",
           "Tracing", "log_bug", "setup_logging", "tracing_unavailable"]
