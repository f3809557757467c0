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


SMALL_SCENARIOS = ("nonstream c2", "stream c2", "stream c2 short")


def small_bench(tmp_path, *args: str) -> tuple[dict, Path]:
    """The bench with tiny scenarios (``SMALL_SCENARIOS``, 0.3 s each) and ``args``: its report and where it is."""
    out = subprocess.run(
        [sys.executable, "-m", "fastinfer", "bench", "--duration", "0.3", "--concurrency", "2",
         "--stream-concurrency", "2", "--paced-itl-ms", "0", "--no-wrk", "--out", str(tmp_path), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (report_path,) = tmp_path.glob("bench-*.json")
    return json.loads(report_path.read_text()), report_path


def test_bench_runs_a_baseline_tree_beside_this_one_and_reports_both(tmp_path):
    """--baseline-tree: a second gateway from another source tree (here: this one again) on the same
    mock, every scenario through both, and this tree against the baseline as ratios; --rounds: each
    scenario run again with the gateways' order swapped, the rounds summed."""
    report, report_path = small_bench(tmp_path, "--baseline-tree", str(ROOT), "--rounds", "2")
    assert {r["scenario"] for r in report["rows"]} == {f"{s} {p}" for s in SMALL_SCENARIOS
                                                       for p in ("direct", "baseline", "gateway")}
    for row in report["rows"]:
        assert row["requests"] > 0 and row["errors"] == 0 and row["rounds"] == 2
        rounds = row["cpu_us_per_request_rounds"]
        assert len(rounds) == 2 and min(rounds) - 0.1 <= row["cpu_us_per_request"] <= max(rounds) + 0.1
    assert report["baseline_tree"] == str(ROOT)
    compared = report["against_baseline"]
    assert set(compared) == set(SMALL_SCENARIOS)
    per_request = compared["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["this"] == report["summary"]["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["baseline"] == report["baseline_summary"]["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["ratio"] == round(per_request["this"] / per_request["baseline"], 2)
    assert "gateway_cpu_us_per_extra_chunk" in compared["stream c2"]
    assert "This tree against the baseline tree" in report_path.with_suffix(".md").read_text()


def test_bench_runs_config_variants_beside_the_gateway_and_reports_them_against_it(tmp_path):
    """--variant: a gateway of this tree with more config (here the JSON access log) on the same mock, every
    scenario through it too, reported against the gateway (here with the access log off: --gateway-config)."""
    report, report_path = small_bench(tmp_path, "--gateway-config", "logging = { access_log = false }",
                                      "--variant", 'json-log=logging = { format = "json", access_log = true }')
    assert {r["scenario"] for r in report["rows"]} == {f"{s} {p}" for s in SMALL_SCENARIOS
                                                       for p in ("direct", "gateway", "json-log")}
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in report["rows"])
    variant = report["variants"]["json-log"]
    assert variant["config"] == 'logging = { format = "json", access_log = true }'
    per_request = variant["against_gateway"]["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["this"] == variant["summary"]["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["baseline"] == report["summary"]["nonstream c2"]["gateway_cpu_us_per_request"]
    assert per_request["ratio"] == round(per_request["this"] / per_request["baseline"], 2)
    # each gateway ran its own config: only the variant wrote an access line per request
    served = sum(r["requests"] for r in report["rows"] if r["path"] == "json-log")
    assert report["log_bytes"]["json-log"] > 200 * served > report["log_bytes"]["gateway"]
    assert "Variant `json-log` against the gateway" in report_path.with_suffix(".md").read_text()


@pytest.mark.parametrize("variant", ["gateway=logging = {}", "no-equals-sign", "x=logging = {"])
def test_a_bad_variant_is_refused_before_anything_starts(tmp_path, variant):
    out = subprocess.run([sys.executable, "-m", "fastinfer", "bench", "--variant", variant, "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--variant" in out.stderr and "Traceback" not in out.stderr
    assert not list(tmp_path.iterdir())
