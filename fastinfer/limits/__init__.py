"""Limits: may this request go now, and what does it cost?

Owns: this worker's asyncio side of the shared admission structures —
waiting for a slot (woken through the worker's eventfd, never by polling),
queue timeouts, giving a slot back, and leaving the queue at once when the
caller is cancelled (``admission``); gateway keys' and deployments' RPM/TPM
buckets, key concurrency and budgets (``quota``), the store they live in
(``store``: the host's segment; the seam for a cluster), the budget calendar
(``periods``), the price of tokens (``prices``), and the state kept under
``server.state_dir`` (``persist``). Must not touch: routing, providers, HTTP.
"""
from .admission import AdmissionControl, CapacityExhausted
from .persist import StateDir, StateDirInUse
from .prices import Price, price_of
from .quota import Grant, Limits
from .store import LimitSnapshot, LimitStore, LocalStore

__all__ = ["AdmissionControl", "CapacityExhausted", "Grant", "LimitSnapshot", "LimitStore", "Limits", "LocalStore",
           "Price", "StateDir", "StateDirInUse", "price_of"]
