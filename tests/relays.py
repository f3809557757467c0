"""Driving a passthrough relay (``formats``) the two ways an upstream's bytes can arrive."""
from __future__ import annotations


def fed_whole_and_apart(make_relay, pieces: list[bytes]) -> tuple[bytes, bytes]:
    """The same events through two relays: all in one read, and one read each (stopping at a failure,
    as the engine does). Both must end alike (finished, error, failure; usage when nothing failed);
    returns what each forwarded."""
    whole, apart = make_relay(), make_relay()
    out_whole = whole.feed(b"".join(pieces))
    out_apart = b""
    for piece in pieces:
        out_apart += apart.feed(piece)
        if apart.failure is not None:
            break
    assert (whole.finished, whole.error, whole.failure is None) == (apart.finished, apart.error, apart.failure is None)
    if whole.failure is None:      # after garbage the engine reads no more: an estimate may differ
        assert whole.usage == apart.usage
    return out_whole, out_apart
