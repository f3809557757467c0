"""Helpers shared by the shared-memory core tests, for the compiled module and
the pure-Python reference alike."""
from __future__ import annotations

import os
import uuid


def segment_name(prefix: str) -> str:
    """A segment name no other test, worker or concurrent run uses."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:10]}"


class SegmentMaker:
    """Creates segments of one implementation (``shm`` or ``ref.shm``) under fresh
    names; ``cleanup()`` unlinks and closes every one it made. Fixtures bind their
    own default sizes with ``functools.partial``."""

    def __init__(self, impl, prefix: str):
        self.impl = impl
        self.prefix = prefix
        self.made = []

    def __call__(self, n_workers, deployments, n_counters, n_histograms, bounds):
        seg = self.impl.Segment.create(
            segment_name(self.prefix),
            self.impl.Layout(n_workers, list(deployments), n_counters, n_histograms, list(bounds)))
        self.made.append(seg)
        return seg

    def cleanup(self) -> None:
        for seg in self.made:
            seg.unlink()
            seg.close()
