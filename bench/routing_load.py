"""``python -m fastinfer bench --routing``: the CPU a routing policy adds per request, under load.

One mock upstream and one gateway with three deployments over the same three replicas (all
at the mock): ``rr`` (``round_robin``, the baseline), ``sticky`` and ``prefix``. Every
request is the same shape whatever the deployment: an 8 KB system prompt of its own user
(connection) and an ``x-session-id`` of that user, so the only difference between the
scenarios is the routing -- ``sticky`` looks the session up in the host's table, ``prefix``
hashes the prompt and matches it against the host's index (each user keeps its prompt, so
its prefix is found). Each scenario runs ``--rounds`` times in rotating order; the gateway's
CPU (supervisor and workers, from /proc) per request is compared with ``round_robin``'s
from the same run. Bars (issue 9): sticky adds <= 15 us per request, prefix <= 40 us.
Reports go to ``--out`` as ``routing-<time>.{json,md}``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

from .loadgen import http_request, run_asyncio
from .run import write_report
from .services import Service

POLICIES = {"rr": "round_robin", "sticky": "sticky", "prefix": "prefix"}
BARS_US = {"sticky": 15.0, "prefix": 40.0}
PROMPT_BYTES = 8192


def config(upstream_port: int) -> str:
    replicas = "".join(f"""
[[deployments.replicas]]
name = "r{i}"
base_url = "http://127.0.0.1:{upstream_port}/v1"
""" for i in range(3))
    return "[logging]\nlevel = \"warning\"\naccess_log = false\n" + "".join(f"""
[[deployments]]
name = "{name}"
provider = "openai_compatible"
model = "mock-model"
routing = "{routing}"
max_concurrency = 100000
retry = {{ max_attempts = 1 }}
{replicas}""" for name, routing in POLICIES.items())


def requests_for(port: int, model: str, users: int) -> list[bytes]:
    """One pre-encoded request per user: its own 8 KB system prompt and session id."""
    out = []
    for u in range(users):
        text = f"user {u}: " + "".join(chr(97 + (u * 31 + i * 7) % 26) for i in range(PROMPT_BYTES))
        body = json.dumps({"model": model, "messages": [
            {"role": "system", "content": text[:PROMPT_BYTES]}, {"role": "user", "content": "go on"}]}).encode()
        out.append(http_request("127.0.0.1", port, "/v1/chat/completions", body, {"x-session-id": f"user-{u}"}))
    return out


def run_routing(args) -> dict:
    workdir = tempfile.mkdtemp(prefix="fastinfer-bench-routing-")
    upstream = Service(["mock-upstream", "--port", "0", "--tokens", "16"], workdir)
    path = Path(workdir, "routing.toml")
    path.write_text(config(upstream.port))
    gateway = Service(["serve", "--config", str(path), "--port", "0", "--workers", str(args.workers)], workdir)
    totals = {name: {"cpu_s": 0.0, "requests": 0, "errors": 0, "rounds_us": []} for name in POLICIES}
    try:
        loads = {name: requests_for(gateway.port, name, args.concurrency) for name in POLICIES}
        names = list(POLICIES)
        for round_no in range(args.rounds):
            order = names[round_no % len(names):] + names[:round_no % len(names)]
            for name in order:
                # warm-up: connections, the sessions bound, the prefixes known
                asyncio.run(run_asyncio("127.0.0.1", gateway.port, "", b"", args.concurrency, 0.5, 10_000, False,
                                        requests=loads[name]))
                cpu0 = gateway.cpu_seconds()
                result = asyncio.run(run_asyncio("127.0.0.1", gateway.port, "", b"", args.concurrency, args.duration,
                                                 args.max_requests, False, requests=loads[name]))
                cpu = gateway.cpu_seconds() - cpu0
                t = totals[name]
                t["cpu_s"] += cpu
                t["requests"] += result.requests
                t["errors"] += result.errors
                t["rounds_us"].append(round(cpu / max(result.requests, 1) * 1e6, 1))
                print(f"  round {round_no + 1} {name:<7} {result.requests / result.elapsed_s:9.1f} req/s  "
                      f"cpu/req {t['rounds_us'][-1]} us  errors {result.errors}", flush=True)
    finally:
        gateway.stop()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rows = {}
    for name, t in totals.items():
        us = t["cpu_s"] / max(t["requests"], 1) * 1e6
        rows[name] = {"routing": POLICIES[name], "requests": t["requests"], "errors": t["errors"],
                      "cpu_us_per_request": round(us, 1), "cpu_us_per_request_rounds": t["rounds_us"]}
    base = rows["rr"]["cpu_us_per_request"]
    for name, row in rows.items():
        row["added_us_vs_round_robin"] = round(row["cpu_us_per_request"] - base, 1)
        row["ratio_to_round_robin"] = round(row["cpu_us_per_request"] / base, 3) if base else None
        row["bar_added_us"] = BARS_US.get(name)
    return {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workers": args.workers, "concurrency": args.concurrency,
            "duration_s": args.duration, "rounds": args.rounds, "prompt_bytes": PROMPT_BYTES, "rows": rows}


def to_markdown(report: dict) -> str:
    lines = [f"# fastinfer routing bench — {report['when']}", "",
             f"gateway workers: {report['workers']}, concurrency {report['concurrency']}, "
             f"{report['duration_s']} s x {report['rounds']} rounds per policy (rotating order), "
             f"{report['prompt_bytes']} byte prompts, one session and one prompt per connection", "",
             "| policy | requests | errors | gateway CPU µs/req | added vs round_robin | ratio | bar (added) "
             "| per round |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in report["rows"].values():
        bar = f"≤ {row['bar_added_us']:g} µs" if row["bar_added_us"] else ""
        lines.append(f"| {row['routing']} | {row['requests']} | {row['errors']} | {row['cpu_us_per_request']} "
                     f"| {row['added_us_vs_round_robin']:+} | {row['ratio_to_round_robin']} | {bar} "
                     f"| {row['cpu_us_per_request_rounds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastinfer bench --routing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--routing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per policy and round (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the policies in rotating order (default 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections, one user each (default 16)")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes (default 1)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound per run")
    parser.add_argument("--out", default="bench/results", help="directory for the JSON and Markdown reports")
    args = parser.parse_args(argv)
    report = run_routing(args)
    write_report(args.out, "routing", report, to_markdown(report))
    return 0
