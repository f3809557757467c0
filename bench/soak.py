"""``python -m fastinfer bench --soak SECONDS``: issue 12's memory bar, the gateway's RSS over a long run.

Issue 12's bar: RSS of the whole process tree ≤ 110 MiB after 1 M requests, flat (± 5 %) over a
10-minute soak, with the features on and 2 workers. This runs only ``gateway-full`` (a gateway
key, the key's and the deployment's limits that never bind, the JSON access log; see
``gateway_configs.py``) in front of the bench's mock (``upstream.py``), under keep-alive load at 64
connections for SECONDS of wall time, in slices of ``--soak-interval`` seconds (10): after each
slice it reads the tree's RSS and PSS (``proctree.py``) and the requests answered so far (the load
tool's own count: wrk for non-streamed slices when installed, else the asyncio client; streamed
slices — every ``--soak-stream-every``-th, 64-chunk SSE streams — always the asyncio client). A
sample is also taken before any load.

The warm-up is the first ``--soak-warmup`` seconds (default: the first 10 % of the soak): the
samples after it are the ones "flat" is judged on, (max − min) / min ≤ 5 %. The bars: max RSS of
every sample ≤ 110 MiB, flat after the warm-up, and requests answered ≥ ``--soak-requests`` (a
floor the run reports whether it reached, not a stop: the run lasts SECONDS). A changed set of
processes in the tree (a worker respawned, its memory started afresh) is reported against the
flatness bar. Reports go to ``--out`` as ``soak-<time>.{json,md}``.
Must not touch: the paths (``targets.py``), the mock (``upstream.py``), the normal scenarios (``run.py``).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time

from .loadgen import LoadResult, run_asyncio, run_wrk, wrk_available
from .peer_table import RSS_BAR_MIB, bars_markdown
from .proctree import CpuLayout
from .run import STREAM_CHUNKS, request_body, run_and_report
from .targets import start_targets
from .upstream import start_upstream

FLAT_BAR = 0.05            # (max − min) / min of the samples after the warm-up
DEFAULT_FLOOR = 1_000_000  # requests the bar is stated after
PATH = "/v1/chat/completions"


def run_soak(args) -> dict:
    """Start the mock and gateway-full, soak, stop both (and remove their files: the access log of
    a million requests is large); the report, without its Markdown."""
    use_wrk = wrk_available() and not args.no_wrk
    layout = CpuLayout.default()
    layout.pin_load_side()
    loadavg_at_start = os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix="fastinfer-soak-")
    modes = {(False, STREAM_CHUNKS)} | ({(True, STREAM_CHUNKS)} if args.soak_stream_every else set())
    started = []   # stopped in reverse, whatever happens
    try:
        upstream = start_upstream(args.mock, workdir, modes, request_body, STREAM_CHUNKS)
        started.append(upstream)
        paths, info = start_targets(["direct", "gateway-full"], upstream, workdir, args.workers, layout, None, None)
        gateway = paths[1][1]
        started.append(gateway)
        samples, pids_changed = soak(gateway, upstream, args, use_wrk)
        log_bytes = gateway.log.stat().st_size if gateway.log.exists() else 0
    finally:
        for service in reversed(started):
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "soak_s": args.soak, "interval_s": args.soak_interval,
        "warmup_s": args.soak_warmup, "workers": args.workers, "concurrency": args.concurrency,
        "load_tool": ("wrk" if use_wrk else "asyncio") + " (non-streamed)"
                     + (f" + asyncio ({STREAM_CHUNKS}-chunk streams, 1 slice in {args.soak_stream_every})"
                        if args.soak_stream_every else ""),
        "mock": upstream.kind, "cpus": os.cpu_count(), "cpu_layout": layout.describe(),
        "loadavg_at_start": loadavg_at_start, "loadavg_at_end": os.getloadavg()[0],
        "features": info.get("features", {}), "requests_floor": args.soak_requests,
        "log_bytes": log_bytes, "processes_changed": pids_changed, "samples": samples,
    }
    report.update(verdict(samples, args.soak_warmup, args.soak_requests, pids_changed))
    return report


def soak(gateway, upstream, args, use_wrk: bool) -> tuple[list[dict], bool]:
    """Load in slices until ``args.soak`` seconds have passed, a sample after each (and one before
    any load). Returns the samples, and whether the tree's processes changed (a worker respawned)."""
    cpu0 = gateway.cpu_seconds()
    pids0 = set(gateway.pids())
    samples = [_sample(gateway, 0.0, LoadResult(), cpu0, False)]
    totals = LoadResult()
    t0 = time.monotonic()
    slice_no = 0
    while True:
        left = args.soak - (time.monotonic() - t0)
        if left < 1:    # wrk runs whole seconds
            break
        stream = bool(args.soak_stream_every) and slice_no % args.soak_stream_every == args.soak_stream_every - 1
        upstream.configure(stream, STREAM_CHUNKS, 0.0)
        result = _load_slice(gateway.port, stream, args, min(args.soak_interval, left), use_wrk)
        totals.requests += result.requests
        totals.errors += result.errors
        sample = _sample(gateway, time.monotonic() - t0, totals, cpu0, stream)
        samples.append(sample)
        slice_no += 1
        print(f"  {sample['elapsed_s']:>7.1f} s  {sample['requests']:>9} requests  {sample['errors']} errors  "
              f"RSS {sample['rss_mib']:>6.1f} MiB ({' + '.join(map(str, sample['rss_each_mib']))})  "
              f"PSS {sample['pss_mib']:>6.1f} MiB"
              + ("  (streams)" if stream else ""), flush=True)
    return samples, set(gateway.pids()) != pids0


