"""The headline of a bench run: every path side by side, fastinfer as ratios to each peer, the bars.

Owns: turning a run's merged rows, memory readings and feature states into the table of issue 12
(CPU per request at every concurrency, req/s at the highest ÷ direct, added p50 latency at the
lowest, CPU per streamed chunk, RSS and PSS idle → after, the workers' CPU split), the ratio table,
the bars, and the load side's own cost (so a run shows the mock was not what limited it).
Must not touch: measuring (``run.py``), the paths (``targets.py``).

Definitions (all from one run, the same mock behind every path):
- CPU-µs per request: user + system CPU of the path's whole process tree (from /proc) over the
  scenario, ÷ requests completed; for ``direct`` it is the mock's own.
- req/s ÷ direct: the path's req/s over the mock's req/s measured directly at the same concurrency.
- added p50 latency: the path's p50 minus direct's p50, at the lowest concurrency.
- CPU-µs per streamed chunk: all the path's CPU in the streaming scenario ÷ data chunks received
  (stream set-up included); "per extra chunk" separates the two by the 64- and 8-chunk variants.
- RSS / PSS: summed over the tree when it is idle (started, no request yet) and after the measured
  rounds. RSS counts the workers' shared, forked pages once per worker; PSS shares them out. The
  issue's bar is on RSS (what its table reported); PSS is what the tree really holds.
- worker split: each worker's share of the workers' CPU in one round (connections land anew each
  round); a share near 100 % means one worker did the work.
"""
from __future__ import annotations

COLUMNS = (("direct", "direct (mock)"), ("nginx", "nginx"), ("vllm-router", "vllm-router"),
           ("uvloop-floor", "uvloop floor"), ("gateway", "fastinfer"), ("gateway-full", "fastinfer, features on"), ("baseline", "fastinfer baseline"),
           ("baseline-full", "fastinfer baseline, features on"))
FASTINFER = ("gateway", "gateway-full")
PEERS = ("nginx", "vllm-router", "uvloop-floor")
SHARE_BAR = (0.35, 0.65)
RSS_BAR_MIB = 110


def build(report: dict) -> dict:
    """Figures per path, fastinfer's ratios to each peer, the bars, the load side's cost."""
    rows = report["rows"]
    by = {r["scenario"]: r for r in rows}
    nonstream = sorted({r["concurrency"] for r in rows if not r["stream"]}, reverse=True)
    streams = [r["concurrency"] for r in rows if r["stream"]]
    sat, low = (nonstream[0], nonstream[-1]) if nonstream else (None, None)
    stream_c = streams[0] if streams else None
    labels = [label for label, _ in COLUMNS if label in report["targets"]]
    scenarios = {"saturation": f"nonstream c{sat}", "low": f"nonstream c{low}", "stream": f"stream c{stream_c}",
                 "concurrencies": nonstream, "stream_concurrency": stream_c}
    figures = {label: _figures(label, by, scenarios, report) for label in labels}
    ratios = {}
    for mine in FASTINFER:
        for peer in PEERS:
            if mine in figures and peer in figures:
                ratios[f"{mine} / {peer}"] = _ratios(figures[mine], figures[peer], nonstream)
    return {"scenarios": scenarios, "figures": figures, "ratios": ratios, "bars": _bars(figures, ratios, sat, low),
            "load_side": _load_side(figures, by, scenarios)}


