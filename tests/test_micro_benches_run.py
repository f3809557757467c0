"""The core microbenchmarks (``bench/micro``) still run: each compares today's code with what it replaced
and asserts both give the same result first, so an API that moved breaks them; run here once, untimed
(``--benchmark-disable``: each benchmark's body is called once), in a separate pytest process that
imports the package this suite tests (``-P``, run from elsewhere: not the source tree's, which a
``pip install .`` leaves uncompiled)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_micro_benchmark_runs_and_its_same_result_checks_hold(tmp_path):
    # -p no:logging: the access-log benches measure their handler alone on the logger (pytest 9.2's
    # capture handler would sit beside it); as bench/README.md runs them
    run = subprocess.run([sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:logging",
                          "--benchmark-disable", str(ROOT / "bench" / "micro")], cwd=tmp_path, capture_output=True, text=True, timeout=110)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "error" not in run.stdout.splitlines()[-1]
