"""Providers: a provider is URL + auth + a wire format, and this is the one table of them.

Owns: ``PROVIDERS``, every provider the config may name, each a ``ProviderKind``
(``kinds``, plain data: the config reads this table without loading the transport): ``openai``, ``openai_compatible`` and ``azure_openai`` (OpenAI
format), ``anthropic``, ``gemini`` (AI Studio), and the in-process ``mock``.
Adding a provider is one entry here (and a ``formats`` module if it speaks a
new wire format); the config's choices, default base URLs and required replica
settings are read from this table. Must not touch: routing, retries,
admission, reading replies (``formats``), the client connection.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .kinds import ProviderKind

if TYPE_CHECKING:
    from .base import Provider

ANTHROPIC_VERSION = "2023-06-01"
_OPENAI_PATHS = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}


def _openai_url(replica, model: str, endpoint: str, stream: bool) -> str:
    if endpoint == "count_tokens":       # vLLM's, at the server's root, beside its /v1
        return f"{replica.base_url.removesuffix('/v1')}/tokenize"
    return f"{replica.base_url}/{_OPENAI_PATHS[endpoint]}"


def _azure_url(replica, model: str, endpoint: str, stream: bool) -> str:
    return (f"{replica.base_url}/openai/deployments/{model}/{_OPENAI_PATHS[endpoint]}"
            f"?api-version={replica.api_version}")


def _anthropic_url(replica, model: str, endpoint: str, stream: bool) -> str:
    return f"{replica.base_url}/messages/count_tokens" if endpoint == "count_tokens" else f"{replica.base_url}/messages"


def _gemini_url(replica, model: str, endpoint: str, stream: bool) -> str:
    action = ("countTokens" if endpoint == "count_tokens" else "streamGenerateContent?alt=sse" if stream
              else "generateContent")
    return f"{replica.base_url}/models/{model.removeprefix('models/')}:{action}"


# in the order the config's documentation lists them (config/schema.py takes its choices from here)
PROVIDERS: dict[str, ProviderKind] = {
    "openai": ProviderKind("openai", _openai_url, "Authorization", "Bearer ",
                           default_base_url="https://api.openai.com/v1", needs_credential=True),
    "azure_openai": ProviderKind("openai", _azure_url, "api-key", replica_requires=("api_version",),
                                 needs_credential=True),
    "anthropic": ProviderKind("anthropic", _anthropic_url, "x-api-key",
                              headers=(("anthropic-version", ANTHROPIC_VERSION),),
                              default_base_url="https://api.anthropic.com/v1", needs_credential=True,
                              token_count="native"),
    "gemini": ProviderKind("gemini", _gemini_url, "x-goog-api-key",
                           default_base_url="https://generativelanguage.googleapis.com/v1beta",
                           needs_credential=True, token_count="native"),
    # vLLM, SGLang, llama.cpp, Ollama, ...: OpenAI's API at a base_url the config gives
    "openai_compatible": ProviderKind("openai", _openai_url, "Authorization", "Bearer ", token_count="tokenize",
                                      takes_every_param=True),
    # answers in-process, so a new user gets a streamed answer with no upstream at all
    "mock": ProviderKind("openai", None, implementation="mock", takes_every_param=True),
}


def make_provider(deployment) -> Provider:
    """The provider of ``deployment`` (whose ``provider`` the config checked against ``PROVIDERS``)."""
    kind = PROVIDERS[deployment.provider]
    return _implementation(kind.implementation)(deployment, kind)


def _implementation(name: str) -> type[Provider]:
    """The class a kind's ``implementation`` names. Imported here, in the worker that makes the calls,
    not with the table: the supervisor reads the table (through the config) and needs no transport."""
    if name == "mock":
        from .mock import MockProvider
        return MockProvider
    from .base import Provider
    return Provider


def __getattr__(name: str):
    # ``Provider`` (the engine's annotation) without loading the transport for whoever reads the table
    if name == "Provider":
        from .base import Provider
        return Provider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PROVIDERS", "Provider", "ProviderKind", "make_provider"]
