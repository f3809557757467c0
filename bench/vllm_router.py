"""vllm-router, the Rust router from PyPI, as a peer in front of the bench's mock upstream.

Owns: finding it and starting it. Install it into its own virtualenv (its dependencies are not
fastinfer's): ``python3 -m venv /tmp/vr && /tmp/vr/bin/pip install vllm-router``; the bench finds
``vllm-router`` with ``--vllm-router PATH`` or on PATH. Its Python launcher runs the Rust router
in-process: one process whose tokio runtime has as many worker threads as there are CPUs
(tokio's default; the router has no flag for it), so the "workers" reported for it are threads.
Must not touch: the mock, the load generator.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .services import Daemon, free_port

RUNTIME_THREADS = "tokio-rt-worker"   # the names of its runtime's worker threads


def find_vllm_router(given: str | None) -> str | None:
    """``--vllm-router PATH`` when given (it must exist), else ``vllm-router`` on PATH."""
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise SystemExit(f"--vllm-router {given}: not an executable file")
        return given
    return shutil.which("vllm-router")


def start_vllm_router(binary: str, workdir: Path, upstream_port: int, health_path: str, preexec=None) -> Daemon:
    """Round robin over the one mock; its health checks go to a path the mock answers 200, so the
    router admits the worker at once (it probes once a second until then) and keeps it."""
    port, metrics_port = free_port(), free_port()
    argv = [binary, "--host", "127.0.0.1", "--port", str(port),
            "--worker-urls", f"http://127.0.0.1:{upstream_port}", "--policy", "round_robin",
            "--health-check-endpoint", health_path, "--worker-startup-check-interval", "1",
            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port),
            "--log-level", "warning"]
    # ready when it forwards a request to the mock (both mocks answer GET /v1/models)
    router = Daemon("vllm-router", argv, port, "/v1/models", Path(workdir, "vllm-router.log"), preexec=preexec,
                    timeout_s=120)
    router.worker_threads = RUNTIME_THREADS
    return router
