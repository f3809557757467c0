"""Backoff: jitter bounds and spread, upstream wait hints, and the deadline cap."""
from __future__ import annotations

import random
import statistics
from email.utils import formatdate

import pytest

from fastinfer.config.schema import RetryConfig
from fastinfer.engine.backoff import (MAX_RETRY_AFTER_S, delay_s, exponential_s, parse_duration, parse_retry_after,
                                      system_rng)

N = 4000


def retry(jitter="full", base_ms=200, max_ms=8000, respect=True) -> RetryConfig:
    return RetryConfig(max_attempts=5, base_ms=base_ms, max_ms=max_ms, jitter=jitter, respect_retry_after=respect)


def test_no_jitter_is_exact_exponential_capped_at_max():
    cfg = retry("none")
    assert [exponential_s(a, cfg) for a in range(1, 9)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 8.0, 8.0]
    assert exponential_s(1000, cfg) == 8.0   # no overflow for absurd attempt numbers
    assert exponential_s(0, cfg) == 0.2


@pytest.mark.parametrize("attempt,ceiling", [(1, 0.2), (3, 0.8), (10, 8.0)])
def test_full_jitter_bounds_and_spread(attempt, ceiling):
    rng = random.Random(1234)
    samples = [exponential_s(attempt, retry("full"), rng) for _ in range(N)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # uniform on [0, c]: mean c/2, and it really spreads over the whole range
    assert statistics.fmean(samples) == pytest.approx(ceiling / 2, rel=0.05)
    assert min(samples) < ceiling * 0.02 and max(samples) > ceiling * 0.98
    assert len(set(samples)) > N * 0.99


@pytest.mark.parametrize("attempt,ceiling", [(1, 0.2), (4, 1.6), (9, 8.0)])
def test_equal_jitter_bounds_and_spread(attempt, ceiling):
    rng = random.Random(99)
    samples = [exponential_s(attempt, retry("equal"), rng) for _ in range(N)]
    assert all(ceiling / 2 <= s <= ceiling for s in samples)
    assert statistics.fmean(samples) == pytest.approx(ceiling * 0.75, rel=0.05)
    assert min(samples) < ceiling * 0.51 and max(samples) > ceiling * 0.99


def test_seeded_rng_is_deterministic_and_system_rng_is_the_default():
    a = [exponential_s(3, retry(), random.Random(7)) for _ in range(3)]
    b = [exponential_s(3, retry(), random.Random(7)) for _ in range(3)]
    assert a == b
    assert isinstance(system_rng, random.SystemRandom)
    # the default draws real randomness: 200 draws are not all equal
    assert len({exponential_s(5, retry()) for _ in range(200)}) > 150


def test_unknown_jitter_is_an_error():
    with pytest.raises(ValueError):
        exponential_s(1, type("R", (), {"base_ms": 1, "max_ms": 2, "jitter": "bogus"})())


def test_zero_base_means_no_wait():
    assert delay_s(3, retry("full", base_ms=0, max_ms=0), rng=random.Random(1)) == 0.0


# ------------------------------------------------------------ the hint wins

def test_retry_after_replaces_the_computed_backoff_when_respected():
    assert delay_s(1, retry("none"), 2.5) == 2.5
    assert delay_s(5, retry("none"), 0.0) == 0.0          # shorter than the backoff: still wins
    assert delay_s(1, retry("none", respect=False), 2.5) == 0.2
    assert delay_s(2, retry("none"), None) == 0.4


def test_absurd_or_invalid_hints():
    assert delay_s(1, retry("none"), MAX_RETRY_AFTER_S + 1) is None      # not worth parking the request
    assert delay_s(1, retry("none"), 120, max_retry_after_s=300) == 120
    assert delay_s(1, retry("none"), float("nan")) == 0.2                 # ignored: computed backoff
    assert delay_s(1, retry("none"), -3) == 0.2


# --------------------------------------------------------- the deadline cap

def test_wait_that_overruns_the_deadline_is_refused():
    cfg = retry("none")
    assert delay_s(3, cfg, remaining_s=10.0) == 0.8
    assert delay_s(3, cfg, remaining_s=0.8) is None       # waiting would use up all that is left
    assert delay_s(3, cfg, remaining_s=0.5) is None
    assert delay_s(3, cfg, remaining_s=-1.0) is None      # already past the deadline
    assert delay_s(1, cfg, 5.0, remaining_s=4.0) is None  # the upstream hint is capped too
    assert delay_s(1, cfg, 5.0, remaining_s=6.0) == 5.0
    # an attempt needs time of its own
    assert delay_s(1, cfg, remaining_s=1.0, min_attempt_s=0.9) is None
    assert delay_s(1, cfg, remaining_s=1.2, min_attempt_s=0.9) == 0.2


def test_jittered_waits_never_overrun_the_deadline():
    rng = random.Random(5)
    for _ in range(N):
        remaining = rng.uniform(0, 10)
        w = delay_s(rng.randint(1, 8), retry("full"), rng=rng, remaining_s=remaining)
        assert w is None or 0 <= w < remaining


# ------------------------------------------------------------------ parsing

@pytest.mark.parametrize("text,seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5), ("250us", 0.00025),
    ("100ns", 1e-7), ("2m", 120.0), ("1.5", 1.5), ("0s", 0.0), ("7.66s", 7.66), (".5s", 0.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "s", "1x", "1s garbage", "-1s", "abc", "1 s", "inf", "nan", "-2"])
def test_parse_duration_rejects(text):
    assert parse_duration(text) is None


NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example date


@pytest.mark.parametrize("value,seconds", [
    ("120", 120.0),
    ("0", 0.0),
    ("1.5", 1.5),                                     # not RFC, but sent in the wild
    ("Sun, 06 Nov 1994 08:49:47 GMT", 10.0),         # IMF-fixdate
    ("Sunday, 06-Nov-94 08:50:37 GMT", 60.0),        # obsolete RFC 850
    ("Sun Nov  6 08:51:37 1994", 120.0),             # obsolete asctime
    ("Sun, 06 Nov 1994 08:49:00 GMT", 0.0),          # in the past: go now
])
def test_retry_after_delta_and_http_date(value, seconds):
    assert parse_retry_after({"retry-after": value}, now=NOW) == pytest.approx(seconds)


def test_retry_after_date_uses_the_current_time_by_default():
    import time
    value = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after({"retry-after": value}) <= 30


@pytest.mark.parametrize("value", ["soon", "-5", "", "Sun, 99 Nov 1994 08:49:37 GMT", "nan", "inf"])
def test_retry_after_garbage_is_no_hint(value):
    assert parse_retry_after({"retry-after": value}, now=NOW) is None


def test_retry_after_ms_first():
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "junk", "retry-after": "3"}) == 3.0
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None


def test_openai_ratelimit_reset_headers():
    # requests budget spent: its reset is the wait
    h = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s",
         "x-ratelimit-remaining-tokens": "14000", "x-ratelimit-reset-tokens": "20ms"}
    assert parse_retry_after(h) == 360.0
    # tokens spent
    h = {"x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "1s",
         "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m30s"}
    assert parse_retry_after(h) == 90.0
    # both spent: the longer
    h = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s",
         "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "5s"}
    assert parse_retry_after(h) == 5.0
    # remaining unknown: assume spent
    assert parse_retry_after({"x-ratelimit-reset-tokens": "1h2m3.5s"}) == 3723.5
    # both report something left (the request was too big for what is left): the sooner reset
    h = {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "8s",
         "x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "3s"}
    assert parse_retry_after(h) == 3.0
    # Retry-After wins over them; and they are ignored when asked (answers other than 429)
    assert parse_retry_after({**h, "retry-after": "1"}) == 1.0
    assert parse_retry_after(h, rate_limit_reset=False) is None
    assert parse_retry_after({"x-ratelimit-reset-tokens": "bogus"}) is None
