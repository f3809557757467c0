"""Prefix affinity: a request goes where its prompt's prefix is cached, unless load says otherwise.

Owns:

- ``prompt_hashes``: the prompt (system prompt, tools, then the messages in
  order -- or a completion's ``prompt``) serialized once and cut into blocks of
  ``BLOCK_TOKENS`` tokens, approximated as ``CHARS_PER_TOKEN`` bytes each; every
  whole block hashed over the blocks before it (``_core.blocks``), so hash k
  names the prompt's first k + 1 blocks and the next turn of a conversation
  shares every whole block of the last one.
- ``PrefixRoute``: scores each usable replica as NVIDIA Dynamo's KV router
  does -- blocks it would have to prefill (the request's blocks minus the
  leading ones the host's prefix index says it served) plus its decode load
  (requests in flight / weight, ``DECODE_BLOCKS`` each) -- and takes the
  cheapest. With SGLang's balance guard first: when the busiest usable replica
  has more than ``BALANCE_ABS`` requests and ``BALANCE_REL`` times the load of
  the idlest, the request goes to the least loaded replica whatever its cache
  (affinity yields to overload). Equal costs (a new prefix costs the same
  everywhere but for load) go to the least loaded, ties rotating host-wide, so
  distinct conversations spread. The chosen replica's block chain is then
  inserted into the index.

The index is the shared segment's ``PrefixIndex``: a fixed number of entries
per deployment (its memory is fixed at start-up: ``fastinfer_prefix_index_bytes``),
the least recently used of a set replaced. Must not touch: HTTP, breakers.
"""
from __future__ import annotations

import orjson

from .._core.blocks import chain_hashes
from .._core.constants import LEAST_LOADED, NO_REPLICA

BLOCK_TOKENS = 64
CHARS_PER_TOKEN = 4
BLOCK_BYTES = BLOCK_TOKENS * CHARS_PER_TOKEN
DECODE_BLOCKS = 2       # what one request in flight costs a replica, in blocks of prefill (tuned on bench/routing_sim.py)
BALANCE_ABS = 8         # SGLang's balance_abs_threshold: requests in flight beyond the idlest replica
BALANCE_REL = 1.5       # SGLang's balance_rel_threshold: ... and this many times its load
_EPSILON = 1e-9


def prompt_hashes(body: dict) -> bytes:
    """The chained hashes of the prompt's whole blocks (little-endian uint64s; empty when the
    prompt is shorter than one block)."""
    messages = body.get("messages")
    prompt = (body.get("system"), body.get("tools"), messages if messages is not None else body.get("prompt"))
    return chain_hashes(orjson.dumps(prompt), BLOCK_BYTES)


class PrefixRoute:
    """The route of one request on a ``prefix`` deployment."""

    __slots__ = ("router", "hashes")

    session_key = None
    needs_claim = False

    def __init__(self, router, hashes: bytes):
        self.router = router
        self.hashes = hashes

    def choose(self, avoid: int, tried: int = 0) -> int:
        """The cheapest usable replica for this prompt, counted on, its block chain recorded."""
        router = self.router
        replica = router.pick(LEAST_LOADED, avoid | ~self._cheapest(avoid))
        if replica != NO_REPLICA:
            router.prefix.insert(router.worker, self.hashes, replica)
        return replica

    def served(self, replica: int) -> None:
        """The request was answered by ``replica``: its chain was recorded when it was chosen."""

    def _cheapest(self, avoid: int) -> int:
        """The mask of the usable replicas of least cost (all of them when load is unbalanced)."""
        router = self.router
        load = router.load
        usable = router.all_mask & ~avoid & load.healthy_mask
        if not usable & (usable - 1):
            return usable   # none or one: nothing to weigh
        in_flight = load.in_flight
        busy = [(r, in_flight(r) / w) for r, w in enumerate(router.weights) if usable >> r & 1]
        loads = [b for _, b in busy]
        idlest, busiest = min(loads), max(loads)
        if busiest - idlest > BALANCE_ABS and busiest > BALANCE_REL * idlest:
            return usable   # overloaded: least loaded decides, whatever is cached where
        held = router.prefix.match(self.hashes)
        # Dynamo's cost, less the blocks every replica has to prefill alike: decode load minus cached blocks
        cost = [(DECODE_BLOCKS * b - held[r], r) for r, b in busy]
        least = min(cost)[0] + _EPSILON
        mask = 0
        for c, r in cost:
            if c <= least:
                mask |= 1 << r
        return mask