def _load_slice(port: int, stream: bool, args, duration_s: float, use_wrk: bool) -> LoadResult:
    """One slice of keep-alive load at ``args.concurrency`` connections (bounded in time, and the
    asyncio client in count too)."""
    body = request_body(stream)
    if use_wrk and not stream:
        return run_wrk("127.0.0.1", port, PATH, body, args.concurrency, duration_s)
    return asyncio.run(run_asyncio("127.0.0.1", port, PATH, body, args.concurrency, duration_s,
                                   args.max_requests, stream))


def _sample(gateway, elapsed_s: float, totals: LoadResult, cpu0: float, stream: bool) -> dict:
    """The tree's memory and CPU now, and the load so far. ``requests`` counts answers that came
    back 200 (the load tools count the others as errors)."""
    return {"elapsed_s": round(elapsed_s, 1), "requests": totals.requests - totals.errors, "errors": totals.errors,
            **gateway.memory_mib(), "processes": len(gateway.pids()),
            "cpu_s": round(gateway.cpu_seconds() - cpu0, 2), "streams": stream}


def verdict(samples: list[dict], warmup_s: float, floor: int, pids_changed: bool) -> dict:
    """The soak's figures and issue 12's memory bars. The idle sample (before any load) counts for
    the maximum, not for flatness; the flatness is over the samples taken after the warm-up."""
    loaded = samples[1:]
    settled = [s for s in loaded if s["elapsed_s"] >= warmup_s]
    requests = loaded[-1]["requests"] if loaded else 0
    out = {"requests": requests, "errors": loaded[-1]["errors"] if loaded else 0,
           "samples_after_warmup": len(settled)}
    for key in ("rss_mib", "pss_mib"):
        out[key.split("_")[0]] = _figures([s[key] for s in samples], [s[key] for s in settled])
    if loaded and loaded[-1]["cpu_s"] and requests:
        out["cpu_us_per_request"] = round(loaded[-1]["cpu_s"] / requests * 1e6, 1)
    rss = out["rss"]
    bars = [
        {"bar": f"RSS of the process tree ≤ {RSS_BAR_MIB} MiB (the maximum of every sample)",
         "measured": rss["max"], "holds": rss["max"] <= RSS_BAR_MIB if rss["max"] is not None else None,
         "note": ""},
        {"bar": f"RSS flat after the warm-up (first {warmup_s:g} s): (max − min) / min ≤ {FLAT_BAR:.0%}",
         "measured": None if rss["spread"] is None else f"{rss['spread']:.1%}",
         "holds": None if rss["spread"] is None else rss["spread"] <= FLAT_BAR and not pids_changed,
         "note": ("the tree's processes changed during the soak (a worker respawned)" if pids_changed else
                  "" if rss["spread"] is not None else "fewer than 2 samples after the warm-up")},
        {"bar": f"requests answered ≥ {floor:,} (the floor the bar is stated after)", "measured": requests,
         "holds": requests >= floor, "note": ""},
    ]
    out["bars"] = bars
    out["holds"] = None if any(b["holds"] is None for b in bars) else all(b["holds"] for b in bars)
    return out


def _figures(every: list[float], settled: list[float]) -> dict:
    """Start (idle), after the warm-up, end, max of every sample; min, max and spread after the warm-up."""
    lo, hi = (min(settled), max(settled)) if settled else (None, None)
    return {"idle": every[0], "after_warmup": settled[0] if settled else None, "end": every[-1],
            "max": max(every), "settled_min": lo, "settled_max": hi,
            "spread": round((hi - lo) / lo, 4) if len(settled) > 1 and lo else None}


