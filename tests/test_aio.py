"""``aio.cancel_and_wait``: how components stop the background tasks they started."""
from __future__ import annotations

import asyncio
import logging

import pytest

from fastinfer.aio import cancel_and_wait


def test_every_task_has_ended_when_it_returns_whatever_it_ended_with(caplog):
    async def main():
        ended = []

        async def sleeper():
            try:
                await asyncio.sleep(60)
            finally:
                await asyncio.sleep(0.01)      # cleanup that takes a turn or two after the cancel
                ended.append("sleeper")

        async def failing():
            try:
                await asyncio.sleep(60)
            finally:
                ended.append("failing")
                raise RuntimeError("its own error, logged by itself")   # noqa: B012

        tasks = [asyncio.ensure_future(sleeper()), asyncio.ensure_future(failing())]
        tasks[1].set_name("failing-task")
        await asyncio.sleep(0)
        with caplog.at_level(logging.ERROR, logger="fastinfer.tasks"):
            await cancel_and_wait(*tasks, None)
        assert all(task.done() for task in tasks)
        assert sorted(ended) == ["failing", "sleeper"]
        # the error is not the stopper's, but it is not lost either: a bug is logged
        logged = [r for r in caplog.records if r.name == "fastinfer.tasks"]
        assert len(logged) == 1 and "failing-task" in logged[0].getMessage()
        await cancel_and_wait()
        await cancel_and_wait(None)
    asyncio.run(main())


def test_a_caller_cancelled_while_it_waits_is_cancelled_too():
    async def main():
        release = asyncio.Event()

        async def slow_to_stop():
            try:
                await asyncio.sleep(60)
            finally:
                await release.wait()      # its cleanup outlasts the caller's patience

        task = asyncio.ensure_future(slow_to_stop())
        await asyncio.sleep(0)
        carried_on = []

        async def stop():
            await cancel_and_wait(task)
            carried_on.append(True)      # the cancelled caller must never get here

        stopper = asyncio.ensure_future(stop())
        await asyncio.sleep(0.01)
        stopper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopper
        assert not carried_on
        release.set()
        await asyncio.gather(task, return_exceptions=True)
    asyncio.run(main())
