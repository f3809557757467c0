"""The signals a worker drains on: the supervisor sends them, ``drain`` handles them.

Owns only the two names, so that the supervisor, which runs no event loop, knows them without
importing ``drain`` (and asyncio with it: every module the supervisor loads is resident in it).
Must not touch: handling a signal (``drain``), sending one (``supervisor``).
"""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)   # the host stops: drain_delay_s, then the drain
RETIRE_SIGNAL = signal.SIGUSR1                    # a reload retires this generation: drain at once
