"""Pure-Python reference of ``fastinfer._core.blocks``: the same chained block hashes
(four lanes), word by word."""
from __future__ import annotations

from ._arith import mix64

SEED = 0x243F6A8885A308D3
MULTIPLIER = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def chain_hashes(data: bytes, block_bytes: int) -> bytes:
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    if block_bytes <= 0 or block_bytes % 8:
        raise ValueError("block_bytes must be a positive multiple of 8")
    out = bytearray()
    lanes = [SEED, _rotl(SEED, 16), _rotl(SEED, 32), _rotl(SEED, 48)]
    for k in range(len(data) // block_bytes):
        block = data[k * block_bytes:(k + 1) * block_bytes]
        for j in range(0, block_bytes, 8):
            lane = j // 8 % 4            # word i of a block goes to lane i % 4
            h = ((lanes[lane] ^ int.from_bytes(block[j:j + 8], "little")) * MULTIPLIER) & _M64
            lanes[lane] = h ^ (h >> 29)
        h0, h1, h2, h3 = lanes
        out += (mix64(h0 ^ _rotl(h1, 16) ^ _rotl(h2, 32) ^ _rotl(h3, 48)) or 1).to_bytes(8, "little")
    return bytes(out)
