"""The voice lane's picture: while the links are too slow for video, the stream
carries the audio and a still slate ("VIDEO PAUSED / AUDIO CONTINUES") at a few
frames a second, on the video's clock. Encoded in the sender thread: a 1080p slate
frame costs the media thread's tick milliseconds it does not have."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from appliance.media.packets import EncodedPacket, VideoSettings

log = logging.getLogger("appliance.outputs.srt")  # (the stream's lines keep their source)

SLATE_FPS = 5


@dataclass
class SlateTick:
    """A slate frame due at pts (queued like a frame, encoded when it is sent)."""

    pts: int
    first: bool  # a slate run opens here: on a keyframe
    stream: int = 0  # (to the queue: a video item of no bytes)
    data: bytes = b""


class SlateEncoder:
    def __init__(self, output: str = "srt"):
        self.output = output
        self._enc = None
        self._src = None
        self._failed = False

    def close(self) -> None:
        self._enc = None

    def encode(self, tick: SlateTick, video: VideoSettings, need_key: bool) -> list[EncodedPacket]:
        if self._failed:
            return []
        try:
            if tick.first or need_key or self._enc is None:
                from appliance.config import EncoderRung
                from appliance.media.encoders import VideoEncoder
                from appliance.media.video import Slate

                # Each slate run (and the slate after a shed) opens on a keyframe: the viewer's
                # decoder has since held other pictures, and a frame referring to an older
                # slate would show garbage.
                # In the show's codec: the ingest's decoder goes on with what it has.
                self._enc = VideoEncoder(
                    EncoderRung(encoder="libx265" if video.codec == "h265" else "libx264",
                                options={"preset": "ultrafast", "tune": "zerolatency"}),
                    VideoSettings(video.width, video.height, SLATE_FPS, 100, 150, keyframe_seconds=1.0,
                                  codec=video.codec))
                self._src = self._src or Slate(video.width, video.height, "VIDEO PAUSED", "AUDIO CONTINUES")
            return self._enc.encode(self._src.frame(), tick.pts)
        except Exception as e:  # no slate (the picture holds), the audio goes on
            self._failed = True
            log.error("stream: the voice lane's slate failed, the audio goes on without it: %s", e,
                      extra={"OUTPUT": self.output})
            return []
