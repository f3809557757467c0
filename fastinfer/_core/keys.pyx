# cython: language_level=3
"""Gateway keys on the request path: which key a request carries, and what that key may do.

Owns: reading the key from the head's usual ``Authorization: Bearer K`` (any other form is
``gateway.auth``'s, handed in), finding it by its SHA-256 digest (computed in C, ``sha256.h``:
one hash and one dict lookup whatever the number of keys, then the digests compared in constant
time), a key's ``models`` globs (answers cached) and its priority default and ceiling. Three calls
a request: ``KeyRing.authenticate`` before the body is read, ``GatewayKey.priority_of`` as the body
is checked (where the gateway reads the class asked for), ``GatewayKey.admit`` once the model is
known. Reference: ``ref/keys.py``, which the tests check this module against.

A connection's key (``KeyMemo``): a client sends the same key on every request of a keep-alive
connection, so the key it presented and the ring found is kept on the connection (the gateway's
``DirectConnection.key_memo``) and its next request's key, compared with it in constant time, is
found without the hash (~4,000 instructions; net of the memo's own check, 1.6 % of a request
with the features on, ``bench.instructions``). Only a key the ring accepted is kept, only for that
connection's life, and only against the ring that found it: a reload's new ring finds every key
again, and a wrong key never matches.

Must not touch: the config (``gateway.auth`` builds the keys from it), limits, metrics. The key
itself is kept only by a connection that presented it (its ``KeyMemo``), never by the ring: the
ring keeps digests, and only a key's name leaves this module.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memchr, memcmp

from fastinfer._core.slots cimport fi_readonly_slots

import fnmatch

from aiohttp import hdrs

from ..errors import PermissionDenied, Unauthorized

cdef extern from "sha256.h":
    void fi_sha256(const unsigned char *data, size_t length, unsigned char *out, int use_ni) nogil
    int fi_sha256_has_ni() nogil
    int fi_same(const unsigned char *a, const unsigned char *b, size_t n) nogil

cdef enum:
    DIGEST_BYTES = 32
    MODEL_CACHE_MAX = 1024      # answers cached per key for model names (deployment names and aliases)

# aiohttp's name is case-folded once; a plain str is folded again by every lookup
cdef object _AUTHORIZATION = hdrs.AUTHORIZATION

# the SHA extensions, where the CPU has them (asked once)
cdef int _use_ni = fi_sha256_has_ni()
SHA_EXTENSIONS = bool(_use_ni)


def digest_of(str key, bint portable=False):
    """The SHA-256 digest of ``key``'s UTF-8 (``UnicodeEncodeError`` for a lone surrogate);
    ``portable``: without the SHA extensions even where the CPU has them (for the tests)."""
    cdef Py_ssize_t length
    cdef const char *data = PyUnicode_AsUTF8AndSize(key, &length)
    return _digest(data, length, 0 if portable else _use_ni)


cdef bytes _digest(const char *data, Py_ssize_t length, int use_ni):
    cdef unsigned char out[DIGEST_BYTES]
    fi_sha256(<const unsigned char *>data, <size_t>length, out, use_ni)
    return PyBytes_FromStringAndSize(<char *>out, DIGEST_BYTES)


cdef class GatewayKey:
    """One configured key as the request path checks it."""

    cdef public object name             # a str; read-only from Python all the same (``fi_readonly_slots``, below)
    cdef readonly bytes digest
    cdef readonly tuple globs
    cdef readonly int priority          # the class a request runs in when it asks for none
    cdef readonly int max_priority      # the highest class it may ask for (the lowest number)
    cdef public bytes models_body       # ``/v1/models`` as this key sees it (``gateway.auth``)
    cdef public object series           # its answers' metrics series (``counted_in``; None: not counted)
    cdef dict _allowed

    def __init__(self, str name, bytes digest, tuple globs, int priority, int max_priority):
        if len(digest) != DIGEST_BYTES:
            raise ValueError(f"a key's digest is {DIGEST_BYTES} bytes (SHA-256), not {len(digest)}")
        self.name = name
        self.digest = digest
        self.globs = globs or ("*",)
        self.priority = priority
        self.max_priority = max_priority
        self.models_body = b""
        self.series = None
        self._allowed = {}

    def counted_in(self, series) -> None:
        """The key's answers are counted into ``series`` (``gateway.app``, once the metrics exist)."""
        self.series = series

    cpdef bint may_use(self, str model):
        """``model`` matches one of the key's globs (cached: one dict lookup a request)."""
        allowed = self._allowed.get(model)
        if allowed is None:
            allowed = False
            for glob in self.globs:
                if fnmatch.fnmatchcase(model, glob):
                    allowed = True
                    break
            if len(self._allowed) < MODEL_CACHE_MAX:
                self._allowed[model] = allowed
        return allowed is True

    cpdef check_model(self, str model, deployment=None):
        """``model`` as the client named it (an alias, ``PROVIDER/<model>``) or the ``deployment`` it
        resolves to (None: none) matches one of the key's globs, else ``PermissionDenied``."""
        if not (self.may_use(model) or (deployment is not None and self.may_use(deployment))):
            raise PermissionDenied(f"The key {self.name} may not use the model `{model}`.", param="model")

    cpdef int priority_of(self, asked):
        """The class a request runs in: what it asked for (else the key's default), never above the ceiling."""
        cdef int priority = self.priority if asked is None else asked
        return priority if priority >= self.max_priority else self.max_priority

    def admit(self, req, deployment):
        """``req`` (a ``GatewayRequest``) may use its model (``check_model`` with ``deployment``),
        and runs as this key. (Its class is ``priority_of`` what it asked for, which the gateway
        applies where it reads the ask: the body's ``priority`` is taken out of the body then.)"""
        self.check_model(req.model, deployment)
        req.key = self.name


