"""How long to wait before the next attempt, and whether there is time for one.

Owns: the exponential backoff with ``none`` / ``equal`` / ``full`` jitter of a
deployment's ``retry`` table, the upstream's own hints (``Retry-After`` as
delta-seconds or HTTP-date per RFC 9110 §10.2.3, ``retry-after-ms``, OpenAI's
``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` durations such
as ``"6m0s"``), and the rule that no wait may overrun the request's deadline.

Must not touch: sleeping, the breaker, the event loop, which attempt comes
next. Everything here is a pure function of its arguments (the random source
and "now" are parameters), so the engine decides and the tests can pin it.

Wiring (engine): after a failed attempt whose verdict says ``retry``::

    wait = delay_s(attempt, cfg.retry, verdict.retry_after_s, rng,
                   remaining_s=None if req.deadline is None else req.deadline - loop.time())
    if wait is None:      # no time left before the deadline (or the hint is absurd): stop retrying
        raise verdict.error
    await asyncio.sleep(wait)
"""
from __future__ import annotations

import math
import random
import re
import time
from email.utils import parsedate_to_datetime
from typing import Mapping

__all__ = ["delay_s", "exponential_s", "parse_retry_after", "parse_duration", "system_rng",
           "MAX_RETRY_AFTER_S"]

#: real randomness for jitter: every worker process draws independently (a
#: seeded ``random.Random`` after fork would make all workers retry in step)
system_rng = random.SystemRandom()

#: an upstream hint longer than this is not waited for: the caller gets the
#: error (a 429 keeps its ``retry-after``) instead of a request parked for minutes
MAX_RETRY_AFTER_S = 60.0


def exponential_s(attempt: int, retry, rng: random.Random | None = None) -> float:
    """The jittered exponential wait after failed attempt number ``attempt`` (1-based), in seconds.

    ``retry`` is a ``RetryConfig`` (``base_ms``, ``max_ms``, ``jitter``). The
    ceiling is ``min(max_ms, base_ms * 2 ** (attempt - 1))``; ``none`` waits the
    ceiling, ``equal`` waits in [ceiling/2, ceiling], ``full`` in [0, ceiling].
    """
    rng = rng or system_rng
    exp = min(max(attempt, 1) - 1, 62)  # no overflow however many attempts
    ceiling = min(retry.max_ms, retry.base_ms * (1 << exp)) / 1000.0
    jitter = retry.jitter
    if jitter == "full":
        return rng.uniform(0.0, ceiling)
    if jitter == "equal":
        half = ceiling / 2.0
        return half + rng.uniform(0.0, half)
    if jitter == "none":
        return ceiling
    raise ValueError(f"unknown jitter {jitter!r}")


def delay_s(attempt: int, retry, retry_after_s: float | None = None, rng: random.Random | None = None, *,
            remaining_s: float | None = None, min_attempt_s: float = 0.0,
            max_retry_after_s: float = MAX_RETRY_AFTER_S) -> float | None:
    """Seconds to wait before the attempt after failed attempt ``attempt``, or None: do not retry.

    - ``retry_after_s``: the upstream's hint (``Verdict.retry_after_s``); when
      ``retry.respect_retry_after`` it replaces the computed backoff (it wins,
      even when shorter: the upstream knows when its window reopens). A hint
      above ``max_retry_after_s`` means None: waiting that long is worse than
      answering the client now.
    - ``remaining_s``: time left before the request's deadline (None: no
      deadline). When the wait plus ``min_attempt_s`` (the least time worth
      starting an attempt with) does not fit, the answer is None: the engine
      stops retrying and reports the last error instead of a doomed wait.
    """
    if retry_after_s is not None and retry.respect_retry_after and retry_after_s >= 0 \
            and math.isfinite(retry_after_s):
        if retry_after_s > max_retry_after_s:
            return None
        wait = float(retry_after_s)
    else:
        wait = exponential_s(attempt, retry, rng)
    if remaining_s is not None and wait + min_attempt_s >= remaining_s:
        return None
    return wait


# ------------------------------------------------------------------ upstream hints

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """A Go-style duration (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``) in seconds; None if malformed.

    OpenAI's ``x-ratelimit-reset-*`` headers and Gemini's ``retryDelay`` use
    this form. A bare number is read as seconds.
    """
    if not text:
        return None
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if value >= 0 and math.isfinite(value) else None
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(text):
        return None
    return total


def _delta_or_date(value: str, now: float | None) -> float | None:
    """RFC 9110 ``Retry-After``: delay-seconds, or an HTTP-date (IMF-fixdate, RFC 850, asctime)."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:  # not RFC, but common: fractional seconds
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # asctime carries no zone; HTTP dates are always GMT
        from datetime import timezone
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None, *,
                      rate_limit_reset: bool = True) -> float | None:
    """The upstream's "try again in" hint, in seconds, from lower-case-keyed ``headers``; None if none.

    Precedence: ``retry-after-ms`` (OpenAI, Azure), then ``Retry-After``
    (delta-seconds or HTTP-date, compared with ``now``, a ``time.time()``
    value, default the current time; a date in the past means 0), then — only
    when ``rate_limit_reset`` (pass it for 429 answers only: OpenAI sends these
    headers on every answer) — ``x-ratelimit-reset-requests`` /
    ``x-ratelimit-reset-tokens``: the reset of each budget whose
    ``x-ratelimit-remaining-*`` is 0 or not given, the longest of them; when
    every budget reports something left, the shortest reset.
    """
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0 and math.isfinite(value):
            return value
    ra = headers.get("retry-after")
    if ra:
        value = _delta_or_date(ra, now)
        if value is not None:
            return value
    if not rate_limit_reset:
        return None
    exhausted, others = [], []
    for kind in ("requests", "tokens"):
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if reset is None:
            continue
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        try:
            left = None if remaining is None else float(remaining)
        except ValueError:
            left = None
        (others if left is not None and left > 0 else exhausted).append(reset)
    if exhausted:
        return max(exhausted)
    if others:
        return min(others)
    return None
