"""HTTP/1.1 request framing for upstream calls, and what a connection's exchange is told.

The connection itself (``H1Connection``: llhttp and the compiled readers framing the answer,
callback-driven bodies, one lazy watchdog timer per exchange) is compiled, in
``fastinfer._core.upstream``, with its plain-Python reference in ``fastinfer._core.ref.upstream``.

Owns: the request's head and body as one write (``request_head``, ``framed``, ``build_request``),
the ``Sink`` a connection tells an answer to, and the ``Timeouts`` an exchange runs under. Must not
touch: sockets, which connection (``pool``), what a body means.
"""
from __future__ import annotations

from typing import Protocol

from ..errors import GatewayError


class Sink:
    """Receives one response. Calls arrive in order: head, data*, end (exactly once); or, for an
    answer that came whole in one read, ``on_whole`` alone (which is the three, unless a sink has a
    shorter way: one call where the usual non-streamed answer made five)."""

    def on_head(self, status: int, headers: dict[str, str]) -> None:
        raise NotImplementedError

    def on_data(self, data: bytes) -> None:
        raise NotImplementedError

    def on_end(self, error: GatewayError | None) -> None:
        raise NotImplementedError

    def on_whole(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.on_head(status, headers)
        if body:
            self.on_data(body)
        self.on_end(None)


class Timeouts(Protocol):
    connect_s: float
    first_byte_s: float
    idle_s: float
    total_s: float


class FixedTimeouts:
    """A ``Timeouts`` of given values: an attempt's limits capped by the client's deadline, a
    health probe's one limit."""

    __slots__ = ("connect_s", "first_byte_s", "idle_s", "total_s")

    def __init__(self, connect_s: float, first_byte_s: float, idle_s: float, total_s: float):
        self.connect_s = connect_s
        self.first_byte_s = first_byte_s
        self.idle_s = idle_s
        self.total_s = total_s


class Owner(Protocol):
    """Whoever keeps the connection (the ``Pool``): told when an exchange ends and when the socket goes."""

    def release(self, conn, reusable: bool) -> None: ...
    def forget(self, conn) -> None: ...


def build_request(method: str, target: str, host: str, headers: dict, body: bytes) -> bytes:
    """The request head and body as one bytes object, so it goes out in one write (the control
    calls' way; a provider keeps its data requests' heads and only frames each body)."""
    return framed(request_head(method, target, host, headers), body)


def request_head(method: str, target: str, host: str, headers: dict) -> bytes:
    """A request's head up to its ``Content-Length`` value (``framed`` adds it and the body): a
    caller that sends many requests with the same head keeps it and frames each body with it."""
    # identity: bodies are relayed as they come, so they must not arrive compressed
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Content-Length: ")
    return "\r\n".join(lines).encode("latin-1")


def framed(head: bytes, body: bytes) -> bytes:
    """``head`` (``request_head``) and ``body`` as one bytes object, so they go out in one write."""
    return b"%b%d\r\n\r\n%b" % (head, len(body), body)


__all__ = ["FixedTimeouts", "Owner", "Sink", "Timeouts", "build_request", "framed",
           "request_head"]
