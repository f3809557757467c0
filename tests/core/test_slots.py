"""The compiled classes' object fields that the engine and the gateway read from Python on every
request are member descriptors (``_core/slots.h``): what a ``__slots__`` field is, which CPython
3.11 reads in a few instructions where Cython's getset stays a generic read. They must read what
the compiled code wrote, at the right offsets, and stay read-only from Python: a deleted field
would be a NULL the class's own C code reads."""
from __future__ import annotations

import types

import pytest

from fastinfer._core import attempts, client, keys, shm, upstream

SLOTS = [
    (attempts.Attempt, ("dep", "replica", "trace", "span")),
    (attempts.RelayedStream, ("reply", "relay", "provider")),
    (client.DirectRequest, ("method", "path", "headers", "keep_alive", "content_length", "content", "writer",
                            "transport", "protocol", "task")),
    (keys.GatewayKey, ("name", "series")),   # read by the gateway on every keyed request
    (upstream.UpstreamReply, ("status", "headers", "body", "first", "stream")),
    (upstream.Exchange, ("ready",)),      # awaited by ``transport.exchange``
    (shm.Grant, ("refusal",)),            # read by ``Limits.admit``
]


class _Connection:
    transport = object()


def _made():
    """One instance of each class, every field a distinct object, made by its compiled code."""
    body = client.RequestBody(7, 64, None)
    connection = _Connection()
    dep, trace, stream = object(), object(), object()
    return {
        attempts.Attempt: (attempts.Attempt(dep, 3, False, "replica-3", trace),
                           {"dep": dep, "replica": "replica-3", "trace": trace, "span": None}),
        client.DirectRequest: (client.DirectRequest("/v1/chat/completions", {"a": "b"}, True, body, connection),
                               {"method": "POST", "path": "/v1/chat/completions", "keep_alive": True,
                                "content_length": 7, "content": body,
                                "writer": connection, "transport": connection.transport, "protocol": connection,
                                "task": None}),
        keys.GatewayKey: (keys.GatewayKey("team-a", bytes(32), (), 0, 0), {"name": "team-a", "series": None}),
        upstream.UpstreamReply: (upstream.UpstreamReply(201, {"x": "y"}, b"body", b"first", stream),
                                 {"status": 201, "headers": {"x": "y"}, "body": b"body", "first": b"first",
                                  "stream": stream}),
    }


@pytest.mark.parametrize("cls, names", SLOTS, ids=[cls.__name__ for cls, _ in SLOTS])
def test_the_fields_read_from_python_are_member_descriptors(cls, names):
    for name in names:
        assert type(cls.__dict__[name]) is types.MemberDescriptorType, name
    # a field Python writes keeps Cython's getset (the engine sets an attempt's verdict)
    if cls is attempts.Attempt:
        assert type(cls.__dict__["verdict"]) is types.GetSetDescriptorType


@pytest.mark.parametrize("cls", [attempts.Attempt, client.DirectRequest, keys.GatewayKey, upstream.UpstreamReply],
                         ids=lambda cls: cls.__name__)
def test_each_field_reads_what_the_compiled_code_wrote(cls):
    instance, expected = _made()[cls]
    for name, value in expected.items():
        got = getattr(instance, name)
        assert got is value or (type(value) in (str, int, bytes, dict) and got == value), name


@pytest.mark.parametrize("cls", [attempts.Attempt, client.DirectRequest, keys.GatewayKey, upstream.UpstreamReply],
                         ids=lambda cls: cls.__name__)
def test_python_can_neither_set_nor_delete_them(cls):
    instance, expected = _made()[cls]
    for name in expected:
        before = getattr(instance, name)
        with pytest.raises(AttributeError):
            setattr(instance, name, "else")
        with pytest.raises(AttributeError):
            delattr(instance, name)
        assert getattr(instance, name) is before, name
