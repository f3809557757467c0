"""The pieces of the limits that need no process: prices, budget periods, token estimates,
reset durations, key hashes, and the grant's bookkeeping over a real segment
(the pure-Python reference, with a fixed clock)."""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastinfer._core.ref.shm import Segment
from fastinfer.config import parse_config
from fastinfer.engine import GatewayRequest
from fastinfer._core.ref.bodies import walked_chars
from fastinfer.formats.common import prompt_chars
from fastinfer.errors import BudgetExceeded, RateLimited
from fastinfer.gateway.auth import resolve_key_hashes
from fastinfer.limits import Limits, LocalStore, price_of
from fastinfer.limits.periods import PeriodClock, period_at
from fastinfer.limits.prices import PRICE_TABLE, Price, table_price
from fastinfer.limits.quota import estimated_tokens
from fastinfer.metrics import MetricsLayout
from fastinfer.process.hostwide import plan


def utc(*args) -> float:
    return dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()


# ---------------------------------------------------------------- prices

@pytest.mark.parametrize("provider, model, expected", [
    ("openai", "gpt-4o", "gpt-4o"),
    ("openai", "gpt-4o-2024-08-06", "gpt-4o"),                 # a dated id: its model's price
    ("openai", "gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),      # unless the date has its own
    ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),       # the longest name that fits
    ("azure_openai", "gpt-4o-mini", "gpt-4o-mini"),
    ("openai", "gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
    ("openai", "gpt-4-0613", "gpt-4"),
    ("openai", "o1-preview", "o1"),
    ("anthropic", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
    ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("anthropic", "claude-opus-4-5-20251101", "claude-opus-4-5"),
    ("gemini", "models/gemini-1.5-pro", "gemini-1.5-pro"),
    ("gemini", "gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"),
])
def test_a_public_model_gets_its_table_price(provider, model, expected):
    family = {"azure_openai": "openai"}.get(provider, provider)
    assert table_price(provider, model) == PRICE_TABLE[family][expected]


@pytest.mark.parametrize("provider, model", [
    ("openai", "gpt-4omni"),                 # not a suffix of gpt-4o: another model
    ("openai", "my-finetune"),
    ("openai_compatible", "gpt-4o"),         # a self-hosted server is not OpenAI's price list
    ("mock", "echo"),
    ("anthropic", "gpt-4o"),                 # each provider looks in its own table
])
def test_anything_else_has_no_table_price(provider, model):
    assert table_price(provider, model) is None


def test_a_deployments_price_wins_over_the_table_and_unknown_models_are_free():
    cfg = parse_config({"deployments": [
        {"name": "a", "provider": "openai", "model": "gpt-4o",
         "price": {"input_per_mtok": 1, "output_per_mtok": 2}},
        {"name": "b", "provider": "openai", "model": "gpt-4o"},
        {"name": "c", "provider": "openai_compatible", "replicas": [{"base_url": "http://h/v1"}]}]})
    a, b, c = cfg.deployments
    assert price_of(a) == Price(1.0, 2.0, None)
    assert price_of(b) == PRICE_TABLE["openai"]["gpt-4o"]
    assert price_of(c).cost_usd(1000, 1000) == 0.0


def test_cost_counts_cached_tokens_at_their_price():
    price = Price(input=2.0, output=10.0, cached_input=0.5)
    # 1000 prompt tokens of which 400 cached, 100 completion tokens
    assert price.cost_usd(1000, 100, 400) == pytest.approx((600 * 2.0 + 400 * 0.5 + 100 * 10.0) / 1e6)
    assert Price(2.0, 10.0).cost_usd(1000, 0, 400) == pytest.approx(1000 * 2.0 / 1e6)


# ---------------------------------------------------------------- budget periods

def test_periods_are_utc_calendar_periods():
    t = utc(2026, 11, 30, 22, 35)        # a Monday
    day, day_end = period_at("day", t)
    assert day_end == utc(2026, 12, 1)
    assert period_at("day", day_end)[0] == day + 1
    week, week_end = period_at("week", t)
    assert week_end == utc(2026, 12, 7)                       # the next Monday, 00:00 UTC
    assert period_at("week", utc(2026, 11, 30, 0, 0))[0] == week      # Monday opens the week
    assert period_at("week", utc(2026, 11, 29, 23, 59, 59))[0] == week - 1   # Sunday closes the last
    month, month_end = period_at("month", t)
    assert month_end == utc(2026, 12, 1)
    assert period_at("month", utc(2026, 12, 31, 23, 59))[1] == utc(2027, 1, 1)   # December rolls the year
    assert period_at("month", utc(2027, 1, 1))[0] == month + 2
    assert period_at("total", t) == (0, math.inf)
    assert 0 < day < 65536 and 0 < month < 65536     # the spend word holds 16 bits of period


def test_a_period_clock_moves_on_only_when_its_period_ends():
    clock = PeriodClock("day")
    first = clock.current(utc(2026, 11, 30, 23, 59, 59))
    assert clock.current(utc(2026, 11, 30, 12)) == first        # no recomputation inside the period
    assert clock.current(utc(2026, 12, 1)) == first + 1


# ---------------------------------------------------------------- estimates and headers

def test_the_estimate_is_the_prompt_and_max_tokens_for_every_choice():
    body = {"messages": [{"role": "user", "content": "x" * 40}]}
    assert estimated_tokens(body) == 10
    assert estimated_tokens({**body, "max_tokens": 100}) == 110
    assert estimated_tokens({**body, "max_completion_tokens": 100, "n": 3}) == 310
    assert estimated_tokens({"system": "y" * 8, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x" * 8}]}], "max_tokens": 5}) == 9


_TEXT = st.text(max_size=12)
_VALUE = st.recursive(st.none() | _TEXT | st.integers(),
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["text", "content", "parts", "type", "thinking"]), inner,
                                        max_size=3), max_leaves=8)
_MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": _TEXT | st.none()}),
    st.dictionaries(st.sampled_from(["role", "content", "text", "parts", "thinking", "name", "tool_call_id"]),
                    _TEXT | _VALUE, max_size=4),
    _VALUE)
_CONTENT = _TEXT | st.none() | _VALUE
# a chat message: its role and content, maybe text under other keys too
_CHAT_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": _CONTENT}) \
    | st.fixed_dictionaries({}, optional={"role": _TEXT, "content": _CONTENT, **dict.fromkeys(
        ["text", "parts", "thinking", "name", "tool_call_id"], _TEXT)})
