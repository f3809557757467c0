"""pyflakes' rules over the code: unused imports and variables, undefined names, syntax errors."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the test extra")
def test_pyflakes_finds_nothing():
    out = subprocess.run(["ruff", "check", "--select", "F,E9", "--output-format", "concise",
                          "fastinfer", "tests", "bench"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
