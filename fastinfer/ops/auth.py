"""Admin authentication: the key check, and throttling of failed attempts per client address.

Owns: comparing the presented admin key with the configured one (or this run's
one-time token) in constant time; counting failures per client address in
words of the shared segment, so the limit holds across every worker of the
host; logging failures at a bounded rate, never with the presented key.

Must not touch: HTTP (callers pass the header and the address in and render the
``GatewayError`` raised here), configuration files, the request path.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import time

from ..errors import GatewayError
from ..metrics.registry import ADMIN_AUTH_SLOTS
from ..observe import RateLimitedLog

log = logging.getLogger("fastinfer.admin")

FAILURE_LIMIT = 5             # failed attempts per address and window before every attempt is refused
FAILURE_WINDOW_S = 60.0
_COUNT_BITS = 16              # a word is (window number << 16) | failures in that window
_COUNT_MASK = (1 << _COUNT_BITS) - 1
_LOG_EVERY_S = 10.0           # at most one failure line per worker this often; the rest are counted


class FailureThrottle:
    """Failed admin authentications per client address, host-wide, in fixed windows.

    ``words`` is anything with ``get``/``set``/``add`` on integer indexes (the
    segment's counters); slots ``first`` .. ``first + slots - 1`` are ours. An
    address hashes onto a slot with a key only this host knows, so nobody can
    aim their failures at another address's slot. A failure is a read and an
    atomic add (or a set when the slot still holds an older window): two
    workers opening a new window at the same instant may lose one count, which
    is worth nothing to an attacker.
    """

    def __init__(self, words, first: int, slots: int, salt: bytes, *, limit: int = FAILURE_LIMIT,
                 window_s: float = FAILURE_WINDOW_S, clock=time.time):
        self.words = words
        self.first = first
        self.slots = slots
        self.salt = salt
        self.limit = limit
        self.window_s = window_s
        self.clock = clock

    @classmethod
    def in_segment(cls, metrics, salt: bytes, **kwargs) -> "FailureThrottle":
        """The throttle over the control words ``MetricsLayout`` reserves for it."""
        first = metrics.layout.counter_index[("_admin_auth_failures", ("0",))]
        return cls(metrics.counters, first, ADMIN_AUTH_SLOTS, salt, **kwargs)

    def _slot(self, address: str) -> int:
        digest = hashlib.blake2b(address.encode(), digest_size=8, key=self.salt).digest()
        return self.first + int.from_bytes(digest, "little") % self.slots

    def _window(self) -> tuple[int, float]:
        now = self.clock()
        window = int(now // self.window_s)
        return window, (window + 1) * self.window_s - now

    def blocked_for(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may try now."""
        window, left = self._window()
        word = self.words.get(self._slot(address))
        if word >> _COUNT_BITS == window and word & _COUNT_MASK >= self.limit:
            return left
        return 0.0

    def failed(self, address: str) -> int:
        """Count one failure of ``address``; returns its failures in the current window."""
        window, _ = self._window()
        slot = self._slot(address)
        word = self.words.get(slot)
        if word >> _COUNT_BITS != window:
            self.words.set(slot, window << _COUNT_BITS | 1)
            return 1
        if word & _COUNT_MASK < _COUNT_MASK:
            self.words.add(slot, 1)
        return (word & _COUNT_MASK) + 1


class AdminAuth:
    """Who may use the admin API: the holder of the admin key (or of this run's one-time token)."""

    def __init__(self, key: str | None, throttle: FailureThrottle | None = None, *, clock=time.monotonic):
        self._key = key.encode() if key else None
        self.throttle = throttle
        # one line now and then; the failures in between are counted into a line of their own
        self._failures_log = RateLimitedLog(log, burst=1, interval_s=_LOG_EVERY_S, level=logging.WARNING,
                                            what="admin authentication failures", clock=clock)

    def check(self, authorization: str | None, address: str | None, what: str) -> None:
        """Return when ``authorization`` (the header's value) carries the admin key, else raise.

        ``what`` names the request in the log line (``GET /admin/state``); the
        presented key never appears anywhere.
        """
        if self._key is None:
            raise GatewayError("The admin API is disabled: server.admin_key could not be read at start-up "
                               "(the log says why).", status=404, type="invalid_request_error",
                               code="admin_disabled")
        address = address or "unknown"
        throttle = self.throttle
        if throttle is not None:
            wait = throttle.blocked_for(address)
            if wait:
                raise GatewayError("Too many failed admin authentications from this address; try again later.",
                                   status=429, type="rate_limit_error", code="admin_auth_throttled",
                                   retry_after=wait)
        given = authorization or ""
        token = given[7:].encode() if given[:7].lower() == "bearer " else b""
        if hmac.compare_digest(token, self._key):
            return
        failures = throttle.failed(address) if throttle is not None else 0
        self._log_failure(address, what, failures)
        raise GatewayError("Missing or wrong admin key.", status=401, type="authentication_error",
                           code="invalid_admin_key")

    def _log_failure(self, address: str, what: str, failures: int) -> None:
        throttled = ""
        if self.throttle is not None and failures >= self.throttle.limit:
            throttled = f"; {address} is now refused until its window of {self.throttle.window_s:g}s ends"
        count = f" ({failures} in this window)" if failures else ""
        self._failures_log.log(f"admin authentication failed from {address} for {what}{count}{throttled}")