def _figures(label: str, by: dict, sc: dict, report: dict) -> dict:
    direct_sat, direct_low = by.get(f"{sc['saturation']} direct"), by.get(f"{sc['low']} direct")
    sat, low, stream = (by.get(f"{sc[k]} {label}") for k in ("saturation", "low", "stream"))
    short = by.get(f"{sc['stream']} short {label}")
    f: dict = {"cpu_us_per_request": {}, "cpu_us_per_request_rounds": {}}
    for c in sc["concurrencies"]:
        row = by.get(f"nonstream c{c} {label}")
        if row:
            f["cpu_us_per_request"][c] = row["cpu_us_per_request"]
            f["cpu_us_per_request_rounds"][c] = row.get("cpu_us_per_request_rounds")
    if sat:
        f["rps"] = sat["rps"]
        f["rps_over_direct"] = _ratio(sat["rps"], direct_sat["rps"]) if direct_sat else None
        f["worker_split"] = _shares(sat)
        f["mock_cpu_share"] = _share_of_cpu(sat["cpu_s"] if label == "direct" else sat.get("mock_cpu_s"), sat)
        f["loadgen_cpu_share"] = _share_of_cpu(sat.get("loadgen_cpu_s"), sat)
        f["errors"] = sat["errors"]
    if low and direct_low and label != "direct":
        f["p50_added_ms"] = round(low["p50_ms"] - direct_low["p50_ms"], 3)
        # each round's against direct's in the same round (the paths run in turn, direct first)
        f["p50_added_ms_rounds"] = [round(mine - direct, 3) for mine, direct in
                                    zip(low.get("p50_ms_rounds") or (), direct_low.get("p50_ms_rounds") or ())]
    f["p50_ms_low"] = low["p50_ms"] if low else None
    if stream:
        f["cpu_us_per_chunk"] = stream.get("cpu_us_per_chunk")
        f["cpu_us_per_chunk_rounds"] = stream.get("cpu_us_per_chunk_rounds")
        f["stream_worker_split"] = _shares(stream)
        if short and short.get("cpu_us_per_request") and stream.get("cpu_us_per_request"):
            extra = stream["chunks"] / stream["requests"] - short["chunks"] / short["requests"]
            if extra > 0:
                f["cpu_us_per_extra_chunk"] = round(
                    (stream["cpu_us_per_request"] - short["cpu_us_per_request"]) / extra, 2)
    memory = report.get("memory", {}).get(label, {})
    for when in ("idle", "after"):
        for kind in ("rss_mib", "pss_mib"):
            f[f"{kind}_{when}"] = memory.get(when, {}).get(kind)
    f["requests_served"] = sum(r["requests"] for r in by.values() if r["path"] == label)
    f["workers"] = report.get("workers_of", {}).get(label, "")
    metrics = (sat or {}).get("worker_metrics")
    if metrics:
        f["worker_metrics"] = metrics
    return f


def _shares(row: dict) -> list[list[float]]:
    """Per round: the workers' shares of their CPU, busiest first."""
    rounds = row.get("worker_split_rounds") or ([row["worker_split"]] if row.get("worker_split") else [])
    return [split["shares"] for split in rounds if split and split.get("shares")]


def _share_of_cpu(cpu_s, row) -> float | None:
    """CPU seconds over the scenario's wall time: the fraction of one CPU used."""
    return round(cpu_s / row["elapsed_s"], 2) if cpu_s is not None and row.get("elapsed_s") else None


def _ratio(a, b):
    """``a`` as a ratio of ``b``; None when ``b`` is missing or not above 0. A figure made by difference
    (an added p50, a cost per extra chunk) can come out at or below 0 in a noisy run: a ratio to it
    would be negative or infinite, and a negative one would pass any "at most" bar."""
    return round(a / b, 2) if a is not None and b is not None and b > 0 else None


def _ratios(mine: dict, peer: dict, concurrencies: list[int]) -> dict:
    out = {f"cpu_us_per_request c{c}": _ratio(mine["cpu_us_per_request"].get(c), peer["cpu_us_per_request"].get(c))
           for c in concurrencies}
    for key in ("rps", "p50_added_ms", "cpu_us_per_chunk", "cpu_us_per_extra_chunk", "rss_mib_after", "pss_mib_after"):
        out[key] = _ratio(mine.get(key), peer.get(key))
    return out