_PROMPT_FIELDS = ["system", "contents", "systemInstruction", "prompt", "input"]
_CHAT_BODY = st.fixed_dictionaries({"model": _TEXT, "messages": st.lists(_CHAT_MESSAGE, max_size=4)},
                                   optional={"system": _TEXT})
_BODY = st.one_of(
    _CHAT_BODY,
    st.tuples(_CHAT_BODY, st.sampled_from(_PROMPT_FIELDS), st.text(min_size=1) | _VALUE).map(lambda b: {**b[0], b[1]: b[2]}),
    st.dictionaries(st.sampled_from(["messages", *_PROMPT_FIELDS, "model"]), st.lists(_MESSAGE, max_size=4) | _VALUE,
                    max_size=4))


_SAID = {"role": "user", "content": "hello"}


@settings(max_examples=200, deadline=None)
@given(_BODY)
# the edges of the quick count's shape, each where the walk finds more text
@example({"messages": [{"content": "a", "text": "bb"}]})
@example({"messages": [_SAID, {"role": "user", "content": ["a", {"type": "text", "text": "bb"}]}]})
@example({"messages": [_SAID, {"role": "assistant", "content": None, "thinking": "bb"}]})
@example({"messages": [_SAID], "system": [{"type": "text", "text": "bb"}]})
@example({"messages": [_SAID], "input": "bb"})
@example({"messages": [_SAID, ["bb"]]})
@example({"messages": {"content": "bb"}})
def test_the_prompt_is_counted_the_same_whether_its_shape_is_common_or_not(body):
    """The quick count of a chat body's ``messages`` is the count found by walking every text field."""
    assert prompt_chars(body) == walked_chars(body)


# ---------------------------------------------------------------- key hashes

def test_a_resolved_config_keeps_only_the_hash():
    cfg = resolve_key_hashes(parse_config({"keys": [{"name": "team-a", "key": {"value": "sk-team-a"}}],
                                           "deployments": [{"name": "d", "provider": "mock"}]}))
    assert cfg.keys[0].key_sha256 == hashlib.sha256(b"sk-team-a").hexdigest()
    assert "sk-team-a" not in repr(cfg)


# ---------------------------------------------------------------- grants over a segment

LIMITS_CONFIG = {
    "keys": [{"name": "k", "key": "sk-k", "rpm": 2, "tpm": 100, "max_concurrency": 1,
              "budget": {"usd": 1.0, "period": "total"}}],
    "deployments": [{"name": "d", "provider": "mock", "rate_limit": {"tpm": 1000},
                     "on_capacity_exhausted": "reject"}],
}


@pytest.fixture
def limits():
    cfg = parse_config(LIMITS_CONFIG)
    layout, index = plan(cfg, 1, MetricsLayout(cfg))
    segment = Segment.create(f"limits-{uuid.uuid4().hex}", layout)
    segment.set_test_clock(10**12)      # time stands still: no refill between the calls
    store = LocalStore(segment, len(index.buckets), len(index.keys))
    yield Limits(cfg, store, worker=0, keys=index.keys, buckets=index.buckets,
                 key_concurrency=[segment.key_concurrency(0)]), index
    segment.unlink()
    segment.close()


def request(**body) -> GatewayRequest:
    return GatewayRequest(api="openai", model="d", body={"messages": [{"role": "user", "content": "x" * 40}],
                                                         **body}, stream=False, request_id="r", received_at=0.0,
                          key="k")


