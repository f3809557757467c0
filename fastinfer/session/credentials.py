"""Credential sources with rotation: the live value behind a replica's ``Secret``.

Owns: reading a replica's credential from its source and keeping it current —
``value`` (fixed), ``env`` (re-read on ``refresh``), ``file`` (re-read when the
file changes: a cheap ``stat`` of dev/inode/size/mtime at most every
``check_interval_s``, so a Kubernetes secret-volume swap or an ``mv`` of a new
key into place is picked up without any request paying for it), ``command``
(a helper whose output is cached for ``ttl_s`` and refreshed in the
background before it expires; ``ttl_s = 0`` runs it once and again only on
``refresh``). Never blocks the event loop on a command (asyncio subprocess)
and never shows a value: reprs, logs and errors name the source, and
``fingerprint`` is a short hash for dashboards.

Must not touch: HTTP, pools, providers, the engine. It is a value holder.

API:

- ``current() -> str | None``: sync, cheap, the hot path (a file source may
  ``stat`` the file here, at most once per ``check_interval_s``).
- ``version``: increases by one on every change of the value.
- ``await refresh(cause, seen_version=None, force=False) -> bool``: re-read
  now; True when the value changed — or, given ``seen_version``, when the
  value is no longer the one of that version (a concurrent refresh already
  rotated it). Concurrent calls share one read; commands are not re-run
  within ``min_refresh_interval_s`` of the last run unless ``force``.
- ``subscribe(callback)``: ``callback(source, cause)`` runs on the loop thread after
  every change (keep it cheap: swap a snapshot, bump a metric).

Wiring into ``ReplicaSession`` (the lead's side; nothing here imports it).
A session stays an immutable snapshot; in-flight requests finish on the
snapshot they started with. Either

1. read through: the session holds ``source`` and ``credential`` becomes
   ``self.source.current()`` (a property), so a rotated file is used by the
   next attempt with no swap at all; or
2. swap: ``source.subscribe(lambda s, cause: registry.replace(dep, i, ReplicaSession(
   replica, s.current(), pool)))`` — one list-slot assignment on the loop
   thread, atomic for every reader.

Re-auth after an upstream 401/403 (``Verdict.reauth``)::

    seen = session.source.version                  # taken before the attempt
    ...
    if verdict.reauth and not reauthed and await session.source.refresh("upstream_401", seen_version=seen):
        reauthed = True                            # retry once with the new value
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from typing import Callable

from ..aio import cancel_and_wait
from ..config.secrets import Secret, SecretUnavailable
from ..observe import log_bug
from ..redact import remember

log = logging.getLogger("fastinfer.session")

__all__ = ["CredentialSource", "ValueSource", "EnvSource", "FileSource", "CommandSource", "NoCredential",
           "credential_source", "open_credential_source"]

Clock = Callable[[], float]


class CredentialSource:
    """The live value of one replica's credential. Subclasses implement ``_read``."""

    kind = "none"

    def __init__(self, secret: Secret | None, *, name: str = "", clock: Clock = time.monotonic,
                 min_refresh_interval_s: float = 1.0):
        self.secret = secret
        self.name = name
        self.version = 0
        self.last_error: str | None = None     # masked: says what failed, never the value
        self.refreshed_at: float | None = None  # clock() of the last completed read
        self._value: str | None = None
        self._clock = clock
        self._min_refresh_interval_s = min_refresh_interval_s
        self._inflight: asyncio.Future | None = None
        self._subscribers: list[Callable[[CredentialSource, str], None]] = []

    # ------------------------------------------------------------ hot path

    def current(self) -> str | None:
        return self._value

    # ------------------------------------------------------------ control

    async def start(self) -> None:
        """The first read; a source that yields nothing now still starts (the upstream will say 401)."""
        await self.refresh("start", force=True)
        if self._value is None and self.secret is not None:   # a replica with no credential needs none
            log.warning("replica %s: credential %s unavailable: %s", self.name, self.describe(), self.last_error)

    async def refresh(self, cause: str = "manual", *, seen_version: int | None = None, force: bool = False) -> bool:
        """Re-read the source now; whether the value differs from before (or from ``seen_version``'s)."""
        if seen_version is not None and seen_version != self.version:
            return True
        before = self.version
        inflight = self._inflight
        if inflight is None:
            if not force and not self._may_refresh():
                return False
            inflight = self._inflight = asyncio.get_running_loop().create_task(self._reload(cause))
            inflight.add_done_callback(self._clear_inflight)
        await asyncio.shield(inflight)
        return self.version != (before if seen_version is None else seen_version)

    async def close(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()

    def subscribe(self, callback: Callable[["CredentialSource", str], None]) -> None:
        self._subscribers.append(callback)

    # ------------------------------------------------------------ display

    def describe(self) -> str:
        return self.secret.describe() if self.secret is not None else "none"

    @property
    def fingerprint(self) -> str | None:
        """A short hash of the value: shows that a rotation happened, reveals nothing."""
        value = self._value
        if value is None:
            return None
        return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()}, version={self.version})"

    __str__ = __repr__

    # ------------------------------------------------------------ internals

    def _may_refresh(self) -> bool:
        return True

    def _clear_inflight(self, task: asyncio.Task) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: a failed read is already recorded in last_error

    async def _reload(self, cause: str) -> None:
        try:
            value = await self._read()
        except SecretUnavailable as e:
            self.last_error = str(e)
            log.warning("replica %s: credential %s not refreshed (%s): %s",
                        self.name, self.describe(), cause, self.last_error)
            return
        finally:
            self.refreshed_at = self._clock()
        self.last_error = None
        self._set(value, cause)

    async def _read(self) -> str | None:
        raise NotImplementedError

    def _set(self, value: str | None, cause: str) -> bool:
        """Install ``value``; True when it changed. A failed or empty read keeps the last good value."""
        if not value or value == self._value:
            return False
        first = self._value is None
        remember(value)   # error texts and logs never show it (``redact``)
        self._value = value
        self.version += 1
        if not first:
            log.info("replica %s: credential %s rotated (%s), now version %d",
                     self.name, self.describe(), cause, self.version)
        for callback in self._subscribers:
            try:
                callback(self, cause)
            except Exception as e:
                log_bug(log, f"replica {self.name}: credential change callback failed", e)
        return True


