"""The compiled core: what runs per request or per streamed chunk.

Owns: the SSE parser and writer (``sse``), and the host-wide shared-memory
structures with atomic counters (``shm``: segment, admission slots and priority
queue, circuit breakers, metric counters and histograms).

Must not touch: configuration, HTTP, asyncio policy. Callers hand in plain
integers and bytes; policy lives in the Python packages around it.

Every compiled structure has a pure-Python reference in ``fastinfer._core.ref``
with the same behaviour; the tests drive both with the same cases.
"""