def test_tokens_are_charged_as_estimated_then_corrected_to_the_usage(limits):
    lim, index = limits
    req = request(max_tokens=20)                       # estimate: 10 + 20
    grant = lim.admit(req)
    assert lim.take_deployment(grant, 0, req, 1.0) is None
    key_tokens, dep_tokens = index.buckets[("key", "k", "tokens")], index.buckets[("deployment", "d", "tokens")]
    assert lim.store.level(key_tokens) == pytest.approx(70)
    assert lim.store.level(dep_tokens) == pytest.approx(970)
    req.usage, req.cost_usd = {"prompt_tokens": 12, "completion_tokens": 50}, 0.25
    grant.settle(0)
    assert lim.store.level(key_tokens) == pytest.approx(38)        # 100 - 62: the real usage
    assert lim.store.level(dep_tokens) == pytest.approx(938)
    assert lim.store.spent(0, 0) == 250_000
    assert lim.keys["k"].concurrency.in_flight == 0
    grant.settle(0)                                                # once
    assert lim.store.level(key_tokens) == pytest.approx(38)


def test_a_failed_request_gives_back_its_tokens_but_not_its_request(limits):
    lim, index = limits
    req = request(max_tokens=20)
    grant = lim.admit(req)
    lim.take_deployment(grant, 0, req, 1.0)
    grant.settle(None)
    assert lim.store.level(index.buckets[("key", "k", "tokens")]) == pytest.approx(100)
    assert lim.store.level(index.buckets[("deployment", "d", "tokens")]) == pytest.approx(1000)
    assert lim.store.level(index.buckets[("key", "k", "requests")]) == pytest.approx(1)


def test_key_limits_refuse_with_429s_and_give_back_what_they_took(limits):
    lim, index = limits
    held = lim.admit(request())
    with pytest.raises(RateLimited, match="requests in flight"):      # max_concurrency 1
        lim.admit(request())
    held.settle(None)
    lim.admit(request()).settle(None)                                  # the second of rpm 2
    with pytest.raises(RateLimited) as refused:
        lim.admit(request())
    assert refused.value.code == "rate_limit_exceeded" and refused.value.retry_after == pytest.approx(30)
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert lim.keys["k"].concurrency.in_flight == 0                    # the refused one gave its slot back


def test_an_unmeetable_request_is_told_so(limits):
    lim, _ = limits
    with pytest.raises(RateLimited, match="can never be admitted") as refused:
        lim.admit(request(max_tokens=500))                             # more than the key's tpm holds
    assert refused.value.retry_after == math.inf


def test_a_spent_budget_refuses_until_the_period_ends(limits):
    lim, _ = limits
    lim.store.add_spend(0, 0, 1_000_000)
    with pytest.raises(BudgetExceeded) as refused:
        lim.admit(request())
    assert refused.value.code == "budget_exceeded" and refused.value.retry_after == math.inf   # total
    assert lim.keys["k"].concurrency.in_flight == 0


def test_the_cluster_seam_keeps_this_hosts_usage_apart_from_other_hosts(limits):
    """What a cluster sync reads (own_usage: this host's per-node counter) and adds (other hosts'
    use and spend): remote use makes this host refuse, and never shows in its own counter."""
    lim, index = limits
    store, key_tokens = lim.store, index.buckets[("key", "k", "tokens")]
    req = request(max_tokens=20)
    grant = lim.admit(req)
    req.usage, req.cost_usd = {"prompt_tokens": 12, "completion_tokens": 50}, 0.25
    grant.settle(0)
    assert store.own_usage(key_tokens) == 62                       # the corrected use, not the estimate
    store.add_remote_usage(key_tokens, 60)                         # other hosts left 100 - 62 - 60 < 0
    assert store.own_usage(key_tokens) == 62 and store.level(key_tokens) == pytest.approx(-22)
    with pytest.raises(RateLimited):
        lim.admit(request())
    store.refund_remote_usage(key_tokens, 50)                      # their use corrected down: 50 back
    assert store.own_usage(key_tokens) == 62 and store.level(key_tokens) == pytest.approx(28)
    store.add_remote_spend(0, 0, 750_000)                          # with this host's 0.25: the $1 budget
    assert store.spent(0, 0) == 1_000_000


def test_check_config_shows_every_limit_and_never_the_key():
    from fastinfer.cli import describe_config
    cfg = parse_config({"keys": [{"name": "team", "key": "sk-never-shown", "models": ["d"], "rpm": 60, "tpm": 9000,
                                  "max_concurrency": 4, "budget": {"usd": 5, "period": "week"}}],
                        "deployments": [{"name": "d", "provider": "mock",
                                         "rate_limit": {"rpm": 500, "tpm": 300_000, "burst": 50}}]})
    text = describe_config(cfg)
    assert ("key team: from value:**** models=d limits=rpm=60 tpm=9000 max_concurrency=4 budget=$5/week "
            "priority=normal max_priority=critical") in text
    assert "rate_limit=rpm=500 tpm=300000 burst=50" in text
    assert "sk-never-shown" not in text
