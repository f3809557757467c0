"""ops.auth on its own: the failure windows, the key check, the bounded failure log."""
from __future__ import annotations

import logging
import uuid

import pytest

from fastinfer._core.ref.shm import Layout, Segment
from fastinfer.errors import GatewayError
from fastinfer.ops import AdminAuth, FailureThrottle, one_time_token


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def words():
    """Counters of a (pure-Python reference) segment: the same get/set/add the workers use."""
    segment = Segment.create(f"throttle-test-{uuid.uuid4().hex}", Layout(1, [], 16, 0, []))
    yield segment.counters
    segment.unlink()
    segment.close()


def make_throttle(words, clock, **kwargs) -> FailureThrottle:
    return FailureThrottle(words, first=4, slots=8, salt=b"k" * 16, clock=clock, **kwargs)


def test_an_address_is_refused_after_the_limit_until_its_window_ends(words):
    clock = Clock(600.0)          # the start of a 60 s window
    throttle = make_throttle(words, clock, limit=3, window_s=60.0)
    for expected in (1, 2, 3):
        assert throttle.blocked_for("10.0.0.1") == 0
        assert throttle.failed("10.0.0.1") == expected
    clock.now = 610.0
    assert throttle.blocked_for("10.0.0.1") == pytest.approx(50.0)
    clock.now = 660.0             # next window: a clean slate
    assert throttle.blocked_for("10.0.0.1") == 0
    assert throttle.failed("10.0.0.1") == 1


def test_throttles_sharing_the_words_count_together(words):
    """Two workers (two throttle objects over one segment) add up to one count per address."""
    clock = Clock()
    a, b = make_throttle(words, clock, limit=4), make_throttle(words, clock, limit=4)
    a.failed("192.0.2.7")
    b.failed("192.0.2.7")
    a.failed("192.0.2.7")
    assert b.failed("192.0.2.7") == 4
    assert a.blocked_for("192.0.2.7") > 0 and b.blocked_for("192.0.2.7") > 0


def test_only_its_own_slots_are_written(words):
    throttle = make_throttle(words, Clock())
    for i in range(200):
        throttle.failed(f"10.1.{i // 256}.{i % 256}")
    values = words.snapshot().tolist()
    assert values[:4] == [0, 0, 0, 0] and values[12:] == [0, 0, 0, 0]
    assert all(v > 0 for v in values[4:12])      # 200 addresses spread over all 8 slots


def test_the_salt_decides_where_an_address_lands(words):
    """Another host's (another run's) salt puts the same addresses elsewhere: slots cannot be aimed at."""
    spots = [FailureThrottle(words, 0, 16, salt, clock=Clock())._slot for salt in (b"a" * 16, b"b" * 16)]
    addresses = [f"10.2.0.{i}" for i in range(32)]
    assert [spots[0](a) for a in addresses] != [spots[1](a) for a in addresses]


def test_key_check():
    auth = AdminAuth("s3cret")
    auth.check("Bearer s3cret", "127.0.0.1", "GET /admin/state")
    auth.check("bearer s3cret", "127.0.0.1", "GET /admin/state")
    for header in (None, "", "s3cret", "Bearer s3cre", "Bearer s3cret ", "Basic s3cret"):
        with pytest.raises(GatewayError) as e:
            auth.check(header, "127.0.0.1", "GET /admin/state")
        assert e.value.status == 401
    with pytest.raises(GatewayError) as e:
        AdminAuth(None).check("Bearer anything", "127.0.0.1", "GET /admin/state")
    assert e.value.status == 404 and e.value.code == "admin_disabled"


def test_failures_are_logged_at_a_bounded_rate_without_the_key(words, caplog):
    clock = Clock()
    auth = AdminAuth("right-key", make_throttle(words, clock, limit=1000), clock=clock)
    caplog.set_level(logging.WARNING, logger="fastinfer.admin")
    for i in range(50):
        with pytest.raises(GatewayError):
            auth.check(f"Bearer guess-{i}", f"10.0.0.{i % 5}", "POST /admin/reload")
    assert len(caplog.records) == 1
    clock.now += 11
    with pytest.raises(GatewayError):
        auth.check("Bearer guess-last", "10.0.0.9", "POST /admin/reload")
    assert len(caplog.records) == 3
    assert caplog.records[1].getMessage() == ("49 more admin authentication failures in the last 10 s were not "
                                              "logged (rate limit)")
    assert "from 10.0.0.9" in caplog.records[2].getMessage()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "guess" not in text and "right-key" not in text


def test_throttled_answer_says_when_to_come_back(words):
    clock = Clock(120.0)
    auth = AdminAuth("right-key", make_throttle(words, clock, limit=2, window_s=60.0), clock=clock)
    for _ in range(2):
        with pytest.raises(GatewayError) as e:
            auth.check("Bearer wrong", "10.9.9.9", "GET /admin/stats")
        assert e.value.status == 401
    clock.now = 150.0
    with pytest.raises(GatewayError) as e:
        auth.check("Bearer right-key", "10.9.9.9", "GET /admin/stats")
    assert e.value.status == 429 and e.value.retry_after == pytest.approx(30.0)
    auth.check("Bearer right-key", "10.9.9.10", "GET /admin/stats")


def test_one_time_tokens_are_long_random_and_url_safe():
    tokens = {one_time_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) >= 40 and t.replace("-", "").replace("_", "").isalnum() for t in tokens)
