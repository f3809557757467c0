"""Asyncio helpers the packages share.

Owns: ``cancel_and_wait``, how a component stops the background tasks it started (a saver, a
refresher, a sync loop, health probes). Must not touch: what those tasks do.
"""
from __future__ import annotations

import asyncio
import logging

from .observe import log_bug

log = logging.getLogger("fastinfer.tasks")


async def cancel_and_wait(*tasks: asyncio.Task | None) -> None:
    """Cancel ``tasks`` (None: nothing to stop) and return once every one has ended.

    A task's own ending is not the caller's: its cancellation is what was asked, and an error it
    ended with (a bug: the tasks handle what they expect) is logged here, not raised into the stop.
    The caller's cancellation is the caller's: cancelled while it waits, it raises
    ``CancelledError`` rather than carrying on as if stopped (``try: await task`` with
    ``except CancelledError: pass`` would swallow it)."""
    started = [task for task in tasks if task is not None]
    for task in started:
        task.cancel()
    if not started:
        return
    for task, outcome in zip(started, await asyncio.gather(*started, return_exceptions=True)):
        if isinstance(outcome, Exception):      # CancelledError is not one: the stop itself
            log_bug(log, f"background task {task.get_name()} ended with an error", outcome)
