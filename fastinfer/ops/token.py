"""This run's one-time admin token, made by the supervisor when no admin key is configured.

Owns only making it: ``os.urandom`` and base64, as ``secrets.token_urlsafe`` does, without importing
``secrets`` (which brings hashlib and OpenSSL's libcrypto into the supervisor, resident there for
nothing). Must not touch: checking a presented key (``auth``).
"""
from __future__ import annotations

import base64
import os


def one_time_token() -> str:
    """A fresh admin token for one run of ``serve`` (256 bits, URL-safe: it travels in a URL fragment)."""
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode("ascii")
