"""The media's vocabulary, with its producer: what the encoders make (settings,
packets, time bases), the live session's record, and the Output protocol every
consumer of the packets implements (the recorder, the SRT and RTMP outputs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Protocol

VIDEO_TB = Fraction(1, 90000)
AUDIO_TB = Fraction(1, 48000)


@dataclass(frozen=True)
class VideoSettings:
    width: int
    height: int
    fps: int
    bitrate_kbps: int
    max_bitrate_kbps: int
    keyframe_seconds: float = 1.0
    vbv_seconds: float = 1.0  # how big a burst (an IDR) may be, in seconds of the max rate
    codec: str = "h264"  # "h264" | "h265": what the encoder makes, what the muxers declare

    @property
    def gop(self) -> int:
        return max(1, round(self.fps * self.keyframe_seconds))


@dataclass
class EncodedPacket:
    """An encoded packet every output can keep (its own bytes, not FFmpeg's)."""

    stream: int  # 0 video, 1.. audio tracks
    data: bytes
    pts: int
    dts: int
    key: bool
    time_base: Fraction
    codec: str = ""  # video: "h264" | "h265"; a fallback may change it, at a keyframe

    @property
    def seconds(self) -> float:
        return float(self.pts * self.time_base)


@dataclass
class Session:
    """What every output needs to know about the live session it serves."""

    name: str
    started: float  # wall clock
    video: VideoSettings
    track_names: list[str]
    audio_extradata: list[bytes]
    encoder: str
    settings: dict = field(default_factory=dict)


# An output's report to the supervisor: (condition, active).
Report = Callable[[str, bool], None]


class Output(Protocol):
    """A consumer of the encoded packets. The media thread calls all three: `packet()`
    only queues (it never blocks or raises into the media thread); an output that
    breaks marks itself dead and reports, and the others go on."""

    name: str

    def start(self, session: Session) -> None: ...

    def packet(self, pkt: EncodedPacket) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict: ...
