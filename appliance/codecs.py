"""The two video codecs, as the config names them, as a tech reads them, and which one
an encoder makes by its name."""

from __future__ import annotations

from typing import Literal

Codec = Literal["h264", "h265"]
CODEC_LABELS = {"h264": "H.264", "h265": "H.265"}  # as a tech reads them: the journal, probe, pre-flight


def codec_of(encoder: str) -> str | None:
    """Which codec an encoder makes, by its name: FFmpeg's (libx265, hevc_nvenc,
    h264_v4l2m2m) and GStreamer's (x264enc, nvv4l2h265enc, vah265enc) alike."""
    name = encoder.lower()
    if "265" in name or "hevc" in name:
        return "h265"
    if "264" in name or "avc" in name:
        return "h264"
    return None
