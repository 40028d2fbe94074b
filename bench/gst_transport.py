"""The GStreamer rung's frame transport against the encode itself, at 1080p30.

    .venv/bin/python bench/gst_transport.py [--frames 300] [--element x264enc]

In the same run, CPU seconds (this process and the child together) for:
  (a) the transport alone: the same frames through the same pipe and framing
      (GstEncoder's planes, gst_child's reads into a Gst buffer) into a child
      whose pipeline ends in fakesink: no encoder;
  (b) the whole rung: the same frames encoded by the element (x264enc, veryfast,
      zerolatency: the software stand-in for a hardware encoder).
Prints a/b: the share of the rung's CPU the transport costs. On a board with a
hardware encoder (b) is far smaller, so the transport's absolute cost per frame
is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.config import EncoderRung  # noqa: E402
from appliance.media import gst_child  # noqa: E402
from appliance.media.gst_encoder import GST_PYTHON, GstEncoder, i420_planes  # noqa: E402
from appliance.media.packets import VideoSettings  # noqa: E402

SINK = """
import json, sys
sys.path.insert(0, {here!r})
import gst_child
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import Gst, GstApp
Gst.init(None)
job = json.loads(sys.argv[1])
caps = "video/x-raw,format=I420,width=%d,height=%d,framerate=%d/1" % (job["width"], job["height"], job["fps"])
pipe = Gst.parse_launch("appsrc name=src is-live=true format=time block=true caps=%s ! fakesink sync=false" % caps)
src = pipe.get_by_name("src")
pipe.set_state(Gst.State.PLAYING)
stdin = sys.stdin.buffer
while True:
    head = gst_child.read_exact(stdin, gst_child.HEADER.size)
    if head is None:
        break
    kind, length, value = gst_child.HEADER.unpack(head)
    buf = gst_child.frame_buffer(Gst, stdin, length)
    buf.pts = value * 100000 // 9
    src.push_buffer(buf)
pipe.set_state(Gst.State.NULL)
"""


def frames(n: int) -> list:
    out = []
    with av.open("testsrc2=size=1920x1080:rate=30", format="lavfi") as src:
        for frame in src.decode(video=0):
            out.append(frame.reformat(format="yuv420p"))
            if len(out) == n:
                return out
    return out


def cpu(procs) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def transport(pictures: list, settings: VideoSettings) -> tuple[float, float]:
    job = {"width": settings.width, "height": settings.height, "fps": settings.fps}
    child = subprocess.Popen([GST_PYTHON, "-c", SINK.format(here=str(Path(gst_child.__file__).parent)), json.dumps(job)],
                             stdin=subprocess.PIPE)
    me, kid = psutil.Process(), psutil.Process(child.pid)
    time.sleep(1.0)  # its start-up is not the transport
    before, kid_before, t0 = cpu([me]), cpu([kid]), time.monotonic()
    fd = child.stdin.fileno()
    for i, frame in enumerate(pictures):
        planes = i420_planes(frame)
        os.write(fd, gst_child.HEADER.pack(b"F", sum(len(p) for p in planes), i * 3000))
        for plane in planes:
            view = plane
            while view:
                view = view[os.write(fd, view):]
    kid_after = cpu([kid])
    child.stdin.close()
    child.wait()
    return cpu([me]) - before + kid_after - kid_before, time.monotonic() - t0


def rung(pictures: list, settings: VideoSettings, element: str) -> tuple[float, float]:
    enc = GstEncoder(EncoderRung(encoder=element, backend="gstreamer"), settings)
    me, kid = psutil.Process(), psutil.Process(enc._child.pid)
    before, kid_before, t0 = cpu([me]), cpu([kid]), time.monotonic()
    packets = 0
    for i, frame in enumerate(pictures):
        packets += len(enc.encode(frame, i * 3000))
    packets += len(enc.flush())
    spent = cpu([me]) - before + cpu([kid]) - kid_before
    enc.close()
    assert packets == len(pictures), (packets, len(pictures))
    return spent, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--element", default="x264enc")
    args = ap.parse_args()
    pictures = frames(args.frames)
    settings = VideoSettings(1920, 1080, 30, 6000, 6000, 1.0, codec="h265" if "265" in args.element else "h264")
    a, a_wall = transport(pictures, settings)
    b, b_wall = rung(pictures, settings, args.element)
    n = len(pictures)
    print(f"1080p30, {n} frames ({n * 1920 * 1080 * 3 // 2 / 1e6:.0f} MB of I420)")
    print(f"(a) transport alone:  {a:6.2f} CPU s  {a / n * 1000:6.2f} ms/frame  ({a_wall:.1f} s wall)")
    print(f"(b) {args.element} rung:     {b:6.2f} CPU s  {b / n * 1000:6.2f} ms/frame  ({b_wall:.1f} s wall)")
    print(f"a/b = {a / b:.3f}   (the transport's share of the rung; per second of 1080p30: "
          f"{a / n * 30:.3f} CPU s)")


if __name__ == "__main__":
    main()
