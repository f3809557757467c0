"""Micro-benchmark of the SSE parser: compiled (``fastinfer._core.sse``) against
the pure-Python reference (``fastinfer._core.ref.sse``).

Owns: a realistic ~1 MB OpenAI chat-completion chunk stream, fed in 1-4 KB
reads, parsed by both implementations in the same run; reports throughput
(MB/s) and the compiled/reference ratio (printed, and stored in
``benchmark.extra_info``). Targets: compiled >= 200 MB/s and >= 20x reference.
No wall-clock assertions: numbers are reported, only correctness is asserted.

Must not touch: HTTP, asyncio, JSON decoding of the payloads.

Run: ``pytest bench/micro/test_bench_sse.py --benchmark-enable -s``
(``-s`` shows the printed summary; pyproject's addopts disable benchmarks, in
which case each test runs the parse once, as a correctness check).
"""
from __future__ import annotations

import random

import pytest

from fastinfer._core import sse as compiled
from fastinfer._core.ref import sse as reference

IMPLS = {"reference": reference, "compiled": compiled}
_RESULTS: dict[str, dict[str, float]] = {}

_WORDS = ("the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog", ",", ".",
          " Hello", "!", " résumé", " 日本", " 🎉", "\\n", " \\\"quoted\\\"", " inference",
          " gateway", " token")


def _make_stream(target: int = 1 << 20, seed: int = 1234) -> tuple[bytes, int]:
    rng = random.Random(seed)
    head = ('data: {"id":"chatcmpl-9xQ7bK2mLp4","object":"chat.completion.chunk",'
            '"created":1700000000,"model":"gpt-4o-2024-08-06",'
            '"system_fingerprint":"fp_3aa7262c27","choices":[{"index":0,"delta":')
    parts = [head + '{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n']
    size = len(parts[0])
    while size < target:
        content = "".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 3)))
        ev = head + '{"content":"' + content + '"},"logprobs":null,"finish_reason":null}]}\n\n'
        parts.append(ev)
        size += len(ev.encode())
    parts.append(head + '{},"logprobs":null,"finish_reason":"stop"}]}\n\n')
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode(), len(parts)


def _reads(stream: bytes, seed: int = 99) -> list[bytes]:
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < len(stream):
        n = rng.randint(1024, 4096)
        out.append(stream[pos:pos + n])
        pos += n
    return out


STREAM, N_EVENTS = _make_stream()
READS = _reads(STREAM)


def _parse_all(mod) -> list:
    """Parse the stream, keeping every event (for the correctness checks)."""
    p = mod.SSEParser()
    events = []
    for chunk in READS:
        events.extend(p.feed(chunk))
    p.close()
    return events


def _parse_stream(mod) -> tuple[int, list]:
    """Parse each read and drop its events (as a proxy does once it has
    forwarded them): every Event is created and freed, none is kept."""
    p = mod.SSEParser()
    n = 0
    evs: list = []
    for chunk in READS:
        evs = p.feed(chunk)
        n += len(evs)
    p.close()
    return n, evs


@pytest.mark.parametrize("name", list(IMPLS))  # reference first, so compiled can report the ratio
def test_bench_sse_parse_openai_stream(benchmark, name):
    mod = IMPLS[name]
    benchmark.group = "sse-parse-openai-1MB"
    n, last_read = benchmark(_parse_stream, mod)

    events = _parse_all(mod)
    assert n == len(events) == N_EVENTS
    assert last_read[-1].data == b"[DONE]"
    assert events[-1].data == b"[DONE]"
    assert all(e.event == "message" and e.id is None for e in events)
    assert b"".join(b"data: " + e.data + b"\n\n" for e in events) == STREAM

    mb = len(STREAM) / 1e6
    benchmark.extra_info.update(stream_bytes=len(STREAM), reads=len(READS), events=N_EVENTS)
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: ran once, nothing to report
        return
    median, best = stats.stats.median, stats.stats.min
    res = {"mb_s_median": mb / median, "mb_s_best": mb / best}
    _RESULTS[name] = res
    benchmark.extra_info.update(res)
    line = (f"\nSSE parse [{name}]: {res['mb_s_median']:.1f} MB/s median, "
            f"{res['mb_s_best']:.1f} MB/s best ({len(STREAM)} B, {len(READS)} reads, "
            f"{N_EVENTS} events)")
    if name == "compiled" and "reference" in _RESULTS:
        ref = _RESULTS["reference"]
        ratio = res["mb_s_median"] / ref["mb_s_median"]
        ratio_best = res["mb_s_best"] / ref["mb_s_best"]
        benchmark.extra_info.update(ratio_vs_reference_median=ratio,
                                    ratio_vs_reference_best=ratio_best)
        line += f"\nSSE parse compiled/reference: {ratio:.1f}x median, {ratio_best:.1f}x best"
    print(line)


