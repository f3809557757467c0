"""``python -m fastinfer bench``: the gateway's cost, measured against direct-to-upstream and its peers.

In one invocation it starts a mock upstream (nginx serving canned answers, or
``mock-upstream``) and, in front of that same mock, fastinfer bare, fastinfer
with every feature on and — when installed — nginx (the proxy floor) and
vllm-router (see ``targets.py``); then runs the same scenarios against the mock
directly and through each: non-streaming at concurrency 64, 8 and 1; streaming
(64 chunks, and 8 as a short variant) at concurrency 32. Besides req/s and
latency percentiles it reads the CPU time of each path's whole process tree
from /proc and reports CPU per request and per streamed chunk: the figure that
survives a noisy, shared machine; and memory, the per-worker CPU split, the
load side's own CPU. The headline is the peer table (``peer_table.py``):
fastinfer's figures as ratios to each peer's. It writes JSON and Markdown to
``--out``.

``--baseline-tree PATH`` starts a second gateway from another source tree (a
checkout with its compiled core built in place, e.g. ``git worktree add`` of
main) on the same mock, runs every scenario through it too, and reports this
tree against it as ratios: a before/after measured in one run. When ``gateway-full`` runs, the
baseline tree runs with every feature on too (``baseline-full``), and the report sets the two
features-on paths side by side as well.

``--variant LABEL=TOML`` starts one more fastinfer path of this tree, the bare
config with ``TOML``'s settings on it (e.g. ``logging = { format = "json",
access_log = true }``), runs every scenario through it too, and reports it
against the ``gateway`` path (whose own settings ``--gateway-config`` gives) as
ratios: what a feature costs, measured in one run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

from . import peer_table
from .nginx import nginx_binary
from .loadgen import LoadResult, run_asyncio, run_wrk, wrk_available
from .proctree import CpuLayout, worker_split
from .profiling import start_profiler, summarize_profile
from .targets import ALL_TARGETS, RESERVED_LABELS, start_targets, wanted_targets
from .upstream import start_upstream
from .vllm_router import find_vllm_router
STREAM_CHUNKS = 64   # data events per stream the client receives (role + content + finish)
SHORT_CHUNKS = 8     # the short variant: per-stream cost vs per-chunk cost by difference


# ----------------------------------------------------------------- scenarios

_PROMPT = 'Summarize the "quarterly report" [attached below] in three short bullet points, please. '


def request_body(stream: bool, prompt_bytes: int = 0) -> bytes:
    """The bench's chat request; ``prompt_bytes`` > 0: its prompt that long, as a real one (words,
    quotes, brackets), where the default is a few words."""
    prompt = (_PROMPT * (prompt_bytes // len(_PROMPT) + 1))[:prompt_bytes] if prompt_bytes else \
        "benchmark the gateway please"
    return json.dumps({"model": "bench", "stream": stream, "messages": [{"role": "user", "content": prompt}]}).encode()


def run_scenario(name: str, target, measured, *, stream: bool, concurrency: int, duration_s: float,
                 max_requests: int, use_wrk: bool, upstream=None, profile_to: Path | None = None,
                 profile_native: bool = False) -> dict:
    """One scenario on one path. ``measured``'s process tree is the one whose CPU is counted (the
    target's); ``upstream``'s CPU is read too when it is another process (the mock behind a gateway)."""
    body = request_body(stream)
    path = "/v1/chat/completions"
    # a short warm-up: connections, pools, caches
    asyncio.run(run_asyncio("127.0.0.1", target.port, path, body, concurrency, min(0.5, duration_s), 10_000,
                            stream))
    metrics0 = scrape_worker_metrics(measured)
    profiler = (start_profiler(measured.proc.pid, duration_s, profile_to, native=profile_native)
                if profile_to else None)
    workers0 = measured.worker_cpu()
    mock0 = upstream.cpu_seconds() if upstream is not None else 0.0
    cpu0, system0 = measured.cpu_and_system_seconds()
    if use_wrk and not stream:
        result: LoadResult = run_wrk("127.0.0.1", target.port, path, body, concurrency, duration_s)
    else:
        result = asyncio.run(run_asyncio("127.0.0.1", target.port, path, body, concurrency, duration_s,
                                         max_requests, stream))
    cpu, system = measured.cpu_and_system_seconds()
    cpu, system = cpu - cpu0, system - system0
    mock_cpu = upstream.cpu_seconds() - mock0 if upstream is not None else None
    split = worker_split(workers0, measured.worker_cpu())
    out = {"scenario": name, "stream": stream, "concurrency": concurrency, **result.summary(),
           "loadavg": os.getloadavg()[0]}   # the machine's 1-minute load: how noisy the figure is
    if profiler is not None:
        profiler.wait(duration_s + 30)
        if profile_to.exists():
            summary = profile_to.with_suffix(".txt")
            summary.write_text(summarize_profile(profile_to))
            out["profile"] = str(summary)
    if getattr(result, "wrk_percentiles_ms", None):
        out["p50_ms"] = result.wrk_percentiles_ms.get("50", out["p50_ms"])
        out["p99_ms"] = result.wrk_percentiles_ms.get("99", out["p99_ms"])
    out["cpu_s"] = round(cpu, 3)
    out["system_cpu_s"] = round(system, 3)
    out["cpu_us_per_request"] = round(cpu / result.requests * 1e6, 1) if result.requests else None
    out["system_us_per_request"] = round(system / result.requests * 1e6, 1) if result.requests else None
    if stream and result.chunks:
        out["cpu_us_per_chunk"] = round(cpu / result.chunks * 1e6, 2)
    if mock_cpu is not None:
        out["mock_cpu_s"] = round(mock_cpu, 3)
    if split["workers"] > 1:
        out["worker_split"] = split
    metrics = _delta(metrics0, scrape_worker_metrics(measured))
    if metrics:
        out["worker_metrics"] = metrics
    return out


def scrape_worker_metrics(service) -> dict[str, float]:
    """The ``fastinfer_worker_*`` series of a fastinfer path's /metrics (empty where it has none)."""
    path = getattr(service, "metrics_path", None)
    if not path:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{service.port}{path}", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    series = {}
    for line in text.splitlines():
        if line.startswith("fastinfer_worker_"):
            name, _, value = line.rpartition(" ")
            try:
                series[name] = float(value)
            except ValueError:
                pass
    return series


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, dict]:
    """Each series after the scenario, and its change over it (for counters: what the scenario did)."""
    return {k: {"after": v, "delta": round(v - before.get(k, 0.0), 3)} for k, v in after.items()}


