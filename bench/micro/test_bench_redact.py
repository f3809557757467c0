"""Micro-benchmark of ``redact`` with many remembered secrets, against the flat alternation it replaced.

Every secret the gateway reads is remembered (replica credentials, gateway keys, the admin key), and
``redact`` runs on each access line whose request id the client chose. A config's thousand gateway
keys as one flat ``key1|key2|...`` pattern cost a search that tries every key at every position;
``redact`` matches them with one trie-shaped pattern (``redact._trie_pattern``). Both are timed here
as ``redact``'s precheck searches (with the key shapes' triggers), in the same run, on a client's
request id and a 2 KB error text, the ratio printed and kept in
``benchmark.extra_info``. No wall-clock assertion: only that both find the same.

Must not touch: the module's remembered secrets (the patterns are built here from a list of our own).

Run: ``pytest bench/micro/test_bench_redact.py --benchmark-enable -s``
"""
from __future__ import annotations

import hashlib
import re
import timeit

import pytest

from fastinfer.redact import _TRIGGERS, _trie_pattern

KEYS = [f"gk-{hashlib.sha256(str(i).encode()).hexdigest()[:32]}" for i in range(1000)]
TEXTS = {"request id": "client-req-0123456789abcdef",
         "2 KB error text": "the upstream said no " * 100 + KEYS[500]}


@pytest.mark.parametrize("name", TEXTS)
def test_bench_trie_against_flat_alternation(benchmark, name):
    text = TEXTS[name]
    # as ``redact``'s precheck searches them: the secrets, or the start of a key shape or URL password
    flat = re.compile("|".join(re.escape(k) for k in sorted(KEYS, key=len, reverse=True)) + "|" + _TRIGGERS)
    trie = re.compile(_trie_pattern(KEYS) + "|" + _TRIGGERS)
    assert trie.sub("#", text) == flat.sub("#", text)
    number = 5 if benchmark.disabled else 200
    trie_us = min(timeit.repeat(lambda: trie.search(text), number=number, repeat=5)) / number * 1e6
    flat_us = min(timeit.repeat(lambda: flat.search(text), number=number, repeat=5)) / number * 1e6
    benchmark.extra_info.update({"trie_us": round(trie_us, 3), "flat_us": round(flat_us, 3),
                                 "trie_over_flat": round(trie_us / flat_us, 4)})
    print(f"\n{name}, 1000 keys: trie {trie_us:.3f} us, flat alternation {flat_us:.3f} us "
          f"(trie/flat = {trie_us / flat_us:.4f})")
    benchmark(trie.search, text)
