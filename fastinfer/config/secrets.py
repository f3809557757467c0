"""Secret references: where a credential comes from, never the credential itself.

A ``Secret`` names a source (``env``, ``file``, ``command`` or ``value``); its
repr and its ``describe()`` never show the secret's value, so a Secret can be
logged, printed by ``check-config`` or put in ``/admin/state`` safely. Every value
read is handed to ``redact.remember``: a gateway key or the admin key a client
pastes into its request id, or an error text that quotes one, is masked wherever
``redact`` runs (logs, errors), as a replica's credential is.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

from ..redact import remember

SOURCES = ("env", "file", "command", "value")


class SecretUnavailable(Exception):
    """The source exists in config but yields no value right now."""


@dataclass(frozen=True)
class Secret:
    source: str
    ref: str | tuple[str, ...] = field(repr=False)
    ttl_s: float = 300.0

    def __repr__(self) -> str:
        return f"Secret({self.describe()})"

    def describe(self) -> str:
        """A masked, human-readable description: says where, never what."""
        if self.source == "env":
            return f"env:{self.ref}"
        if self.source == "file":
            return f"file:{self.ref}"
        if self.source == "command":
            return f"command:{self.ref[0]} (ttl {self.ttl_s:g}s)"
        return "value:****"

    @property
    def may_block(self) -> bool:
        """Whether ``read`` may block (a file, a command): an event loop reads those in a thread."""
        return self.source in ("file", "command")

    def read(self) -> str:
        """Fetch the current value from its source (may block: files, commands), remembered for
        ``redact``."""
        value = self._fetch()
        remember(value)
        return value

    def _fetch(self) -> str:
        if self.source == "value":
            return str(self.ref)
        if self.source == "env":
            value = os.environ.get(str(self.ref))
            if not value:
                raise SecretUnavailable(f"environment variable {self.ref} is not set")
            return value
        if self.source == "file":
            try:
                with open(str(self.ref), encoding="utf-8") as f:
                    return f.read().strip()
            except OSError as e:
                raise SecretUnavailable(f"cannot read {self.ref}: {e.strerror}") from None
        try:
            out = subprocess.run(list(self.ref), capture_output=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError) as e:
            raise SecretUnavailable(f"credential command {self.ref[0]} failed: {type(e).__name__}") from None
        return out.stdout.decode().strip()
