"""Limits: may this request go now? Host-wide concurrency slots and the priority queue.

Owns: this worker's asyncio side of the shared admission structures —
waiting for a slot (woken through the worker's eventfd, never by polling),
queue timeouts, giving a slot back, and leaving the queue at once when the
caller is cancelled. Must not touch: routing, providers, HTTP.
"""
from .admission import AdmissionControl, CapacityExhausted

__all__ = ["AdmissionControl", "CapacityExhausted"]
