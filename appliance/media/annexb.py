"""Just enough H.264 Annex B to guarantee SPS/PPS before every keyframe.

Some hardware encoders (the Pi 4's h264_v4l2m2m among them) send SPS/PPS once,
or only in extradata: a viewer joining late, or a recording segment cut at a
keyframe, would then have nothing to decode with. We cache the last parameter
sets seen and put them in front of any keyframe that lacks them.
"""

from __future__ import annotations

import re

SPS, PPS, IDR, AUD = 7, 8, 5, 9
_START = re.compile(b"\x00\x00\x01")


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


def nal_types(data: bytes) -> list[int]:
    return [u[0] & 0x1F for u in nal_units(data)]


class ParameterSetInserter:
    """Remembers SPS/PPS and prepends them to keyframes that come without."""

    def __init__(self, extradata: bytes | None = None):
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self.inserted = 0
        if extradata:
            self._learn(extradata)

    def _learn(self, data: bytes) -> set[int]:
        seen = set()
        for unit in nal_units(data):
            kind = unit[0] & 0x1F
            seen.add(kind)
            if kind == SPS:
                self.sps = unit
            elif kind == PPS:
                self.pps = unit
        return seen

    def process(self, data: bytes, keyframe: bool) -> bytes:
        seen = self._learn(data)
        if keyframe and not {SPS, PPS} <= seen and self.sps and self.pps:
            self.inserted += 1
            return b"\x00\x00\x00\x01" + self.sps + b"\x00\x00\x00\x01" + self.pps + data
        return data