def to_markdown(report: dict) -> str:
    rss, pss = report["rss"], report["pss"]
    holds = {True: "holds", False: "does NOT hold", None: "cannot be judged"}[report["holds"]]
    lines = [f"# fastinfer soak — {report['when']}", "",
             f"fastinfer with its features on (`gateway-full`), {report['workers']} workers, "
             f"{report['concurrency']} keep-alive connections for {report['soak_s']:g} s in "
             f"{report['interval_s']:g} s slices, load: {report['load_tool']}, mock upstream: {report['mock']}, "
             f"CPUs: {report['cpus']}, {report['cpu_layout']}; the machine's load average (1 min) "
             f"{report['loadavg_at_start']:.2f} at start, {report['loadavg_at_end']:.2f} at the end. "
             f"Warm-up: the first {report['warmup_s']:g} s.", "",
             f"**Issue 12's memory bar {holds}**: {report['requests']:,} requests answered "
             f"({report['errors']} errors), RSS {_mib(rss['idle'])} idle → {_mib(rss['after_warmup'])} after the "
             f"warm-up → {_mib(rss['end'])} at the end, max {_mib(rss['max'])}, spread after the warm-up "
             f"{_share(rss['spread'])}" + (f", gateway CPU {report['cpu_us_per_request']} µs per request"
                                           if report.get("cpu_us_per_request") else "") + ".", "",
             *bars_markdown(report["bars"], "the soak, fastinfer with its features on"), "",
             "| MiB | idle (before load) | after warm-up | end | max | min after warm-up | max after warm-up "
             "| spread after warm-up |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, f in (("RSS", rss), ("PSS", pss)):
        lines.append(f"| {name} | {_mib(f['idle'])} | {_mib(f['after_warmup'])} | {_mib(f['end'])} "
                     f"| {_mib(f['max'])} | {_mib(f['settled_min'])} | {_mib(f['settled_max'])} "
                     f"| {_share(f['spread'])} |")
    lines += ["", "RSS counts the workers' shared, forked pages once per worker (the issue's bar is on RSS); "
              "PSS divides them among their sharers.", ""]
    if report["features"]:
        lines += ["Features, as this tree's `check-config` took them:", ""]
        lines += [f"- {name}: {state}" for name, state in report["features"].items()] + [""]
    lines += ["## Samples", "", "| elapsed s | requests so far | errors | RSS MiB | RSS of each process (supervisor "
              "first) | PSS MiB | processes | CPU s | slice |", "|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for s in report["samples"]:
        kind = "" if not s["elapsed_s"] else "streams" if s["streams"] else "non-streamed"
        warm = " (warm-up)" if s["elapsed_s"] and s["elapsed_s"] < report["warmup_s"] else ""
        lines.append(f"| {s['elapsed_s']} | {s['requests']:,} | {s['errors']} | {s['rss_mib']} "
                     f"| {' + '.join(map(str, s.get('rss_each_mib', [])))} | {s['pss_mib']} "
                     f"| {s['processes']} | {s['cpu_s']} | {kind or 'idle'}{warm} |")
    lines += ["", f"The gateway's log (the JSON access log) grew to {report['log_bytes']:,} bytes."]
    return "\n".join(lines) + "\n"


def _mib(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def _share(v) -> str:
    return "–" if v is None else f"{v:.1%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastinfer bench --soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", type=float, required=True, metavar="SECONDS", help="wall time of the load")
    parser.add_argument("--soak-requests", type=int, default=DEFAULT_FLOOR, metavar="N",
                        help=f"the floor of requests answered the bar is stated after (default {DEFAULT_FLOOR:,}); "
                             "reported, not a stop")
    parser.add_argument("--soak-interval", type=float, default=10.0, metavar="SECONDS",
                        help="a sample after every slice of this many seconds of load (default 10)")
    parser.add_argument("--soak-warmup", type=float, metavar="SECONDS",
                        help="samples before this are the warm-up, left out of the flatness (default: 10 %% of "
                             "--soak)")
    parser.add_argument("--soak-stream-every", type=int, default=4, metavar="K",
                        help="every K-th slice sends 64-chunk streams instead (default 4; 0 = non-streamed only)")
    parser.add_argument("--concurrency", type=int, default=64, help="keep-alive connections (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="fastinfer worker processes (default 2)")
    parser.add_argument("--max-requests", type=int, default=1_000_000,
                        help="bound per slice of the asyncio client (wrk's slices are bounded in time)")
    parser.add_argument("--no-wrk", action="store_true", help="the asyncio client for every slice")
    parser.add_argument("--mock", choices=("auto", "nginx", "python"), default="auto",
                        help="the upstream (see bench --help); auto = nginx when installed")
    parser.add_argument("--out", default="bench/results", help="directory for the JSON and Markdown reports")
    args = parser.parse_args(argv)
    if args.soak < 1 or args.soak_interval < 1:
        parser.error("--soak and --soak-interval: at least 1 second (wrk runs whole seconds)")
    if args.soak_stream_every < 0 or args.soak_requests < 0:
        parser.error("--soak-stream-every and --soak-requests: 0 or more")
    if args.soak_warmup is None:
        args.soak_warmup = round(args.soak * 0.1, 1)
    return run_and_report(args, "soak", run_soak, to_markdown)
