"""A provider: where a deployment's upstream is, how it authenticates, and which wire format it speaks.

A ``ProviderKind`` is what the config's ``provider = "..."`` names: the URL of
each endpoint under a replica's ``base_url``, the header that carries the
replica's credential, headers every request carries, the wire format (a
``formats.Format``), and what the config must give it (a default
``base_url``, required replica settings). A ``Provider`` is a kind bound to
one deployment: ``send`` makes exactly one upstream call for a request, on the
replica session it is given, and hands back the ``transport``'s
``UpstreamReply``. It never chooses replicas, retries, reads replies or touches
the client connection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import orjson

from ..formats import Format
from ..transport import UpstreamReply, post

#: (replica, upstream model, endpoint, stream) -> the URL of that call
UrlOf = Callable[[object, str, str, bool], str]


class Provider:
    """One deployment's upstream calls, over HTTP."""

    __slots__ = ("deployment", "kind", "format")

    def __init__(self, deployment, kind: "ProviderKind"):
        self.deployment = deployment
        self.kind = kind
        self.format: Format = kind.format

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The OpenAI endpoints this upstream has ("chat", and for OpenAI-shaped ones "completions", "embeddings")."""
        return self.format.endpoints

    async def send(self, session, req, caller: Format, timeouts, extra: dict | None = None) -> UpstreamReply:
        """One upstream call for ``req`` (in ``caller``'s format) on ``session``'s replica;
        ``extra`` fields are added to the upstream body (a backend session's ``session_params``)."""
        deployment = self.deployment
        body = self.format.upstream_body(req, caller, deployment)
        if extra:
            body.update(extra)
        body = orjson.dumps(body)
        url = self.kind.url(session.replica, deployment.upstream_model, req.endpoint, req.stream)
        return await post(session.pool, url, self.kind.request_headers(session.credential), body, req.stream,
                          timeouts)


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """What makes a provider; the registry (``providers``) holds one per config name."""

    format: Format
    url: UrlOf | None                        # None: answered in-process, no network
    auth_header: str | None = None           # the header carrying the replica's credential
    auth_prefix: str = ""                    # what goes before the credential in it ("Bearer ")
    headers: tuple[tuple[str, str], ...] = ()   # sent with every request (API versions)
    default_base_url: str | None = None      # where a replica goes when the config names none
    replica_requires: tuple[str, ...] = ()   # replica settings this provider cannot do without
    # hosted APIs refuse every request without a key; self-hosted servers often need none
    needs_credential: bool = False
    provider: type[Provider] = Provider      # in-process providers bring their own

    @property
    def in_process(self) -> bool:
        return self.url is None

    def request_headers(self, credential: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **dict(self.headers)}
        if credential and self.auth_header:
            headers[self.auth_header] = self.auth_prefix + credential
        return headers
