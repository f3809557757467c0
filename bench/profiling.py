"""Where a gateway's time goes: py-spy on its workers during a scenario, summarised.

Owns: starting py-spy on a service's whole process tree (``--subprocesses``: every worker, so the
busy one is never missed), and turning its raw samples into a summary — the share of samples per
area of the code (by the file of the innermost Python frame: the code that was running or that
made the call into C), per worker process, and the top functions and lines, inclusive and self.
With ``native`` the C frames are sampled too (uvloop, libc) and the share spent in libc — the
syscalls — is counted apart; native sampling stops the process for every sample and slows it
several-fold, so the shares are right but the run's rate is not.
Must not touch: the measured figures (profiles are taken in a pass of their own, not counted).
"""
from __future__ import annotations

import collections
import functools
import linecache
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: area -> file-path fragments of the innermost Python frame, first match wins
AREAS = [
    ("validation and body reading", ("fastinfer/gateway/validate.py", "fastinfer/gateway/body.py")),
    ("metrics", ("fastinfer/metrics/", "fastinfer/_core/")),
    ("access log and logging", ("logging/", "fastinfer/observe/")),
    ("upstream client (transport)", ("fastinfer/transport/", "fastinfer/providers/")),
    ("engine, routing, limits", ("fastinfer/engine/", "fastinfer/routing/", "fastinfer/limits/", "fastinfer/breaker/",
                                 "fastinfer/session/", "fastinfer/ops/auth")),
    ("formats (request/response translation)", ("fastinfer/formats/",)),
    ("client connections (framing, head parsing)", ("fastinfer/_core/client.py", "httptools/")),
    ("gateway handlers and middleware", ("fastinfer/gateway/", "fastinfer/ops/")),
    ("aiohttp web layer", ("aiohttp/", "multidict/", "yarl/")),
    ("event loop (uvloop, asyncio; its syscalls)", ("asyncio/", "uvloop/", "selectors.py")),
    ("JSON (orjson, json)", ("orjson", "json/")),
]
_LIBC = re.compile(r"\((libc\.so[^)]*|libpthread[^)]*)\)$")
_PY_FRAME = re.compile(r"\(([^()]*\.py):(\d+)\)$")
_LINE = re.compile(r":\d+\)$")
#: frames every sample of a worker runs under (the process's start and the loop's run)
_STARTUP = ("<frozen runpy>", "fastinfer/__main__.py", "fastinfer/cli.py", "fastinfer/process/", "asyncio/runners.py")
#: a source line that hands bytes to the event loop's transport: uvloop sends them at once (the
#: send syscall runs inside this line)
_SOCKET_WRITE = re.compile(r"\btransport\.(write|writelines)\(|\.sendall?\(|\.sendto\(")


def start_profiler(root_pid: int, duration_s: float, out: Path, native: bool = False,
                   rate: int = 250) -> subprocess.Popen | None:
    """py-spy on ``root_pid`` and its child processes for ``duration_s``, raw output to ``out``;
    None when py-spy is not installed."""
    if shutil.which("py-spy") is None:
        return None
    argv = ["py-spy", "record", "-p", str(root_pid), "--subprocesses", "-d", str(max(1, int(duration_s))),
            "-r", str(rate), "-f", "raw", "-o", str(out)]
    argv += ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def area_of(frames: list[str]) -> str:
    """The area of the innermost Python frame of a stack (root first)."""
    for frame in reversed(frames):
        m = _PY_FRAME.search(frame)
        if m:
            path = m.group(1)
            for area, fragments in AREAS:
                if any(f in path for f in fragments):
                    return area
            return "other Python" if not path.startswith("fastinfer/") else "other fastinfer"
    return "native only (no Python frame)"


@functools.lru_cache(maxsize=4096)
def _source_line(path: str, line: int) -> str:
    """The text of a sampled line, found on sys.path as py-spy shortens it ("aiohttp/web.py")."""
    for root in sys.path:
        candidate = Path(root or ".", path)
        if candidate.is_file():
            return linecache.getline(str(candidate), line)
    return ""


def is_socket_write(frame: str) -> bool:
    """The innermost Python frame is a line that writes to a socket through the loop's transport."""
    m = _PY_FRAME.search(frame)
    return bool(m) and bool(_SOCKET_WRITE.search(_source_line(m.group(1), int(m.group(2)))))


def summarize_profile(raw: Path, top: int = 25) -> str:
    """The summary of a py-spy raw file: areas, workers, top functions and lines."""
    areas, workers, libc = collections.Counter(), collections.Counter(), collections.Counter()
    writes = collections.Counter()
    inclusive, own, own_lines = collections.Counter(), collections.Counter(), collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        procs = [f for f in frames if f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("process ")]
        if not frames:
            continue
        total += n
        workers[procs[-1].split(":", 1)[0] if procs else "process ?"] += n
        area = area_of(frames)
        areas[area] += n
        if _LIBC.search(frames[-1]):
            libc[area] += n
        python_frames = [f for f in frames if _PY_FRAME.search(f)]
        if python_frames and is_socket_write(python_frames[-1]):
            writes[python_frames[-1]] += n
        own_lines[frames[-1]] += n
        functions = [_LINE.sub(")", f) for f in frames]
        own[functions[-1]] += n
        for f in set(functions):
            inclusive[f] += n
    if not total:
        return "0 samples\n"

    def pct(c):
        return f"{c / total * 100:5.1f}%"
    lines = [f"{total} samples", "", "by area (innermost Python frame; self time):"]
    lines += [f"{pct(c)}  {a}" + (f"   (of which in libc: {pct(libc[a]).strip()})" if libc[a] else "")
              for a, c in areas.most_common()]
    if libc:
        lines.append(f"{pct(sum(libc.values()))}  in libc, all areas (syscalls)")
    lines += ["", f"{pct(sum(writes.values()))}  in lines that write to a socket (transport.write/writelines: "
                  "uvloop sends at once, so this is mostly the send syscall), by line:"]
    lines += [f"{pct(c)}  {f}" for f, c in writes.most_common(10)]
    lines += ["", "by process (the gateway's workers):"] + [f"{pct(c)}  {w}" for w, c in workers.most_common()]
    inclusive_top = [(f, c) for f, c in inclusive.most_common() if not any(s in f for s in _STARTUP)][:top]
    lines += ["", "inclusive (below the worker's start-up frames):"] + [f"{pct(c)}  {f}" for f, c in inclusive_top]
    lines += ["", "self:"] + [f"{pct(c)}  {f}" for f, c in own.most_common(top)]
    lines += ["", "self, by line:"] + [f"{pct(c)}  {f}" for f, c in own_lines.most_common(top)]
    return "\n".join(lines) + "\n"
