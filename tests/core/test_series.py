"""A request's series (``RequestSeries``): the words and slots it is given, recorded one call at a time,
on the compiled core and its reference, and the two against each other on generated records."""
import math

import pytest
from hypothesis import given, settings, strategies as st

import shm_helpers
from shm_helpers import replay

impl, segments = shm_helpers.impl, shm_helpers.segments   # fixtures: both implementations

BOUNDS = (0.001, 0.01, 0.1, 1.0)


def _price(input_usd, output_usd, cached_usd):
    from fastinfer.limits.prices import Price
    return Price(input_usd, output_usd, cached_usd)
# words: 0..2 codes 200/429/other, 3..5 tokens, 6 cost, 7 estimated, 8 generation, 9..10 attempts
CODES = {200: 0, 429: 1}
FULL = dict(timed=(0, 1, 2), tokens=(3, 4, 5), cost=6, estimated=7, generation=8,
            attempts={("r0", "success"): 9, ("r0", "timeout"): 10})


def _segment(segments):
    return segments(1, [], 11, 3, BOUNDS)


def test_a_full_series_records_each_kind_in_its_word(segments):
    seg = _segment(segments)
    series = seg.request_series(CODES, 2, **FULL)
    series.answered(200, 0.05, 0.0004, None)
    series.answered(503, -1.0, None, 2.0)
    series.request(429)
    series.upstream("r0", "timeout")
    series.upstream("r9", "success")                  # a replica the layout lacks: nothing
    series.usage(100, 20, 5, 0.0000015, estimated=True)
    series.usage(1, 2, 0, 0)
    assert list(seg.counters.snapshot()) == [1, 1, 1, 101, 22, 5, 1500, 1, 0, 0, 1]
    assert [seg.histograms.snapshot(i)[1] for i in range(3)] == [1, 1, 1]   # -1 s is not observed
    assert seg.histograms.snapshot(0)[0][:3] == [0, 0, 1]                    # 0.05 s: le 0.1
    seg.counters.add(8, 3)
    assert series.session_generation() == 3


def test_a_series_of_codes_only_counts_and_does_nothing_else(segments):
    seg = _segment(segments)
    series = seg.request_series(CODES, 2)
    series.answered(200, 0.5, 0.1, 0.1)
    series.usage(5, 5, 5, 1.0)
    series.upstream("r0", "success")
    assert list(seg.counters.snapshot()) == [1] + [0] * 10
    assert [seg.histograms.snapshot(i)[1] for i in range(3)] == [0, 0, 0]
    with pytest.raises(LookupError):
        series.session_generation()


@pytest.mark.parametrize("bad", [
    dict(codes={200: 11}), dict(other=-1), dict(timed=(0, 1, -1)), dict(timed=(0, 1, 3)), dict(tokens=(3, 4, -1)),
    dict(tokens=(3, 4, 5)), dict(cost=6), dict(attempts={("r0", "success"): 11})])
def test_words_and_slots_it_cannot_have_are_refused(segments, bad):
    seg = _segment(segments)
    args = dict(codes=CODES, other=2) | bad
    with pytest.raises((IndexError, ValueError)):
        seg.request_series(**args)


def test_an_observation_that_is_not_finite_is_refused(segments):
    series = _segment(segments).request_series(CODES, 2, **FULL)
    with pytest.raises(ValueError):
        series.answered(200, math.inf, None, None)


def test_an_answers_usage_is_counted_and_priced_in_one_call(segments):
    from fastinfer.limits.prices import Price
    seg = _segment(segments)
    series = seg.request_series(CODES, 2, **FULL)
    price = Price(2.5, 10.0, 1.25)
    usage = {"prompt_tokens": 1000, "completion_tokens": 200, "cached_tokens": 400, "usage_estimated": True}
    assert series.account(usage, price) == price.cost_usd(1000, 200, 400) == 0.004
    assert series.account({"prompt_tokens": 3, "completion_tokens": None}, Price(1.0, 2.0)) == 3e-6  # None: 0
    assert list(seg.counters.snapshot())[3:8] == [1003, 200, 400, 4_000_000 + 3_000, 1]   # nano-USD


_RECORDS = st.one_of(
    st.tuples(st.just("request"), st.sampled_from([200, 429, 500, 0])),
    st.tuples(st.just("answered"), st.sampled_from([200, 429, 504]), st.floats(-1, 400),
              st.none() | st.floats(-1, 2), st.none() | st.floats(0, 30)),
    st.tuples(st.just("upstream"), st.sampled_from(["r0", "r1"]), st.sampled_from(["success", "timeout", "x"])),
    st.tuples(st.just("usage"), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**3),
              st.sampled_from([0, 0.0, 1e-9, 2.5e-9, 0.12345678912, 3.5]), st.booleans()),
    st.tuples(st.just("account"),
              st.fixed_dictionaries({}, optional={"prompt_tokens": st.integers(0, 10**6) | st.none(),
                                                  "completion_tokens": st.integers(0, 10**6),
                                                  "cached_tokens": st.integers(0, 10**3),
                                                  "usage_estimated": st.booleans()}),
              st.builds(_price, st.floats(0, 100), st.floats(0, 100), st.none() | st.floats(0, 100))),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_RECORDS, max_size=30), st.booleans())
def test_compiled_series_record_as_the_reference(seq, full):
    from fastinfer._core import shm as compiled
    made = {}

    def run(seg, op):
        series = made.get(id(seg))
        if series is None:
            series = made[id(seg)] = seg.request_series(CODES, 2, **(FULL if full else {}))
        return getattr(series, op[0])(*op[1:])

    def observe(seg):
        return list(seg.counters.snapshot()), [seg.histograms.snapshot(i) for i in range(3)]

    replay(compiled.Layout(1, [], 11, 3, BOUNDS), seq, run, observe)
