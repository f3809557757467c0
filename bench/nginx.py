"""nginx in the bench's two roles: the mock upstream (canned answers) and the proxy floor (a peer).

Owns: the nginx configs and their processes. The mock serves, for every POST, the answer the
project's own ``mock-upstream`` gave to the same request (recorded once at start, see
``upstream.py``), from a file the bench swaps between scenarios — nginx reads the file per request,
so no reload is needed. A Python mock cannot answer much faster than a gateway forwards; nginx can,
so the upstream is never what limits a gateway's req/s. The proxy is a plain reverse proxy with
keep-alive to the upstream: the least any gateway can cost.
Must not touch: the gateways, the load generator.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .services import Daemon, free_port

#: a string no answer contains: ``sub_filter`` on it changes nothing but makes nginx send the
#: stream chunked (with no Content-Length), as model servers send their SSE streams
_NEVER = "fastinfer-bench-never-in-an-answer"


def nginx_binary() -> str | None:
    """Debian's nginx (``apt-get install nginx``), when installed."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def _common(prefix: Path, workers: int) -> str:
    temp = "\n".join(f"  {kind}_temp_path {prefix}/temp-{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
{temp}
  keepalive_timeout 600s;
  keepalive_requests 100000000;
"""


def _argv(prefix: Path, conf: str) -> list[str]:
    """Write the config; the command line that runs it in the foreground (master + workers)."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    return [nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
            "-g", "daemon off; master_process on;"]


class NginxMock(Daemon):
    """The upstream: one nginx worker answering every POST with the current canned answer.

    ``GET /health`` answers 200 (what vllm-router probes)."""

    kind = "nginx"
    health_path = "/health"

    def __init__(self, workdir: Path, answers: dict[tuple[bool, int], bytes], preexec=None):
        self.recorded = answers   # (stream, chunks) -> the answer body
        self.prefix = Path(workdir, "nginx-mock")
        self.answers = self.prefix / "answers"
        self.answers.mkdir(parents=True, exist_ok=True)
        # nginx's workers run as an unprivileged user: they must be able to reach the answers
        for path in (Path(workdir), self.prefix, self.answers):
            path.chmod(0o755)
        port = free_port()
        conf = _common(self.prefix, 1) + f"""
  types {{ application/json json; text/event-stream sse; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {self.answers};
    etag off;
    location = /health {{ return 200 "ok\\n"; }}
    # a POST to a file is 405: turned into a GET of the answer (which also reads and drops the body)
    location / {{ error_page 405 =200 /_answer; return 405; }}
    location = /_answer {{
      internal;
      try_files /answer.json /answer.sse =503;
      sub_filter_types text/event-stream;
      sub_filter '{_NEVER}' '';
    }}
  }}
}}
"""
        self.set_answer("json", b'{"error": "no answer set yet"}')
        super().__init__("nginx mock", _argv(self.prefix, conf), port, "/health", self.prefix / "stdout.log",
                         preexec=preexec, timeout_s=30)

    def configure(self, stream: bool, chunks: int, itl_ms: float) -> None:
        """Answer as the Python mock did to a request of this kind; no pacing (``itl_ms`` must be 0)."""
        if itl_ms:
            raise ValueError("the nginx mock sends a stream at once: paced streams need --mock python")
        self.set_answer("sse" if stream else "json", self.recorded[(stream, chunks)])

    def set_answer(self, ext: str, body: bytes) -> None:
        """Answer every request from now on with ``body`` (``ext``: json or sse, its content type)."""
        if _NEVER.encode() in body:
            raise ValueError("the answer contains the bench's never-matching marker")
        staged = self.answers / f".staged.{ext}"
        staged.write_bytes(body)
        staged.chmod(0o644)
        for old in self.answers.glob("answer.*"):
            old.unlink()
        staged.rename(self.answers / f"answer.{ext}")


def start_nginx_proxy(workdir: Path, upstream_port: int, workers: int, preexec=None) -> Daemon:
    """The proxy floor: ``workers`` nginx workers, keep-alive to the client and to the upstream,
    responses passed on as they arrive (``proxy_buffering off``, as an SSE proxy is set up)."""
    prefix = Path(workdir, "nginx-proxy")
    port = free_port()
    conf = _common(prefix, workers) + f"""
  upstream mock {{
    server 127.0.0.1:{upstream_port};
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""
    return Daemon("nginx", _argv(prefix, conf), port, "/health", prefix / "stdout.log", preexec=preexec,
                  timeout_s=30)