@pytest.mark.parametrize("name", list(IMPLS))
def test_bench_sse_encode_data(benchmark, name):
    mod = IMPLS[name]
    benchmark.group = "sse-encode-data"
    payloads = [e.data for e in _parse_all(compiled)]

    def run():
        return [mod.encode_data(p) for p in payloads]

    out = benchmark(run)
    assert b"".join(out) == STREAM


# a fast upstream's short stream in one read, as the OpenAI relay sees it: 64 token events, its usage, the end
_ONE_READ = b"".join(e.data.join((b"data: ", b"\n\n")) for e in _parse_all(compiled)[:64]) + (
    b'data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":64}}\n\ndata: [DONE]\n\n')
_RELAY_MARKERS = (b"[DONE]", b'"usage":{', b'"usage": {', b'"error"')


@pytest.mark.parametrize("name", list(IMPLS))  # reference first, so compiled can report the ratio
def test_bench_plain_prefix_of_a_short_stream_in_one_read(benchmark, name):
    mod = IMPLS[name]
    benchmark.group = "sse-plain-prefix-one-read"
    end, lines = benchmark(mod.plain_prefix, _ONE_READ, _RELAY_MARKERS)
    assert (end, lines) == reference.plain_prefix(_ONE_READ, _RELAY_MARKERS)
    assert lines == 64 and _ONE_READ[end:].startswith(b'data: {"choices":[],"usage"')
    _report_call(benchmark, "plain_prefix", name, f"{len(_ONE_READ)} B")


# a streaming upstream's reads: one token event each, or an event cut across two reads
_EVENT = _parse_all(compiled)[1].data.join((b"data: ", b"\n\n"))
_READS = [(b"", _EVENT), (b"", _EVENT[:40]), (_EVENT[:40], _EVENT[40:])]


@pytest.mark.parametrize("name", list(IMPLS))  # reference first, so compiled can report the ratio
def test_bench_whole_events_of_a_read(benchmark, name):
    mod = IMPLS[name]
    benchmark.group = "sse-whole-events-per-read"

    def run():
        return [mod.whole_events(carry, chunk) for carry, chunk in _READS]

    assert benchmark(run) == [(_EVENT, b""), (b"", _EVENT[:40]), (_EVENT, b"")]
    _report_call(benchmark, "whole_events", name, f"{len(_READS)} reads of {len(_EVENT)} B")


def _report_call(benchmark, what: str, name: str, shape: str) -> None:
    """Print (and keep) the median; for the compiled one, its ratio to the reference's of this run."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return
    _RESULTS[f"{what} {name}"] = {"us": stats.stats.median * 1e6}
    line = f"\n{what} [{name}], {shape}: {stats.stats.median * 1e6:.2f} us median"
    if name == "compiled" and f"{what} reference" in _RESULTS:
        ratio = stats.stats.median * 1e6 / _RESULTS[f"{what} reference"]["us"]
        benchmark.extra_info.update(ratio_vs_reference_median=ratio)
        line += f"; compiled/reference = {ratio:.2f}"
    print(line)