class NoCredential(CredentialSource):
    """A replica without a credential (self-hosted upstreams)."""

    async def _read(self) -> str | None:
        return None


class ValueSource(CredentialSource):
    """``{ value = ".." }``: fixed for the life of the config."""

    kind = "value"

    async def _read(self) -> str | None:
        return str(self.secret.ref)


class EnvSource(CredentialSource):
    """``{ env = "NAME" }``: read at start and on every ``refresh``."""

    kind = "env"

    async def _read(self) -> str | None:
        value = os.environ.get(str(self.secret.ref))
        if not value:
            raise SecretUnavailable(f"environment variable {self.secret.ref} is not set")
        return value


class FileSource(CredentialSource):
    """``{ file = PATH }``: re-read when the file's identity or content changes.

    ``current()`` checks ``os.stat`` (following symlinks, so a Kubernetes
    ``..data`` swap shows as a new inode) at most every ``check_interval_s``
    and reads the small file synchronously only when the stat differs, so the
    request right after a rotation already uses the new key. A missing or
    empty file (a writer mid-rotation) keeps the last good value and is looked
    at again at the next check.
    """

    kind = "file"

    def __init__(self, secret: Secret, *, check_interval_s: float = 0.5, **kw):
        super().__init__(secret, **kw)
        self.path = str(secret.ref)
        self.check_interval_s = check_interval_s
        self._next_check = 0.0
        self._sig: tuple | None = None

    def current(self) -> str | None:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self.check_interval_s
            self._check()
        return self._value

    def _check(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as e:
            self.last_error = f"cannot stat {self.path}: {e.strerror}"
            return
        sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if sig == self._sig:
            return
        try:
            value, sig = self._read_file()
        except SecretUnavailable as e:
            self.last_error = str(e)
            return
        if value:
            self._sig = sig
            self.last_error = None
            self._set(value, "file_changed")
        else:
            self.last_error = f"{self.path} is empty"

    def _read_file(self) -> tuple[str, tuple]:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read(1 << 20)
        except OSError as e:
            raise SecretUnavailable(f"cannot read {self.path}: {e.strerror}") from None
        sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        return data.decode("utf-8", "replace").strip(), sig

    async def _read(self) -> str | None:
        value, sig = await asyncio.to_thread(self._read_file)
        if not value:
            raise SecretUnavailable(f"{self.path} is empty")
        self._sig = sig
        self._next_check = self._clock() + self.check_interval_s
        return value


class CommandSource(CredentialSource):
    """``{ command = [..], ttl_s = N }``: a helper's stdout, cached for ``ttl_s``.

    A background task re-runs the helper ``refresh_ahead`` of the TTL before
    it expires (the value never goes stale under load); a failed run keeps the
    last good value and is retried sooner. Without the background task
    (``background=False``), ``current()`` past expiry schedules a refresh and
    returns the cached value meanwhile. ``ttl_s = 0``: run at start and on
    ``refresh`` only. The helper's stderr is never logged (it may hold the
    value); only its exit status is.
    """

    kind = "command"

    def __init__(self, secret: Secret, *, background: bool = True, timeout_s: float = 30.0,
                 refresh_ahead: float = 0.2, **kw):
        super().__init__(secret, **kw)
        self.argv = list(secret.ref)
        self.ttl_s = float(secret.ttl_s)
        self.timeout_s = timeout_s
        self.refresh_ahead = refresh_ahead
        self.background = background
        self.runs = 0                        # helper invocations, for tests and /admin/state
        self.expires_at: float | None = None
        self._last_run_at: float | None = None
        self._task: asyncio.Task | None = None

    def current(self) -> str | None:
        if self.expires_at is not None and self._inflight is None and self._task is None \
                and self._clock() >= self.expires_at:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return self._value
            self._inflight = loop.create_task(self._reload("ttl"))
            self._inflight.add_done_callback(self._clear_inflight)
        return self._value

    async def start(self) -> None:
        await super().start()
        if self.background and self.ttl_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._refresher())

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await super().close()

    def _may_refresh(self) -> bool:
        return self._last_run_at is None or self._clock() - self._last_run_at >= self._min_refresh_interval_s

    async def _refresher(self) -> None:
        retry_s = min(max(self.ttl_s * 0.1, 0.05), 30.0)
        while True:
            if self.expires_at is None or self.last_error is not None:
                wait = retry_s                  # the last run failed: try again soon
            else:
                wait = self.expires_at - self.ttl_s * self.refresh_ahead - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.refresh("ttl", force=True)

    async def _read(self) -> str | None:
        self.runs += 1
        self._last_run_at = self._clock()
        what = f"credential command {self.argv[0]}"
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise SecretUnavailable(f"{what} cannot start: {e.strerror or type(e).__name__}") from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as e:
            _kill_group(proc)
            await proc.wait()
            if isinstance(e, asyncio.CancelledError):
                raise
            raise SecretUnavailable(f"{what} timed out after {self.timeout_s:g}s") from None
        if proc.returncode != 0:
            raise SecretUnavailable(f"{what} exited with status {proc.returncode}")
        value = out.decode("utf-8", "replace").strip()
        if not value:
            raise SecretUnavailable(f"{what} printed nothing")
        if self.ttl_s > 0:
            self.expires_at = self._clock() + self.ttl_s
        return value


def _kill_group(proc) -> None:
    """Kill the helper and anything it started (it runs in its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


_KINDS: dict[str, type[CredentialSource]] = {
    "value": ValueSource, "env": EnvSource, "file": FileSource, "command": CommandSource,
}


def credential_source(secret: Secret | None, **kw) -> CredentialSource:
    """The source for ``secret`` (not started). Keywords not meant for its kind are ignored."""
    if secret is None:
        return NoCredential(None, **_common(kw))
    cls = _KINDS[secret.source]
    if cls is FileSource:
        extra = {k: kw[k] for k in ("check_interval_s",) if k in kw}
    elif cls is CommandSource:
        extra = {k: kw[k] for k in ("background", "timeout_s", "refresh_ahead") if k in kw}
    else:
        extra = {}
    return cls(secret, **_common(kw), **extra)


def _common(kw: dict) -> dict:
    return {k: kw[k] for k in ("name", "clock", "min_refresh_interval_s") if k in kw}


async def open_credential_source(secret: Secret | None, **kw) -> CredentialSource:
    """``credential_source(...)`` and its first read (and, for commands, its background refresher)."""
    source = credential_source(secret, **kw)
    await source.start()
    return source
