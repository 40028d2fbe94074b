"""MPEG-TS muxing of the encoded packets, for files and for network outputs.

The muxer (FFmpeg's mpegts through PyAV) writes PCR, PTS and DTS from the
packets' own timestamps, which all come from the pipeline's one clock.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Callable

from appliance.media.packets import AUDIO_TB, VIDEO_TB, EncodedPacket, VideoSettings

TS_PACKET = 188


class _Sink:
    """The file-like object PyAV writes to: hands every write to a callable."""

    def __init__(self, write: Callable[[bytes], None]):
        self._write = write

    def write(self, data) -> int:
        self._write(bytes(data))
        return len(data)

    def seekable(self) -> bool:
        return False


class TsMuxer:
    """Streams: 0 = H.264 or H.265 video, 1..n = AAC audio tracks, in the config's order
    (MPEG-TS has no place for track names: the session manifest lists them)."""

    def __init__(self, target, video: VideoSettings, audio_extradata: list[bytes], track_names: list[str],
                 service_name: str = "appliance"):
        import av

        self._av = av
        io = _Sink(target) if callable(target) else str(target)
        self.container = av.open(io, "w", format="mpegts", options={
            # Every packet goes out as soon as it is muxed: a network output
            # sees it at once, and a kill -9 leaves it in the file.
            "flush_packets": "1",
            # and is not held back to interleave by DTS: the default holds audio for up
            # to 10 s while no video comes (the video shed for a slow link, or paused).
            "max_interleave_delta": "1",
        }, buffer_size=TS_PACKET * 7 * 8)
        self.container.metadata["service_name"] = service_name
        self.codec = video.codec
        v = self.container.add_stream("hevc" if video.codec == "h265" else "h264", rate=video.fps)
        v.width, v.height, v.pix_fmt = video.width, video.height, "yuv420p"
        v.time_base = VIDEO_TB
        self.streams = [v]
        for extradata in audio_extradata:
            a = self.container.add_stream("aac", rate=48000)
            a.layout = "stereo"
            a.time_base = AUDIO_TB
            a.codec_context.extradata = extradata
            self.streams.append(a)
        self.packets = 0
        self.closed = False

    def mux(self, pkt: EncodedPacket) -> None:
        p = self._av.Packet(pkt.data)
        p.pts, p.dts = pkt.pts, pkt.dts
        p.time_base = pkt.time_base
        p.is_keyframe = pkt.key
        p.stream = self.streams[pkt.stream]
        self.container.mux(p)
        self.packets += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.container.close()


def seconds(pts: int, time_base: Fraction) -> float:
    return float(pts * time_base)
