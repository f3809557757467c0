"""Asyncio helpers the packages share.

Owns: ``cancel_and_wait``, how a component stops the background tasks it started (a saver, a
refresher, a sync loop, health probes). Must not touch: what those tasks do.
"""
from __future__ import annotations

import asyncio


async def cancel_and_wait(*tasks: asyncio.Task | None) -> None:
    """Cancel ``tasks`` (None: nothing to stop) and return once every one has ended.

    A task's own ending (its cancellation, or an error it ended with) is not the caller's: each
    task logs what it must. The caller's cancellation is: cancelled while it waits, the caller
    raises ``CancelledError`` rather than carrying on as if stopped (``try: await task`` with
    ``except CancelledError: pass`` would swallow it)."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    if started:
        await asyncio.gather(*started, return_exceptions=True)
