"""Gateway keys: who is calling, and which deployments they may use.

Owns: finding the key a request carries (``Authorization: Bearer K``, else
``x-api-key: K`` as the Anthropic SDK sends it, else ``api-key: K`` as the Azure
SDK does), looking it up by its SHA-256 digest (one hash and one dict lookup,
whatever the number of keys; the digests are then compared in constant time),
each key's ``models`` globs, priority default and ceiling, and its filtered
``/v1/models`` body.

Must not touch: limits (``limits.quota``), the engine. The key itself is never
stored, logged, forwarded or shown: only its name leaves this module.
"""
from __future__ import annotations

import fnmatch
import hashlib
import hmac
import time

import orjson
from aiohttp import hdrs

from ..config import Config
from ..config.keys import key_digest, resolve_key_hashes  # noqa: F401 (re-exported)
from ..engine import PRIORITY_LEVELS
from ..errors import PermissionDenied, Unauthorized

_MODEL_CACHE_MAX = 1024   # answers cached per key for model names (deployment names and aliases)


class GatewayKey:
    """One configured key as the gateway checks it."""

    __slots__ = ("name", "digest", "globs", "priority", "max_priority", "models_body", "_allowed")

    def __init__(self, config, deployments: list, created: int):
        self.name = config.name
        self.digest = bytes.fromhex(config.key_sha256)
        self.globs = tuple(config.models) or ("*",)
        self.priority = PRIORITY_LEVELS[config.priority]
        self.max_priority = PRIORITY_LEVELS[config.max_priority]   # the highest class (lowest number)
        self._allowed: dict[str, bool] = {}
        self.models_body = orjson.dumps({"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": d.provider}
            for d in deployments if self.may_use(d.name) for name in (d.name, *d.aliases)]})

    def may_use(self, model: str) -> bool:
        """``model`` matches one of the key's ``models`` globs (cached: one dict lookup per request)."""
        allowed = self._allowed.get(model)
        if allowed is None:
            allowed = any(fnmatch.fnmatchcase(model, g) for g in self.globs)
            if len(self._allowed) < _MODEL_CACHE_MAX:
                self._allowed[model] = allowed
        return allowed

    def check_model(self, model: str, deployment: str | None = None) -> None:
        """``model`` as the client named it (an alias, ``PROVIDER/<model>``) or the ``deployment`` it
        resolves to (None: none) matches one of the key's globs."""
        if not (self.may_use(model) or (deployment is not None and self.may_use(deployment))):
            raise PermissionDenied(f"The key {self.name} may not use the model `{model}`.", param="model")

    def priority_of(self, asked: int | None) -> int:
        """The class a request runs in: what it asked for (else the key's default), never above the ceiling."""
        priority = self.priority if asked is None else asked
        return priority if priority >= self.max_priority else self.max_priority


class KeyRing:
    """Every configured key, by digest."""

    def __init__(self, config: Config):
        created = int(time.time())
        self.keys = [GatewayKey(k, config.deployments, created) for k in config.keys]
        self._by_digest = {k.digest: k for k in self.keys}

    def authenticate(self, headers) -> GatewayKey:
        """The key ``headers`` carry, or ``Unauthorized`` (missing, malformed or unknown)."""
        # aiohttp's name is case-folded once; a plain str is folded again by every lookup
        authorization = headers.get(hdrs.AUTHORIZATION)
        # the usual form, ``Bearer K`` with no space to strip, read here; any other by ``_presented_key``
        presented = authorization[7:] if authorization is not None and authorization.startswith("Bearer ") else " "
        if " " in presented:
            presented = _presented_key(authorization, headers)
        digest = _sha256(presented.encode()).digest()
        key = self._by_digest.get(digest)
        # the dict found it by hash equality; the constant-time comparison is what decides
        if key is None or not _compare_digest(key.digest, digest):
            raise Unauthorized("Invalid API key.")
        return key


_sha256 = hashlib.sha256
_compare_digest = hmac.compare_digest


def _presented_key(authorization: str | None, headers) -> str:
    """The key of any other form than ``Bearer K`` (``authenticate`` reads that one itself)."""
    if authorization is not None:
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("Malformed Authorization header: expected `Authorization: Bearer <key>`.")
        return key
    key = headers.get("x-api-key") or headers.get("api-key")
    if not key:
        raise Unauthorized("Missing API key: send it as `Authorization: Bearer <key>`, `x-api-key` or `api-key`.")
    return key
