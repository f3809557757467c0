# cython: language_level=3, annotation_typing=False
"""What an attempt and an admitted request hold, the guarantee that they give it back, and the
stream that takes an attempt over: plain Python, and compiled as it is with the types of
``attempts.pxd`` (Cython's pure-Python mode), as ``upstream.py`` is. The engine runs the compiled
module; the tests run its suite over it and over this source run as Python
(``fastinfer._core.ref.attempts``). Compiled, the two ``with`` blocks every request enters, each
one's ending, and a stream's chunks and end are C calls on C fields.

``Attempt`` is one upstream attempt on one replica from the pick to its verdict, and ``Slot`` a
held admission slot. Both are ``with`` blocks whose exit cannot be skipped: whatever happens inside
— a ``GatewayError``, the client leaving (cancellation), an exception nobody expected — the
replica's in-flight count, the half-open probe and the slot are given back, and the breaker hears
exactly one verdict (none when the client left). A streamed answer takes both over: its attempt
ends, and its slot is given back, when the stream ends.

``RelayedStream`` is that stream: upstream bytes through the format's relay into the client writer.
It feeds each upstream read through the relay (translation, usage) and writes the result to the
client without a task switch, pauses the upstream while the client is slow, ends a failed stream
with the caller's error event, and holds the event that finishes a stream for the response's end
(one write with the chunked terminator when the upstream's end came in the same read). How the
stream ended (complete, cut, idle, garbage, an upstream error event) is its attempt's verdict,
recorded into the breaker and the outcome metric before the client sees the end; a stream the
client left gets none, unless it left after its finishing bytes went out ahead of the upstream's
end (``delivered``: the OpenAI SDK closes at [DONE]), which ends as that end would have. What the
stream holds is given back exactly once.

The verdicts are the engine's (``engine.classify``), which this module may not import (the engine
imports it): the engine hands in, once, how an exception and a stream's error event are judged and
the verdict that means success (``judged_by``).

Owns: ``Attempt``, ``Slot``, ``RelayedStream``. Must not touch: choosing replicas, retrying, what a
verdict says, aiohttp objects (the gateway passes a ``ClientWriter``, ``engine.stream``).
"""
from __future__ import annotations

import logging
import time

from ..errors import GatewayError, UpstreamFailure, forget_tracebacks
from ..observe import log_bug
from .client import ClientStream
from .relay import OpenAIPassthrough

log = logging.getLogger("fastinfer.engine")
#: the overhead clock the engine and the gateway measure with (``engine.request.clock`` is this one):
#: monotonic with sub-microsecond resolution. uvloop's ``loop.time()`` is cached once per loop
#: iteration with a millisecond resolution, so an overhead measured with it is 0 or a whole
#: millisecond; ``upstream_s`` and ``overhead_s`` are measured with this.
clock = time.perf_counter
#: how long a stream whose finishing bytes went out waits for its upstream's end (the body's last
#: chunk, or the close) before it ends without it: an upstream sends that end at once; one (or a
#: proxy before it) that holds the connection open must not hold the client's stream open with it
END_GRACE_S = 0.5

_judge = None       # exception -> Verdict (``engine.classify.classify_exception``)
_judge_event = None  # (an upstream's error event, its provider) -> Verdict (``classify_stream_error``)
_success = None     # the verdict of an attempt whose answer was used (``engine.attempt.SUCCESS``)
_judge_late = None  # a verdict reached at the caller's deadline -> the verdict that stands (``past_deadline``)
#: how close to the caller's deadline an attempt's end counts as reached by it: the timer that cut it
#: and the deadline are read on two clocks (the loop's, a millisecond's resolution, and ``clock``)
DEADLINE_SLACK_S = 0.005


def judged_by(classify_exception, classify_stream_error, success, past_deadline) -> None:
    """How an attempt's exception and a stream's error event are judged, the verdict of a
    success, and what a verdict becomes when the caller's deadline cut the attempt: the engine's,
    given once."""
    global _judge, _judge_event, _success, _judge_late
    _judge = classify_exception
    _judge_event = classify_stream_error
    _success = success
    _judge_late = past_deadline


