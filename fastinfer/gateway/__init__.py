"""The gateway: the HTTP listener side of fastinfer: the data routes' own connections
(``protocol`` makes them: ``_core.client``, compiled) and aiohttp for everything else (``app``).

Owns: client connections, routes, reading and validating client bodies, request ids, body limits,
client timeouts, rendering errors in the caller's API shape, writing results
and streams back. Must not touch: replicas, providers, retries — it hands a
``GatewayRequest`` to the engine and writes what comes back.
"""
from .app import Gateway

__all__ = ["Gateway"]
