"""What an attempt and an admitted request hold, and the guarantee that they give it back.

``Attempt`` (one upstream attempt on one replica, from the pick to its verdict) and ``Slot`` (a
held admission slot) are ``with`` blocks whose exit cannot be skipped; they are compiled
(``_core.attempts``, where their rules are written). This module gives them the engine's
verdicts: how an exception and a stream's error event are judged (``classify``), ``SUCCESS`` and
``UNTIMED_SUCCESS``.

Must not touch: choosing replicas, retrying, HTTP. The verdicts come from ``classify``.
"""
from __future__ import annotations

from .._core import attempts
from .._core.attempts import DEADLINE_SLACK_S, Attempt, Slot
from .classify import Verdict, classify_exception, classify_stream_error, past_deadline

#: an attempt whose answer was used; its time feeds the replica's latency average
SUCCESS = Verdict(error=None, outcome="success", retry=False, counts_for_breaker=False, fallback=False)
#: a success whose time says nothing of how fast the replica answers (a token count, answered
#: without generating): counted and told to the breaker as ``SUCCESS``, kept out of the latency average
#: (``latency`` routing would send generations to the replica that counts fastest)
UNTIMED_SUCCESS = Verdict(error=None, outcome="success", retry=False, counts_for_breaker=False, fallback=False)

attempts.judged_by(classify_exception, classify_stream_error, SUCCESS, past_deadline)

__all__ = ["DEADLINE_SLACK_S", "SUCCESS", "UNTIMED_SUCCESS", "Attempt", "Slot"]
