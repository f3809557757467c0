# cython: language_level=3, annotation_typing=False
"""What an answered data request leaves behind, counted in one compiled call.

Owns: ``AnswerRecorder.answered(request_id, method, path, data, status, error)``, once per answered
data request (a stream: once it has ended): its deployment's series (code, duration, the gateway's
overhead, time to first byte; a request that named no deployment counts under ``series_of("")``),
its gateway key's series (the code), and its access line (``access``, the access buffer's
``answered``, when there is an access log). ``data`` is the gateway's ``DataRequest``.

Why: in Python this was ``Gateway._answered``'s body, ~45 opcodes a request bare and ~75 with a key
and the access log, around three calls that were already compiled; compiled with ``answers.pxd``'s
types (Cython's pure-Python mode, as ``access.py``) it is one call. The ``.py`` is its own
reference: ``ref/answers.py`` loads it uncompiled and ``tests/test_answers.py`` runs over both.

Must not touch: the trace (the gateway ends it), what the series and the access line do with what
they are told.
"""
from __future__ import annotations


class AnswerRecorder:
    """One worker's recorder (see the module): ``clock`` is the overhead clock ``data.received_at``
    was read on (seconds), ``wall`` the wall clock (the access line's time), ``series_of(name)`` a
    deployment's series by name, ``access`` the access buffer's ``answered`` or None."""

    def __init__(self, clock, wall, series_of, access):
        self._clock = clock
        self._wall = wall
        self._series_of = series_of
        self._access = access

    def answered(self, request_id, method, path, data, status, error):
        """``data``'s request was answered with ``status`` (``error``: the ``GatewayError`` answered, or None)."""
        duration = self._clock() - data.received_at
        series = data.series
        if series is None:      # refused before its deployment was known
            series = self._series_of(data.deployment or "")
        result = data.result
        if result is None:      # refused before the engine answered: no overhead, no first byte
            series.answered(status, duration, None, None)
        else:
            series.answered(status, duration, result.overhead_s, result.ttft_s)
        key_series = data.key_series
        if key_series is not None:
            key_series.request(status)
        if self._access is not None:
            self._access(self._wall() - duration, request_id, data, status, error, duration, method, path)