class Attempt:
    """One upstream attempt on one replica of a deployment.

    The route counted the attempt on the replica (the host's in-flight) when it
    chose it; ``end`` gives that back, gives back the half-open probe when the attempt was one,
    tells the breaker the verdict and counts its outcome — exactly once. The
    ``with`` block ends it on the way out, with the ``verdict`` the block set,
    or from what was raised:

    - a ``GatewayError``: judged (``judged_by``); the exception is swallowed and
      the caller reads ``verdict``;
    - anything else after the upstream answered (``answered``): the answer
      could not be read (a reply of an unexpected shape): an upstream failure,
      logged, swallowed like a ``GatewayError``;
    - the client leaving (cancellation), or anything unexpected before the
      upstream answered: no verdict, and it propagates.

    A stream takes the attempt over (``hand_over``); it then ends when the stream does.
    """

    def __init__(self, dep, index: int, probe: bool, replica: str, trace=None):
        self.dep = dep
        self.index = index
        self.probe = probe
        self.replica = replica
        self.trace = trace            # the request's observe.RequestTrace, None when tracing is off
        self.span = None
        self.verdict = None
        self.started = 0.0
        self.answered_at = 0.0
        self.left_at = 0.0
        self.deadline = 0.0           # the caller's deadline on ``clock`` (0: none), set by the engine
        self._ended = False
        self._handed_over = False

    def __enter__(self):
        # the route counted the attempt on the replica when it chose it; ``end`` gives it back
        self.started = clock()
        if self.trace is not None:
            self.span = self.trace.attempt_started(self.dep.config.name, self.replica)
        return self

    def answered(self) -> float:
        """The upstream's answer (or, for a stream, its first bytes) is here: returns the time it was
        waited for (``upstream_s`` from now on), which the engine would otherwise read through the
        property, a generic read from Python."""
        answered_at = self.answered_at = clock()
        return answered_at - self.started

    @property
    def upstream_s(self) -> float:
        """Time spent waiting on the upstream: until it answered, or until the attempt failed."""
        return (self.answered_at or self.left_at or clock()) - self.started

    def hand_over(self):
        """A stream owns the attempt from now on and will ``end`` it."""
        self._handed_over = True
        return self

    def end(self, verdict) -> None:
        """Give back what the attempt holds and record ``verdict`` (None: no verdict). Once."""
        if self._ended:
            return
        self._ended = True
        if self.deadline and verdict is not None and verdict is not _success \
                and clock() >= self.deadline - DEADLINE_SLACK_S:
            # the limit that ended it was the caller's, not the replica's: a client asking for 100 ms
            # of a replica that takes 300 must not open its circuit for everyone
            verdict = _judge_late(verdict)
        self.verdict = verdict
        dep = self.dep
        dep.router.finish(self.index, clock() - self.started if verdict is _success else -1.0)
        dep.breakers.record(self.index, self.probe, None if verdict is None else verdict.breaker)
        if verdict is not None:
            dep.series.upstream(self.replica, verdict.outcome)
        if self.span is not None:
            self.trace.attempt_ended(self.span, None if verdict is None else verdict.outcome)

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.left_at = clock()
        if exc is None:
            if not (self._handed_over or self._ended):    # a success has ended it already
                self.end(self.verdict)
            return False
        if isinstance(exc, GatewayError):
            self.end(_judge(exc))
            # the verdict keeps the error, whose traceback holds the attempt loop's frame (that holds
            # the verdict): a cycle a retried request would leave behind. An expected error's
            # traceback is never shown; raised again, it gets a new one
            forget_tracebacks(exc)
            return True
        if isinstance(exc, Exception) and self.answered_at:
            log_bug(log, f"{self.dep.config.name}/{self.replica}: reading an upstream answer failed", exc)
            self.end(_judge(UpstreamFailure(f"the upstream's answer could not be read ({type(exc).__name__})")))
            return True
        self.end(None)
        return False


class Slot:
    """A held admission slot of one deployment, given back exactly once.

    The ``with`` block gives it back on the way out, whatever happened, unless
    a stream took it over (``hand_over``): then the stream's end does.
    ``admission`` is the deployment's host-wide structure (``shm.Admission``), ``worker`` the
    number of the worker that took the slot: the slot goes back to it in one compiled call.
    """

    def __init__(self, admission, worker: int):
        self._admission = admission
        self._worker = worker
        self._held = True
        self._handed_over = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self._handed_over or exc is not None:
            self.release()
        return False

    def hand_over(self):
        """A stream owns the slot from now on; returns what it calls when it ends."""
        self._handed_over = True
        return self.release

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission.release(self._worker)


