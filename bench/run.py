"""``python -m fastinfer bench``: the gateway's cost, measured against direct-to-upstream.

In one invocation it starts ``mock-upstream`` and ``fastinfer serve`` in front
of it, then runs the same scenarios (a) against the mock directly and (b)
through the gateway: non-streaming at concurrency 1, 16 and 64; streaming
(64 chunks) at concurrency 16. Besides req/s and latency percentiles it reads
the CPU time of the gateway's processes from /proc — supervisor and workers —
and reports CPU per request and per streamed chunk: the figure that survives
a noisy, shared machine. It writes JSON and Markdown to ``--out``.

``--baseline-tree PATH`` starts a second gateway from another source tree (a
checkout with its compiled core built in place, e.g. ``git worktree add`` of
main) on the same mock, runs every scenario through it too, and reports this
tree against it as ratios: a before/after measured in one run.

``--variant LABEL=TOML`` starts one more gateway of this tree whose config has
``TOML`` in front of the bench's own (e.g. ``logging = { format = "json" }``),
runs every scenario through it too, and reports it against this tree's gateway
(whose own config ``--gateway-config`` sets) as ratios: what a feature costs,
measured in one run.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from .loadgen import LoadResult, run_asyncio, run_wrk, wrk_available

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PORT_RE = re.compile(rb"http://[\d.]+:(\d+)")
STREAM_CHUNKS = 64   # data events per stream the client receives (role + content + finish)
SHORT_CHUNKS = 8     # the short variant: per-stream cost vs per-chunk cost by difference


# ----------------------------------------------------------------- processes

class Service:
    """A ``python -m fastinfer`` child announcing its port on stdout."""

    def __init__(self, args: list[str], cwd: str, tree: Path | None = None, log: Path | None = None):
        # run the same fastinfer this process imported (a checkout or the installed copy), or the
        # one in ``tree`` (a source tree whose compiled core is built in place); its standard error
        # (the gateway's logs, access log included) goes to the file ``log``, as a deployment's would
        import fastinfer
        tree = tree or Path(fastinfer.__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.log = log
        with open(log or os.devnull, "ab") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-m", "fastinfer", *args], cwd=cwd, env=env,
                                         stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = _PORT_RE.search(line)
            if m:
                self.port = int(m.group(1))
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"{args[0]} did not start")

    def pids(self) -> list[int]:
        """This process and its children (the gateway's workers)."""
        pids = [self.proc.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_bytes()
                except OSError:
                    continue
                if int(stat[stat.rindex(b")") + 2:].split()[1]) == self.proc.pid:
                    pids.append(int(entry))
        return pids

    def cpu_seconds(self) -> float:
        """user + system CPU time of this process and its live children."""
        total = 0
        for pid in self.pids():
            try:
                stat = Path(f"/proc/{pid}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2:].split()
            total += int(fields[11]) + int(fields[12])   # utime, stime
        return total / _CLK_TCK

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# ----------------------------------------------------------------- scenarios

def _body(stream: bool) -> bytes:
    return json.dumps({"model": "bench", "stream": stream,
                       "messages": [{"role": "user", "content": "benchmark the gateway please"}]}).encode()


def configure_upstream(upstream: Service, itl_ms: float, chunks: int) -> None:
    """Delay between stream chunks, and chunks per stream (role + content + finish)."""
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{upstream.port}/_mock/config", method="POST",
                                 data=json.dumps({"itl_ms": itl_ms, "tokens": chunks - 2}).encode())
    urllib.request.urlopen(req, timeout=10).read()


def start_profiler(service: Service, duration_s: float, out: Path):
    """py-spy on the service's first worker for the scenario, when py-spy is installed."""
    workers = service.pids()[1:]
    if not workers or shutil.which("py-spy") is None:
        return None
    return subprocess.Popen(["py-spy", "record", "-p", str(workers[0]), "-d", str(max(1, int(duration_s) - 1)),
                             "-r", "500", "-f", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(raw: Path, top: int = 25) -> str:
    """Where the sampled time went: share of samples per function, inclusive and self."""
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{c / total * 100:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    lines += ["", "self:"] + [f"{c / total * 100:5.1f}%  {f}" for f, c in own.most_common(top)]
    return "\n".join(lines) + "\n"


def run_scenario(name: str, target: Service, measured: Service, *, stream: bool, concurrency: int,
                 duration_s: float, max_requests: int, use_wrk: bool, profile_to: Path | None = None) -> dict:
    body = _body(stream)
    path = "/v1/chat/completions"
    # a short warm-up: connections, pools, caches
    asyncio.run(run_asyncio("127.0.0.1", target.port, path, body, concurrency, 0.5, 10_000, stream))
    profiler = start_profiler(measured, duration_s, profile_to) if profile_to else None
    cpu0 = measured.cpu_seconds()
    if use_wrk and not stream:
        result: LoadResult = run_wrk("127.0.0.1", target.port, path, body, concurrency, duration_s)
    else:
        result = asyncio.run(run_asyncio("127.0.0.1", target.port, path, body, concurrency, duration_s,
                                         max_requests, stream))
    cpu = measured.cpu_seconds() - cpu0
    out = {"scenario": name, "stream": stream, "concurrency": concurrency, **result.summary()}
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
    out["cpu_us_per_request"] = round(cpu / result.requests * 1e6, 1) if result.requests else None
    if stream and result.chunks:
        out["cpu_us_per_chunk"] = round(cpu / result.chunks * 1e6, 2)
    return out


def gateway_config(upstream_port: int, variant: str = "") -> str:
    """The bench's gateway config (the defaults but for one deployment on the mock), with ``variant``
    in front of it: top-level keys and tables before the first table header belong to the config itself."""
    return f"""{variant}

[[deployments]]
name = "bench"
provider = "openai_compatible"
model = "mock-model"
max_concurrency = 100000
retry = {{ max_attempts = 1 }}

[[deployments.replicas]]
base_url = "http://127.0.0.1:{upstream_port}/v1"
credential = {{ value = "sk-bench" }}
"""


def parse_variant(text: str) -> tuple[str, str]:
    """``LABEL=TOML`` -> (label, toml), refused (ValueError) when either is unusable."""
    label, sep, toml = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", label) or label in ("direct", "gateway", "baseline"):
        raise ValueError(f"--variant {text!r}: expected LABEL=TOML, LABEL of letters, digits, '-', '_', '.' "
                         "and not direct, gateway or baseline")
    try:
        tomllib.loads(toml)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--variant {label}: not TOML: {e}") from None
    return label, toml


def _toml(text: str) -> str:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise argparse.ArgumentTypeError(f"not TOML: {e}") from None
    return text


def _variant(text: str) -> tuple[str, str]:
    try:
        return parse_variant(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run_all(args) -> dict:
    use_wrk = wrk_available() and not args.no_wrk
    workdir = tempfile.mkdtemp(prefix="fastinfer-bench-")
    upstream = Service(["mock-upstream", "--port", "0", "--tokens", str(STREAM_CHUNKS - 2)], workdir)

    def serve_args(label: str, variant: str = "") -> list[str]:
        config = Path(workdir, f"{label}.toml")
        config.write_text(gateway_config(upstream.port, variant))
        return ["serve", "--config", str(config), "--port", "0", "--workers", str(args.workers)]

    logs = Path(workdir, "logs")
    logs.mkdir()
    gateway = Service(serve_args("gateway", args.gateway_config), workdir, log=logs / "gateway.log")
    paths = [("direct", upstream), ("gateway", gateway)]
    baseline = None
    if args.baseline_tree:
        baseline = Service(serve_args("baseline"), workdir, tree=Path(args.baseline_tree).resolve(),
                           log=logs / "baseline.log")
        paths.insert(1, ("baseline", baseline))
    variants = {}
    try:
        for label, toml in args.variant:
            variants[label] = Service(serve_args(label, toml), workdir, log=logs / f"{label}.log")
            paths.append((label, variants[label]))
    except BaseException:
        for service in [gateway, baseline, *variants.values(), upstream]:
            if service is not None:
                service.stop()
        raise
    rows = []
    try:
        plan = [(f"nonstream c{c}", False, c, 0.0, STREAM_CHUNKS) for c in args.concurrency]
        paces = [("", 0.0)] + ([(" paced", args.paced_itl_ms)] if args.paced_itl_ms > 0 else [])
        for c in args.stream_concurrency:
            for suffix, itl in paces:
                # the same streams at two lengths: the difference is the cost of the extra chunks alone
                plan.append((f"stream c{c}{suffix}", True, c, itl, STREAM_CHUNKS))
                plan.append((f"stream c{c}{suffix} short", True, c, itl, SHORT_CHUNKS))
        # profile one non-streaming scenario under concurrency and the first back-to-back stream one
        busy = [c for c in args.concurrency if c > 1] or args.concurrency
        profiled = {f"nonstream c{busy[0]}", f"stream c{args.stream_concurrency[0]}"}
        for name, stream, c, itl_ms, chunks in plan:
            configure_upstream(upstream, itl_ms, chunks)
            for round_no in range(args.rounds):
                # every other round the gateways swap places, so a drift of the machine's load
                # falls on both alike
                order = paths if round_no % 2 == 0 else paths[:1] + paths[:0:-1]
                for label, target in order:
                    profile_to = None
                    if args.profile and label == "gateway" and name in profiled and round_no == 0:
                        profile_to = Path(args.out, f"profile-{name.replace(' ', '-')}.raw")
                        profile_to.parent.mkdir(parents=True, exist_ok=True)
                    row = run_scenario(f"{name} {label}", target, target, stream=stream, concurrency=c,
                                       duration_s=args.duration, max_requests=args.max_requests, use_wrk=use_wrk,
                                       profile_to=profile_to)
                    row["path"] = label
                    rows.append(row)
                    print(f"  {row['scenario']:<26} {row['rps']:>9} req/s  p50 {row['p50_ms']:>8} ms  "
                          f"p99 {row['p99_ms']:>8} ms  cpu/req {row['cpu_us_per_request']} us", flush=True)
        rows = merge_rounds(rows)
    finally:
        gateway.stop()
        if baseline is not None:
            baseline.stop()
        for service in variants.values():
            service.stop()
        upstream.stop()
    # what each gateway wrote to its standard error over the run (the access log, when it is on)
    log_bytes = {label: service.log.stat().st_size for label, service in paths if getattr(service, "log", None)}
    shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workers": args.workers, "duration_s": args.duration,
        "gateway_config": args.gateway_config,
        "rounds": args.rounds,
        "paced_itl_ms": args.paced_itl_ms, "load_tool": "wrk (non-streaming) + asyncio (streaming)" if use_wrk else "asyncio",
        "cpus": os.cpu_count(), "rows": rows, "summary": summarize(rows),
    }
    if baseline is not None:
        report["baseline_tree"] = str(Path(args.baseline_tree).resolve())
        report["baseline_summary"] = summarize(rows, "baseline")
        report["against_baseline"] = against_baseline(report["summary"], report["baseline_summary"])
    report["log_bytes"] = log_bytes
    if variants:
        report["variants"] = {}
        for label, toml in args.variant:
            summary = summarize(rows, label)
            report["variants"][label] = {"config": toml, "summary": summary,
                                         "against_gateway": against_baseline(summary, report["summary"])}
    return report


def merge_rounds(rows: list[dict]) -> list[dict]:
    """One row per scenario from its rounds: counts and CPU summed (so CPU per request is over all
    of them), latencies the median of the rounds'. ``cpu_us_per_request_rounds`` keeps the spread."""
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(r["scenario"], []).append(r)
    merged = []
    for runs in by_name.values():
        if len(runs) == 1:
            merged.append(runs[0])
            continue
        row = dict(runs[0])
        for key in ("requests", "errors", "chunks", "cpu_s", "elapsed_s"):
            if key in row:
                row[key] = round(sum(r[key] for r in runs), 3)
        for key in ("p50_ms", "p99_ms", "ttfc_p50_ms", "ttfc_p99_ms"):
            if key in row:
                row[key] = round(statistics.median(r[key] for r in runs), 3)
        row["rps"] = round(row["requests"] / row["elapsed_s"], 1) if row["elapsed_s"] else 0.0
        row["cpu_us_per_request"] = round(row["cpu_s"] / row["requests"] * 1e6, 1) if row["requests"] else None
        if row.get("chunks"):
            row["chunks_per_s"] = round(row["chunks"] / row["elapsed_s"], 1)
            row["cpu_us_per_chunk"] = round(row["cpu_s"] / row["chunks"] * 1e6, 2)
        row["rounds"] = len(runs)
        row["cpu_us_per_request_rounds"] = [r["cpu_us_per_request"] for r in runs]
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
             f"load: {report['load_tool']}, CPUs: {report['cpus']}"
             + (f", gateway config adds `{' '.join(report['gateway_config'].split())}`"
                if report.get("gateway_config") else ""), "",
             "| scenario | req/s | p50 ms | p99 ms | TTFC p50 ms | chunks/s | CPU µs/req | CPU µs/chunk | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['scenario']} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | {r.get('ttfc_p50_ms', '')} "
                     f"| {r.get('chunks_per_s', '')} | {r['cpu_us_per_request']} | {r.get('cpu_us_per_chunk', '')} "
                     f"| {r['errors']} |")
    lines += ["", "Gateway against direct-to-upstream (same run):", "",
              "| scenario | gateway CPU µs/req | upstream CPU µs/req | CPU ratio | req/s ratio | p50 added ms "
              "| p99 added ms | gateway CPU µs/chunk (all CPU / chunks) | gateway CPU µs per extra chunk "
              "| gateway CPU µs per stream set-up |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in report["summary"].items():
        lines.append(f"| {name} | {s['gateway_cpu_us_per_request']} | {s['upstream_cpu_us_per_request']} "
                     f"| {s['cpu_ratio_gateway_to_upstream']} | {s['rps_ratio']} | {s['p50_added_ms']} "
                     f"| {s['p99_added_ms']} | {s.get('gateway_cpu_us_per_chunk', '')} "
                     f"| {s.get('gateway_cpu_us_per_extra_chunk', '')} | {s.get('gateway_cpu_us_per_stream_setup', '')} |")
    if "against_baseline" in report:
        lines += ["", f"This tree against the baseline tree `{report['baseline_tree']}` (same run, same mock; "
                  "ratio = this / baseline, below 1 is cheaper):", ""]
        lines += comparison_table(report["against_baseline"], "this", "baseline")
    for label, variant in report.get("variants", {}).items():
        lines += ["", f"Variant `{label}` against the gateway (same run, same mock; its config adds "
                  f"`{' '.join(variant['config'].split())}`; ratio = {label} / gateway, above 1 costs more):", ""]
        lines += comparison_table(variant["against_gateway"], label, "gateway")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastinfer bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per scenario (default 5)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound per scenario")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes (default 1)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--stream-concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--paced-itl-ms", type=float, default=1.0,
                        help="also run the streams with this delay between upstream chunks, so every "
                             "chunk is its own read and write (0 = skip)")
    parser.add_argument("--no-wrk", action="store_true", help="use the asyncio client even if wrk is installed")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy a gateway worker during one non-streaming and one streaming "
                             "scenario (needs py-spy); summaries next to the report")
    parser.add_argument("--out", default="bench/results", help="directory for the JSON and Markdown reports")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every scenario this many times, the gateways in alternating order, and "
                             "report the sums (default 1)")
    parser.add_argument("--gateway-config", metavar="TOML", default="", type=_toml,
                        help="TOML in front of the bench's config for this tree's gateway (not the baseline "
                             "tree's): the reference the variants are measured against")
    parser.add_argument("--variant", metavar="LABEL=TOML", action="append", default=[], type=_variant,
                        help="also run every scenario through a gateway of this tree whose config has TOML in "
                             "front of the bench's own (e.g. 'json-log=logging = { format = \"json\" }'), and "
                             "report it against the plain gateway; repeatable")
    parser.add_argument("--baseline-tree", metavar="PATH",
                        help="also run every scenario through a gateway started from this source tree (its "
                             "compiled core built in place), and report this tree against it")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    report = run_all(args)
    report["wall_s"] = round(time.monotonic() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"bench-{stamp}.json").write_text(json.dumps(report, indent=2))
    markdown = to_markdown(report)
    (out / f"bench-{stamp}.md").write_text(markdown)
    print()
    print(markdown)
    print(f"written: {out / f'bench-{stamp}.json'} and .md ({report['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
