"""What an upstream exchange hands back: a status, headers, and a whole body or a live stream.

Owns: the ``UpstreamStream`` interface whose bytes arrive by callback, and ``IteratorStream`` (an
``UpstreamStream`` fed by an async iterator, for in-process upstreams). ``UpstreamReply`` itself is
compiled with the connection that makes nearly all of them (``_core.upstream``). Must not touch:
what the bytes mean.
"""
from __future__ import annotations

import asyncio
from typing import AsyncIterator, Callable

from .._core.upstream import UpstreamReply
from ..errors import GatewayError, UpstreamFailure


class UpstreamStream:
    """A live upstream body. ``start`` hands over every later byte, by callback."""

    def start(self, on_chunk: Callable[[bytes], None], on_end: Callable[[GatewayError | None], None]) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        """Stop reading from the upstream (the client is slower than the upstream)."""

    def resume(self) -> None:
        """Read again."""

    def close(self) -> None:
        """Abandon the stream; an unfinished upstream exchange is aborted."""


class IteratorStream(UpstreamStream):
    """An ``UpstreamStream`` fed by an async iterator (in-process providers)."""

    def __init__(self, chunks: AsyncIterator[bytes]):
        self._chunks = chunks
        self._task: asyncio.Task | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()

    @classmethod
    async def open(cls, chunks: AsyncIterator[bytes]) -> UpstreamReply:
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            raise UpstreamFailure("upstream ended the stream before sending anything") from None
        return UpstreamReply.streaming(first, cls(chunks))

    def start(self, on_chunk, on_end) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(on_chunk, on_end))

    async def _run(self, on_chunk, on_end) -> None:
        try:
            async for chunk in self._chunks:
                if not self._flowing.is_set():
                    await self._flowing.wait()
                on_chunk(chunk)
        except GatewayError as e:
            on_end(e)
            return
        on_end(None)

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
