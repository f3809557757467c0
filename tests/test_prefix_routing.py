"""Prefix affinity, end to end: multi-turn conversations with long distinct system prompts.

2 workers, 3 mock replicas, 6 conversations of 6 turns each running at once. Each turn
resends the whole conversation, so its prompt starts with the blocks of the last one: the
host's prefix index sends it back to the replica that served them, while distinct
conversations (new prefixes) spread over the replicas.
"""
from __future__ import annotations

import random
import string
import threading
from collections import Counter

from procs import metric_value, metrics_text
from replicas import NAMES, chat, replicas, replicas_config, three_replicas

__all__ = ["replicas", "three_replicas"]

TURNS = 6
CONVERSATIONS = 6


def system_prompt(seed: int, size: int = 4096) -> str:
    rng = random.Random(seed)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(size // 5)]
    return ("You are assistant number %d. " % seed + " ".join(words))[:size]


def converse(base: str, seed: int) -> list[str]:
    """Six turns of one conversation; the replica of each."""
    messages = [{"role": "system", "content": system_prompt(seed)}]
    served = []
    for turn in range(TURNS):
        messages.append({"role": "user", "content": f"question {turn} of conversation {seed}: tell me more"})
        status, replica, body = chat(base, messages=messages)
        assert status == 200, body
        served.append(replica)
        messages.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})
    return served


def test_conversations_return_to_the_replica_that_holds_their_prefix(start_gateway, replicas):
    for mock in replicas:
        mock.control(latency_ms=20)        # requests overlap: load is part of every decision
    gw = start_gateway(replicas_config(replicas, "prefix"))
    results: dict[int, list[str]] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, converse(gw.base, 100 + i)))
               for i in range(CONVERSATIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == CONVERSATIONS
    homes = []
    for i, served in results.items():
        home, turns = Counter(served).most_common(1)[0]
        assert turns >= TURNS - 1, (i, served)
        homes.append(home)
    assert set(homes) == set(NAMES), homes            # distinct conversations spread over the replicas
    text = metrics_text(gw)
    assert metric_value(text, 'fastinfer_prefix_index_bytes{deployment="m"}') == 65536 * 32
    # every turn's blocks are in the index: at least the system prompts' (16 blocks each)
    assert metric_value(text, 'fastinfer_prefix_index_entries{deployment="m"}') >= CONVERSATIONS * 16