def scenario_plan(args) -> list[tuple[str, bool, int, float, int]]:
    """(name, stream, concurrency, itl_ms, chunks) in run order."""
    plan = [(f"nonstream c{c}", False, c, 0.0, STREAM_CHUNKS) for c in args.concurrency]
    paces = [("", 0.0)] + ([(" paced", args.paced_itl_ms)] if args.paced_itl_ms > 0 else [])
    for c in args.stream_concurrency:
        for suffix, itl in paces:
            # the same streams at two lengths: the difference is the cost of the extra chunks alone
            plan.append((f"stream c{c}{suffix}", True, c, itl, STREAM_CHUNKS))
            plan.append((f"stream c{c}{suffix} short", True, c, itl, SHORT_CHUNKS))
    return plan


def run_all(args) -> dict:
    workdir = tempfile.mkdtemp(prefix="fastinfer-bench-")
    try:
        return _run_in(workdir, args)
    finally:
        # the paths' configs and logs: with the access log on, ~450 bytes a request, hundreds of MB a run
        shutil.rmtree(workdir, ignore_errors=True)


def _run_in(workdir: str, args) -> dict:
    use_wrk = wrk_available() and not args.no_wrk
    layout = CpuLayout.from_options(args.load_cpus, args.gateway_cpus)
    layout.pin_load_side()
    vllm_router = find_vllm_router(args.vllm_router)
    labels, skipped = wanted_targets(args.targets, vllm_router)
    plan = scenario_plan(args)
    upstream = start_upstream(args.mock, workdir, {(stream, chunks) for _, stream, _, _, chunks in plan}, request_body,
                              STREAM_CHUNKS)
    rows, profiles, memory = [], {}, {}
    try:
        paths, info = start_targets(labels, upstream, workdir, args.workers, layout, vllm_router,
                                    Path(args.baseline_tree).resolve() if args.baseline_tree else None,
                                    tomllib.loads(args.gateway_config),
                                    {label: tomllib.loads(toml) for label, toml in args.variant})
    except BaseException:
        upstream.stop()
        raise
    try:
        memory = {label: {"idle": service.memory_mib()} for label, service in paths}
        for name, stream, c, itl_ms, chunks in plan:
            upstream.configure(stream, chunks, itl_ms)
            for round_no in range(args.rounds):
                # every other round the paths after direct swap places, so a drift of the machine's
                # load falls on all alike
                order = paths if round_no % 2 == 0 else paths[:1] + paths[:0:-1]
                for label, target in order:
                    row = run_scenario(f"{name} {label}", target, target, stream=stream, concurrency=c,
                                       duration_s=args.duration, max_requests=args.max_requests, use_wrk=use_wrk,
                                       upstream=upstream if target is not upstream else None)
                    row["path"] = label
                    rows.append(row)
                    print(f"  {row['scenario']:<30} {row['rps']:>9} req/s  p50 {row['p50_ms']:>8} ms  "
                          f"p99 {row['p99_ms']:>8} ms  cpu/req {row['cpu_us_per_request']} us", flush=True)
        for label, service in paths:
            memory[label]["after"] = service.memory_mib()
        if args.profile:
            profiles = profile_pass(args, plan, paths, upstream, use_wrk)
        rows = merge_rounds(rows)
    finally:
        for _, service in paths[1:]:
            service.stop()
        upstream.stop()
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workers": args.workers, "duration_s": args.duration,
        "rounds": args.rounds,
        "paced_itl_ms": args.paced_itl_ms, "load_tool": "wrk (non-streaming) + asyncio (streaming)" if use_wrk else "asyncio",
        "cpus": os.cpu_count(), "loadavg_at_start": args.loadavg_at_start,
        "loadavg_range": [min(la for r in rows for la in r["loadavg_rounds"]),
                          max(la for r in rows for la in r["loadavg_rounds"])] if rows else None,
        "cpu_layout": layout.describe(),
        "mock": upstream.kind, "targets": [label for label, _ in paths], "skipped": skipped,
        "workers_of": info["workers"], "features": info.get("features", {}), "memory": memory,
        "gateway_config": args.gateway_config,
        # what each fastinfer path wrote to its standard error over the run (the access log, when on)
        "log_bytes": {label: service.log.stat().st_size for label, service in paths
                      if getattr(service, "log", None) and service.log.exists()},
        "rows": rows, "summary": summarize(rows),
        "summaries": {label: summarize(rows, label) for label, _ in paths[1:]},
    }
    if profiles:
        report["profiles"] = profiles
    if args.baseline_tree:
        report["baseline_tree"] = str(Path(args.baseline_tree).resolve())
        report["baseline_summary"] = report["summaries"]["baseline"]
        report["against_baseline"] = against_baseline(report["summary"], report["baseline_summary"])
        if "baseline-full" in report["summaries"]:
            report["against_baseline_full"] = against_baseline(report["summaries"]["gateway-full"],
                                                               report["summaries"]["baseline-full"])
    if args.variant:
        report["variants"] = {label: {"config": toml, "summary": report["summaries"][label],
                                      "against_gateway": against_baseline(report["summaries"][label],
                                                                          report["summary"])}
                              for label, toml in args.variant}
    if "gateway" in report["summaries"] and "gateway-limits" in report["summaries"]:
        report["limits_cost"] = limits_cost(report["summaries"]["gateway"], report["summaries"]["gateway-limits"])
    report["peer_table"] = peer_table.build(report)
    return report


