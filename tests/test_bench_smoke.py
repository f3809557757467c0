"""The load suite runs end to end and reports what it promises (tiny durations: not a measurement)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import py_spy_cannot_sample

ROOT = Path(__file__).resolve().parent.parent


def test_bench_writes_json_and_markdown_reports(tmp_path):
    no_profiler = py_spy_cannot_sample()
    out = subprocess.run(
        [sys.executable, "-m", "fastinfer", "bench", "--duration", "0.5", "--concurrency", "1", "4",
         "--stream-concurrency", "2", *([] if no_profiler else ["--profile"]), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (report_path,) = tmp_path.glob("bench-*.json")
    report = json.loads(report_path.read_text())
    # non-streaming load comes from wrk when it is installed (CI installs it), else the asyncio client
    tools = {r["tool"] for r in report["rows"] if not r["stream"]}
    assert tools == ({"wrk"} if shutil.which("wrk") else {"asyncio"})
    names = ("nonstream c1", "nonstream c4", "stream c2", "stream c2 short", "stream c2 paced",
             "stream c2 paced short")
    scenarios = {r["scenario"] for r in report["rows"]}
    assert scenarios == {f"{s} {p}" for s in names for p in ("direct", "gateway")}
    for row in report["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0
        assert row["cpu_us_per_request"] > 0
        if row["stream"]:
            assert row["chunks"] == (8 if "short" in row["scenario"] else 64) * row["requests"]
            assert row["cpu_us_per_chunk"] > 0
    assert set(report["summary"]) == set(names)
    assert "gateway_cpu_us_per_extra_chunk" in report["summary"]["stream c2"]
    assert (report_path.with_suffix(".md")).read_text().startswith("# fastinfer bench")
    if no_profiler:
        pytest.skip(f"the reports were checked; --profile was not: {no_profiler}")
    # --profile: where a gateway worker's time went, in the two scenarios it sampled
    for scenario in ("nonstream-c4", "stream-c2"):
        summary = (tmp_path / f"profile-{scenario}.txt").read_text()
        assert "samples" in summary.splitlines()[0]
        assert "fastinfer/gateway/app.py" in summary


def test_bench_runs_a_baseline_tree_beside_this_one_and_reports_both(tmp_path):
    """--baseline-tree: a second gateway from another source tree (here: this one again) on the same
    mock, every scenario through both, and this tree against the baseline as ratios; --rounds: each
    scenario run again with the gateways' order swapped, the rounds summed."""
    out = subprocess.run(
        [sys.executable, "-m", "fastinfer", "bench", "--duration", "0.3", "--concurrency", "2",
         "--stream-concurrency", "2", "--paced-itl-ms", "0", "--no-wrk", "--baseline-tree", str(ROOT), "--rounds", "2",
         "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (report_path,) = tmp_path.glob("bench-*.json")
    report = json.loads(report_path.read_text())
    names = ("nonstream c2", "stream c2", "stream c2 short")
    assert {r["scenario"] for r in report["rows"]} == {f"{s} {p}" for s in names
                                                       for p in ("direct", "baseline", "gateway")}
    for row in report["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0 and row["rounds"] == 2
        rounds = row["cpu_us_per_request_rounds"]
        assert len(rounds) == 2 and min(rounds) - 0.1 <= row["cpu_us_per_request"] <= max(rounds) + 0.1
    assert report["baseline_tree"] == str(ROOT)
    compared = report["against_baseline"]
    assert set(compared) == set(names)
    per_request = compared["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["this"] == report["summary"]["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["baseline"] == report["baseline_summary"]["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["ratio"] == round(per_request["this"] / per_request["baseline"], 2)
    assert "gateway_cpu_us_per_extra_chunk" in compared["stream c2"]
    assert "This tree against the baseline tree" in report_path.with_suffix(".md").read_text()


def test_the_routing_bench_sets_sticky_and_prefix_against_round_robin(tmp_path):
    """``bench --routing``: every policy served, its CPU per request and what it adds to round robin."""
    out = subprocess.run(
        [sys.executable, "-m", "fastinfer", "bench", "--routing", "--duration", "0.3", "--rounds", "1",
         "--concurrency", "2", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
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
