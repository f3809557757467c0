# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Prompt block hashes, compiled: runs once per request routed by prefix.

Owns: ``chain_hashes(data, block_bytes)``, the hash of every whole block of
``data`` chained over the blocks before it, so that hash k names the first
k + 1 blocks (a whole prefix, as a KV cache's block chain does). A prompt that
grows by a turn keeps the hashes of its earlier whole blocks; only a partial
last block is left out.

Must not touch: what the bytes are (``routing.prefix`` serializes the prompt),
the prefix index. Same results as ``fastinfer._core.ref.blocks``.

The hash: four 64-bit lanes (word j of a block goes to lane j % 4, so the CPU
runs four independent multiply chains at once), for each little-endian 8-byte
word w: ``h = (h ^ w) * K; h ^= h >> 29``. The lanes run on across blocks;
after each block the splitmix64 finaliser of ``h0 ^ rotl(h1, 16) ^ rotl(h2, 32)
^ rotl(h3, 48)`` is that block's hash (0 is never produced: it reads as 1). Not
cryptographic: the index is advisory, a collision costs a cache miss.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

__all__ = ["chain_hashes", "SEED", "MULTIPLIER"]

SEED = 0x243F6A8885A308D3
MULTIPLIER = 0x9E3779B97F4A7C15

cdef uint64_t _SEED = 0x243F6A8885A308D3ULL
cdef uint64_t _K = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t _mix64(uint64_t x) noexcept:
    x ^= x >> 30
    x *= 0xBF58476D1CE4E5B9ULL
    x ^= x >> 27
    x *= 0x94D049BB133111EBULL
    return x ^ (x >> 31)


cdef inline uint64_t _rotl(uint64_t x, int r) noexcept:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _step(uint64_t h, const char *p) noexcept:
    cdef uint64_t w
    memcpy(&w, p, 8)       # unaligned-safe; little-endian hosts only (x86-64, arm64)
    h = (h ^ w) * _K
    return h ^ (h >> 29)


def chain_hashes(bytes data not None, Py_ssize_t block_bytes):
    """The chained hash of each whole ``block_bytes`` block of ``data``, as bytes holding
    little-endian uint64 values (a buffer ``PrefixIndex.match`` and ``insert`` take)."""
    if block_bytes <= 0 or block_bytes % 8:
        raise ValueError("block_bytes must be a positive multiple of 8")
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data) // block_bytes
    cdef Py_ssize_t words = block_bytes // 8, k, j
    cdef const char *p = PyBytes_AS_STRING(data)
    out = PyBytes_FromStringAndSize(NULL, n * 8)
    cdef uint64_t *o = <uint64_t *>PyBytes_AS_STRING(out)
    cdef uint64_t h0 = _SEED, h1 = _rotl(_SEED, 16), h2 = _rotl(_SEED, 32), h3 = _rotl(_SEED, 48), v
    for k in range(n):
        j = 0
        while j + 4 <= words:
            h0 = _step(h0, p)
            h1 = _step(h1, p + 8)
            h2 = _step(h2, p + 16)
            h3 = _step(h3, p + 24)
            p += 32
            j += 4
        if j < words:
            h0 = _step(h0, p)
            p += 8
            j += 1
        if j < words:
            h1 = _step(h1, p)
            p += 8
            j += 1
        if j < words:
            h2 = _step(h2, p)
            p += 8
        v = _mix64(h0 ^ _rotl(h1, 16) ^ _rotl(h2, 32) ^ _rotl(h3, 48))
        o[k] = v if v else 1
    return out
