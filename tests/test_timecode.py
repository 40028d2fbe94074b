"""The test pattern's time code survives compression: stamped into testsrc2
frames, encoded by libx264 at the bitrate the ladder's floor would give such a
picture, decoded, read back exactly; a frame without the code reads as none."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from appliance.media import timecode


def planes(frame):
    y = np.frombuffer(frame.planes[0], np.uint8).reshape(frame.height, frame.planes[0].line_size)
    u, v = (np.frombuffer(p, np.uint8).reshape(frame.height // 2, p.line_size) for p in frame.planes[1:])
    return y, u, v


@pytest.mark.parametrize("size,kbps", [((320, 180), 150), ((1280, 720), 800)])
def test_the_time_code_reads_back_after_a_low_bitrate_encode(size, kbps):
    w, h = size
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt, enc.time_base = w, h, "yuv420p", Fraction(1, 30)
    enc.bit_rate = kbps * 1000
    enc.options = {"preset": "veryfast", "tune": "zerolatency"}
    dec = av.CodecContext.create("h264", "r")
    stamped, read = [], []
    base = 1_764_000_000_123  # a wall clock in ms: the code keeps it modulo 2^32
    with av.open(f"testsrc2=size={w}x{h}:rate=30", format="lavfi") as src:
        for i, frame in enumerate(src.decode(video=0)):
            if i == 60:
                break
            frame = frame.reformat(format="yuv420p")
            frame.pts = i
            ms = base + i * 33 + (i * 7919) % 1000  # every bit changes over the run
            y, u, v = planes(frame)
            timecode.stamp(y[:, :w], u, v, ms)
            stamped.append(ms & 0xFFFFFFFF)
            for packet in enc.encode(frame):
                read += [timecode.read(planes(f.reformat(format="yuv420p"))[0][:, :w]) for f in dec.decode(packet)]
    for packet in enc.encode(None):
        read += [timecode.read(planes(f.reformat(format="yuv420p"))[0][:, :w]) for f in dec.decode(packet)]
    assert read == stamped


def test_a_frame_without_the_code_reads_as_none():
    with av.open("testsrc2=size=640x360:rate=30", format="lavfi") as src:
        frame = next(src.decode(video=0)).reformat(format="yuv420p")
    y = planes(frame)[0][:, :640]
    assert timecode.read(y) is None
    assert timecode.read(np.zeros((8, 8), np.uint8)) is None, "too small to carry it"
