"""``python -m bench.routing_sim``: the KV-cache hit rate of each routing policy on a replayed multi-turn trace.

No servers. The routing decisions are the real ones: ``fastinfer.routing.DeploymentRouter``
over a real (compiled) shared segment, one deployment per policy, whose clock is the
simulation's (``Segment.set_test_clock``), so idle TTLs and the prefix index's recency run
on simulated time. Around it, a model of the replicas:

- **KV cache.** Each replica keeps block chains in an LRU of ``--cache-blocks`` blocks. A
  request hits the leading blocks of its prompt its replica still holds; the rest are
  prefilled. Then its prompt and its answer are cached (servers keep generated tokens' KV
  too). A block is what the router sees: the prompt's chained block hashes
  (``routing.prompt_hashes``, 64 tokens ~ 256 bytes each).
- **Load.** A request occupies its replica for prefill (uncached blocks x
  ``--prefill-ms``) plus decode (answer blocks x ``--decode-ms``); every replica runs its
  requests at once, so its in-flight count is what ``least_loaded`` and ``prefix`` see.
- **Trace.** ``--conversations`` conversations arrive as a Poisson process; each starts
  with the system prompt of one of ``--apps`` applications (2-6 KB, shared by every
  conversation of that app), then a preamble of its own, and runs 2-12 turns (user
  message 100-600 bytes, answer 200-1500 bytes) with an exponential think time between
  them. ``sticky`` gets the conversation id as its ``x-session-id``.

Reported per policy: requests, the share of prompt blocks served from cache (the hit
rate), blocks prefilled, simulated latency p50/p99, and the busiest replica's share of
the requests. Same trace, same seed, every policy.
"""
from __future__ import annotations

import argparse
import heapq
import os
import random
import statistics
import uuid
from collections import OrderedDict
from types import SimpleNamespace

from fastinfer._core import shm
from fastinfer.config import parse_config
from fastinfer.metrics import MetricsLayout
from fastinfer.process.hostwide import plan
from fastinfer.routing import DeploymentRouter, prompt_hashes

POLICIES = ("round_robin", "least_loaded", "sticky", "prefix")
_NS = 1_000_000_000
_T0 = 1_000 * _NS           # the segment clock at the start of the trace