def _bars(figures: dict, ratios: dict, sat, low) -> list[dict]:
    """Issue 12's bars, for fastinfer with its features on: against vllm-router where it ran."""
    full = figures.get("gateway-full")
    if full is None:
        return []
    vs = ratios.get("gateway-full / vllm-router")
    bars = []

    def against(name, key, limit, higher_is_better=False, note=""):
        value = vs.get(key) if vs else None
        ok = None if value is None else (value >= limit if higher_is_better else value <= limit)
        bars.append({"bar": name, "measured": value, "holds": ok,
                     "note": (note if vs else "vllm-router did not run")})

    peer = figures.get("vllm-router") or {}

    def per_round(key, c=None):
        """The ratio round by round: at 1 connection one worker does all the work, and whether the
        scheduler runs it beside the load generator moves its CPU up to 3x and its latency with it."""
        mine, theirs = full.get(key), peer.get(key)
        if c is not None:       # kept per concurrency
            mine, theirs = (mine or {}).get(c), (theirs or {}).get(c)
        each = [_ratio(a, b) for a, b in zip(mine or (), theirs or ())]
        return "rounds: " + ", ".join(_num(r) for r in each) if len(each) > 1 else ""

    against(f"CPU per request at {sat} connections ≤ 0.8 × vllm-router's", f"cpu_us_per_request c{sat}", 0.8,
            note=per_round("cpu_us_per_request_rounds", sat))
    against(f"CPU per request at {low} connection(s) ≤ 1.0 × vllm-router's", f"cpu_us_per_request c{low}", 1.0,
            note=per_round("cpu_us_per_request_rounds", low))
    against(f"req/s at {sat} connections ≥ 1.2 × vllm-router's", "rps", 1.2, higher_is_better=True)
    against(f"added p50 latency at {low} connection(s) ≤ vllm-router's", "p50_added_ms", 1.0,
            note=per_round("p50_added_ms_rounds"))
    against("CPU per streamed chunk ≤ 0.7 × vllm-router's", "cpu_us_per_chunk", 0.7,
            note=per_round("cpu_us_per_chunk_rounds"))
    for label in FASTINFER:
        f = figures.get(label)
        if f and f.get("worker_split"):
            worst = max(max(s) for s in f["worker_split"])
            least = min(min(s) for s in f["worker_split"])
            bars.append({"bar": f"{label}: each worker's CPU share within 35–65 % at {sat} connections (every round)",
                         "measured": f"{least * 100:.0f}–{worst * 100:.0f} %",
                         "holds": SHARE_BAR[0] <= least and worst <= SHARE_BAR[1], "note": ""})
    rss = full.get("rss_mib_after")
    bars.append({"bar": f"RSS of the process tree ≤ {RSS_BAR_MIB} MiB (issue: after 1 M requests, flat over a "
                        f"10-minute soak)", "measured": rss, "holds": None if rss is None else rss <= RSS_BAR_MIB,
                 "note": f"after {full['requests_served']} measured requests; the soak is `bench --soak 600`"})
    return bars


def _load_side(figures: dict, by: dict, sc: dict) -> dict:
    """What the mock and the load generator used while each path ran at saturation, and the
    mock's headroom: its req/s straight from the load generator over the fastest path's."""
    out = {label: {"mock_cpu_share": f.get("mock_cpu_share"), "loadgen_cpu_share": f.get("loadgen_cpu_share")}
           for label, f in figures.items()}
    direct = figures.get("direct", {}).get("rps")
    fastest = max((f.get("rps") or 0 for label, f in figures.items() if label != "direct"), default=0)
    out["mock_headroom"] = _ratio(direct, fastest) if fastest else None
    return out


# ---------------------------------------------------------------------- Markdown