def limits_cost(plain_summary: dict, limited_summary: dict) -> dict:
    """Per scenario: the gateway with a key and every limit on against the bare one, CPU per request."""
    out = {}
    for name, plain in plain_summary.items():
        limited = limited_summary.get(name)
        without, with_ = plain["gateway_cpu_us_per_request"], limited and limited["gateway_cpu_us_per_request"]
        if not without or not with_:
            continue
        out[name] = {"cpu_us_per_request": without, "cpu_us_per_request_with_limits": with_,
                     "added_us_per_request": round(with_ - without, 1), "ratio": _ratio(with_, without)}
    return out


def profile_pass(args, plan, paths, upstream, use_wrk) -> dict[str, str]:
    """py-spy on each fastinfer path in the busiest non-streaming scenario and the first streaming
    one, in a pass of its own after the measured rounds (sampling slows a process: its figures are
    not counted). Returns {"scenario path": summary file}."""
    busiest = f"nonstream c{max(args.concurrency)}"
    first_stream = f"stream c{args.stream_concurrency[0]}" if args.stream_concurrency else None
    profiles = {}
    for name, stream, c, itl_ms, chunks in plan:
        if name not in (busiest, first_stream):
            continue
        upstream.configure(stream, chunks, itl_ms)
        for label, target in paths:
            if not hasattr(target, "metrics_path"):   # fastinfer paths only
                continue
            raw = Path(args.out, f"profile-{name.replace(' ', '-')}-{label}.raw")
            raw.parent.mkdir(parents=True, exist_ok=True)
            row = run_scenario(f"{name} {label}", target, target, stream=stream, concurrency=c,
                               duration_s=args.duration, max_requests=args.max_requests, use_wrk=use_wrk,
                               profile_to=raw, profile_native=args.profile_native)
            if "profile" in row:
                profiles[f"{name} {label}"] = row["profile"]
                print(f"  profiled {name} {label}: {row['profile']}", flush=True)
    return profiles