class KVCache:
    """A replica's cache of blocks: an LRU by block hash."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.blocks: OrderedDict[bytes, None] = OrderedDict()

    def hit(self, chain: list[bytes]) -> int:
        """Leading blocks of ``chain`` held here (refreshed)."""
        n = 0
        for block in chain:
            if block not in self.blocks:
                break
            self.blocks.move_to_end(block)
            n += 1
        return n

    def keep(self, chain: list[bytes]) -> None:
        for block in chain:
            self.blocks[block] = None
            self.blocks.move_to_end(block)
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz     ") for _ in range(n))


def make_trace(args) -> list[dict]:
    """The conversations: start time, app prompt, preamble, turns (user, answer, think time)."""
    rng = random.Random(args.seed)
    apps = [f"app {a}: " + _text(rng, rng.randint(2048, 6144)) for a in range(args.apps)]
    t = 0.0
    out = []
    for c in range(args.conversations):
        t += rng.expovariate(args.arrivals_per_s)
        turns = [(_text(rng, rng.randint(100, 600)), _text(rng, rng.randint(200, 1500)),
                  rng.expovariate(1 / args.think_s)) for _ in range(rng.randint(2, 12))]
        out.append({"id": f"conversation-{c}", "start": t, "system": rng.choice(apps),
                    "preamble": f"user {c} profile: " + _text(rng, rng.randint(200, 1200)), "turns": turns})
    return out


def _chain(messages: list[dict]) -> list[bytes]:
    raw = prompt_hashes({"messages": messages})
    return [raw[i:i + 8] for i in range(0, len(raw), 8)]


def simulate(policy: str, trace: list[dict], args) -> dict:
    cfg = parse_config({"deployments": [{"name": "sim", "provider": "openai_compatible", "routing": policy,
                                         "session": {"affinity_ttl_s": 3600},
                                         "replicas": [{"base_url": f"http://10.0.0.{i}:8000/v1"}
                                                      for i in range(args.replicas)]}]})
    layout, _ = plan(cfg, 1, MetricsLayout(cfg))
    seg = shm.Segment.create(f"fi-sim-{os.getpid()}-{uuid.uuid4().hex[:8]}", layout)
    seg.unlink()
    try:
        seg.set_test_clock(_T0)
        router = DeploymentRouter(seg, 0, 0, cfg.deployments[0])
        return _replay(router, seg, trace, args)
    finally:
        seg.close()


def _replay(router, seg, trace: list[dict], args) -> dict:
    caches = [KVCache(args.cache_blocks) for _ in range(args.replicas)]
    events: list = []   # (time, order, kind, data)
    order = 0
    for conv in trace:
        events.append((conv["start"], order, "ask", (conv, 0, [
            {"role": "system", "content": conv["system"]}, {"role": "user", "content": conv["preamble"]}])))
        order += 1
    heapq.heapify(events)
    hit = total = requests = 0
    latencies, per_replica = [], [0] * args.replicas
    while events:
        now, _, kind, data = heapq.heappop(events)
        seg.set_test_clock(_T0 + int(now * _NS))
        if kind == "done":
            replica, conv, turn, messages = data
            router.finish(replica)
            if turn + 1 < len(conv["turns"]):
                heapq.heappush(events, (now + conv["turns"][turn][2], order, "ask", (conv, turn + 1, messages)))
                order += 1
            continue
        conv, turn, history = data
        user, answer, _ = conv["turns"][turn]
        messages = history + [{"role": "user", "content": user}]
        req = SimpleNamespace(session_id=conv["id"], key=None, body={"messages": messages})
        replica = router.route(req).choose(0)
        chain = _chain(messages)
        cached = caches[replica].hit(chain)
        answered = messages + [{"role": "assistant", "content": answer}]
        caches[replica].keep(_chain(answered))
        hit, total, requests = hit + cached, total + len(chain), requests + 1
        per_replica[replica] += 1
        duration = ((len(chain) - cached) * args.prefill_ms + (len(answer) // 256 + 1) * args.decode_ms) / 1000
        latencies.append(duration)
        heapq.heappush(events, (now + duration, order, "done", (replica, conv, turn, answered)))
        order += 1
    latencies.sort()
    return {"requests": requests, "hit_rate": hit / total if total else 0.0, "prefilled_blocks": total - hit,
            "p50_s": statistics.median(latencies), "p99_s": latencies[int(len(latencies) * 0.99) - 1],
            "busiest_share": max(per_replica) / requests}


def to_markdown(results: dict, args) -> str:
    lines = [f"Trace: {args.conversations} conversations of 2-12 turns over {args.apps} shared app prompts, "
             f"{args.replicas} replicas with {args.cache_blocks} cached blocks each (64 tokens a block), "
             f"seed {args.seed}.", "",
             "| policy | requests | cache hit rate | blocks prefilled | latency p50 s | latency p99 s "
             "| busiest replica's share |", "|---|---:|---:|---:|---:|---:|---:|"]
    for policy, r in results.items():
        lines.append(f"| {policy} | {r['requests']} | {r['hit_rate']:.1%} | {r['prefilled_blocks']} "
                     f"| {r['p50_s']:.3f} | {r['p99_s']:.3f} | {r['busiest_share']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--conversations", type=int, default=400)
    parser.add_argument("--apps", type=int, default=8, help="distinct application system prompts")
    parser.add_argument("--cache-blocks", type=int, default=1500, help="KV cache per replica, in blocks")
    parser.add_argument("--arrivals-per-s", type=float, default=2.0, help="new conversations per second")
    parser.add_argument("--think-s", type=float, default=8.0, help="mean time between a conversation's turns")
    parser.add_argument("--prefill-ms", type=float, default=4.0, help="per uncached block")
    parser.add_argument("--decode-ms", type=float, default=400.0, help="per answer block")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    args = parser.parse_args(argv)
    trace = make_trace(args)
    results = {p: simulate(p, trace, args) for p in args.policies}
    print(to_markdown(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
