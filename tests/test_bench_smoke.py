"""The load suite runs end to end and reports what it promises (tiny durations: not a measurement)."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pytest

from conftest import py_spy_cannot_sample, without_ids

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway_configs import (FEATURES, accepted_config, bare_config, feature_states, features_config,  # noqa: E402
                                   to_toml, with_settings)
from bench.proctree import CpuLayout, ProcessTree, descendants, worker_split  # noqa: E402


def _vllm_router() -> str | None:
    """vllm-router when installed: ``$VLLM_ROUTER`` (e.g. /tmp/vr/bin/vllm-router) or on PATH."""
    return os.environ.get("VLLM_ROUTER") or shutil.which("vllm-router")


@contextlib.contextmanager
def _scratch():
    """A run's own TMPDIR, to see what it leaves there. Open to every user, as the system's is: nginx's
    workers (another user) read the mock's answers from the run's work directory under it."""
    scratch = Path(tempfile.mkdtemp(prefix="fi-bench-tmp-"))
    scratch.chmod(0o755)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _bench(tmp_path, *args) -> dict:
    with _scratch() as scratch:
        out = subprocess.run([sys.executable, "-m", "fastinfer", "bench", *args, "--out", str(tmp_path)],
                             cwd=ROOT, capture_output=True, text=True, timeout=400,
                             env={**os.environ, "TMPDIR": str(scratch)})
        assert out.returncode == 0, out.stderr[-3000:]
        # its work directory (the paths' configs and logs: the access log's hundreds of MB) is gone
        assert not list(scratch.glob("fastinfer-bench-*")), list(scratch.iterdir())
    (report_path,) = tmp_path.glob("bench-*.json")
    report = json.loads(report_path.read_text())
    report["_markdown"] = report_path.with_suffix(".md").read_text()
    return report


def test_bench_runs_every_path_side_by_side_and_reports_the_peer_table(tmp_path):
    """The default run: direct, fastinfer bare and with its features on, and each installed peer
    (nginx, vllm-router), all in front of one mock; the peer table, ratios, bars, memory, the
    per-worker split, the load side's cost; and --profile's summaries of the fastinfer paths."""
    no_profiler = py_spy_cannot_sample()
    router = _vllm_router()
    report = _bench(tmp_path, "--duration", "0.5", "--concurrency", "4", "1", "--stream-concurrency", "2",
                    *(["--vllm-router", router] if router else []), *([] if no_profiler else ["--profile"]))
    has_nginx = shutil.which("nginx") is not None or os.access("/usr/sbin/nginx", os.X_OK)
    paths = ["direct", "gateway", "gateway-full"] + (["nginx"] if has_nginx else []) + (
        ["vllm-router"] if router else [])
    assert sorted(report["targets"]) == sorted(paths)
    assert report["mock"] == ("nginx" if has_nginx else "python")
    assert report["workers"] == 2
    # non-streaming load comes from wrk when it is installed (CI installs it), else the asyncio client
    tools = {r["tool"] for r in report["rows"] if not r["stream"]}
    assert tools == ({"wrk"} if shutil.which("wrk") else {"asyncio"})
    names = ["nonstream c4", "nonstream c1", "stream c2", "stream c2 short"]
    if not has_nginx:   # the Python mock paces streams by default
        names += ["stream c2 paced", "stream c2 paced short"]
    assert {r["scenario"] for r in report["rows"]} == {f"{s} {p}" for s in names for p in paths}
    for row in report["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0, row
        assert row["cpu_us_per_request"] > 0 and row["loadgen_cpu_s"] > 0
        # the kernel's part is a part: at most the whole (both summed over the rounds)
        assert 0 <= row["system_cpu_s"] <= row["cpu_s"] and row["system_us_per_request"] <= row["cpu_us_per_request"]
        if row["path"] != "direct":
            assert row["mock_cpu_s"] > 0   # the mock behind the path did the answering
        if row["stream"]:
            assert row["chunks"] == (8 if "short" in row["scenario"] else 64) * row["requests"]
            assert row["cpu_us_per_chunk"] > 0
        if row["path"] in ("gateway", "gateway-full") and not row["stream"]:
            (split,) = row["worker_split_rounds"]
            assert split["workers"] == 2 and abs(sum(split["shares"]) - 1) < 0.01
    assert set(report["summaries"]) == set(paths) - {"direct"}

    table = report["peer_table"]
    assert set(table["figures"]) == set(paths)
    for label in paths:
        f = table["figures"][label]
        assert set(f["cpu_us_per_request"]) == {"4", "1"} or set(f["cpu_us_per_request"]) == {4, 1}
        assert f["rps"] > 0 and f["cpu_us_per_chunk"] > 0
        memory = report["memory"][label]
        for when in ("idle", "after"):
            assert memory[when]["rss_mib"] >= memory[when]["pss_mib"] > 0
        if label != "direct":
            assert f["rps_over_direct"] > 0 and f["p50_added_ms"] is not None
    pairs = {f"{mine} / {peer}" for mine in ("gateway", "gateway-full") for peer in ("nginx", "vllm-router")
             if peer in paths}
    assert set(table["ratios"]) == pairs
    for ratios in table["ratios"].values():
        assert ratios["cpu_us_per_request c4"] > 0 and ratios["cpu_us_per_chunk"] > 0
    bars = {b["bar"]: b for b in table["bars"]}
    assert any("each worker's CPU share" in b for b in bars) and any("RSS" in b for b in bars)
    assert table["load_side"]["mock_headroom"] > 0
    # every feature is reported: on, or why not (this tree's check-config decides)
    assert set(report["features"]) == set(FEATURES)
    assert "Side by side" in report["_markdown"] and "Bars of issue 12" in report["_markdown"]
    if router:
        assert "tokio runtime threads" in report["workers_of"]["vllm-router"]
    if no_profiler:
        pytest.skip(f"the reports were checked; --profile was not: {no_profiler}")
    # --profile: where the fastinfer paths' workers spent their time, in the two scenarios sampled
    for scenario in ("nonstream-c4", "stream-c2"):
        for label in ("gateway", "gateway-full"):
            summary = (tmp_path / f"profile-{scenario}-{label}.txt").read_text()
            assert "samples" in summary.splitlines()[0]
            assert "by area" in summary and "fastinfer/gateway/app.py" in summary


def test_bench_with_the_python_mock_paces_streams_and_runs_a_baseline_tree_beside_this_one(tmp_path):
    """--mock python: the project's own mock, which paces streams; --baseline-tree: a second gateway
    from another source tree (here: this one again) on the same mock, every scenario through both,
    and this tree against the baseline as ratios; --rounds: each scenario run again with the paths'
    order swapped, the rounds summed; gateway-limits: a key and every limit on (none refusing: no
    errors), its CPU per request against the bare gateway's."""
    report = _bench(tmp_path, "--mock", "python", "--targets", "direct", "gateway", "gateway-limits",
                    "--duration", "0.3",
                    "--concurrency", "2", "--stream-concurrency", "2", "--no-wrk", "--baseline-tree", str(ROOT),
                    "--rounds", "2")
    assert report["mock"] == "python" and report["paced_itl_ms"] == 1.0
    names = ("nonstream c2", "stream c2", "stream c2 short", "stream c2 paced", "stream c2 paced short")
    assert {r["scenario"] for r in report["rows"]} == {f"{s} {p}" for s in names
                                                       for p in ("direct", "baseline", "gateway", "gateway-limits")}
    for row in report["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0 and row["rounds"] == 2
        rounds = row["cpu_us_per_request_rounds"]
        assert len(rounds) == 2 and min(rounds) - 0.1 <= row["cpu_us_per_request"] <= max(rounds) + 0.1
        assert len(row["p50_ms_rounds"]) == 2 and min(row["p50_ms_rounds"]) <= row["p50_ms"] <= max(row["p50_ms_rounds"])
    assert report["baseline_tree"] == str(ROOT)
    compared = report["against_baseline"]
    assert set(compared) == set(names)
    per_request = compared["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["this"] == report["summary"]["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["baseline"] == report["baseline_summary"]["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["ratio"] == round(per_request["this"] / per_request["baseline"], 2)
    assert "gateway_cpu_us_per_extra_chunk" in compared["stream c2"]
    assert "This tree against the baseline tree" in report["_markdown"]
    # CPU time is read in clock ticks (10 ms): a 0.3 s paced scenario may read 0, which has no cost to show
    measured = {name for name in names
                if report["summaries"]["gateway"][name]["gateway_cpu_us_per_request"]
                and report["summaries"]["gateway-limits"][name]["gateway_cpu_us_per_request"]}
    assert "nonstream c2" in measured and set(report["limits_cost"]) == measured
    cost = report["limits_cost"]["nonstream c2"]
    assert cost["cpu_us_per_request_with_limits"] == report["summaries"]["gateway-limits"]["nonstream c2"][
        "gateway_cpu_us_per_request"]
    assert cost["added_us_per_request"] == round(cost["cpu_us_per_request_with_limits"] - cost["cpu_us_per_request"], 1)
    assert "none binding (`gateway-limits`)" in report["_markdown"]
    assert set(report["skipped"]) == {"gateway-full", "nginx", "vllm-router", "uvloop-floor"}


def test_bench_runs_config_variants_beside_the_gateway_and_reports_them_against_it(tmp_path):
    """--variant: more paths of this tree, the bare config with the variant's settings, every scenario
    through each, reported against the gateway path, whose own settings --gateway-config gives."""
    report = _bench(tmp_path, "--targets", "direct", "gateway", "--workers", "1", "--duration", "0.3",
                    "--concurrency", "2", "--stream-concurrency", "2", "--no-wrk", "--paced-itl-ms", "0",
                    "--mock", "python",
                    "--gateway-config", "logging = { access_log = true }",
                    "--variant", 'json-log=logging = { format = "json", access_log = true }',
                    "--variant", "quiet=server = { max_body_bytes = 100000 }")
    assert report["targets"] == ["direct", "gateway", "json-log", "quiet"]
    names = {r["scenario"].rsplit(" ", 1)[0] for r in report["rows"]}
    assert names == {"nonstream c2", "stream c2", "stream c2 short"}
    assert {r["scenario"] for r in report["rows"]} == {f"{s} {p}" for s in names for p in report["targets"]}
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in report["rows"])
    assert report["gateway_config"] == "logging = { access_log = true }"
    for label in ("json-log", "quiet"):
        variant = report["variants"][label]
        assert variant["summary"] == report["summaries"][label]
        per_request = variant["against_gateway"]["nonstream c2"]["gateway_cpu_us_per_request"]
        assert per_request["this"] == variant["summary"]["nonstream c2"]["gateway_cpu_us_per_request"]
        assert per_request["baseline"] == report["summary"]["nonstream c2"]["gateway_cpu_us_per_request"]
        assert per_request["ratio"] == round(per_request["this"] / per_request["baseline"], 2)
        assert f"Variant `{label}` against the gateway" in report["_markdown"]
    assert report["variants"]["json-log"]["config"] == 'logging = { format = "json", access_log = true }'
    # each path ran its own config: the gateway (--gateway-config) and json-log wrote an access line
    # per request, quiet (the bare config: no access log, warnings only) next to nothing
    served = {label: sum(r["requests"] for r in report["rows"] if r["path"] == label) for label in report["targets"]}
    sizes = report["log_bytes"]
    assert sizes["gateway"] > 100 * served["gateway"] and sizes["json-log"] > 100 * served["json-log"]
    assert sizes["quiet"] < 10 * served["quiet"]


@pytest.mark.parametrize("variant", ["gateway=logging = {}", "gateway-full=logging = {}", "no-equals-sign",
                                     "x=logging = {", "a b=logging = {}"])
def test_a_bad_variant_is_refused_before_anything_starts(tmp_path, variant):
    out = subprocess.run([sys.executable, "-m", "fastinfer", "bench", "--variant", variant, "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--variant" in out.stderr and "Traceback" not in out.stderr
    assert not list(tmp_path.iterdir())


def test_a_variant_setting_check_config_refuses_stops_the_run_and_says_which(tmp_path):
    """The features config drops what a tree refuses; a variant is what the user asked for: never dropped."""
    out = subprocess.run([sys.executable, "-m", "fastinfer", "bench", "--mock", "python", "--targets", "direct",
                          "gateway", "--variant", "odd=server = { no_such_setting = 1 }", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "--variant odd: fastinfer check-config refuses server.no_such_setting" in out.stderr
    assert not list(tmp_path.glob("bench-*"))


def test_settings_merge_into_the_bare_config_table_by_table():
    bare = bare_config(9)
    merged = with_settings(bare, {"logging": {"format": "json"}, "server": {"max_body_bytes": 5}})
    assert merged["logging"] == {**bare["logging"], "format": "json"}
    assert merged["server"] == {**bare["server"], "max_body_bytes": 5}
    assert merged["deployments"] == bare["deployments"] and bare["logging"].get("format") is None
    replaced = with_settings(bare, {"deployments": [{"name": "other"}]})
    assert replaced["deployments"] == [{"name": "other"}]


def test_the_routing_bench_sets_sticky_and_prefix_against_round_robin(tmp_path):
    """``bench --routing``: every policy served, its CPU per request and what it adds to round robin."""
    with _scratch() as scratch:
        out = subprocess.run(
            [sys.executable, "-m", "fastinfer", "bench", "--routing", "--duration", "0.3", "--rounds", "1",
             "--concurrency", "2", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "TMPDIR": str(scratch)})
        assert out.returncode == 0, out.stderr[-2000:]
        assert not list(scratch.glob("fastinfer-bench-*"))      # its work directory went with it
    (report_path,) = tmp_path.glob("routing-*.json")
    rows = json.loads(report_path.read_text())["rows"]
    assert [r["routing"] for r in rows.values()] == ["round_robin", "sticky", "prefix"]
    for row in rows.values():
        assert row["requests"] > 0 and row["errors"] == 0 and row["cpu_us_per_request"] > 0
    assert rows["rr"]["added_us_vs_round_robin"] == 0 and rows["prefix"]["bar_added_us"] == 40
    assert report_path.with_suffix(".md").read_text().startswith("# fastinfer routing bench")


def test_the_routing_simulation_drives_the_real_policies_over_a_cache_model():
    """A small trace: keeping conversations on the replica that cached them (sticky, prefix) hits the
    cache far more often than spreading them (round robin, least loaded)."""
    from bench.routing_sim import main
    import contextlib
    import io
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        main(["--conversations", "60", "--apps", "60", "--arrivals-per-s", "4"])
    rates = {}
    for line in text.getvalue().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] in ("round_robin", "least_loaded", "sticky", "prefix"):
            rates[cells[0]] = float(cells[2].rstrip("%"))
    assert set(rates) == {"round_robin", "least_loaded", "sticky", "prefix"}
    assert min(rates["sticky"], rates["prefix"]) > max(rates["round_robin"], rates["least_loaded"]) + 20



def test_features_config_keeps_what_check_config_accepts_and_says_why_a_feature_is_off(tmp_path):
    """A setting this tree's check-config refuses is dropped and reported against its feature; the
    rest is written as TOML that reads back to the same config."""
    config = features_config(9)
    config["server"]["no_such_setting"] = 1   # refused by every tree, part of no feature
    config["keys"][0]["rpm"] = 0              # refused by every tree (limits are >= 1): the key's limit
    path = tmp_path / "full.toml"
    kept, refused, warnings = accepted_config(config, path, ROOT)
    assert any(r.startswith("server.no_such_setting: ") for r in refused)
    assert any(r.startswith("keys[0].rpm: ") for r in refused)
    assert "no_such_setting" not in kept["server"] and "rpm" not in kept["keys"][0]
    assert tomllib.loads(path.read_text()) == kept
    assert kept["keys"][0]["key_sha256"] == hashlib.sha256(b"bench").hexdigest()
    states = feature_states(kept, refused, warnings)
    assert set(states) == set(FEATURES)
    assert "refused: keys[0].rpm" in states["key rpm/tpm limit"]
    # a refusal counts against its own feature only
    assert not any("keys[0].rpm" in states[f] or "no_such_setting" in states[f]
                   for f in FEATURES if f != "key rpm/tpm limit")


def test_toml_of_nested_tables_reads_back():
    config = {"server": {"port": 1}, "deployments": [{"name": "a", "retry": {"max_attempts": 1},
                                                      "replicas": [{"base_url": "http://x", "weight": 2}]}],
              "keys": [{"name": "k", "models": ["a", "b*"]}]}
    assert tomllib.loads(to_toml(config)) == config


_BUSY_WORKER = """
import os, time
if os.fork() == 0:          # a process below the worker: part of the tree, not a worker
    time.sleep(30)
time.sleep(0.3)
t = time.process_time()
while time.process_time() - t < 0.4:
    pass
time.sleep(30)
"""
_SUPERVISOR = f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {_BUSY_WORKER!r}])
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
time.sleep(30)
"""


def test_a_process_trees_cpu_memory_and_its_workers_split():
    """A supervisor with a busy and an idle worker: the tree is found to its grandchild, its CPU
    and memory are read from /proc, and the busy worker's share of the workers' CPU is near all."""
    root = subprocess.Popen([sys.executable, "-c", _SUPERVISOR])
    tree = ProcessTree()
    tree.proc = root
    try:
        deadline = time.monotonic() + 20
        while len(descendants(root.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        pids = descendants(root.pid)
        assert len(pids) == 4 and pids[0] == root.pid
        before = tree.worker_cpu()
        assert len(before) == 2    # the two children; the grandchild is no worker
        cpu0 = tree.cpu_seconds()
        while tree.cpu_seconds() - cpu0 < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree.cpu_seconds() - cpu0 >= 0.3
        split = worker_split(before, tree.worker_cpu())
        assert split["workers"] == 2 and split["max_share"] > 0.8
        memory = tree.memory_mib()
        assert memory["rss_mib"] >= memory["pss_mib"] > 0
    finally:
        for pid in reversed(descendants(root.pid)):
            os.kill(pid, 9)
        root.wait()


def test_each_cpu_option_keeps_its_own_default_when_only_the_other_is_given():
    """``--gateway-cpus 0`` alone used to unpin the load side too (both options fell back to 'not
    pinned' once either was given), so a run meant to give the gateways a CPU of their own had the load
    generator and the mock floating over every CPU instead."""
    default = CpuLayout.default()
    assert CpuLayout.from_options(None, None) == default
    gateways_alone = CpuLayout.from_options(None, "0")
    assert gateways_alone.gateway == {0} and gateways_alone.load == default.load
    load_alone = CpuLayout.from_options("0", None)
    assert load_alone.load == {0} and load_alone.gateway == default.gateway
    assert CpuLayout.from_options("", "") == CpuLayout(None, None)       # '' = not pinned, as each help says


def test_worker_split_shares():
    split = worker_split({"a": 1.0, "b": 1.0, "gone": 0.0}, {"a": 4.0, "b": 2.0, "new": 9.0})
    assert split["workers"] == 2 and split["shares"] == [0.75, 0.25]
    assert (split["min_share"], split["max_share"]) == (0.25, 0.75)
    assert worker_split({"a": 1.0}, {"a": 1.0})["shares"] == []


@pytest.mark.parametrize("mode", ["approximate", "strict"])
def test_the_cluster_bench_config_is_one_this_tree_accepts(tmp_path, mode):
    """``python -m bench.cluster`` starts its hosts from this config: a schema change that refuses it
    must fail here, not in the next engineer's measurement."""
    from bench.cluster import config
    path = tmp_path / "host.toml"
    path.write_text(config(6379, "node-0", "bench", mode, 600))
    out = subprocess.run([sys.executable, "-m", "fastinfer", "check-config", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"mode={mode}" in out.stdout


def test_a_baseline_tree_runs_with_every_feature_on_too_when_the_features_path_runs(tmp_path):
    """--baseline-tree with gateway-full: the baseline tree runs bare and with every feature on
    (``baseline-full``, its own features config: it writes the access log), and the report sets
    gateway-full against baseline-full as ratios of their own summaries."""
    report = _bench(tmp_path, "--mock", "python", "--targets", "direct", "gateway", "gateway-full",
                    "--workers", "1", "--duration", "0.3", "--concurrency", "2", "--stream-concurrency", "2",
                    "--no-wrk", "--paced-itl-ms", "0", "--baseline-tree", str(ROOT))
    assert report["targets"] == ["direct", "baseline", "baseline-full", "gateway", "gateway-full"]
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in report["rows"])
    served = {label: sum(r["requests"] for r in report["rows"] if r["path"] == label) for label in report["targets"]}
    sizes = report["log_bytes"]
    assert sizes["baseline-full"] > 100 * served["baseline-full"] and sizes["baseline"] < 10 * served["baseline"]
    compared = report["against_baseline_full"]
    per_request = compared["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["this"] == report["summaries"]["gateway-full"]["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["baseline"] == report["summaries"]["baseline-full"]["nonstream c2"][
        "gateway_cpu_us_per_request"]
    assert per_request["ratio"] == round(per_request["this"] / per_request["baseline"], 2)
    assert "With every feature on, this tree against the baseline tree" in report["_markdown"]
    assert "fastinfer baseline, features on" in report["_markdown"]


def test_the_cpu_latency_and_chunk_bars_show_each_rounds_ratio_beside_the_whole_runs():
    """At 1 connection one worker does all the work and the scheduler may run it beside the load
    generator (its CPU a request moves up to 3x between rounds, its latency with it): the bars say each
    round's ratio, the added p50's each against direct's p50 of the same round."""
    from bench.peer_table import _bars, build
    figures = {"gateway-full": {"cpu_us_per_request_rounds": {64: [60.0, 66.0], 1: [75.0, 225.0]},
                                "p50_added_ms_rounds": [0.1, 0.3], "cpu_us_per_chunk_rounds": [0.8, 0.9],
                                "rss_mib_after": 100.0, "requests_served": 10},
               "vllm-router": {"cpu_us_per_request_rounds": {64: [75.0, 75.0], 1: [150.0, 150.0]},
                               "p50_added_ms_rounds": [0.2, 0.2], "cpu_us_per_chunk_rounds": [1.0, 0.9]}}
    ratios = {"gateway-full / vllm-router": {"cpu_us_per_request c64": 0.84, "cpu_us_per_request c1": 1.0,
                                             "p50_added_ms": 1.0, "cpu_us_per_chunk": 0.9}}
    bars = {b["bar"]: b for b in _bars(figures, ratios, 64, 1)}
    assert bars["CPU per request at 64 connections ≤ 0.8 × vllm-router's"]["note"] == "rounds: 0.80, 0.88"
    at_one = bars["CPU per request at 1 connection(s) ≤ 1.0 × vllm-router's"]
    assert at_one["note"] == "rounds: 0.50, 1.50" and at_one["holds"] is True
    assert bars["added p50 latency at 1 connection(s) ≤ vllm-router's"]["note"] == "rounds: 0.50, 1.50"
    assert bars["CPU per streamed chunk ≤ 0.7 × vllm-router's"]["note"] == "rounds: 0.80, 1.00"
    # the added p50 of each round, from the merged rows' rounds
    rows = [{"scenario": f"nonstream c1 {path}", "path": path, "concurrency": 1, "stream": False, "requests": 1,
             "rps": 1.0, "errors": 0, "cpu_s": 0.1, "elapsed_s": 1.0, "cpu_us_per_request": 1.0,
             "p50_ms": p50[1], "p50_ms_rounds": p50}
            for path, p50 in (("direct", [0.05, 0.06, 0.04]), ("gateway-full", [0.2, 0.25, 0.3]))]
    added = build({"rows": rows, "targets": ["direct", "gateway-full"]})["figures"]["gateway-full"]
    assert added["p50_added_ms_rounds"] == [0.15, 0.19, 0.26] and added["p50_added_ms"] == 0.19
    del figures["vllm-router"], ratios["gateway-full / vllm-router"]
    assert {b["note"] for b in _bars(figures, ratios, 64, 1)[:2]} == {"vllm-router did not run"}


def test_a_figure_made_by_difference_at_or_below_zero_is_no_ratio_and_passes_no_bar():
    """vllm-router's added p50 or cost per extra chunk can come out negative in a noisy run (each a
    difference of two measurements): fastinfer's as a ratio of it would be negative and pass the bar."""
    from bench.peer_table import _ratio, _ratios, build
    assert _ratio(0.06, -0.08) is None and _ratio(0.3, 0.0) is None and _ratio(None, 1.0) is None
    assert _ratio(-0.1, 0.2) == -0.5      # fastinfer's own below 0 against a real figure: it added less
    peer = {"cpu_us_per_request": {1: 100.0}, "p50_added_ms": -0.02, "cpu_us_per_extra_chunk": -0.08}
    mine = {"cpu_us_per_request": {1: 90.0}, "p50_added_ms": 0.2, "cpu_us_per_extra_chunk": 0.06}
    ratios = _ratios(mine, peer, [1])
    assert ratios["cpu_us_per_request c1"] == 0.9
    assert ratios["p50_added_ms"] is None and ratios["cpu_us_per_extra_chunk"] is None
    rows = [{"scenario": f"nonstream c1 {path}", "path": path, "concurrency": 1, "stream": False, "requests": 1,
             "rps": 1.0, "errors": 0, "cpu_s": 0.1, "elapsed_s": 1.0, "cpu_us_per_request": cpu, "p50_ms": p50}
            for path, cpu, p50 in (("direct", 20.0, 0.10), ("gateway-full", 90.0, 0.30), ("vllm-router", 100.0, 0.09))]
    table = build({"rows": rows, "targets": ["direct", "gateway-full", "vllm-router"]})
    p50_bar = next(b for b in table["bars"] if b["bar"].startswith("added p50"))
    assert p50_bar["measured"] is None and p50_bar["holds"] is None      # n/a, not "yes"


def test_the_uvloop_floor_relays_the_mocks_answers_untouched_and_runs_as_a_peer(tmp_path):
    """``uvloop-floor`` (opt-in): bytes through both ways, so a client gets exactly what the mock
    sends, whole answers and streams alike; in a run it is a column and a peer fastinfer is a ratio of."""
    from bench.run import request_body
    from bench.services import start_relay_floor
    from bench.upstream import PythonMock
    mock = PythonMock(str(tmp_path), chunks=8)
    try:
        floor = start_relay_floor(tmp_path, mock.port, mock.health_path, 2)
        try:
            for stream in (False, True):
                mock.configure(stream, 8, 0.0)
                direct, relayed = (_answer(port, request_body(stream)) for port in (mock.port, floor.port))
                assert _without_ids(relayed) == _without_ids(direct)
                assert relayed[2].count(b"data: {") == (8 if stream else 0)
            assert len(floor.worker_cpu()) == 2       # its workers, for the split
        finally:
            floor.stop()
    finally:
        mock.stop()
    report = _bench(tmp_path / "run", "--mock", "python", "--targets", "direct", "gateway", "uvloop-floor",
                    "--workers", "1", "--duration", "0.3", "--concurrency", "2", "--stream-concurrency", "2",
                    "--no-wrk", "--paced-itl-ms", "0")
    assert report["targets"] == ["direct", "gateway", "uvloop-floor"]
    for row in report["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0
    assert "gateway / uvloop-floor" in report["peer_table"]["ratios"]
    assert "| uvloop floor |" in report["_markdown"] and "fastinfer ÷ uvloop-floor" in report["_markdown"]


def _answer(port: int, body: bytes) -> tuple[int, list, bytes]:
    """One chat request's answer on a new connection: status, header fields (but Date), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() != "date"], resp.read()
    finally:
        conn.close()


def _without_ids(answer: tuple[int, list, bytes]) -> tuple[int, list, bytes]:
    status, fields, body = answer
    return status, fields, without_ids(body)


@pytest.mark.parametrize("text, ms", [("206.00us", 0.206), ("1.35ms", 1.35), ("2.01s", 2010.0), ("999.99us", 1.0)])
def test_a_wrk_latency_reads_as_ms_to_the_microsecond(text, ms):
    # wrk's "206.00us" times 1e-3 is 0.20600000000000002 in floats: printed so in the progress lines
    from bench.loadgen import _wrk_ms
    assert repr(_wrk_ms(text)) == repr(ms)
