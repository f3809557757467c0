"""The config ``serve`` runs: the file's own checks, then what only serving reads.

Owns: ``load_servable``, the one check that ``serve`` makes at start and at every reload, and that
``check-config`` and ``POST /admin/reload`` make before saying a config is good, so that none of them
accepts a config another refuses (a gateway key whose source gives nothing, two keys that are the same,
traces asked of an installation without the OpenTelemetry SDK). Must not touch: sockets, processes, HTTP.
"""
from __future__ import annotations

from .keys import resolve_key_hashes
from .schema import Config, ConfigError, default_config, load_config


def load_servable(path: str | None) -> Config:
    """The config at ``path`` (the built-in one without), every gateway key read and replaced by its
    hash; ``ConfigError`` with every problem ``serve`` would refuse it for."""
    config = load_config(path) if path else default_config()
    if config.telemetry is not None:
        from ..observe import tracing_unavailable    # probed only where traces are asked for
        why = tracing_unavailable()
        if why:
            raise ConfigError([f"telemetry: {why}"], config.source)
    return resolve_key_hashes(config)
