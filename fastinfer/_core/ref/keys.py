"""Pure-Python reference of ``fastinfer._core.keys``: the key a request carries, found by its
SHA-256 digest (hashlib's), and what it may do.

Must not touch: the config (``gateway.auth`` builds the keys), limits, metrics.
"""
from __future__ import annotations

import fnmatch
import hashlib
import hmac

from ...errors import PermissionDenied, Unauthorized

_DIGEST_BYTES = 32
_MODEL_CACHE_MAX = 1024


SHA_EXTENSIONS = False


def digest_of(key: str, portable: bool = False) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class GatewayKey:
    """One configured key as the request path checks it."""

    __slots__ = ("name", "digest", "globs", "priority", "max_priority", "models_body", "series", "_allowed")

    def __init__(self, name: str, digest: bytes, globs: tuple, priority: int, max_priority: int):
        if len(digest) != _DIGEST_BYTES:
            raise ValueError(f"a key's digest is {_DIGEST_BYTES} bytes (SHA-256), not {len(digest)}")
        self.name, self.digest, self.globs = name, digest, globs or ("*",)
        self.priority, self.max_priority = priority, max_priority
        self.models_body = b""
        self.series = None
        self._allowed: dict[str, bool] = {}

    def counted_in(self, series) -> None:
        self.series = series

    def may_use(self, model: str) -> bool:
        allowed = self._allowed.get(model)
        if allowed is None:
            allowed = any(fnmatch.fnmatchcase(model, g) for g in self.globs)
            if len(self._allowed) < _MODEL_CACHE_MAX:
                self._allowed[model] = allowed
        return allowed

    def check_model(self, model: str, deployment: str | None = None) -> None:
        if not (self.may_use(model) or (deployment is not None and self.may_use(deployment))):
            raise PermissionDenied(f"The key {self.name} may not use the model `{model}`.", param="model")

    def priority_of(self, asked: int | None) -> int:
        priority = self.priority if asked is None else asked
        return max(priority, self.max_priority)

    def admit(self, req, deployment: str | None) -> None:
        self.check_model(req.model, deployment)
        req.key = self.name


class KeyRing:
    """Every configured key, by digest."""

    def __init__(self, keys, presented_key):
        self.keys = list(keys)
        self._by_digest = {k.digest: k for k in self.keys}
        self._presented_key = presented_key

    def authenticate(self, headers, connection=None) -> GatewayKey:
        authorization = headers.get("authorization")
        if (type(authorization) is str and authorization.startswith("Bearer ")
                and " " not in authorization[7:]):
            presented = authorization[7:]
        else:
            presented = self._presented_key(authorization, headers)
        try:
            utf8 = presented.encode()
        except UnicodeEncodeError:        # not UTF-8 on the wire: no configured key is
            raise Unauthorized("Invalid API key.") from None
        if connection is not None:
            memo = connection.key_memo
            if (type(memo) is KeyMemo and memo.ring is self and len(memo._presented) == len(utf8)
                    and hmac.compare_digest(memo._presented, utf8)):
                return memo.key
        digest = hashlib.sha256(utf8).digest()
        key = self._by_digest.get(digest)
        if key is None or not hmac.compare_digest(key.digest, digest):
            raise Unauthorized("Invalid API key.")
        if connection is not None:
            connection.key_memo = KeyMemo(self, utf8, key)
        return key


class KeyMemo:
    """The key a connection's client presented, the ring that accepted it and the key it is."""

    __slots__ = ("ring", "_presented", "key")

    def __init__(self, ring: KeyRing, presented: bytes, key: GatewayKey):
        self.ring, self._presented, self.key = ring, presented, key

    def __repr__(self) -> str:
        return f"KeyMemo(key={self.key.name!r})"