cdef class KeyRing:
    """Every configured key, by digest."""

    cdef readonly list keys
    cdef dict _by_digest
    cdef object _presented_key

    def __init__(self, keys, presented_key):
        """``presented_key(authorization, headers)``: the key of any other form than ``Bearer K``
        (``gateway.auth``'s: the rare forms and their 401s are the gateway's to word)."""
        self.keys = list(keys)
        self._by_digest = {(<GatewayKey>k).digest: k for k in self.keys}
        self._presented_key = presented_key

    def authenticate(self, headers, connection=None):
        """The ``GatewayKey`` ``headers`` carry, or ``Unauthorized`` (missing, malformed or unknown).
        ``connection``: the client connection the request came on (its ``key_memo`` attribute keeps
        the key it presented last), or None."""
        cdef object authorization = headers.get(_AUTHORIZATION)
        cdef const char *value
        cdef Py_ssize_t length = 0
        # the usual form, ``Bearer K`` with no space to strip, read where it lies in the header's
        # UTF-8; any other as ``presented_key`` reads it
        if type(authorization) is str:
            value = _utf8(authorization, &length)
            if (value != NULL and length >= 7 and memcmp(value, b"Bearer ", 7) == 0
                    and memchr(value + 7, ord(" "), length - 7) == NULL):
                return self._presented(value + 7, length - 7, connection)
        value = _utf8(self._presented_key(authorization, headers), &length)
        if value == NULL:
            raise Unauthorized("Invalid API key.")
        return self._presented(value, length, connection)

    cdef GatewayKey _presented(self, const char *value, Py_ssize_t length, connection):
        """The key whose UTF-8 is ``value``: the connection's own when it presents the one it did
        before (the whole of it compared, in constant time), else found by its digest and kept."""
        cdef KeyMemo memo
        cdef GatewayKey key
        if connection is None:
            return self._found(_digest(value, length, _use_ni))
        kept = connection.key_memo
        if type(kept) is KeyMemo:
            memo = <KeyMemo>kept
            if (memo.ring is self and PyBytes_GET_SIZE(memo.presented) == length
                    and fi_same(<const unsigned char *><char *>memo.presented,
                                <const unsigned char *>value, <size_t>length)):
                return memo.key
        key = self._found(_digest(value, length, _use_ni))
        connection.key_memo = KeyMemo(self, PyBytes_FromStringAndSize(value, length), key)
        return key

    cdef GatewayKey _found(self, bytes digest):
        cdef GatewayKey key = self._by_digest.get(digest)
        # the dict found it by hash equality; the constant-time comparison is what decides
        if key is None or not fi_same(<const unsigned char *><char *>key.digest,
                                      <const unsigned char *><char *>digest, DIGEST_BYTES):
            raise Unauthorized("Invalid API key.")
        return key


cdef class KeyMemo:
    """The key a connection's client presented (its UTF-8), the ring that accepted it and the key it
    is: kept by the connection (``key_memo``) until it closes or presents another."""

    cdef readonly KeyRing ring
    cdef bytes presented
    cdef readonly GatewayKey key

    def __init__(self, KeyRing ring not None, bytes presented not None, GatewayKey key not None):
        self.ring = ring
        self.presented = presented
        self.key = key

    def __repr__(self):
        return f"KeyMemo(key={self.key.name!r})"     # never the key itself


cdef const char *_utf8(str text, Py_ssize_t *length) except? NULL:
    """``text``'s UTF-8 (kept by the str: no copy for ASCII); NULL for one that has none (a
    surrogate, from a header's bytes that were not UTF-8): no configured key is such a string."""
    cdef const char *value
    try:
        value = PyUnicode_AsUTF8AndSize(text, length)
    except UnicodeEncodeError:
        return NULL
    return value


# the gateway reads a key's name and series on every keyed request: at a __slots__ field's speed (``slots.h``)
fi_readonly_slots(GatewayKey, ("name", "series"))
