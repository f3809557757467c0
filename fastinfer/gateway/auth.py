"""Gateway keys: who is calling, and which deployments they may use.

Owns: the keys as the config makes them (each key's ``models`` globs, priority default and
ceiling, its filtered ``/v1/models`` body), and reading a key of any other form than the usual
``Authorization: Bearer K``: ``x-api-key: K`` as the Anthropic SDK sends it, ``api-key: K`` as
the Azure SDK does, ``Bearer`` spelled otherwise or with spaces, and the 401s for a missing or
malformed one. The request path's checks (the digest, the lookup, the globs, the priority) are
the compiled core's: ``_core.keys`` (reference ``_core/ref/keys.py``), picked by ``key_ring``.

Must not touch: limits (``limits.quota``), the engine. The key itself is never
stored, logged, forwarded or shown: only its name leaves this module.
"""
from __future__ import annotations

import time

import orjson

from .._core import keys as compiled_keys
from ..config import Config
from ..config.keys import key_digest, resolve_key_hashes  # noqa: F401 (re-exported)
from ..engine import PRIORITY_LEVELS
from ..errors import Unauthorized


def key_ring(config: Config, core=compiled_keys):
    """Every key of ``config`` (its ``keys`` resolved to digests), as ``core`` (``_core.keys``, or
    in tests its reference) checks them: a ``KeyRing``."""
    created = int(time.time())
    return core.KeyRing([gateway_key(k, config.deployments, created, core) for k in config.keys], presented_key)


def gateway_key(config, deployments: list, created: int, core=compiled_keys):
    """One configured key, with the ``/v1/models`` body of the ``deployments`` it may use."""
    key = core.GatewayKey(config.name, bytes.fromhex(config.key_sha256), tuple(config.models),
                          PRIORITY_LEVELS[config.priority], PRIORITY_LEVELS[config.max_priority])
    key.models_body = orjson.dumps({"object": "list", "data": [
        {"id": name, "object": "model", "created": created, "owned_by": d.provider}
        for d in deployments if key.may_use(d.name) for name in (d.name, *d.aliases)]})
    return key


def presented_key(authorization: str | None, headers) -> str:
    """The key of any other form than ``Bearer K`` (``_core.keys`` reads that one itself)."""
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