def merge_rounds(rows: list[dict]) -> list[dict]:
    """One row per scenario from its rounds: counts and CPU summed (so CPU per request is over all
    of them), latencies the median of the rounds'. ``*_rounds`` keep each round's figure: the spread,
    and each round's per-worker CPU split."""
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(r["scenario"], []).append(r)
    merged = []
    for runs in by_name.values():
        row = dict(runs[0])
        for key in ("requests", "errors", "chunks", "cpu_s", "system_cpu_s", "elapsed_s", "mock_cpu_s",
                    "loadgen_cpu_s"):
            if key in row:
                row[key] = round(sum(r[key] for r in runs), 3)
        for key in ("p50_ms", "p99_ms", "ttfc_p50_ms", "ttfc_p99_ms"):
            if key in row:
                row[key] = round(statistics.median(r[key] for r in runs), 3)
        row["rps"] = round(row["requests"] / row["elapsed_s"], 1) if row["elapsed_s"] else 0.0
        row["cpu_us_per_request"] = round(row["cpu_s"] / row["requests"] * 1e6, 1) if row["requests"] else None
        if "system_cpu_s" in row:
            row["system_us_per_request"] = (round(row["system_cpu_s"] / row["requests"] * 1e6, 1)
                                            if row["requests"] else None)
        if row.get("chunks"):
            row["chunks_per_s"] = round(row["chunks"] / row["elapsed_s"], 1)
            row["cpu_us_per_chunk"] = round(row["cpu_s"] / row["chunks"] * 1e6, 2)
        row["rounds"] = len(runs)
        row["cpu_us_per_request_rounds"] = [r["cpu_us_per_request"] for r in runs]
        if "p50_ms" in row:
            row["p50_ms_rounds"] = [r["p50_ms"] for r in runs]
        row["loadavg_rounds"] = [r["loadavg"] for r in runs]
        del row["loadavg"]
        if row.get("chunks"):
            row["cpu_us_per_chunk_rounds"] = [r.get("cpu_us_per_chunk") for r in runs]
        if "worker_split" in row:
            # connections land anew every round: each round's split is its own finding
            row["worker_split_rounds"] = [r.get("worker_split") for r in runs]
            del row["worker_split"]
        merged.append(row)
    return merged


def summarize(rows: list[dict], path: str = "gateway") -> dict:
    """A gateway (``path``: this tree's, or the baseline's) vs direct, per scenario: the ratios
    that hold on a noisy machine."""
    by_name = {r["scenario"]: r for r in rows}
    summary = {}
    for r in rows:
        if r["path"] != path:
            continue
        base = r["scenario"].rsplit(" ", 1)[0]
        d = by_name.get(base + " direct")
        if not d:
            continue
        entry = {
            "gateway_cpu_us_per_request": r["cpu_us_per_request"],
            "upstream_cpu_us_per_request": d["cpu_us_per_request"],
            "cpu_ratio_gateway_to_upstream": _ratio(r["cpu_us_per_request"], d["cpu_us_per_request"]),
            "rps_ratio": _ratio(r["rps"], d["rps"]),
            "p50_added_ms": round(r["p50_ms"] - d["p50_ms"], 3),
            "p99_added_ms": round(r["p99_ms"] - d["p99_ms"], 3),
        }
        if r["stream"]:
            entry["gateway_cpu_us_per_chunk"] = r.get("cpu_us_per_chunk")
            entry["ttfc_added_ms"] = round(r.get("ttfc_p50_ms", 0) - d.get("ttfc_p50_ms", 0), 3)
            short = by_name.get(f"{base} short {path}")
            if short and short["cpu_us_per_request"] and r["cpu_us_per_request"]:
                # CPU per stream = per-stream part + chunks x per-chunk part; two lengths give both
                per_chunk = ((r["cpu_us_per_request"] - short["cpu_us_per_request"])
                             / (STREAM_CHUNKS - SHORT_CHUNKS))
                entry["gateway_cpu_us_per_extra_chunk"] = round(per_chunk, 2)
                entry["gateway_cpu_us_per_stream_setup"] = round(
                    short["cpu_us_per_request"] - SHORT_CHUNKS * per_chunk, 1)
        summary[base] = entry
    return summary


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


