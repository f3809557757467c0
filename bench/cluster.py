"""``python -m bench.cluster``: what sharing limits through Redis costs and how far it overshoots.

In one run, on one real ``redis-server`` it starts itself:

- **overshoot**: 1, 2 and 4 gateway hosts (``fastinfer serve``, one worker each, distinct node
  ids, ``mode = "approximate"``) share a key limited to 600 rpm (a bucket of 600, refilled at
  10/s); a paced client sends ~1,000 req/s spread evenly over the hosts for ``--duration``
  seconds. Reported: requests admitted against what the limit allows in that time (600 + 10/s),
  the overshoot in requests and as a ratio of the limit. One host is the baseline (exact).
- **strict latency**: one host, a key whose limit never binds, sequential requests, in
  ``approximate`` mode (no Redis on the request path) and in ``strict`` mode (one Lua script
  per admission); the difference of their medians against a Redis ``PING`` round trip measured
  in the same run.

Bounded: every load phase stops at ``--duration`` seconds. Run it alone on the machine
(``flock /work/wt/.bench.lock python -m bench.cluster``); it prints a Markdown table and writes JSON
with ``--out``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from .output import finish
from .services import Service

RPM = 600
TARGET_RPS = 1000


def start_redis(workdir: str) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def config(redis_port: int, node: str, prefix: str, mode: str, rpm: int) -> str:
    return f"""
[logging]
level = "warning"

[[keys]]
name = "bench"
key = {{ value = "bench" }}
rpm = {rpm}

[cluster]
redis_url = "redis://127.0.0.1:{redis_port}/0"
node_id = "{node}"
key_prefix = "{prefix}"
mode = "{mode}"

[[deployments]]
name = "bench"
provider = "mock"
max_concurrency = 100000
mock = {{ tokens = 4 }}
"""


def start_hosts(workdir: str, redis_port: int, n: int, prefix: str, mode: str = "approximate",
                rpm: int = RPM) -> list[Service]:
    hosts = []
    for i in range(n):
        path = Path(workdir, f"{prefix}-{i}.toml")
        path.write_text(config(redis_port, f"node-{i}", prefix, mode, rpm))
        hosts.append(Service(["serve", "--port", "0", "--workers", "1", "--config", str(path)], workdir))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(_nodes(h) == n for h in hosts):
        time.sleep(0.05)
    return hosts


def _nodes(host: Service) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{host.port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("fastinfer_cluster_nodes "):
            return int(float(line.split()[1]))
    return 0


_BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]}).encode()


def _request(port: int) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer bench\r\nContent-Length: {len(_BODY)}\r\n\r\n").encode() + _BODY


async def _exchange(reader, writer, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return int(head[9:12])


async def paced_load(ports: list[int], rps: float, duration_s: float, users_per_host: int = 8) -> dict:
    """Open-loop-ish: each user sends at its own fixed pace (rps spread over every user)."""
    counts = {"sent": 0, "admitted": 0, "limited": 0, "other": 0}
    interval = len(ports) * users_per_host / rps
    start = time.perf_counter()
    deadline = start + duration_s

    async def user(port: int, offset: float):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = _request(port)
        due = start + offset
        try:
            while due < deadline:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                status = await _exchange(reader, writer, request)
                counts["sent"] += 1
                counts["admitted" if status == 200 else "limited" if status == 429 else "other"] += 1
                due += interval
        finally:
            writer.close()

    n_users = len(ports) * users_per_host
    await asyncio.gather(*(user(port, interval * (i * len(ports) + j) / n_users)
                           for j, port in enumerate(ports) for i in range(users_per_host)))
    counts["elapsed_s"] = time.perf_counter() - start
    return counts


def overshoot(workdir: str, redis_port: int, n_hosts: int, duration_s: float) -> dict:
    hosts = start_hosts(workdir, redis_port, n_hosts, f"over{n_hosts}")
    try:
        counts = asyncio.run(paced_load([h.port for h in hosts], TARGET_RPS, duration_s))
    finally:
        for h in hosts:
            h.stop()
    allowed = RPM + counts["elapsed_s"] * RPM / 60
    return {"hosts": n_hosts, **counts, "elapsed_s": round(counts["elapsed_s"], 2),
            "rps": round(counts["sent"] / counts["elapsed_s"]), "allowed": round(allowed, 1),
            "overshoot": round(counts["admitted"] - allowed, 1),
            "overshoot_ratio": round(counts["admitted"] / allowed, 3)}


async def _latencies(port: int, duration_s: float, max_requests: int = 5000) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = _request(port)
    out = []
    deadline = time.perf_counter() + duration_s
    try:
        while time.perf_counter() < deadline and len(out) < max_requests:
            t0 = time.perf_counter()
            status = await _exchange(reader, writer, request)
            assert status == 200, status
            out.append(time.perf_counter() - t0)
    finally:
        writer.close()
    return out


async def _ping_rtts(redis_port: int, n: int = 2000) -> list[float]:
    import redis.asyncio as redis
    client = redis.Redis(port=redis_port)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            await client.ping()
            out.append(time.perf_counter() - t0)
    finally:
        await client.aclose()
    return out


def strict_latency(workdir: str, redis_port: int, duration_s: float) -> dict:
    medians = {}
    for mode in ("approximate", "strict"):
        (host,) = start_hosts(workdir, redis_port, 1, f"lat-{mode}", mode, rpm=100_000_000)
        try:
            asyncio.run(_latencies(host.port, 0.5))                  # warm up
            medians[mode] = statistics.median(asyncio.run(_latencies(host.port, duration_s))) * 1e6
        finally:
            host.stop()
    ping = statistics.median(asyncio.run(_ping_rtts(redis_port))) * 1e6
    added = medians["strict"] - medians["approximate"]
    return {"approximate_p50_us": round(medians["approximate"], 1), "strict_p50_us": round(medians["strict"], 1),
            "added_us": round(added, 1), "redis_ping_p50_us": round(ping, 1),
            "added_per_round_trip": round(added / ping, 2)}


def to_markdown(report: dict) -> str:
    lines = [f"Approximate mode, a key limited to {RPM} rpm (bucket {RPM}, +{RPM // 60}/s), "
             f"~{TARGET_RPS} req/s spread over the hosts:", "",
             "| hosts | sent | req/s | admitted | allowed | overshoot | admitted / allowed |",
             "|---|---|---|---|---|---|---|"]
    for row in report["overshoot"]:
        lines.append(f"| {row['hosts']} | {row['sent']} | {row['rps']} | {row['admitted']} | {row['allowed']} | "
                     f"{row['overshoot']} | {row['overshoot_ratio']} |")
    s = report["strict"]
    lines += ["", "Strict mode's added latency (sequential requests, medians):", "",
              "| approximate p50 | strict p50 | added | Redis PING p50 | added / round trip |", "|---|---|---|---|---|",
              f"| {s['approximate_p50_us']} µs | {s['strict_p50_us']} µs | {s['added_us']} µs | "
              f"{s['redis_ping_p50_us']} µs | {s['added_per_round_trip']} |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load phase (default 5)")
    parser.add_argument("--hosts", default="1,2,4", help="host counts for the overshoot (default 1,2,4)")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="fastinfer-bench-cluster-")
    redis, port = start_redis(workdir)
    try:
        report = {"overshoot": [overshoot(workdir, port, int(n), args.duration) for n in args.hosts.split(",")],
                  "strict": strict_latency(workdir, port, args.duration)}
    finally:
        redis.kill()
        redis.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return finish(to_markdown(report), report, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