def to_markdown(report: dict) -> str:
    table = report.get("peer_table")
    if not table or not table["figures"]:
        return ""
    sc, figures = table["scenarios"], table["figures"]
    labels = [label for label, _ in COLUMNS if label in figures]
    names = dict(COLUMNS)
    lines = ["## Side by side (one run, the same mock behind every path)", "",
             "| | " + " | ".join(names[label] for label in labels) + " |",
             "|---|" + "---:|" * len(labels)]

    def row(title, cell):
        lines.append(f"| {title} | " + " | ".join(cell(figures[label]) for label in labels) + " |")

    concurrencies = sc["concurrencies"]
    row(f"CPU-µs per request, {' / '.join(map(str, concurrencies))} connections",
        lambda f: " / ".join(_num(f["cpu_us_per_request"].get(c), 1) for c in concurrencies))
    row(f"req/s at {sc['concurrencies'][0] if concurrencies else '?'} connections (÷ direct)",
        lambda f: f"{_num(f.get('rps'), 0)} ({_num(f.get('rps_over_direct'))})")
    row(f"added p50 latency, {concurrencies[-1] if concurrencies else '?'} connection(s), ms",
        lambda f: _num(f.get("p50_added_ms"), 3))
    row(f"CPU-µs per streamed chunk, {sc['stream_concurrency']} streams (rounds' range)",
        lambda f: f"{_num(f.get('cpu_us_per_chunk'))} {_range(f.get('cpu_us_per_chunk_rounds'))}".strip())
    row("CPU-µs per extra chunk (64- vs 8-chunk streams)", lambda f: _num(f.get("cpu_us_per_extra_chunk")))
    row("RSS of the process tree, idle → after, MiB",
        lambda f: f"{_num(f.get('rss_mib_idle'), 0)} → {_num(f.get('rss_mib_after'), 0)}")
    row("PSS of the process tree, idle → after, MiB",
        lambda f: f"{_num(f.get('pss_mib_idle'), 0)} → {_num(f.get('pss_mib_after'), 0)}")
    row(f"workers' CPU split at {concurrencies[0] if concurrencies else '?'} connections, per round",
        lambda f: _splits(f.get("worker_split")))
    row(f"workers' CPU split, {sc['stream_concurrency']} streams, per round",
        lambda f: _splits(f.get("stream_worker_split")))
    row("workers", lambda f: f.get("workers") or "")
    lines.append("")
    lines.append("CPU is user + system time of the path's whole process tree (/proc); for direct, the mock's. "
                 "The memory bar uses RSS (as the issue's table); PSS counts shared pages once.")

    if table["ratios"]:
        keys = [f"cpu_us_per_request c{c}" for c in concurrencies] + [
            "rps", "p50_added_ms", "cpu_us_per_chunk", "cpu_us_per_extra_chunk", "rss_mib_after", "pss_mib_after"]
        titles = {f"cpu_us_per_request c{c}": f"CPU per request, {c} connections" for c in concurrencies}
        titles.update({"rps": f"req/s at {concurrencies[0]} connections (above 1: fastinfer faster)",
                       "p50_added_ms": "added p50 latency", "cpu_us_per_chunk": "CPU per streamed chunk",
                       "cpu_us_per_extra_chunk": "CPU per extra chunk", "rss_mib_after": "RSS after",
                       "pss_mib_after": "PSS after"})
        pairs = list(table["ratios"])
        lines += ["", "## fastinfer as a ratio of each peer (below 1: fastinfer cheaper)", "",
                  "| | " + " | ".join(_pair_title(p) for p in pairs) + " |", "|---|" + "---:|" * len(pairs)]
        for key in keys:
            lines.append(f"| {titles[key]} | " + " | ".join(_num(table['ratios'][p].get(key)) for p in pairs) + " |")

    if table["bars"]:
        lines += ["", *bars_markdown(table["bars"])]

    features = report.get("features")
    if features:
        lines += ["", "Features of `gateway-full` (fastinfer, features on), as this tree's `check-config` took them:", ""]
        lines += [f"- {name}: {state}" for name, state in features.items()]
    if report.get("skipped"):
        lines += ["", "Not run: " + ", ".join(f"{k} ({v})" for k, v in report["skipped"].items())]

    load = table["load_side"]
    lines += ["", f"Load side ({report.get('cpu_layout', '')}): fraction of one CPU used at "
              f"{concurrencies[0] if concurrencies else '?'} connections by the mock / the load generator, per path: "
              + ", ".join(f"{names.get(k, k)} {_num(v['mock_cpu_share'])} / {_num(v['loadgen_cpu_share'])}"
                          for k, v in load.items() if isinstance(v, dict))
              + f". Mock headroom (direct req/s ÷ the fastest path's): {_num(load.get('mock_headroom'))}."]
    for label in FASTINFER:
        metrics = figures.get(label, {}).get("worker_metrics")
        if metrics:
            lines += ["", f"`fastinfer_worker_*` of {names[label]} at saturation (after, change over the scenario):", ""]
            lines += [f"- `{k}` {v['after']} ({v['delta']:+})" for k, v in metrics.items()]
    return "\n".join(lines) + "\n\n"


def _pair_title(pair: str) -> str:
    mine, peer = pair.split(" / ")
    return f"{dict(COLUMNS)[mine]} ÷ {peer}"


def bars_markdown(bars: list[dict], title: str = "fastinfer with its features on") -> list[str]:
    """The "Bars of issue 12" section: each bar (``{bar, measured, holds, note}``), its figure and
    whether it holds (yes, **no**, or n/a when it could not be measured)."""
    lines = [f"## Bars of issue 12 ({title})", "", "| bar | measured | holds |", "|---|---:|---|"]
    for bar in bars:
        holds = {True: "yes", False: "**no**", None: "n/a"}[bar["holds"]]
        note = f" ({bar['note']})" if bar["note"] else ""
        lines.append(f"| {bar['bar']} | {_num(bar['measured'])} | {holds}{note} |")
    return lines


def _num(v, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}" if digits else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _range(values) -> str:
    values = [v for v in values or () if v is not None]
    return f"({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else ""


def _splits(rounds) -> str:
    if not rounds:
        return ""
    return ", ".join("/".join(f"{s * 100:.0f}" for s in shares) for shares in rounds) + " %"
