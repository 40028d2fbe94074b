"""Just enough Annex B (H.264 and H.265) to guarantee the parameter sets before
every keyframe.

Some hardware encoders (the Pi 4's h264_v4l2m2m among them) send SPS/PPS once,
or only in extradata: a viewer joining late, or a recording segment cut at a
keyframe, would then have nothing to decode with. We cache the last parameter
sets seen and put them in front of any keyframe that lacks them. H.265 has
three (VPS, SPS, PPS) where H.264 has two, and its NAL type sits in other bits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_START = re.compile(b"\x00\x00\x01")


@dataclass(frozen=True)
class Syntax:
    """One codec's NAL vocabulary."""

    codec: str  # "h264" | "h265"
    parameter_sets: tuple[int, ...]  # in the order they must come
    keyframes: frozenset[int]  # the NAL types of a picture a decoder can start on

    def nal_type(self, unit: bytes) -> int:
        return unit[0] & 0x1F if self.codec == "h264" else (unit[0] >> 1) & 0x3F


H264 = Syntax("h264", (7, 8), frozenset({5}))  # SPS, PPS; IDR
# VPS, SPS, PPS; IDR_W_RADL, IDR_N_LP (an encoder set for live emits IDRs, not CRAs)
H265 = Syntax("h265", (32, 33, 34), frozenset({19, 20}))
SYNTAX = {s.codec: s for s in (H264, H265)}

# The H.264 names, for the readers of H.264 streams (the tests, the probe's messages).
SPS, PPS, IDR, AUD = 7, 8, 5, 9


def nal_units(data: bytes) -> list[bytes]:
    """Split an Annex B byte string into NAL units (without start codes)."""
    starts = [m.end() for m in _START.finditer(data)]
    units = []
    for i, s in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        unit = data[s:end]
        if i + 1 < len(starts) and unit.endswith(b"\x00"):
            unit = unit[:-1]  # the zero of a following 4-byte start code
        if unit:
            units.append(unit)
    return units


def nal_types(data: bytes, codec: str = "h264") -> list[int]:
    syntax = SYNTAX[codec]
    return [syntax.nal_type(u) for u in nal_units(data)]


def has_keyframe_picture(data: bytes, codec: str) -> bool:
    """The access unit holds a picture a decoder can start on (an IDR)."""
    syntax = SYNTAX[codec]
    return any(syntax.nal_type(u) in syntax.keyframes for u in nal_units(data))


def starts_decodable(data: bytes, codec: str) -> str:
    """Why a decoder could not start on this access unit, or "" when it can: a
    keyframe picture with every parameter set in front of it."""
    syntax = SYNTAX[codec]
    kinds = nal_types(data, codec)
    pictures = [i for i, k in enumerate(kinds) if k in syntax.keyframes]
    if not pictures:
        return f"not a keyframe (NAL types {kinds})"
    missing = [k for k in syntax.parameter_sets if k not in kinds[:pictures[0]]]
    if missing:
        return f"keyframe without its parameter sets (NAL types {kinds}, missing {missing})"
    return ""


class ParameterSetInserter:
    """Remembers the parameter sets and prepends them to keyframes that come without."""

    def __init__(self, extradata: bytes | None = None, codec: str = "h264"):
        self.syntax = SYNTAX[codec]
        self.sets: dict[int, bytes] = {}
        self.inserted = 0
        if extradata:
            self._learn(extradata)

    def _learn(self, data: bytes) -> set[int]:
        seen = set()
        for unit in nal_units(data):
            kind = self.syntax.nal_type(unit)
            seen.add(kind)
            if kind in self.syntax.parameter_sets:
                self.sets[kind] = unit
        return seen

    def process(self, data: bytes, keyframe: bool) -> bytes:
        seen = self._learn(data)
        wanted = self.syntax.parameter_sets
        if keyframe and not set(wanted) <= seen and len(self.sets) == len(wanted):
            self.inserted += 1
            return b"".join(b"\x00\x00\x00\x01" + self.sets[k] for k in wanted) + data
        return data
