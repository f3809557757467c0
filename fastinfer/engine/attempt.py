"""What an attempt and an admitted request hold, and the guarantee that they give it back.

Owns: ``Attempt``, one upstream attempt on one replica from the pick to its
verdict, and ``Slot``, a held admission slot. Both are ``with`` blocks whose
exit cannot be skipped: whatever happens inside — a ``GatewayError``, the
client leaving (cancellation), an exception nobody expected — the replica's
in-flight count, the half-open probe and the slot are given back, and the
breaker hears exactly one verdict (none when the client left). A streamed
answer takes both over: its attempt ends, and its slot is given back, when
the stream ends (``stream.RelayedStream``).

Must not touch: choosing replicas, retrying, HTTP. The verdicts come from
``classify``.
"""
from __future__ import annotations

import logging

from ..errors import GatewayError, UpstreamFailure
from ..observe import log_bug
from .classify import Verdict, classify_exception
from .request import clock

log = logging.getLogger("fastinfer.engine")

#: an attempt whose answer was used
SUCCESS = Verdict(error=None, outcome="success", retry=False, counts_for_breaker=False, fallback=False)

class Attempt:
    """One upstream attempt on one replica of a deployment.

    The route counted the attempt on the replica (the host's in-flight) when it
    chose it; ``end`` gives that back, gives back the half-open probe when the attempt was one,
    tells the breaker the verdict and counts its outcome — exactly once. The
    ``with`` block ends it on the way out, with the ``verdict`` the block set,
    or from what was raised:

    - a ``GatewayError``: classified (``classify_exception``); the exception is
      swallowed and the caller reads ``verdict``;
    - anything else after the upstream answered (``answered``): the answer
      could not be read (a reply of an unexpected shape): an upstream failure,
      logged, swallowed like a ``GatewayError``;
    - the client leaving (cancellation), or anything unexpected before the
      upstream answered: no verdict, and it propagates.

    A stream takes the attempt over (``hand_over``); it then ends when the stream does.
    """

    __slots__ = ("dep", "index", "probe", "replica", "verdict", "started", "answered_at", "left_at",
                 "_ended", "_handed_over", "trace", "span")

    def __init__(self, dep, index: int, probe: bool, replica: str, trace=None):
        self.dep = dep
        self.index = index
        self.probe = probe
        self.replica = replica
        self.trace = trace            # the request's observe.RequestTrace, None when tracing is off
        self.span = None
        self.verdict: Verdict | None = None
        self.answered_at = 0.0
        self.left_at = 0.0
        self._ended = False
        self._handed_over = False

    def __enter__(self) -> "Attempt":
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

    def hand_over(self) -> "Attempt":
        """A stream owns the attempt from now on and will ``end`` it."""
        self._handed_over = True
        return self

    def end(self, verdict: Verdict | None) -> None:
        """Give back what the attempt holds and record ``verdict`` (None: no verdict). Once."""
        if self._ended:
            return
        self._ended = True
        self.verdict = verdict
        dep = self.dep
        dep.router.finish(self.index, clock() - self.started if verdict is SUCCESS else -1.0)
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
            self.end(classify_exception(exc))
            return True
        if isinstance(exc, Exception) and self.answered_at:
            log_bug(log, f"{self.dep.config.name}/{self.replica}: reading an upstream answer failed", exc)
            self.end(classify_exception(UpstreamFailure(
                f"the upstream's answer could not be read ({type(exc).__name__})")))
            return True
        self.end(None)
        return False


class Slot:
    """A held admission slot of one deployment, given back exactly once.

    The ``with`` block gives it back on the way out, whatever happened, unless
    a stream took it over (``hand_over``): then the stream's end does.
    """

    __slots__ = ("_admission", "_index", "_held", "_handed_over")

    def __init__(self, admission, index: int):
        self._admission = admission
        self._index = index
        self._held = True
        self._handed_over = False

    def __enter__(self) -> "Slot":
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
