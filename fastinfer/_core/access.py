# cython: language_level=3, annotation_typing=False
"""The access log's side of the request path: each answered request's line, kept for the flush.

Owns: ``AccessBuffer``, one a worker, which keeps each line as ``(ts, values)`` (the values in
``observe.access.FIELDS``' order, durations in seconds) until ``observe.access`` flushes it:

- ``answered(ts, request_id, data, status, error, duration_s, method, path)``, once per answered
  data request: reads the request's record — ``data``, the gateway's ``DataRequest`` (its ``key``,
  ``deployment``, ``req``, ``result``, ``cut``), its engine request (``fallback``, ``replica``, ``usage``,
  ``cost_usd``, ``attempts``, ``stream``) and result (``ttft_s``, ``overhead_s``) — into its line;
  a client's request id is redacted (one the gateway made starts with its ``id_prefix``);
- ``add(ts, values)``: a line whose values the caller made (an answer of another route);
- each arms the flush timer when nothing waited, and flushes at once past ``max_pending`` lines, or
  when closed (a draining worker writes each line as it comes); ``take()`` hands what is kept over.

And ``error_text(data, status, error)``: the error an answer's line and trace show.

Why: made in Python, the line was a sixteen-value tuple and its conditionals, ~145 opcodes of the
~430 that every feature together adds to a request; compiled with ``access.pxd``'s types
(Cython's pure-Python mode, as ``upstream.py``) it is one call. The ``.py`` is its own reference:
``ref/access.py`` loads it uncompiled and ``tests/test_access_capture.py`` runs over both.

Must not touch: formatting and writing lines (``observe.access``, ``_core.lines``), metrics, what
the request did. It is told what happened.
"""
from __future__ import annotations

from .slotted import SlotFields

CLIENT_CLOSED = 499   # the client went away before its answer was complete (nginx's code)
CLIENT_CLOSED_ERROR = "the client closed the connection before the answer was complete"
INTERNAL_ERROR = "Internal gateway error."


# the fields of the records a line is made of, read where the records keep them (compiled: not the
# generic way Cython reads an untyped object's attribute, ~150 instructions each, 15 a request)
_DATA_FIELDS = SlotFields("key", "deployment", "req", "result", "cut")
_REQUEST_FIELDS = SlotFields("replica", "fallback", "usage", "cost_usd", "attempts", "stream")
_RESULT_FIELDS = SlotFields("ttft_s", "overhead_s", "stream")


def error_text(data, status, error):
    """The error the line of an answer with ``status`` shows: the error answered (``error``, a
    ``GatewayError``), the client's leaving, the drain's cut, a stream's failure after its head
    went out (a 200 that ended with an error event), an internal error for any other 5xx; else None."""
    result = data.result
    return _error_of(status, error, data.cut, None if result is None else result.stream)


def _error_of(status, error, cut, stream):
    """``error_text`` of the request's ``cut`` and its answer's ``stream`` (None: none)."""
    if error is not None:
        return error.message
    if status == CLIENT_CLOSED:
        return CLIENT_CLOSED_ERROR
    if cut is not None:
        return cut.message
    if stream is not None:
        failure = stream.failure
        if failure is not None:
            return failure.message
    return INTERNAL_ERROR if status >= 500 else None


class AccessBuffer:
    """One worker's kept access lines (see the module): ``flush()`` is called to write them (it
    calls ``take``) ``flush_s`` after the first is kept, on the worker's ``loop``."""

    def __init__(self, loop, flush, flush_s, max_pending, id_prefix, redact):
        self.pending = []
        self.closed = False
        self._loop = loop
        self._flush = flush
        self._flush_s = flush_s
        self._max_pending = max_pending
        self._id_prefix = id_prefix      # the gateway's own request ids start with it: shown as they are
        self._redact = redact
        self._timer = None

    def answered(self, ts, request_id, data, status, error, duration_s, method, path):
        """An answered data request's line (see the module); ``ts``: when it arrived (wall clock)."""
        if not request_id.startswith(self._id_prefix):
            request_id = self._redact(request_id)
        key, deployment, req, result, cut = _DATA_FIELDS.of(data)
        if req is None:
            replica = fallback = usage = cost = None
            attempts = 0
            stream = False
        else:
            replica, fallback, usage, cost, attempts, stream = _REQUEST_FIELDS.of(req)
        if usage is None:
            prompt_tokens = completion_tokens = None
        else:
            prompt_tokens = usage.get("prompt_tokens")
            completion_tokens = usage.get("completion_tokens")
        if result is None:
            ttft_s = overhead_s = relayed = None
        else:
            ttft_s, overhead_s, relayed = _RESULT_FIELDS.of(result)
        self._keep((ts, (request_id, key, deployment, fallback, replica, status, attempts, stream, duration_s,
                         ttft_s, overhead_s, prompt_tokens, completion_tokens, cost,
                         _error_of(status, error, cut, relayed), method, path)))

    def add(self, ts, values):
        """A line whose values (``FIELDS``' order) the caller made; ``ts``: when its request arrived."""
        self._keep((ts, values))

    def _keep(self, line):
        pending = self.pending
        pending.append(line)
        if self._timer is None and not self.closed:
            self._timer = self._loop.call_later(self._flush_s, self._flush)
        elif len(pending) >= self._max_pending or self.closed:
            self._flush()

    def take(self):
        """What is kept, handed over (the timer, if armed, disarmed): a list of ``(ts, values)``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = self.pending
        self.pending = []
        return pending
