"""Micro-benchmark of how a direct connection runs its requests' handlers: a task made per request
(what it did) against one task a connection, woken per request by a future (what it does), in the
same run, under uvloop as a worker runs.

Run:  python -m pytest bench/micro/test_bench_connection_task.py --benchmark-enable -p no:cacheprovider -s

Each request is a coroutine that awaits nothing (the handler's own work is the same either way):
what is timed is only the machinery around it — the task's creation (its name formatted, its
registration in asyncio's ``WeakSet`` in Python, its first step scheduled) against a future made,
its result set and the waiting task woken. No wall-clock assertions: the ratio is printed and kept
in ``benchmark.extra_info``.
"""
from __future__ import annotations

import asyncio
import time

import uvloop

REQUESTS = 20_000


async def _handler() -> int:
    return 1


async def _task_per_request(n: int) -> float:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    for _ in range(n):
        await loop.create_task(_handler())
    return (time.perf_counter() - started) / n


async def _one_task_woken(n: int) -> float:
    loop = asyncio.get_running_loop()
    waiter = None
    served = 0

    async def connection_task() -> None:
        nonlocal waiter, served
        while served < n:
            waiter = loop.create_future()
            await waiter
            await _handler()
            served += 1

    task = loop.create_task(connection_task())
    await asyncio.sleep(0)
    started = time.perf_counter()
    for _ in range(n):
        waiter.set_result(None)         # a request framed: the connection's task wakes
        await asyncio.sleep(0)          # ... and runs it (the loop's turn, as a read's callback gives)
    elapsed = time.perf_counter() - started
    await task
    return elapsed / n


def _best(coro_fn, n: int, rounds: int = 5) -> float:
    return min(uvloop.run(coro_fn(n)) for _ in range(rounds))


def test_bench_task_per_request_against_one_task_a_connection(benchmark):
    n = 200 if benchmark.disabled else REQUESTS
    per_request_us = _best(_task_per_request, n) * 1e6
    woken_us = _best(_one_task_woken, n) * 1e6
    # the woken side's loop also pays one ``sleep(0)`` turn a request: a floor it shares with the task side's
    turn_us = _best(_turns_only, n) * 1e6
    benchmark.extra_info.update({"task_per_request_us": round(per_request_us, 3), "one_task_woken_us": round(woken_us, 3),
                                 "loop_turn_us": round(turn_us, 3),
                                 "woken_over_per_request": round(woken_us / per_request_us, 3)})
    print(f"\na request's handler in a task of its own {per_request_us:.2f} us, in the connection's task woken "
          f"{woken_us:.2f} us (woken/per-request = {woken_us / per_request_us:.2f}; a bare loop turn {turn_us:.2f} us)")
    benchmark(lambda: uvloop.run(_one_task_woken(50)))


async def _turns_only(n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await asyncio.sleep(0)
    return (time.perf_counter() - started) / n
