"""Limit state that outlives a restart: bucket levels and key spend under ``server.state_dir``.

Owns: the state directory — locked for the life of the server that opened it
(``flock`` on ``state_dir/lock``; a second server refuses to start, naming the
first one's pid), holding one SQLite file (``state.sqlite3``, the standard
library's ``sqlite3``) with a row per bucket and per key, by name — and the
writing of it: ``StateFlusher`` saves the host's state about once a second
from one worker (the holder of ``LEASE_STATE_FLUSH``), in a thread, never on the
request path; the supervisor restores it before the first worker starts and
saves it once more when every worker has drained. A bucket refills for the
time the server was down, as it would have had it been running.

Must not touch: the request path, HTTP, policies. Names and indices come from
the caller (``process.hostwide.HostIndex``'s ``buckets`` and ``keys``).
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .._core.constants import LEASE_STATE_FLUSH
from ..aio import cancel_and_wait
from .store import LimitSnapshot, LimitStore, LocalStore

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger("fastinfer.limits")

FLUSH_INTERVAL_S = 1.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (scope TEXT, name TEXT, kind TEXT, level REAL, saved_at REAL,
                                    PRIMARY KEY (scope, name, kind));
CREATE TABLE IF NOT EXISTS spend (key TEXT PRIMARY KEY, period_kind TEXT, period INTEGER,
                                  micro_usd INTEGER, saved_at REAL);
"""


class StateDirInUse(Exception):
    """Another server holds the state directory's lock."""


def spend_periods(config) -> dict[str, str]:
    """key name -> the period its spend is kept in (its budget's; ``total`` without a budget)."""
    return {k.name: k.budget.period if k.budget is not None else "total" for k in config.keys}


def take_snapshot(store: LimitStore, buckets: dict, keys: dict, periods: dict[str, str]) -> LimitSnapshot:
    """The host's limit state now, by name (cheap: a load per bucket and per key)."""
    snap = LimitSnapshot()
    for name, i in buckets.items():
        snap.buckets[name] = store.level(i)
    for name, k in keys.items():
        period, micro = store.export_spend(k)
        snap.spend[name] = (periods[name], period, micro)
    return snap


class StateDir:
    """The locked state directory of one running server."""

    def __init__(self, path: str):
        self.path = Path(os.path.expanduser(path))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StateDirInUse(f"server.state_dir {self.path}: cannot use it: {e.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._lock_fd)
            raise StateDirInUse(f"server.state_dir {self.path} is in use by another fastinfer (pid {holder}); "
                                "two servers cannot share a state_dir") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        self.db = self.path / "state.sqlite3"
        with self._connect():
            pass
        import sqlite3      # _connect loaded it
        self.Error = sqlite3.Error      # what a failed save raises, besides OSError

    def _connect(self) -> sqlite3.Connection:
        # imported only with a state_dir: without one, no process of the tree holds SQLite (a MiB
        # resident between the library and the module, counted in the supervisor and every worker)
        import sqlite3
        db = sqlite3.connect(self.db, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        return db

    def save(self, snapshot: LimitSnapshot, now: float | None = None) -> None:
        """Write ``snapshot`` in one transaction (a new connection: callers may be any thread)."""
        now = time.time() if now is None else now
        db = self._connect()
        try:
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?, ?)",
                           [(*name, level, now) for name, level in snapshot.buckets.items()])
            db.executemany("INSERT OR REPLACE INTO spend VALUES (?, ?, ?, ?, ?)",
                           [(key, *spend, now) for key, spend in snapshot.spend.items()])
            db.execute("COMMIT")
        finally:
            db.close()

    def load(self, now: float | None = None) -> LimitSnapshot:
        """What was saved, each bucket refilled for the time since (capped by the caller's capacity)."""
        now = time.time() if now is None else now
        snap = LimitSnapshot()
        db = self._connect()
        try:
            for scope, name, kind, level, saved_at in db.execute("SELECT * FROM buckets"):
                snap.buckets[(scope, name, kind)] = (level, max(0.0, now - saved_at))
            for key, period_kind, period, micro, _ in db.execute("SELECT * FROM spend"):
                snap.spend[key] = (period_kind, period, micro)
        finally:
            db.close()
        return snap

    def restore(self, segment, buckets: dict, keys: dict, config) -> None:
        """Load the saved state into a fresh segment (before any worker starts), by name: a bucket
        or key the config no longer has is ignored, a spend kept in another period kind too."""
        store = LocalStore(segment, len(buckets), len(keys))
        saved = self.load()
        periods = spend_periods(config)
        for name, (level, elapsed) in saved.buckets.items():
            i = buckets.get(name)
            if i is not None:
                store.set_level(i, level + elapsed * store.rate_per_s(i))
        for name, (period_kind, period, micro) in saved.spend.items():
            k = keys.get(name)
            if k is not None and periods.get(name) == period_kind:
                store.restore_spend(k, period, micro)

    def save_segment(self, segment, buckets: dict, keys: dict, config) -> None:
        """Save a segment's state (the supervisor, once every worker has drained)."""
        store = LocalStore(segment, len(buckets), len(keys))
        self.save(take_snapshot(store, buckets, keys, spend_periods(config)))

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


class StateFlusher:
    """Saves the host's limit state about once a second, from whichever worker holds the lease."""

    def __init__(self, state_dir: StateDir, segment, store: LimitStore, buckets: dict, keys: dict, config,
                 worker: int, interval_s: float = FLUSH_INTERVAL_S):
        self.state_dir = state_dir
        self.lease = segment.lease(LEASE_STATE_FLUSH)
        self.store = store
        self.buckets = buckets
        self.keys = keys
        self.periods = spend_periods(config)
        self.worker = worker
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None
        self._last: LimitSnapshot | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval_s)
            if not self.lease.try_hold(self.worker, self.interval_s * 3):
                continue
            snapshot = take_snapshot(self.store, self.buckets, self.keys, self.periods)
            if snapshot == self._last:
                continue
            try:
                await asyncio.to_thread(self.state_dir.save, snapshot)
            except (OSError, self.state_dir.Error) as e:
                if not failing:   # one line when saving starts failing, one when it works again
                    log.error("cannot save limit state to %s: %s", self.state_dir.db, e)
                failing = True
                continue
            if failing:
                log.warning("limit state saved to %s again", self.state_dir.db)
            failing = False
            self._last = snapshot

    async def stop(self) -> None:
        """Stop saving (a draining worker: the supervisor saves the final state)."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self.lease.release(self.worker)
