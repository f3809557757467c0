"""Transport: connection pools and the HTTP/1.1 upstream client.

Owns: connections, keep-alive pools, request framing, response framing,
connect / first-byte / idle / total timeouts, and handing a live body on by
callback. Must not touch: what the bytes mean (``formats``), which replica
(``routing``), retries (``engine``).
"""
from .exchange import exchange, request
from .h1 import FixedTimeouts, Timeouts, framed, request_head
from .pool import Pool
from .reply import IteratorStream, UpstreamReply, UpstreamStream

__all__ = ["FixedTimeouts", "IteratorStream", "Pool", "Timeouts", "UpstreamReply", "UpstreamStream", "exchange",
           "framed", "request", "request_head"]
