"""The built wheel installs and runs from outside the source tree.

It must pass wherever the README's commands ran, the README's own set-up included:
pytest inside a virtualenv (``python3 -m venv v && . v/bin/activate && pip install
'.[test]' && pytest``), where the dependencies live in that virtualenv, not in the
system's site-packages.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import site
import subprocess
import sys
import urllib.request
import sysconfig
import zipfile
from pathlib import Path

import pytest

from procs import http_json

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_wheel_builds_installs_and_serves_outside_the_tree(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels)], check=True, cwd=tmp_path, timeout=540)
    (wheel,) = wheels.glob("fastinfer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # a .pyx module and a pure-Python-mode one (a .py with its .pxd) are both compiled
    for module in ("sse", "upstream", "client", "keys"):
        assert any(n.startswith(f"fastinfer/_core/{module}.") and n.endswith(".so") for n in names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    for asset in ("index.html", "dashboard.css", "dashboard.js"):
        assert f"fastinfer/ops/dashboard/{asset}" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # --ignore-installed: a fastinfer installed beside the tests' dependencies must not count as this one
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", str(wheel)],
                   check=True, timeout=120, env=env)
    see_dependencies_of_this_environment(python)

    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    where = subprocess.run([str(python), "-c", "import fastinfer._core.upstream as u, fastinfer._core.client as c, "
                            "fastinfer._core.keys as k, fastinfer; print(k.digest_of('sk-x').hex()); "
                            "print(fastinfer.__file__); print(u.__file__); print(c.__file__)"],
                           cwd=run_dir, env=env, capture_output=True, text=True, check=True)
    digest, package, *pure_mode = where.stdout.split()
    assert digest == hashlib.sha256(b"sk-x").hexdigest()     # the key check's C digest, as installed
    assert package.startswith(str(venv))
    # the compiled modules are what imports, not their sources beside them
    assert all(path.endswith(".so") for path in pure_mode)

    # run from a source checkout (the README's way: ``pip install .``, then ``python -m fastinfer``
    # where the checkout comes first on sys.path): the installed compiled modules are found for the
    # modules compiled from Python source too, not the checkout's .py; the rest is the checkout's
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "fastinfer", checkout / "fastinfer",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    where = subprocess.run([str(python), "-c", "import fastinfer._core.upstream as u, fastinfer._core.client as c, "
                            "fastinfer._core.attempts as a, fastinfer._core.constants as k, fastinfer; "
                            "print(fastinfer.__file__, u.__file__, c.__file__, a.__file__, k.__file__); "
                            "from fastinfer._core.ref import attempts; print(attempts.Attempt.__module__)"],
                           cwd=checkout, env=env, capture_output=True, text=True, check=True)
    package, *compiled, constants, reference = where.stdout.split()
    assert package.startswith(str(checkout)) and constants.startswith(str(checkout))
    assert all(path.startswith(str(venv)) and path.endswith(".so") for path in compiled), compiled
    assert reference == "fastinfer._core._attempts_as_python"   # the source, run as Python

    serve = subprocess.Popen([str(venv / "bin" / "fastinfer"), "serve", "--port", "0", "--workers", "1"],
                             cwd=run_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = serve.stdout.readline().decode()
        port = int(line.rsplit(":", 1)[1].split()[0])
        status, _, body = http_json("POST", f"http://127.0.0.1:{port}/v1/chat/completions",
                                    {"model": "echo", "messages": [{"role": "user", "content": "wheel"}]})
        assert status == 200
        assert body["choices"][0]["message"]["content"].startswith("wheel wheel")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard/dashboard.js", timeout=10) as page:
            assert b"/admin/stats" in page.read()   # the installed copy serves its dashboard
    finally:
        serve.terminate()
        assert serve.wait(30) == 0


def see_dependencies_of_this_environment(python: Path) -> None:
    """Let the new venv import what the running tests import (aiohttp, uvloop, ...), wherever it
    is installed: this interpreter's site-packages, a virtualenv's or the system's. Its own
    site-packages, holding the wheel, comes first on ``sys.path``; these follow (a ``.pth``)."""
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = dict.fromkeys([*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_paths()["purelib"],
                           sysconfig.get_paths()["platlib"]])
    Path(inner, "outer-environment.pth").write_text("".join(f"{p}\n" for p in outer if os.path.isdir(p)))
