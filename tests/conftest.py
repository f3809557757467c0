from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from procs import Proc, start_gateway_proc, start_mock
from redis_server import redis_server  # noqa: F401  (a real redis-server for the cluster tests)


def pytest_configure(config):
    # the compiled core must be importable: a test run on a bare source tree would test nothing real
    import fastinfer._core.sse  # noqa: F401
    # tools the test extra installs (ruff, py-spy) sit beside this interpreter: a virtualenv's bin
    # directory is on PATH only when it is activated, and `v/bin/pytest` runs without that
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def without_ids(body: bytes) -> bytes:
    """A mock's answer with what differs between two of them (their ids and creation times) blanked."""
    return re.sub(rb'"(id|created)":("[^"]*"|\d+)', b'"\\1":_', body)


@functools.cache
def py_spy_cannot_sample() -> str | None:
    """Why py-spy cannot profile a process here (not installed, or ptrace not permitted), or None."""
    if shutil.which("py-spy") is None:
        return "py-spy is not installed (it is in the test extra)"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        out = subprocess.run(["py-spy", "dump", "--pid", str(child.pid)], capture_output=True, text=True,
                             timeout=30)
    finally:
        child.kill()
        child.wait()
    if out.returncode != 0:
        return f"py-spy cannot attach to a process here: {(out.stderr or out.stdout).strip()[:200]}"
    return None


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def mock_upstream(workdir):
    """A fresh mock upstream; ``.control(knobs)`` and ``.stats()`` steer and inspect it."""
    proc = start_mock(workdir)
    yield proc
    proc.kill()


@pytest.fixture
def start_gateway(workdir):
    """Start ``fastinfer serve`` with a TOML config text; stopped at teardown."""
    started: list[Proc] = []

    def start(config_text: str | None = None, workers: int = 2, env: dict | None = None) -> Proc:
        proc = start_gateway_proc(workdir, config_text, workers, env)
        started.append(proc)
        return proc

    yield start
    with contextlib.ExitStack() as stack:   # every gateway is stopped even when one fails to drain
        for proc in reversed(started):        # callbacks run last-in first-out
            stack.callback(proc.stop, timeout=20)


def upstream_config(upstream_base: str, **deployment) -> str:
    """A config with deployment ``m`` on one openai_compatible replica at the mock upstream."""
    extra = "\n".join(f"{k} = {v}" for k, v in deployment.items())
    return f"""
        [server]
        max_body_bytes = 65536
        drain_grace_s = 10

        [[deployments]]
        name = "m"
        provider = "openai_compatible"
        model = "mock-model"
        {extra}

        [[deployments.replicas]]
        base_url = "{upstream_base}/v1"
        credential = {{ value = "sk-replica-secret" }}
    """


#: (deployment, provider, upstream model, path under the mock, extra keys, its own credential)
_UPSTREAM_FORMATS = (
    ("oa", "openai_compatible", "mock-model", "/v1", "", "sk-oa-secret"),
    ("an", "anthropic", "claude-mock", "/v1", "default_max_tokens = 300", "sk-ant-secret"),
    ("ge", "gemini", "gemini-mock", "/v1beta", "", "goog-secret"),
)


def every_format_config(base: str, server: str = "", credential: str | None = None,
                        oa_base: str | None = None) -> str:
    """Deployments on every upstream format: ``oa`` (openai_compatible), ``an`` (anthropic), ``ge``
    (gemini) at the mock upstream ``base``, and ``mk`` (the built-in mock). One attempt each and
    breakers that never open, so every answer shows its own cause. ``credential`` replaces each
    replica's own; ``oa_base`` the openai_compatible replica's URL; ``server`` is the [server] table."""
    blocks = [f"""
        [[deployments]]
        name = "{name}"
        provider = "{provider}"
        model = "{model}"
        {extra}
        retry = {{ max_attempts = 1 }}
        circuit_breaker = {{ failure_threshold = 1000000 }}
        [[deployments.replicas]]
        base_url = "{(oa_base if name == "oa" else None) or base + path}"
        credential = {{ value = "{credential or own}" }}
    """ for name, provider, model, path, extra, own in _UPSTREAM_FORMATS]
    mock = """
        [[deployments]]
        name = "mk"
        provider = "mock"
        mock = { tokens = 5 }
    """
    return textwrap.dedent(f"""
        [server]
        {server}
    """) + "".join(textwrap.dedent(block) for block in [*blocks, mock])


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """One mock upstream for a whole test module (``mock_upstream`` is a fresh one per test)."""
    proc = start_mock(tmp_path_factory.mktemp("upstream"))
    yield proc
    proc.kill()


@pytest.fixture
def shm_entries():
    def entries() -> set[str]:
        return {e for e in os.listdir("/dev/shm") if "fastinfer" in e}
    return entries
