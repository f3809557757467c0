"""Pure-Python reference of ``fastinfer._core.blocks``: the same chained block hashes,
word by word."""
from __future__ import annotations

from ._arith import mix64

SEED = 0x243F6A8885A308D3
MULTIPLIER = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1


def chain_hashes(data: bytes, block_bytes: int) -> bytes:
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    if block_bytes <= 0 or block_bytes % 8:
        raise ValueError("block_bytes must be a positive multiple of 8")
    out = bytearray()
    h = SEED
    for k in range(len(data) // block_bytes):
        block = data[k * block_bytes:(k + 1) * block_bytes]
        for j in range(0, block_bytes, 8):
            h = ((h ^ int.from_bytes(block[j:j + 8], "little")) * MULTIPLIER) & _M64
            h ^= h >> 29
        out += (mix64(h) or 1).to_bytes(8, "little")
    return bytes(out)
