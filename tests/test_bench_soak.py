"""``bench --soak``: issue 12's memory soak runs end to end and judges its bars from what it sampled
(a few seconds: not a measurement)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.proctree import ProcessTree, descendants  # noqa: E402
from bench.soak import FLAT_BAR, verdict  # noqa: E402


def _serve_root(bench_pid: int) -> int | None:
    """The ``fastinfer serve`` supervisor below the bench process, once it is up."""
    for pid in descendants(bench_pid)[1:]:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and b"fastinfer" in argv:
            return pid
    return None


def test_the_soak_samples_the_gateways_memory_under_load_and_judges_the_bars(tmp_path):
    """A 4 s soak in 1 s slices, every other one streamed: the samples' request counts grow, their RSS is
    of the order of the tree's RSS read live (here, from /proc, while the soak ran) and the verdict
    follows from the samples."""
    bench = subprocess.Popen([sys.executable, "-m", "fastinfer", "bench", "--soak", "4", "--soak-interval", "1",
                              "--soak-stream-every", "2", "--soak-requests", "10", "--out", str(tmp_path)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    live = []   # the gateway tree's RSS read by this test while the soak runs, MiB
    try:
        deadline = time.monotonic() + 120
        while bench.poll() is None and time.monotonic() < deadline:
            root = _serve_root(bench.pid)
            if root is not None:
                tree = ProcessTree()
                tree.proc = SimpleNamespace(pid=root)
                if len(tree.pids()) == 3:    # the supervisor and its 2 workers
                    live.append(tree.memory_mib()["rss_mib"])
            time.sleep(0.2)
        stdout, stderr = bench.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 0, stderr[-3000:]
    (report_path,) = tmp_path.glob("soak-*.json")
    report = json.loads(report_path.read_text())
    markdown = report_path.with_suffix(".md").read_text()

    samples = report["samples"]
    assert samples[0]["elapsed_s"] == 0 and samples[0]["requests"] == 0   # before any load
    loaded = samples[1:]
    assert len(loaded) >= 2   # 1 s slices and a sample after each: 3 on an idle machine
    assert {s["streams"] for s in loaded} == {True, False}
    counts = [s["requests"] for s in samples]
    assert counts == sorted(counts) and counts[-1] > counts[1] and counts[-1] == report["requests"]
    assert [s["elapsed_s"] for s in samples] == sorted(s["elapsed_s"] for s in samples)
    assert report["errors"] == 0 and all(s["processes"] == 3 for s in samples)
    assert all(s["rss_mib"] >= s["pss_mib"] > 0 for s in samples)
    # each process's RSS, the supervisor first: three of them, summing to the tree's
    assert all(len(s["rss_each_mib"]) == 3 and abs(sum(s["rss_each_mib"]) - s["rss_mib"]) <= 0.2 for s in samples)
    assert loaded[-1]["cpu_s"] > 0 and report["cpu_us_per_request"] > 0
    # the report's RSS is the tree's: of the order of what this test read from /proc
    assert live, "never saw the gateway's tree while the soak ran"
    assert max(live) / 2 <= report["rss"]["max"] <= max(live) * 2

    # the verdict is the samples' (warm-up: the first 10 % of the soak)
    assert report["warmup_s"] == 0.4
    settled = [s["rss_mib"] for s in loaded if s["elapsed_s"] >= 0.4]
    assert report["rss"]["max"] == max(s["rss_mib"] for s in samples)
    spread = (max(settled) - min(settled)) / min(settled)
    assert abs(report["rss"]["spread"] - spread) < 1e-3
    assert [b["holds"] for b in report["bars"]] == [
        report["rss"]["max"] <= 110, report["rss"]["spread"] <= FLAT_BAR and not report["processes_changed"], True]
    assert report["holds"] == all(b["holds"] for b in report["bars"])
    assert "## Bars of issue 12 (the soak" in markdown and "## Samples" in markdown
    assert ("memory bar holds" if report["holds"] else "memory bar does NOT hold") in markdown
    assert "Bars of issue 12" in stdout


def _samples(*rss, elapsed=None, requests=1000):
    return [{"elapsed_s": float(i) if elapsed is None else elapsed[i], "requests": i * requests, "errors": 0,
             "rss_mib": r, "pss_mib": r / 2, "cpu_s": float(i)} for i, r in enumerate(rss)]


def test_flatness_is_judged_after_the_warm_up_and_the_maximum_over_every_sample():
    # growth during the warm-up (the first 2 s) does not count against flatness; the idle sample never does
    out = verdict(_samples(50, 90, 100, 101, 102, 103), warmup_s=2, floor=5000, pids_changed=False)
    assert out["rss"]["after_warmup"] == 100 and out["rss"]["end"] == 103 and out["rss"]["idle"] == 50
    assert out["rss"]["spread"] == 0.03 and out["samples_after_warmup"] == 4
    assert [b["holds"] for b in out["bars"]] == [True, True, True] and out["holds"] is True
    # a 6 % climb after the warm-up is not flat; a max over the bar fails even during the warm-up
    out = verdict(_samples(50, 111, 100, 103, 106), warmup_s=2, floor=0, pids_changed=False)
    assert out["rss"]["max"] == 111 and [b["holds"] for b in out["bars"]] == [False, False, True]
    assert out["holds"] is False
    # the floor is on requests answered
    out = verdict(_samples(50, 90, 90, 90), warmup_s=1, floor=3001, pids_changed=False)
    assert out["requests"] == 3000 and [b["holds"] for b in out["bars"]] == [True, True, False]


def test_a_respawned_worker_or_too_few_samples_cannot_pass_as_flat():
    out = verdict(_samples(50, 90, 90, 90), warmup_s=1, floor=0, pids_changed=True)
    assert out["bars"][1]["holds"] is False and "respawned" in out["bars"][1]["note"]
    out = verdict(_samples(50, 90, 90), warmup_s=2, floor=0, pids_changed=False)
    assert out["rss"]["spread"] is None and out["bars"][1]["holds"] is None and out["holds"] is None
