"""Providers: how to talk to each kind of upstream.

Owns: building upstream requests (URL, auth, body), and turning upstream
replies and streams into the caller's format. Must not touch: routing,
retries, admission, the client connection. Given a replica session, a
provider makes exactly one upstream call.
"""
from ..config import DeploymentConfig
from .anthropic import AnthropicProvider
from .base import Provider
from .gemini import GeminiProvider
from .mock import MockProvider
from .openai import OpenAIProvider

_BY_NAME = {
    "mock": MockProvider,
    "openai": OpenAIProvider,
    "azure_openai": OpenAIProvider,
    "openai_compatible": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
}


def make_provider(deployment: DeploymentConfig) -> Provider:
    try:
        return _BY_NAME[deployment.provider](deployment)
    except KeyError:
        raise NotImplementedError(f"provider {deployment.provider!r} is not available yet") from None


__all__ = ["Provider", "make_provider"]
