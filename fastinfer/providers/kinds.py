"""What the config's ``provider = "..."`` names: a ``ProviderKind``, plain data.

A kind is the URL of each endpoint under a replica's ``base_url``, the header
that carries the replica's credential, headers every request carries, the wire
format (named: its ``formats.Format`` is imported when a worker asks for it), what the config must give it (a default
``base_url``, required replica settings) and which class makes its calls (named,
not imported). Must not touch: the transport (it is the config's to read, and
the supervisor reads the config without loading HTTP client code), routing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

#: (replica, upstream model, endpoint, stream) -> the URL of that call
UrlOf = Callable[[object, str, str, bool], str]


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """What makes a provider; the registry (``providers``) holds one per config name."""

    wire: str                                # its wire format's name in ``formats.FORMATS``
    url: UrlOf | None                        # None: answered in-process, no network
    auth_header: str | None = None           # the header carrying the replica's credential
    auth_prefix: str = ""                    # what goes before the credential in it ("Bearer ")
    headers: tuple[tuple[str, str], ...] = ()   # sent with every request (API versions)
    default_base_url: str | None = None      # where a replica goes when the config names none
    replica_requires: tuple[str, ...] = ()   # replica settings this provider cannot do without
    # hosted APIs refuse every request without a key; self-hosted servers often need none
    needs_credential: bool = False
    # where its upstream counts a request's input tokens (Anthropic's ``count_tokens`` asks): "native"
    # (its API's own count, asked unless the deployment says ``count_tokens = "estimate"``), "tokenize"
    # (vLLM's ``/tokenize``, which only some compatible servers have: asked when the deployment says
    # ``count_tokens = "upstream"``), None (the gateway estimates)
    token_count: str | None = None
    # its upstream takes any parameter a request carries (a self-hosted server, the mock): none is
    # refused for want of a place in its API, and ``drop_params`` has nothing to drop
    takes_every_param: bool = False
    # which class makes the calls ("http": ``base.Provider``; in-process ones name theirs), imported by
    # ``make_provider`` only: reading the table (the config does) loads no transport, asyncio or ssl
    implementation: str = "http"

    @property
    def format(self):
        """The ``formats.Format`` it speaks; imported here, by the worker that makes the calls: the
        supervisor reads the table through the config, and the formats are ~2 MiB of its RSS."""
        from ..formats import FORMATS
        return FORMATS[self.wire]

    def counts_tokens(self, configured: str | None) -> bool:
        """Whether a deployment of this kind whose ``count_tokens`` is ``configured`` asks its upstream."""
        if configured is None:
            return self.token_count == "native"
        return configured == "upstream" and self.token_count is not None

    @property
    def in_process(self) -> bool:
        return self.url is None

    def request_headers(self, credential: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **dict(self.headers)}
        if credential and self.auth_header:
            headers[self.auth_header] = self.auth_prefix + credential
        return headers
