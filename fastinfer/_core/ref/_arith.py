"""Arithmetic the reference shares with the compiled core, written once for every
reference structure: duration clamping (atomics.h fi_span_ns) and the table hash
(fi_mix64)."""
from __future__ import annotations

from ..constants import MAX_SPAN_NS

_M64 = (1 << 64) - 1


def span_ns(seconds: float) -> int:
    """A duration as ns, clamped to [0, MAX_SPAN_NS] (NaN counts as 0), as atomics.h does."""
    ns = seconds * 1e9 + 0.5
    if not ns > 0.0:
        return 0
    if ns >= float(MAX_SPAN_NS):
        return MAX_SPAN_NS
    return int(ns)


def mix64(x: int) -> int:
    """splitmix64's finaliser, as atomics.h's fi_mix64."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def item(items: list, index: int, what: str):
    """items[index], or IndexError naming ``what`` (negative indices are out of range too)."""
    if not 0 <= index < len(items):
        raise IndexError(f"{what} index out of range")
    return items[index]