#: what the before/after comparison sets side by side (this tree's figure, the baseline's, their ratio)
COMPARED = ("gateway_cpu_us_per_request", "gateway_cpu_us_per_chunk", "gateway_cpu_us_per_extra_chunk",
            "gateway_cpu_us_per_stream_setup", "p99_added_ms")


def against_baseline(summary: dict, baseline: dict) -> dict:
    """This tree against the baseline tree, per scenario: each figure of both, and this / baseline."""
    out = {}
    for name, now in summary.items():
        before = baseline.get(name)
        if not before:
            continue
        entry = {}
        for key in COMPARED:
            if now.get(key) is not None and before.get(key) is not None:
                entry[key] = {"this": now[key], "baseline": before[key], "ratio": _ratio(now[key], before[key])}
        entry["rps_ratio_this_to_baseline"] = _ratio(now["rps_ratio"], before["rps_ratio"])
        out[name] = entry
    return out


def to_markdown(report: dict) -> str:
    lines = [f"# fastinfer bench — {report['when']}", "",
             f"gateway workers: {report['workers']}, scenario duration: {report['duration_s']} s "
             f"x {report['rounds']} round(s), "
             f"stream: {STREAM_CHUNKS} chunks, sent back to back ('stream') or {report['paced_itl_ms']} ms "
             f"apart ('paced'), "
             f"load: {report['load_tool']}, CPUs: {report['cpus']}, mock upstream: {report['mock']}, "
             f"{report['cpu_layout']}; the machine's load average (1 min) at start {report['loadavg_at_start']:.2f}, "
             f"over the scenarios {report['loadavg_range'][0]:.2f}–{report['loadavg_range'][1]:.2f}"
             + (f"; the gateway's config adds `{_one_line(report['gateway_config'])}`"
                if report.get("gateway_config") else ""), "",
             peer_table.to_markdown(report), "## Every scenario", "",
             "| scenario | req/s | p50 ms | p99 ms | TTFC p50 ms | chunks/s | CPU µs/req | of it kernel "
             "| CPU µs/chunk | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['scenario']} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {r.get('ttfc_p50_ms', '')} "
                     f"| {r.get('chunks_per_s', '')} | {r['cpu_us_per_request']} "
                     f"| {r.get('system_us_per_request', '')} | {r.get('cpu_us_per_chunk', '')} | {r['errors']} |")
    lines += ["", "Each path against direct-to-upstream (same run):", "",
              "| scenario | path | path CPU µs/req | upstream CPU µs/req | CPU ratio | req/s ratio | p50 added ms "
              "| p99 added ms | path CPU µs/chunk (all CPU / chunks) | path CPU µs per extra chunk "
              "| path CPU µs per stream set-up |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, summary in report["summaries"].items():
        for name, s in summary.items():
            lines.append(f"| {name} | {label} | {s['gateway_cpu_us_per_request']} | {s['upstream_cpu_us_per_request']} "
                         f"| {s['cpu_ratio_gateway_to_upstream']} | {s['rps_ratio']} | {s['p50_added_ms']} "
                         f"| {s['p99_added_ms']} | {s.get('gateway_cpu_us_per_chunk', '')} "
                         f"| {s.get('gateway_cpu_us_per_extra_chunk', '')} "
                         f"| {s.get('gateway_cpu_us_per_stream_setup', '')} |")
    if "against_baseline" in report:
        lines += ["", f"This tree against the baseline tree `{report['baseline_tree']}` (same run, same mock; "
                  "ratio = this / baseline, below 1 is cheaper):", ""]
        lines += comparison_table(report["against_baseline"], "this", "baseline")
    if "against_baseline_full" in report:
        lines += ["", "With every feature on, this tree against the baseline tree (`gateway-full` / "
                  "`baseline-full`, same run, same mock):", ""]
        lines += comparison_table(report["against_baseline_full"], "this", "baseline")
    for label, variant in report.get("variants", {}).items():
        lines += ["", f"Variant `{label}` against the gateway (same run, same mock; its config adds "
                  f"`{_one_line(variant['config'])}`; ratio = {label} / gateway, above 1 costs more):", ""]
        lines += comparison_table(variant["against_gateway"], label, "gateway")
    if report.get("log_bytes"):
        lines += ["", "Bytes each fastinfer path wrote to its log (standard error) over the run: "
                  + ", ".join(f"{label} {size}" for label, size in report["log_bytes"].items())]
    if "limits_cost" in report:
        lines += ["", "A gateway key with its RPM/TPM, concurrency and budget, and a deployment rate limit, all "
                  "on and none binding (`gateway-limits`), against none (`gateway`); same run, same mock, "
                  "gateway CPU per request:", "",
                  "| scenario | CPU µs/req without | with limits | added µs/req | ratio |", "|---|---:|---:|---:|---:|"]
        for name, c in report["limits_cost"].items():
            lines.append(f"| {name} | {c['cpu_us_per_request']} | {c['cpu_us_per_request_with_limits']} "
                         f"| {c['added_us_per_request']} | {c['ratio']} |")
    return "\n".join(lines) + "\n"


def comparison_table(compared: dict, this: str, baseline: str) -> list[str]:
    """Markdown rows of ``against_baseline``'s figures: ``this`` and ``baseline`` side by side, and their ratio."""
    lines = [f"| scenario | CPU µs/req {this} | {baseline} | ratio | CPU µs/chunk {this} | {baseline} | ratio "
             f"| µs per extra chunk {this} | {baseline} | ratio | p99 added ms {this} | {baseline} |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c in compared.items():
        def cells(key, ratio=True):
            v = c.get(key)
            if v is None:
                return ["", "", ""] if ratio else ["", ""]
            return [str(v["this"]), str(v["baseline"])] + ([str(v["ratio"])] if ratio else [])
        lines.append("| " + " | ".join([name, *cells("gateway_cpu_us_per_request"),
                                         *cells("gateway_cpu_us_per_chunk"),
                                         *cells("gateway_cpu_us_per_extra_chunk"),
                                         *cells("p99_added_ms", ratio=False)]) + " |")
    return lines


def _one_line(toml: str) -> str:
    return " ".join(toml.split())


def parse_variant(text: str) -> tuple[str, str]:
    """``LABEL=TOML`` -> (label, toml), refused (ValueError) when either is unusable."""
    label, sep, toml = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", label) or label in RESERVED_LABELS:
        raise ValueError(f"--variant {text!r}: expected LABEL=TOML, LABEL of letters, digits, '-', '_', '.' "
                         f"and none of {', '.join(RESERVED_LABELS)}")
    _toml(toml, f"--variant {label}")
    return label, toml


def _toml(text: str, option: str = "--gateway-config") -> str:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise argparse.ArgumentTypeError(f"{option}: not TOML: {e}") from None
    return text


def variant_option(text: str) -> tuple[str, str]:
    try:
        return parse_variant(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    if "--routing" in (sys.argv[1:] if argv is None else argv):
        from .routing_load import main as routing_main   # the routing policies' own suite
        return routing_main(argv)
    if any(a == "--soak" or a.startswith("--soak=") for a in (sys.argv[1:] if argv is None else argv)):
        from .soak import main as soak_main   # issue 12's memory soak: its own options
        return soak_main(argv)
    parser = argparse.ArgumentParser(prog="fastinfer bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per scenario (default 5)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound per scenario")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of each gateway: fastinfer and nginx (default 2)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 8, 1],
                        help="connections of the non-streaming scenarios (default 64 8 1)")
    parser.add_argument("--stream-concurrency", type=int, nargs="+", default=[32],
                        help="concurrent streams of the streaming scenarios (default 32)")
    parser.add_argument("--paced-itl-ms", type=float, default=None,
                        help="also run the streams with this delay between upstream chunks, so every "
                             "chunk is its own read and write (0 = skip; needs --mock python; default: 1 "
                             "with the Python mock, else 0)")
    parser.add_argument("--no-wrk", action="store_true", help="use the asyncio client even if wrk is installed")
    parser.add_argument("--profile", action="store_true",
                        help="after the measured rounds, py-spy each fastinfer path's workers during the busiest "
                             "non-streaming and the first streaming scenario (needs py-spy); summaries next "
                             "to the report")
    parser.add_argument("--profile-native", action="store_true",
                        help="with --profile: sample C frames too (uvloop, libc syscalls); slows the gateway "
                             "several-fold while sampled")
    parser.add_argument("--targets", nargs="+", metavar="PATH",
                        help=f"the paths to measure, of {', '.join(ALL_TARGETS)} (direct always runs; default: "
                             "all, each peer when installed)")
    parser.add_argument("--mock", choices=("auto", "nginx", "python"), default="auto",
                        help="the upstream: nginx serving the Python mock's answers (fast enough for any peer), "
                             "or the Python mock-upstream (can pace streams); auto = nginx when installed")
    parser.add_argument("--vllm-router", metavar="PATH",
                        help="the vllm-router executable (default: vllm-router on PATH)")
    parser.add_argument("--load-cpus", metavar="LIST",
                        help="CPUs of the load generator and the mock, e.g. 1 ('' = not pinned; default: the "
                             "last CPU)")
    parser.add_argument("--gateway-cpus", metavar="LIST",
                        help="CPUs of the paths under test, e.g. 0-1 or all ('' = not pinned; default: all)")
    parser.add_argument("--out", default="bench/results", help="directory for the JSON and Markdown reports")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every scenario this many times, the gateways in alternating order, and "
                             "report the sums (default 1)")
    parser.add_argument("--routing", action="store_true",
                        help="instead: the CPU sticky and prefix routing add per request against round_robin "
                             "(bench/routing_load.py; its own options)")
    parser.add_argument("--soak", metavar="SECONDS",
                        help="instead: fastinfer with its features on under load for SECONDS, its RSS sampled "
                             "every 10 s against issue 12's memory bar (bench/soak.py; its own options)")
    parser.add_argument("--baseline-tree", metavar="PATH",
                        help="also run every scenario through a gateway started from this source tree (its "
                             "compiled core built in place), and report this tree against it")
    parser.add_argument("--gateway-config", metavar="TOML", default="", type=_toml,
                        help="settings laid over the gateway path's bare config (not the baseline tree's "
                             "nor gateway-full's): the reference the variants are measured against")
    parser.add_argument("--variant", metavar="LABEL=TOML", action="append", default=[], type=variant_option,
                        help="one more path: a gateway of this tree, its bare config with TOML's settings "
                             "(e.g. 'json-log=logging = { format = \"json\", access_log = true }'), every scenario "
                             "through it too, reported against the gateway path; repeatable")
    args = parser.parse_args(argv)
    labels = [label for label, _ in args.variant]
    if len(set(labels)) != len(labels):
        parser.error(f"--variant: each label once (got {', '.join(labels)})")
    if args.variant and args.targets and "gateway" not in args.targets:
        parser.error("--variant is measured against the gateway path: keep gateway in --targets")
    args.loadavg_at_start = os.getloadavg()[0]
    if args.mock == "auto":
        args.mock = "nginx" if nginx_binary() else "python"
    if args.paced_itl_ms is None:
        args.paced_itl_ms = 1.0 if args.mock == "python" else 0.0
    if args.paced_itl_ms > 0 and args.mock != "python":
        parser.error("--paced-itl-ms needs --mock python (nginx sends a stream at once)")
    return run_and_report(args, "bench", run_all, to_markdown)


def run_and_report(args, name: str, run, markdown) -> int:
    """``run(args)``'s report with its wall time, written to ``--out`` as ``{name}-{time}`` (``markdown``
    renders it); the exit status."""
    t0 = time.monotonic()
    report = run(args)
    report["wall_s"] = round(time.monotonic() - t0, 1)
    path = write_report(args.out, name, report, markdown(report))
    print(f"written: {path} and .md ({report['wall_s']} s)")
    return 0


def write_report(directory: str, name: str, report: dict, markdown: str) -> Path:
    """``{directory}/{name}-{time}.json`` and ``.md``, the Markdown printed too; the JSON's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"{name}-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    path.with_suffix(".md").write_text(markdown)
    print()
    print(markdown)
    return path


if __name__ == "__main__":
    sys.exit(main())
