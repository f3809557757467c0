"""Load generators: wrk when installed, else a lean asyncio client on raw sockets.

The asyncio client keeps one HTTP/1.1 keep-alive connection per concurrent
user, sends a pre-encoded request, and parses as little of the answer as it
can: the head for Content-Length, or for streams the ``data:`` events, timing
the first one. Each run is bounded in time and in request count.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies_s: list = field(default_factory=list)
    ttfc_s: list = field(default_factory=list)     # time to first chunk (streams)
    chunks: int = 0                                # data events received (streams)
    tool: str = "asyncio"
    cpu_s: float = 0.0                             # CPU the load generator itself used

    def summary(self) -> dict:
        lat = np.array(self.latencies_s) * 1000 if self.latencies_s else np.array([np.nan])
        out = {
            "tool": self.tool, "requests": self.requests, "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "rps": round(self.requests / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "loadgen_cpu_s": round(self.cpu_s, 3),
            "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
        }
        if self.chunks:
            ttfc = np.array(self.ttfc_s) * 1000
            out.update({
                "chunks": self.chunks, "chunks_per_s": round(self.chunks / self.elapsed_s, 1),
                "ttfc_p50_ms": round(float(np.percentile(ttfc, 50)), 3),
                "ttfc_p99_ms": round(float(np.percentile(ttfc, 99)), 3),
            })
        return out


def http_request(host: str, port: int, path: str, body: bytes, headers: dict | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer bench\r\n{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
_CLOSES = re.compile(rb"(?i)\r\nconnection: *close")


async def _user(host, port, request: bytes, stream: bool, deadline: float, budget: list, result: LoadResult):
    reader, writer = await asyncio.open_connection(host, port)
    perf = time.perf_counter
    try:
        while perf() < deadline and budget[0] > 0:
            budget[0] -= 1
            t0 = perf()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            m = _CONTENT_LENGTH.search(head)
            if not stream or status != 200 or m:
                body = await reader.readexactly(int(m.group(1)) if m else 0)
                if stream and status == 200:   # a stream sent with a length instead of chunked
                    result.chunks += body.count(b"data: ")
                    result.ttfc_s.append(perf() - t0)
                    status = 200 if b"data: [DONE]" in body else 599
                result.latencies_s.append(perf() - t0)
                result.requests += 1
                result.errors += status != 200
            else:
                ok, first = await _read_chunked_stream(reader, result)
                result.ttfc_s.append(first - t0)
                result.latencies_s.append(perf() - t0)
                result.requests += 1
                result.errors += not ok
            if _CLOSES.search(head):    # the server lets the connection go: the next request on a new one
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def _read_chunked_stream(reader: asyncio.StreamReader, result: LoadResult) -> tuple[bool, float]:
    """Read a chunked SSE body; count ``data:`` events; (ended with [DONE], time of first event)."""
    first = 0.0
    done = False
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        payload = await reader.readexactly(size + 2)
        if size == 0:
            return done, first
        if not first:
            first = time.perf_counter()
        result.chunks += payload.count(b"data: ")
        if b"data: [DONE]" in payload:
            done = True


async def run_asyncio(host: str, port: int, path: str, body: bytes, concurrency: int, duration_s: float,
                      max_requests: int, stream: bool, requests: list[bytes] | None = None) -> LoadResult:
    """``concurrency`` users on keep-alive connections sending ``body``; with ``requests``
    (whole pre-encoded requests, ``http_request``), user i sends ``requests[i % len]`` instead
    (its own session id, its own prompt)."""
    result = LoadResult()
    requests = requests or [http_request(host, port, path, body)]
    budget = [max_requests]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + duration_s
    await asyncio.gather(*(_user(host, port, requests[i % len(requests)], stream, deadline, budget, result)
                           for i in range(concurrency)))
    result.elapsed_s = time.perf_counter() - t0
    result.cpu_s = time.process_time() - cpu0
    if stream:
        result.chunks -= result.requests  # "data: [DONE]" is a terminator, not a chunk
    return result


_WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
wrk.body = [[%s]]
"""


def run_wrk(host: str, port: int, path: str, body: bytes, concurrency: int, duration_s: float) -> LoadResult:
    """wrk with one thread per CPU this process may use (the bench pins its load side), at most
    one per connection; its own CPU time is read from its rusage."""
    threads = min(concurrency, len(os.sched_getaffinity(0)))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_LUA % body.decode())
        script = f.name
    try:
        with tempfile.TemporaryFile("w+") as stdout:
            proc = subprocess.Popen(
                ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(duration_s))}s",
                 "--latency", "-s", script, f"http://{host}:{port}{path}"],
                stdout=stdout, stderr=subprocess.DEVNULL, text=True)
            cpu_s = _wait_with_rusage(proc, duration_s + 30)
            stdout.seek(0)
            out = stdout.read()
    finally:
        os.unlink(script)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {out[-500:]}")
    result = LoadResult(tool="wrk", cpu_s=cpu_s)
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    result.requests = int(m.group(1))
    result.elapsed_s = float(m.group(2)) * {"s": 1, "ms": 1e-3, "m": 60}[m.group(3)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result.errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    result.wrk_percentiles_ms = {k: _wrk_ms(v) for k, v in percentiles.items()}
    return result


def _wait_with_rusage(proc: subprocess.Popen, timeout_s: float) -> float:
    """Reap ``proc`` (killing it past the timeout); the CPU seconds it used."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.05)


def _wrk_ms(value: str) -> float:
    """A wrk latency (``206.00us``, ``1.35ms``, ``2.01s``) in ms, to the µs: ``206.00us`` is 0.206,
    not the product's 0.20600000000000002 that the table and the progress lines would print."""
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    return round(float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[m.group(2)], 3)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None
