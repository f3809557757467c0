"""Gateway keys as the configuration gives them: a key given by a secret source (``key = { env |
file | command | value }``) is read once at start (and at every reload) and only its SHA-256 is kept.

Lives with the configuration, not the gateway, so the supervisor (which resolves keys before it
forks and must not load the web layer) can use it. Must not touch: requests, the key ring
(``gateway.auth``). The key itself is never stored, logged or shown.
"""
from __future__ import annotations

import dataclasses

from .schema import Config, ConfigError
from .secrets import SecretUnavailable


def key_digest(key: str) -> bytes:
    # hashlib (OpenSSL's libcrypto, ~3.5 MiB resident) is loaded only when a key comes from a source:
    # the supervisor resolves keys at start-up and otherwise never needs it
    import hashlib
    return hashlib.sha256(key.encode()).digest()


def resolve_key_hashes(config: Config) -> Config:
    """``config`` with every key given by a source (``key = { env | file | command | value }``)
    replaced by its SHA-256 (``key_sha256``); the raw key is dropped. A source that yields no key,
    or two keys that are the same, is a ``ConfigError`` naming the key's path."""
    problems: list[str] = []
    keys = []
    seen: dict[str, str] = {}
    for i, k in enumerate(config.keys):
        digest = k.key_sha256.lower() if k.key_sha256 else None
        if k.key is not None:
            try:
                raw = k.key.read()
            except SecretUnavailable as e:
                problems.append(f"keys[{i}].key: {e}")
                continue
            if not raw:
                problems.append(f"keys[{i}].key: {k.key.describe()} gave an empty key")
                continue
            digest = key_digest(raw).hex()
        if digest in seen:
            problems.append(f"keys[{i}].key: the same key as key {seen[digest]!r}")
        seen.setdefault(digest, k.name)
        keys.append(dataclasses.replace(k, key_sha256=digest))
    if problems:
        raise ConfigError(problems, config.source)
    return dataclasses.replace(config, keys=keys)
