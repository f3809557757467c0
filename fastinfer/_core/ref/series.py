"""Pure-Python reference of ``fastinfer._core.shm``'s ``RequestSeries``: one deployment's or gateway
key's series as a request records them, over the words and slots it was given (-1: none).

Must not touch: which words a series has (``metrics.registry`` resolves them), rendering.
"""
from __future__ import annotations

from ..constants import COST_SCALE


class RequestSeries:
    def __init__(self, counters, histograms, codes: dict, other: int, timed=(-1, -1, -1), tokens=(-1, -1, -1),
                 cost: int = -1, estimated: int = -1, generation: int = -1, attempts: dict | None = None):
        timed, tokens, attempts = tuple(timed), tuple(tokens), dict(attempts or {})
        for word in [*codes.values(), other, cost, estimated, generation, *tokens, *attempts.values()]:
            if word is None or not -1 <= word < len(counters):
                raise IndexError("counter index out of range")
        if any(not -1 <= slot < len(histograms) for slot in timed):
            raise IndexError("histogram index out of range")
        if other < 0:
            raise ValueError("a series counts every status: other is a counter word")
        if len(timed) != 3 or len(tokens) != 3:
            raise ValueError("timed is (duration, overhead, ttft), tokens (input, output, cached)")
        if len({slot < 0 for slot in timed}) != 1:
            raise ValueError("a series is timed by its three histograms, or not at all")
        if len({word < 0 for word in (*tokens, cost)}) != 1:
            raise ValueError("a series counts its three token directions and its cost, or none")
        self._counters = counters
        self._histograms = histograms
        self._codes = {int(status): int(word) for status, word in codes.items()}
        self._other = other
        self._duration, self._overhead, self._ttft = timed
        self._input, self._output, self._cached = tokens
        self._cost, self._estimated, self._generation = cost, estimated, generation
        self._attempts = attempts

    def request(self, status) -> None:
        self._counters.add(self._codes.get(status, self._other), 1)

    def answered(self, status, duration_s: float, overhead_s: float | None, ttft_s: float | None) -> None:
        self._counters.add(self._codes.get(status, self._other), 1)
        if self._duration < 0:
            return
        for slot, seconds in ((self._duration, duration_s), (self._overhead, overhead_s), (self._ttft, ttft_s)):
            if seconds is not None and seconds >= 0:
                self._histograms.observe(slot, seconds)

    def upstream(self, replica, outcome) -> None:
        word = self._attempts.get((replica, outcome))
        if word is not None:
            self._counters.add(word, 1)

    def usage(self, prompt: int, completion: int, cached: int, cost_usd: float, estimated: bool = False) -> None:
        if self._input < 0:
            return
        add = self._counters.add
        if estimated and self._estimated >= 0:
            add(self._estimated, 1)
        add(self._input, prompt)
        add(self._output, completion)
        if cached:
            add(self._cached, cached)
        if cost_usd:
            add(self._cost, round(cost_usd * COST_SCALE))

    def account(self, usage: dict, price) -> float:
        """An answer's normalized ``usage`` counted (as ``usage``) at ``price``; its cost returned."""
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        cached = usage.get("cached_tokens") or 0
        cost = price.cost_usd(prompt, completion, cached)
        self.usage(prompt, completion, cached, cost, bool(usage.get("usage_estimated")))
        return cost

    def session_generation(self) -> int:
        if self._generation < 0:
            raise LookupError("this series has no session generation")
        return self._counters.get(self._generation)
