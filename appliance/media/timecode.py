"""A machine-readable time code in the test pattern: the capture time, as blocks
that survive compression, so that whoever decodes the stream (bench/latency.py
at the ingest) reads when each frame was captured.

Two rows of 20 blocks in the top-left corner, each block black (0) or white (1)
with neutral chroma: the wall clock in milliseconds modulo 2^32 (about 49 days)
and an 8-bit check (the sum of its four bytes), 40 bits, most significant first.
A block is at least 8 pixels and at most 32 (1/24 of the width), so one block
spans a whole 8x8 transform even at 320 pixels wide; the reader takes the mean
of each block's inner half, which blurring at a block's edge does not reach.
"""

from __future__ import annotations

import numpy as np

BITS, PER_ROW = 40, 20
BLACK, WHITE = 16, 235


def block_size(width: int) -> int:
    return max(8, min(32, width // 24))


def _bits(ms: int) -> list[int]:
    ms &= 0xFFFFFFFF
    check = sum(ms.to_bytes(4, "big")) & 0xFF
    word = ms << 8 | check
    return [(word >> (BITS - 1 - i)) & 1 for i in range(BITS)]


def stamp(y: np.ndarray, u: np.ndarray, v: np.ndarray, ms: int) -> None:
    """Into a yuv420p frame's planes (writable views, full-size luma)."""
    b = block_size(y.shape[1])
    for i, bit in enumerate(_bits(ms)):
        row, col = divmod(i, PER_ROW)
        y[row * b:(row + 1) * b, col * b:(col + 1) * b] = WHITE if bit else BLACK
    u[:b, :PER_ROW * b // 2] = 128
    v[:b, :PER_ROW * b // 2] = 128


def read(y: np.ndarray) -> int | None:
    """The capture time (ms modulo 2^32) from a decoded frame's luma; None when the
    blocks do not carry a valid code (a frame of something else, or too damaged)."""
    b = block_size(y.shape[1])
    if y.shape[0] < 2 * b or y.shape[1] < PER_ROW * b:
        return None
    q = b // 4
    word = 0
    for i in range(BITS):
        row, col = divmod(i, PER_ROW)
        inner = y[row * b + q:(row + 1) * b - q, col * b + q:(col + 1) * b - q]
        word = word << 1 | int(inner.mean() > (BLACK + WHITE) / 2)
    ms, check = word >> 8, word & 0xFF
    return ms if sum(ms.to_bytes(4, "big")) & 0xFF == check else None
