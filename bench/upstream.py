"""The mock upstream every path of a run talks to: nginx with canned answers, or the Python mock.

Owns: choosing and starting the mock, recording the Python mock's answers for nginx to serve, and
setting what the mock answers before each scenario (``configure(stream, chunks, itl_ms)``).
Must not touch: the gateways under test.

``nginx`` (the default when nginx is installed) answers far faster than any gateway forwards, so
it never limits a run; it sends each stream at once, so paced streams (a delay between chunks) need
``python`` — the project's own ``mock-upstream``, which paces but tops out at a few thousand
requests per second on one CPU.
"""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Callable, Iterable

from .nginx import NginxMock, nginx_binary
from .services import Service


class PythonMock(Service):
    """``python -m fastinfer mock-upstream``, steered through ``POST /_mock/config``."""

    kind = "python"
    health_path = "/v1/models"   # it has no /health; vllm-router probes this instead

    def __init__(self, workdir: str, chunks: int, preexec=None):
        super().__init__(["mock-upstream", "--port", "0", "--tokens", str(chunks - 2)], workdir, preexec=preexec,
                         log=Path(workdir, "mock-upstream.log"))

    def configure(self, stream: bool, chunks: int, itl_ms: float) -> None:
        """Delay between stream chunks, and chunks per stream (role + content + finish)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/_mock/config", method="POST",
                                     data=json.dumps({"itl_ms": itl_ms, "tokens": chunks - 2}).encode())
        urllib.request.urlopen(req, timeout=10).read()

    def answer(self, body: bytes) -> bytes:
        """The whole answer body to one chat completion request (a stream: its SSE text)."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/chat/completions", data=body,
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read()


def record_answers(mock: PythonMock, modes: Iterable[tuple[bool, int]],
                   request_body: Callable[[bool], bytes]) -> dict[tuple[bool, int], bytes]:
    """What the Python mock answers, per (stream, chunks), to the client's request (``request_body``):
    as a gateway that passes it through unchanged gets it. fastinfer asks for the usage of a stream
    (``stream_options.include_usage``) where a real vLLM would then send a usage event; this answer has
    none, so fastinfer pays its estimate in every bench stream (one file serves every path)."""
    answers = {}
    for stream, chunks in modes:
        mock.configure(stream, chunks, 0.0)
        answers[(stream, chunks)] = mock.answer(request_body(stream))
    return answers


def start_upstream(kind: str, workdir: str, modes: Iterable[tuple[bool, int]], request_body: Callable[[bool], bytes],
                   chunks: int, preexec=None):
    """``kind``: nginx | python | auto (nginx when installed). The nginx mock serves what the
    Python mock answered to ``request_body`` in each mode."""
    if kind == "auto":
        kind = "nginx" if nginx_binary() else "python"
    python_mock = PythonMock(workdir, chunks, preexec=preexec)
    if kind == "python":
        return python_mock
    try:
        answers = record_answers(python_mock, modes, request_body)
    finally:
        python_mock.stop()
    return NginxMock(Path(workdir), answers, preexec=preexec)
