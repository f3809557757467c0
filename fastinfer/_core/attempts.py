# cython: language_level=3, annotation_typing=False
"""What an attempt and an admitted request hold, and the guarantee that they give it back: plain
Python, and compiled as it is with the types of ``attempts.pxd`` (Cython's pure-Python mode), as
``upstream.py`` is. The engine runs the compiled module; the tests run the attempts' suite over it
and over this source run as Python (``fastinfer._core.ref.attempts``). Compiled, the two ``with``
blocks every request enters and each one's ending are C calls on C fields: about ten Python calls
a request before.

``Attempt`` is one upstream attempt on one replica from the pick to its verdict, and ``Slot`` a
held admission slot. Both are ``with`` blocks whose exit cannot be skipped: whatever happens inside
— a ``GatewayError``, the client leaving (cancellation), an exception nobody expected — the
replica's in-flight count, the half-open probe and the slot are given back, and the breaker hears
exactly one verdict (none when the client left). A streamed answer takes both over: its attempt
ends, and its slot is given back, when the stream ends (``engine.stream.RelayedStream``).

The verdicts are the engine's (``engine.classify``), which this module may not import (the engine
imports it): the engine hands in, once, how an exception is judged and the verdict that means
success (``judged_by``).

Owns: ``Attempt``, ``Slot``. Must not touch: choosing replicas, retrying, HTTP, what a verdict says.
"""
from __future__ import annotations

import logging
import time

from ..errors import GatewayError, UpstreamFailure
from ..observe import log_bug

log = logging.getLogger("fastinfer.engine")
clock = time.perf_counter       # the engine's overhead clock (``engine.request.clock``)

_judge = None       # exception -> Verdict (``engine.classify.classify_exception``)
_success = None     # the verdict of an attempt whose answer was used (``engine.attempt.SUCCESS``)


def judged_by(classify_exception, success) -> None:
    """How an attempt's exception is judged, and the verdict of a success: the engine's, given once."""
    global _judge, _success
    _judge = classify_exception
    _success = success


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
        self._ended = False
        self._handed_over = False

    def __enter__(self):
        # the route counted the attempt on the replica when it chose it; ``end`` gives it back
        self.started = clock()
        if self.trace is not None:
            self.span = self.trace.attempt_started(self.dep.config.name, self.replica)
        return self

    def answered(self) -> None:
        """The upstream's answer (or, for a stream, its first bytes) is here."""
        self.answered_at = clock()

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
    """

    def __init__(self, admission, index: int):
        self._admission = admission
        self._index = index
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
            self._admission.release(self._index)
