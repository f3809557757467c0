"""The rule by which a worker over its share of the host's connections lets some go
(``process.balance``), and its bookkeeping with the gateway's drain."""
from __future__ import annotations

import asyncio
import random

from fastinfer.gateway.drain import GatewayDrain
from fastinfer.process.balance import MIN_CONNECTIONS, ConnectionBalance, surplus


def test_only_the_surplus_past_the_fair_share_and_one_goes():
    assert surplus(41, [41, 23]) == 8          # fair 32, tolerance 1: 41 - 33
    assert surplus(23, [41, 23]) == 0          # under its share: keeps every one
    assert surplus(33, [33, 31]) == 0          # within the tolerance
    assert surplus(34, [34, 30]) == 1
    assert surplus(11, [11, 10, 9]) == 0        # fair is rounded up: 30 over 3 is 10, and one more


def test_at_most_a_quarter_of_a_workers_connections_go_in_a_round():
    assert surplus(60, [60, 4]) == 15
    assert surplus(3, [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) == 0    # fewer than MIN_CONNECTIONS in all


def test_too_few_connections_or_one_worker_are_left_alone():
    assert surplus(MIN_CONNECTIONS - 1, [MIN_CONNECTIONS - 1, 0]) == 0
    assert surplus(500, [500]) == 0


def test_rounds_of_random_reconnections_even_out_any_split():
    """What the rule does over rounds: the connections let go land on a random worker (the kernel's
    hash), and within a few rounds no worker holds more than its share and the tolerance."""
    rng = random.Random(7)
    for start in ([41, 23], [64, 0], [20, 2, 2, 0], [100, 50, 10]):
        counts, rounds = list(start), 0
        while any(surplus(c, counts) for c in counts):
            rounds += 1
            assert rounds <= 20, (start, counts)
            for i, go in [(i, surplus(c, counts)) for i, c in enumerate(counts)]:
                counts[i] -= go
                for _ in range(go):
                    counts[rng.randrange(len(counts))] += 1
        assert sum(counts) == sum(start)
        fair = -(-sum(counts) // len(counts))
        assert max(counts) <= fair + 1


class _Metrics:
    def __init__(self, counts):
        self.counts = counts

    def serving_worker_connections(self):
        return self.counts


def test_the_drain_lets_the_asked_number_go_and_the_balance_counts_those_that_went():
    loop = asyncio.new_event_loop()
    try:
        drain = GatewayDrain(loop)
        metrics = _Metrics([41, 23])
        balance = ConnectionBalance(metrics, drain)
        assert balance.check(41) == 0 and drain.shed_left == 0      # a surplus seen once: nothing yet
        assert balance.check(41) == 0 and drain.shed_left == 8      # seen twice: it goes
        for left in (7, 6, 5):
            drain.let_one_go()
            assert drain.shed_left == left
        metrics.counts = [38, 26]
        assert balance.check(38) == 3              # three went since the last check
        assert drain.shed_left == 5                # 38 - 33, asked anew (what was left is replaced)
        metrics.counts = [32, 32]
        assert balance.check(32) == 0 and drain.shed_left == 0      # evened out: nothing more goes
        metrics.counts = [38, 26]
        assert balance.check(38) == 0 and drain.shed_left == 0      # once again seen once only
        drain.begin(stopping=False)
        assert balance.check(38) == 0 and drain.shed_left == 0    # a draining worker lets every one go anyway
    finally:
        loop.close()
