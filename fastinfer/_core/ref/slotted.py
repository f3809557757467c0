"""Pure-Python reference of ``fastinfer._core.slotted``: the record made by the class's own ``__init__``.

Must not touch: what the fields mean (the class says).
"""
from __future__ import annotations


def record_maker(cls):
    """``cls(*values)``: what the compiled maker must return, field for field."""
    def make(*values):
        return cls(*values)
    return make
