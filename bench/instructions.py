"""``python -m bench.instructions``: instructions per request in situ, counted by valgrind.

Why: the load bench reads CPU time, which moves 15–25 % between rounds on a shared machine, so a
change worth a few percent of a request cannot show there; a micro-benchmark shows it but runs
its piece hot and alone, and pieces cost 3–10× more in situ. An instruction count is what the
gateway asked the CPU to do for a request, the whole request in a real worker, and it hardly
depends on what else the machine runs: paths counted in one run agree to about 0.3 % when their
code is the same. Between runs the same tree's count drifts by up to ~1.5 %: the worker's timers
fire per second of wall time, and valgrind's pace follows the machine's load. Compare trees in
one run (``--baseline-tree``), not against a figure from another.

How, per path (``gateway``, ``gateway-limits``, ``gateway-full``: the load bench's configs; and
``baseline``, the bare config of ``--baseline-tree``, and ``baseline-full``, its features-on config
when ``gateway-full`` is counted; a ``--variant LABEL=TOML``, the bare config
with TOML's settings, as the load bench's): the gateway starts with one worker under
``valgrind --tool=cachegrind --cache-sim=no``, which follows the worker's fork and writes each
process's count when it exits; one keep-alive client sends N sequential requests to the mock
upstream through it (each request in one write, as wrk sends it), and the gateway stops. Done for
two request counts, the worker's difference divided by the difference of the counts is one
request's instructions: start-up, imports and
the ready checks cancel out. The mock and the client run natively. ``--stream N`` counts streamed
requests instead: the mock answers each with N events, one chunk each, as a model server streams.
``--prompt-bytes N`` makes each request's prompt N bytes of words, quotes and brackets, as a real
one: what the gateway does per byte of a body (its checks, its estimate) shows, which the load
bench's few words hide. ``--body-apart`` sends each request's head and body apart, the body 5 ms
later, as httpx (so the OpenAI and Anthropic SDKs) writes them: the gateway reads the head and
waits for the body, a path wrk's requests never take. ``--at-once`` puts nginx in front instead of
the Python mock, answering each request in one write as the load bench's mock does: with
``--stream N``, each stream's N events then arrive in one read, the load bench's ``stream``
scenario (where its "CPU per streamed chunk" is measured), rather than one read an event.

What it is not: time. A system call counts as one instruction, cache misses and branch
mispredictions as none, and the interpreter's instructions are not all equally dear. It ranks
changes to the Python on the request path; the load bench remains the judge of syscalls, latency
and the spread over workers. Work batched by wall time is over-counted: valgrind runs the worker
some 30 times slower, so the access log's flush (every 10 ms) writes a line or two instead of
hundreds, and its per-flush cost (a timer, a batch, a write) lands on each line. Compare such a
setting between trees, not against the bare path.

``--functions N`` says where a path's instructions go: the N functions (of the interpreter, the
compiled core, libc, ...) whose count grew most between the two runs, per request, from the
worker's cachegrind file. Two paths' lists side by side show what a feature costs below Python
(what an opcode counter cannot see: dict lookups, allocation, a hash, a header's encoding).

Needs valgrind (Debian: ``apt-get install valgrind``). Takes about a minute per path. Prints a
Markdown table; ``--out`` writes JSON.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import re
import shutil
import socket
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .gateway_configs import BENCH_KEY
from .nginx import nginx_binary
from .output import finish
from .run import request_body, variant_option
from .services import Service, fastinfer_tree
from .targets import write_gateway_config
from .upstream import PythonMock, start_upstream

PATHS = ("gateway", "gateway-limits", "gateway-full")
_SUMMARY = re.compile(rb"^summary: (\d+)", re.MULTILINE)
_HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {BENCH_KEY}"}
_BODY_AFTER_S = 0.005      # with --body-apart: long enough that even under valgrind the head is read first


def valgrind_binary() -> str | None:
    return shutil.which("valgrind")


@dataclass(frozen=True)
class Requests:
    """What the client sends: the load bench's chat request (streamed or not; its prompt
    ``prompt_bytes`` long when set), in one write as wrk sends it, or with ``body_apart`` its head
    first and its body ``_BODY_AFTER_S`` later (as httpx, so the OpenAI and Anthropic SDKs, writes
    them apart; on an idle gateway the head is then read before the body comes)."""

    stream: bool = False
    prompt_bytes: int = 0
    body_apart: bool = False

    def send(self, port: int, n: int) -> None:
        """``n`` of them in sequence on one keep-alive connection; each must answer 200. (Sent as
        ``http.client`` sends, head and body apart with no pause, the body came after the head was
        read on some requests and not on others, and a count moved by ~3 % between runs.)"""
        body = request_body(self.stream, self.prompt_bytes)
        fields = "".join(f"{name}: {value}\r\n" for name, value in _HEADERS.items())
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{fields}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(n):
                if self.body_apart:
                    sock.sendall(head)
                    time.sleep(_BODY_AFTER_S)
                    sock.sendall(body)
                else:
                    sock.sendall(head + body)
                resp = http.client.HTTPResponse(sock)
                resp.begin()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"the gateway answered {resp.status} to a benchmark request")


def start_mock(workdir: Path, requests: Requests, chunks: int, at_once: bool, paced_itl_ms: float = 0.0):
    """The upstream the counted requests go to, answering as ``requests`` ask (a stream: ``chunks``
    events): the Python mock, which writes a stream event by event (with ``paced_itl_ms``, that long
    apart, so that each is a read of its own, as a model server paces tokens), or with ``at_once`` nginx
    serving the Python mock's answer in one write, so a stream arrives in one read as in the load
    bench's ``stream`` scenario (there, a stream's cost is mostly the path's, not its reads')."""
    if not at_once:
        mock = PythonMock(str(workdir), chunks=chunks)
        if paced_itl_ms > 0:
            mock.configure(requests.stream, chunks, paced_itl_ms)
        return mock
    mock = start_upstream("nginx", str(workdir), {(requests.stream, chunks)},
                          lambda stream: request_body(stream, requests.prompt_bytes), chunks)
    mock.configure(requests.stream, chunks, 0.0)
    return mock


def worker_instructions(config: Path, tree: Path, workdir: Path, tag: str, n: int,
                        requests: Requests) -> tuple[int, Path]:
    """Instructions the one worker of a gateway started with ``config`` ran, start-up and ``n``
    requests included (its supervisor's are left out), and the worker's cachegrind file."""
    counts = workdir / f"cachegrind-{tag}"
    counts.mkdir()
    valgrind = (valgrind_binary(), "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={counts}/%p")
    gateway = Service(["serve", "--config", str(config), "--port", "0", "--workers", "1"], str(workdir), tree=tree,
                      log=workdir / f"{tag}.log", wrapper=valgrind, start_timeout_s=300.0)
    try:
        requests.send(gateway.port, n)
    finally:
        gateway.stop()
    workers = {f: int(m.group(1)) for f in counts.iterdir()
               if f.name != str(gateway.proc.pid) and (m := _SUMMARY.search(f.read_bytes()))}
    if len(workers) != 1:
        raise RuntimeError(f"expected one worker's count, found {len(workers)} in {counts}")
    (file, instructions), = workers.items()
    return instructions, file


def function_instructions(text: str) -> collections.Counter:
    """A cachegrind file's instructions by function: ``{(source file, function): count}`` (its
    ``fl=`` and ``fn=`` lines name them; each line after is a source line and its count)."""
    counts: collections.Counter = collections.Counter()
    source = function = None
    for line in text.splitlines():
        if line.startswith("fl="):
            source = line[3:]
        elif line.startswith("fn="):
            function = (source, line[3:])
        elif function is not None and line[:1].isdigit():
            fields = line.split()
            if len(fields) >= 2:
                counts[function] += int(fields[1])
    return counts


def costliest_functions(fewer: collections.Counter, more: collections.Counter, requests: int,
                        most: int) -> list[dict]:
    """The ``most`` functions whose count grew most from the run of ``fewer`` to that of ``more``
    (``requests`` more requests), as instructions per request."""
    grown = sorted(((count - fewer.get(key, 0), key) for key, count in more.items()), reverse=True)[:most]
    return [{"function": function, "file": source, "per_request": round(count / requests)}
            for count, (source, function) in grown if count > 0]


def per_request(label: str, upstream_port: int, tree: Path, workdir: Path, counts: tuple[int, int],
                requests: Requests, settings: dict | None = None, functions: int = 0) -> dict:
    """One path's instructions per request, from runs of ``counts`` requests (a variant: the bare
    config with ``settings``); with ``functions``, that many of its costliest functions."""
    config = workdir / f"{label}.toml"
    write_gateway_config(label, upstream_port, config, tree, settings)
    (low, low_file), (high, high_file) = (worker_instructions(config, tree, workdir, f"{label}-{n}", n, requests)
                                          for n in counts)
    row = {"path": label, "requests": list(counts), "worker_instructions": [low, high],
           "per_request": round((high - low) / (counts[1] - counts[0]))}
    if functions:
        row["functions"] = costliest_functions(*(function_instructions(f.read_text(errors="replace"))
                                                 for f in (low_file, high_file)), counts[1] - counts[0], functions)
    return row


def run(paths: list[str], counts: tuple[int, int], baseline_tree: Path | None, workdir: Path,
        variants: dict[str, dict] | None = None, tree: Path | None = None, stream_chunks: int = 0,
        prompt_bytes: int = 0, body_apart: bool = False, functions: int = 0, at_once: bool = False,
        paced_itl_ms: float = 0.0) -> dict:
    """``tree``: the source tree the paths and variants run from (default: this one);
    ``stream_chunks``: stream every answer in this many events (0: whole answers); ``prompt_bytes``
    and ``body_apart``: as ``Requests``; ``functions``: each path's costliest functions, this many;
    ``at_once``: the mock is nginx serving what the Python mock answers, each answer in one write
    (a stream's events arrive in one read, as in the load bench's ``stream`` scenario);
    ``paced_itl_ms``: the Python mock's delay between a stream's events (each then a read of its own)."""
    tree = tree or fastinfer_tree()
    requests = Requests(stream_chunks > 0, prompt_bytes, body_apart)
    mock = start_mock(workdir, requests, stream_chunks if requests.stream else 10, at_once, paced_itl_ms)
    try:
        rows = [per_request(label, mock.port, tree, workdir, counts, requests, None, functions) for label in paths]
        rows += [per_request(label, mock.port, tree, workdir, counts, requests, settings, functions)
                 for label, settings in (variants or {}).items()]
        if baseline_tree is not None:
            rows.insert(0, per_request("baseline", mock.port, baseline_tree, workdir, counts, requests, None,
                                       functions))
            if "gateway-full" in paths:      # the features' cost compared in one run too, not across two
                rows.insert(1, per_request("baseline-full", mock.port, baseline_tree, workdir, counts, requests,
                                           None, functions))
    finally:
        mock.stop()
    by_path = {row["path"]: row["per_request"] for row in rows}
    for row in rows:
        if "gateway" in by_path:
            row["vs_gateway"] = round(row["per_request"] / by_path["gateway"], 3)
        if "baseline" in by_path:
            row["vs_baseline"] = round(row["per_request"] / by_path["baseline"], 3)
        if row["path"] == "gateway-full" and "baseline-full" in by_path:
            row["vs_baseline_full"] = round(row["per_request"] / by_path["baseline-full"], 3)
    return {"rows": rows, "tree": str(tree), "baseline_tree": str(baseline_tree) if baseline_tree else None,
            "stream_chunks": stream_chunks, "prompt_bytes": prompt_bytes, "body_apart": body_apart,
            "at_once": at_once, "paced_itl_ms": paced_itl_ms}


def to_markdown(report: dict) -> str:
    columns = [c for c in ("vs_gateway", "vs_baseline", "vs_baseline_full") if any(c in row for row in report["rows"])]
    lines = ["| path | instructions per request | " + " | ".join(c.replace("_", " ") + " (÷)" for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for row in report["rows"]:
        lines.append(f"| {row['path']} | {row['per_request']:,} | "
                     + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    for row in report["rows"]:
        if row.get("functions"):
            lines += ["", f"Costliest functions of {row['path']} (instructions per request):", "",
                      "| function | file | per request |", "|---|---|---|"]
            lines += [f"| `{f['function']}` | {f['file']} | {f['per_request']:,} |" for f in row["functions"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=PATHS,
                        help="fastinfer paths to count (default: all three)")
    parser.add_argument("--tree", type=Path,
                        help="the source tree (its core built in place) whose paths are counted (default: this one)")
    parser.add_argument("--baseline-tree", type=Path,
                        help="another source tree (its core built in place): its bare path is counted too")
    parser.add_argument("--requests", nargs=2, type=int, default=(300, 1300), metavar=("FEWER", "MORE"),
                        help="requests in the two runs whose difference is counted (default 300 1300)")
    parser.add_argument("--variant", metavar="LABEL=TOML", action="append", default=[], type=variant_option,
                        help="one more path: the bare config with TOML's settings, as the load bench's "
                             "--variant; repeatable")
    parser.add_argument("--stream", type=int, default=0, metavar="N",
                        help="stream every answer in N events, one chunk each (default: whole answers)")
    parser.add_argument("--prompt-bytes", type=int, default=0, metavar="N",
                        help="each request's prompt N bytes long, words with quotes and brackets as a real "
                             "one (default: the load bench's few words): what a request's size costs")
    parser.add_argument("--body-apart", action="store_true",
                        help="send each request's head and its body apart, the body 5 ms later, as httpx (the "
                             "OpenAI and Anthropic SDKs) writes them: the gateway waits for the body")
    parser.add_argument("--at-once", action="store_true",
                        help="the mock is nginx, sending each answer in one write (a stream's events come in one "
                             "read, as in the load bench's 'stream' scenario); default: the Python mock, one "
                             "write per event. Needs nginx")
    parser.add_argument("--paced-itl-ms", type=float, default=0.0, metavar="MS",
                        help="with --stream: the Python mock waits MS between a stream's events, so that each is a "
                             "read and a write of its own, as a model server paces tokens (valgrind slows the "
                             "gateway ~50x: 3 keeps them apart). Run --stream 8 and --stream 64 alike: their "
                             "difference / 56 is an event's own cost")
    parser.add_argument("--functions", type=int, default=0, metavar="N",
                        help="also list each path's N costliest functions, instructions per request (default 0)")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    labels = [label for label, _ in args.variant]
    if len(set(labels)) != len(labels):
        parser.error(f"--variant: each label once (got {', '.join(labels)})")
    if valgrind_binary() is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    fewer, more = args.requests
    if not 0 <= fewer < more:
        parser.error("--requests: FEWER must be at least 0 and less than MORE")
    if args.stream and args.stream < 3:
        parser.error("--stream: at least 3 events (the role, a token, the finish)")
    if args.prompt_bytes < 0:
        parser.error("--prompt-bytes: at least 0")
    if args.functions < 0:
        parser.error("--functions: at least 0")
    if args.paced_itl_ms < 0 or (args.paced_itl_ms and (not args.stream or args.at_once)):
        parser.error("--paced-itl-ms: a delay of 0 or more, for --stream without --at-once")
    if args.at_once and nginx_binary() is None:
        parser.error("--at-once needs nginx (Debian: apt-get install nginx)")
    workdir = Path(tempfile.mkdtemp(prefix="fastinfer-bench-instructions-"))
    try:
        report = run(args.paths, (fewer, more), args.baseline_tree, workdir,
                     {label: tomllib.loads(toml) for label, toml in args.variant}, args.tree, args.stream,
                     args.prompt_bytes, args.body_apart, args.functions, args.at_once, args.paced_itl_ms)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return finish(to_markdown(report), report, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