class RelayedStream:
    """An upstream stream on its way to the client, relayed chunk by chunk by callback.

    Each upstream read goes through the format's relay (translation, usage)
    and straight to the client writer, with no task switch per chunk. A stream
    that fails after its first byte ends with the relay's error event.
    ``attempt`` is the attempt the stream came from: the stream ends it. ``loop`` is the worker's
    (on Python 3.11 each ``asyncio.get_running_loop()`` is a ``getpid`` syscall: two a stream).

    The bytes that finish the stream are held back: when the upstream's end
    follows in the same read (the usual case), the stream ends with them still
    held and the gateway sends them with the response's end (``take_ending``),
    one write instead of two; otherwise they go out on the next turn of the
    loop, as any chunk would have.
    """

    def __init__(self, reply, relay, attempt: Attempt, provider: str, loop):
        self.reply = reply
        self._loop = loop
        self.relay = relay
        # the relay's feed and (in ``pump``) the client's write, bound once: each chunk calls both, and a
        # call by name looks the method up in the object's type each time
        self._feed = relay.feed
        # an OpenAI stream's relay, typed: its ``feed``, ``failure`` and ``finished``, used on every read,
        # are then a C call and fields read in C, not a bound method's call and attributes looked up by
        # name (None: a translating relay)
        self._passthrough = relay if isinstance(relay, OpenAIPassthrough) else None
        self.attempt = attempt.hand_over()
        self.provider = provider            # the upstream kind, for classifying its error events
        self._on_done: list = []
        self._before_end: list = []
        self._client = None                 # the gateway's ``engine.stream.ClientWriter``
        self._write = None                  # its write
        self._client_stream = None          # it, when it is the gateway's ``ClientStream`` (typed)
        self._done = None
        self._resumer = None
        self._closed = False
        self._ending = b""                  # the finishing bytes, held for the response's end
        self._starting = False              # the first read (and what came with it) is being relayed
        self._end_sent = False              # they went out alone, before the upstream's end came
        self._grace = None                  # then: the timer that ends the stream if that end never comes

    async def pump(self, client) -> None:
        """Relay the whole stream to ``client``; returns when it has ended either way."""
        self._client = client
        self._write = client.write
        # the gateway's client stream, typed: its ``write`` on every read is then a C call
        self._client_stream = client if isinstance(client, ClientStream) else None
        self._done = self._loop.create_future()
        try:
            # what came with the first read is relayed before the held ending's turn of the loop is
            # asked for: a stream whose end came in that read too (a short one, most of nginx's) ends
            # here, and needs none
            self._starting = True
            try:
                self._on_chunk(self.reply.first)
                if not self._done.done():
                    self.reply.stream.start(self._on_chunk, self._on_end)
            finally:
                self._starting = False
            if self._ending and not self._done.done():
                self._loop.call_soon(self._send_ending_unless_ended)
            await self._done
        finally:
            self.close()

    def close(self) -> None:
        """End the stream's life: abort the upstream if unfinished, give back what it holds.

        Idempotent; the gateway calls it too, so a stream it never got to pump
        (the client left before the response head went out) leaks nothing. A
        stream closed before the upstream ended it was left by the client: its
        attempt gets no verdict, unless the client had the whole stream (``delivered``).
        """
        if self._closed:
            return
        self._closed = True
        self.reply.close()
        if self._resumer is not None:
            self._resumer.cancel()
        if self._grace is not None:
            self._grace.cancel()
        # a client that left after its whole stream (``delivered``) gets the verdict the upstream's
        # end would have given; ``_finish`` is once: a stream that ended has its verdict already
        self._finish(self._verdict(None)[0] if self._end_sent else None)

    def take_ending(self) -> bytes:
        """The bytes that finish the stream, still held once it has ended: the caller sends them
        with the response's end, in one write (b"" when they went out already)."""
        ending, self._ending = self._ending, b""
        return ending

    @property
    def delivered(self) -> bool:
        """The client was sent the whole stream, its finishing bytes included, before the upstream's
        end came: a client that leaves now (the OpenAI SDK closes its connection at [DONE]) left
        after its answer was complete."""
        return self._end_sent

    @property
    def failure(self):
        """Why the stream ended before it was complete (its attempt's error); None when it was
        complete, or is still running, or the client left."""
        verdict = self.attempt.verdict
        return None if verdict is None else verdict.error

    def also_on_done(self, callback) -> None:
        """Run ``callback`` when the stream has ended, however it ended (before its last bytes go out)."""
        self._on_done.append(callback)

    def also_before_end(self, callback, *args) -> None:
        """Run ``callback(*args)`` once, before the client can see the stream's end: before the event
        that finishes it is written (the upstream's usage is known by then), or when it ends otherwise.
        The accounting of a request (usage, cost, limits) is complete before its last byte is sent.
        (The arguments, not a closure over them: a bound method and its arguments are called in one
        step, where a lambda is one more interpreted frame a stream.)"""
        self._before_end.append((callback, args))

    def _run_before_end(self) -> None:
        callbacks, self._before_end = self._before_end, []
        for callback, args in callbacks:
            callback(*args)

    def _finish(self, verdict) -> None:
        """The attempt's verdict, then the rest of what the stream holds; once (``Attempt.end`` is once too)."""
        if self._before_end:
            self._run_before_end()
        self.attempt.end(verdict)
        callbacks, self._on_done = self._on_done, []
        for callback in callbacks:
            callback()

    def _on_chunk(self, chunk: bytes) -> None:
        relay = self.relay
        try:
            out = self._feed(chunk) if self._passthrough is None else self._passthrough.feed(chunk)
        except Exception as e:
            # a stream event of a shape the relay cannot read: the stream cannot go on
            log_bug(log, "relaying an upstream stream failed", e)
            out, failure = b"", UpstreamFailure("the upstream's stream could not be read")
        else:
            failure = relay.failure if self._passthrough is None else self._passthrough.failure
        if failure is not None:
            if out:
                self._client.write(out)
            self.reply.close()
            self._on_end(failure)
            return
        if relay.finished if self._passthrough is None else self._passthrough.finished:
            if self._before_end:
                self._run_before_end()     # the end is in ``out``: account before the client sees it
            if out:
                self._hold_ending(out)
                return
        if self._ending:
            self._send_ending()        # more bytes after the end (a relay never makes them): in order
        if out:
            accepted = self._write(out) if self._client_stream is None else self._client_stream.write(out)
            if not accepted and self._resumer is None:
                self.reply.stream.pause()
                self._resumer = self._loop.create_task(self._resume_when_drained())

    def _hold_ending(self, out: bytes) -> None:
        self._ending += out
        if not self._starting:      # else ``pump`` asks for the turn, if the stream has not ended by then
            self._loop.call_soon(self._send_ending_unless_ended)

    def _send_ending_unless_ended(self) -> None:
        """The upstream's end did not come with the finishing bytes: they go out alone."""
        if not self._done.done():
            self._send_ending()
            self._end_sent = True
            self._grace = self._loop.call_later(END_GRACE_S, self._end_without_upstream)

    def _end_without_upstream(self) -> None:
        """The client has its whole stream and the upstream's end has not come: the stream ends now,
        as it would have (the upstream exchange is aborted: its connection cannot carry another)."""
        self._grace = None
        if not self._done.done():
            self.reply.close()
            self._on_end(None)

    def _send_ending(self) -> None:
        ending, self._ending = self._ending, b""
        if ending:
            self._client.write(ending)

    async def _resume_when_drained(self) -> None:
        await self._client.drain()
        self._resumer = None
        self.reply.stream.resume()

    def _on_end(self, error) -> None:
        """The upstream side ended: ``error`` is why, None when the upstream closed it (properly or not)."""
        if self._done.done():
            return
        verdict, tail = self._verdict(error)
        # accounting is complete before the client sees the end of its stream
        self._finish(verdict)
        if tail is not None:
            self._send_ending()     # what the relay finished with, then why the stream failed after it
            self._client.write(tail)
        self._done.set_result(None)

    def _verdict(self, error):
        """The attempt's verdict for a stream whose upstream side ended (``error``: why, None when the
        upstream closed it), and the event that tells the client why it failed (None if it did not)."""
        relay = self.relay
        if relay.error is not None:
            # the upstream's own error event, already passed on in the caller's format
            return _judge_event(relay.error, self.provider), None
        if relay.finished:
            # the stream was whole: what the upstream did after its end (held the connection past the
            # idle timeout, reset it) takes nothing from the answer the client has
            return _success, None
        if error is None:
            error = UpstreamFailure("upstream ended the stream before it was complete")
        return _judge(error), relay.error_event(error)


# the fields the engine reads, at the speed of a __slots__ field (``slots.h``), compiled only (``cython.compiled`` would
# import Cython at run time; run as Python, ``__file__`` is this .py)
if not __file__.endswith(".py"):
    from cython.cimports.fastinfer._core.slots import fi_readonly_slots
    fi_readonly_slots(Attempt, ("dep", "replica", "trace", "span"))
    fi_readonly_slots(RelayedStream, ("reply", "relay", "provider"))
