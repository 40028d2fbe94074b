"""A 5x7 bitmap font for burning text into frames.

The PyPI FFmpeg build has no drawtext filter (no libfreetype), and the slate and
the test pattern's clock must not depend on fonts being installed.
"""

from __future__ import annotations

import functools

import numpy as np

_GLYPHS = {
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    ":": "00000 00100 00100 00000 00100 00100 00000", ".": "00000 00000 00000 00000 00000 01100 01100",
    "-": "00000 00000 00000 11111 00000 00000 00000", " ": "00000 00000 00000 00000 00000 00000 00000",
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110", "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111", "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 11001 10101 10011 10001 10001 10001", "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "Y": "10001 10001 01010 00100 00100 00100 00100",
}
_BITMAPS = {ch: np.array([[c == "1" for c in row] for row in rows.split()], dtype=bool) for ch, rows in _GLYPHS.items()}


@functools.lru_cache(maxsize=256)
def _scaled(ch: str, scale: int) -> np.ndarray:
    # The test pattern burns its clock into every frame: scale each glyph once, not 30 times a second.
    return np.kron(_BITMAPS.get(ch, _BITMAPS[" "]), np.ones((scale, scale), dtype=bool))


def text_width(text: str, scale: int) -> int:
    return len(text) * 6 * scale


def draw_text(plane: np.ndarray, text: str, x: int, y: int, scale: int = 4, value: int = 235,
              background: int | None = 16) -> None:
    """Draw `text` into a luma plane (uint8, rows x cols) in place."""
    h, w = plane.shape
    if background is not None:
        y0, y1 = max(0, y - scale), min(h, y + 8 * scale)
        x0, x1 = max(0, x - scale), min(w, x + text_width(text, scale))
        plane[y0:y1, x0:x1] = background
    for i, ch in enumerate(text.upper()):
        big = _scaled(ch, scale)
        gx = x + i * 6 * scale
        gy0, gx0 = max(0, y), max(0, gx)
        gy1, gx1 = min(h, y + big.shape[0]), min(w, gx + big.shape[1])
        if gy1 <= gy0 or gx1 <= gx0:
            continue
        region = big[gy0 - y:gy1 - y, gx0 - gx:gx1 - gx]
        plane[gy0:gy1, gx0:gx1][region] = value
