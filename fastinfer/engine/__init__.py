"""The engine: admission, routing, the attempt loop, and the stream back.

Owns: turning a ``GatewayRequest`` into an ``EngineResult`` — choosing a
replica, calling the provider, retrying and falling back, relaying the
stream — and giving back what each attempt holds (``attempt``). Must not touch: aiohttp server objects or the client's socket; it
hands back bytes and never writes them.
"""
from .engine import Deployment, Engine
from .request import PRIORITY_LEVELS, EngineResult, GatewayRequest, clock, new_request

__all__ = ["Deployment", "Engine", "EngineResult", "GatewayRequest", "PRIORITY_LEVELS", "clock", "new_request"]
