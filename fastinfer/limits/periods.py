"""Budget periods: calendar periods in UTC, each with a small growing id.

Owns: turning wall-clock time into the id of a key's current budget period
(what ``KeySpend`` stores beside the spend, so a new period starts from zero)
and the time it ends (a budget's ``retry-after``). ``day`` is days since
1970-01-01, ``week`` weeks since the Monday before it (ISO weeks start on
Monday), ``month`` months since January 1970, ``total`` is always 0 and never
ends. Must not touch: spend itself, HTTP.
"""
from __future__ import annotations

import datetime as _dt
import math

_DAY_S = 86_400
_EPOCH_MONDAY_OFFSET_DAYS = 3   # 1970-01-01 was a Thursday: the Monday before it was 3 days earlier


def period_at(kind: str, now: float) -> tuple[int, float]:
    """(period id, end of the period in unix seconds; inf for ``total``) at unix time ``now``."""
    if kind == "total":
        return 0, math.inf
    days = int(now // _DAY_S)
    if kind == "day":
        return days, (days + 1) * _DAY_S
    if kind == "week":
        week = (days + _EPOCH_MONDAY_OFFSET_DAYS) // 7
        return week, ((week + 1) * 7 - _EPOCH_MONDAY_OFFSET_DAYS) * _DAY_S
    if kind == "month":
        date = _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
        month = (date.year - 1970) * 12 + date.month - 1
        year, month_of_year = divmod(month + 1, 12)
        end = _dt.datetime(1970 + year, month_of_year + 1, 1, tzinfo=_dt.timezone.utc)
        return month, end.timestamp()
    raise ValueError(f"unknown budget period {kind!r}")


class PeriodClock:
    """The current period of one kind, recomputed only when the period it holds has ended."""

    __slots__ = ("kind", "period", "ends_at")

    def __init__(self, kind: str):
        self.kind = kind
        self.period = -1
        self.ends_at = -math.inf

    def current(self, now: float) -> int:
        """The id of the period ``now`` (unix seconds) falls in."""
        if now >= self.ends_at:
            self.period, self.ends_at = period_at(self.kind, now)
        return self.period
