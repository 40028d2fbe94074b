"""The GStreamer encoder rung with GStreamer's own software encoders (x264enc,
x265enc, from Debian's plugin packages) standing in for the hardware elements: the
same rung code, the element named by the rung."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest

from appliance.config import EncoderRung
from appliance.media.annexb import nal_types, starts_decodable
from appliance.media.encoder_faults import EncoderError
from appliance.media.encoders import Ladder, open_encoder
from appliance.media.mux import TsMuxer
from appliance.media.packets import VideoSettings

SETTINGS = VideoSettings(640, 360, 30, 2000, 2000, 1.0)


def gst(encoder: str, **kw) -> EncoderRung:
    return EncoderRung(encoder=encoder, backend="gstreamer", **kw)


def frames(n: int, start: int = 0):
    """A moving pattern with detail: the bitrate has something to pay for."""
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 255, (SETTINGS.height * 3 // 2, SETTINGS.width), dtype=np.uint8)
    for i in range(start, start + n):
        yuv = np.roll(noise, i * 4, axis=1)
        yield i * 3000, av.VideoFrame.from_ndarray(yuv, format="yuv420p")


def test_probe_finds_gstreamers_encoders_and_says_plainly_what_is_missing():
    ladder = Ladder([gst("x264enc"), gst("x265enc"),
                     gst("nvv4l2h265enc", hardware=True, device="/dev/v4l2-nvenc")], SETTINGS)
    h264, h265, nvenc = ladder.probe_all()
    assert h264.ok and "SPS/PPS" in h264.reason, h264
    assert h265.ok and "VPS/SPS/PPS" in h265.reason, h265
    assert not nvenc.ok
    assert "the GStreamer element nvvidconv is missing (the nvv4l2h265enc rung needs it; it comes with nvidia-l4t-gstreamer" in nvenc.reason, nvenc.reason
    assert "/dev/v4l2-nvenc is missing" in nvenc.reason, nvenc.reason


@pytest.mark.parametrize("element", ["x264enc", "x265enc"])
def test_twenty_seconds_decode_with_parameter_sets_on_every_keyframe_and_follow_a_bitrate_change(element, tmp_path):
    rung = gst(element)
    settings = VideoSettings(**{**SETTINGS.__dict__, "codec": rung.codec})
    enc = open_encoder(rung, settings)
    packets = []
    try:
        for pts, frame in frames(600):
            if pts == 300 * 3000:
                enc.set_bitrate(500)  # what the ABR does when a link shrinks
            while enc.backlog > 2:  # (faster than a camera gives them: at the encoder's own pace)
                time.sleep(0.005)
            packets += enc.encode(frame, pts)
        packets += enc.flush()
    finally:
        enc.close()
    odd = next((i for i, p in enumerate(packets) if p.pts != i * 3000), None)
    assert odd is None and len(packets) == 600, ("every frame, in order, no B-frames", len(packets), odd and [
        (p.pts, p.key, len(p.data), nal_types(p.data, rung.codec)[:6]) for p in packets[odd - 2:odd + 3]])
    keys = [p for p in packets if p.key]
    # (a new bitrate may start a GOP of its own: x265enc reconfigures on an IDR)
    assert keys[0].pts == 0 and len(keys) >= 20, [p.pts for p in keys]
    assert max(b.pts - a.pts for a, b in zip(keys, keys[1:])) <= 30 * 3000, "a keyframe at least every second"
    assert all(starts_decodable(p.data, rung.codec) == "" for p in keys), [nal_types(k.data, rung.codec) for k in keys]
    before = sum(len(p.data) for p in packets[60:300]) / 8  # seconds 2..10, in bytes per second
    after = sum(len(p.data) for p in packets[360:600]) / 8
    assert after < 0.5 * before, f"the new bitrate holds: {before * 8 / 1000:.0f} -> {after * 8 / 1000:.0f} kb/s"
    path = tmp_path / "rec.ts"
    mux = TsMuxer(path, settings, [], [])
    for p in packets:
        mux.mux(p)
    mux.close()
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == ("hevc" if rung.codec == "h265" else "h264")
        assert sum(1 for _ in c.decode(video=0)) == 600


def test_a_killed_child_hands_over_what_it_never_answered(tmp_path):
    enc = open_encoder(gst("x264enc"), SETTINGS)
    got, handed = [], None
    try:
        for pts, frame in frames(90):
            if pts == 45 * 3000:
                enc._child.kill()  # a driver crash takes the child down
                enc._child.wait()
            try:
                got += enc.encode(frame, pts)
            except EncoderError as e:
                got += e.packets
                handed = e
                break
    finally:
        enc.close()
    # (Seen as the pipe's end or as the exit status, whichever the reader meets first.)
    assert handed is not None and any(w in str(handed) for w in ("ended", "gone", "died")), handed
    answered = {p.pts for p in got}
    sent = {u[0] for u in handed.unanswered}
    assert answered | sent == {i * 3000 for i in range(max(answered | sent) // 3000 + 1)}, \
        "each frame it took is either answered or handed over"


def gst_children(daemon) -> list:
    import psutil

    kids = psutil.Process(daemon.proc.pid).children(recursive=True)
    return [k for k in kids if any("gst_child.py" in part for part in k.cmdline())]


def read_back(files) -> tuple[list[int], list[str], list[str]]:
    """Every video frame's pts, each file's codec, and what is wrong with any keyframe."""
    pts, codecs, bad = [], [], []
    for path in files:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            codec = "h265" if stream.codec_context.name == "hevc" else "h264"
            codecs.append(codec)
            for packet in c.demux(stream):
                if packet.size and packet.is_keyframe and (why := starts_decodable(bytes(packet), codec)):
                    bad.append(f"{path.name}: {why}")
                for frame in packet.decode():
                    pts.append(round(frame.pts * frame.time_base * 90000))
    return pts, codecs, bad


def test_h265_through_the_bond_and_relay_survives_a_dead_encoder_and_a_codec_change(daemon_factory, ingest, tmp_path):
    """H.265 from GStreamer's x265enc (the rung code a Jetson runs, another element) through
    the bond and the relay to srt-live-transmit. Its child killed mid-stream: libx265 goes
    on from the first frame the child never answered. That one failing too: H.264 from a
    keyframe on, a new segment, a fresh connection to the ingest, and the status says so."""
    import subprocess

    from conftest import APPLIANCE, ROOT, free_port, wait_until
    from media_check import missing_frames, only_session, segments
    from netsim import stop_gracefully

    first = ingest.start()
    relay_port = free_port()
    relay = subprocess.Popen([*APPLIANCE, "relay", "--listen", str(relay_port), "--to", f"srt://localhost:{ingest.port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        d = daemon_factory(config_extra=f"""
[video]
width = 320
height = 180
fps = 15
[encoder]
codec = "h265"
bitrate_kbps = 1500
ladder = [
  {{ encoder = "x265enc", backend = "gstreamer" }},
  {{ encoder = "libx265", options = {{ preset = "ultrafast", tune = "zerolatency" }} }},
  {{ encoder = "libx264", options = {{ preset = "ultrafast", tune = "zerolatency" }} }},
]
[stream]
enabled = true
url = "srt://localhost:{relay_port}"
latency_ms = 500
bond = true
uplinks = ["wired@127.0.0.2", "cell@127.0.0.3"]
""").start()
        d.wait_state("READY", timeout=30)
        assert d.request("live")["ok"]
        fps = 15  # (H.265 in software, twice, on a loaded 2-core machine: a small picture)
        wait_until(lambda: d.output("srt")["connected"], 20, what="connected through the bond")
        media = lambda: d.request("status")["status"]["components"]["media"]  # noqa: E731
        assert media()["encoder"] == "x265enc"
        wait_until(lambda: gst_children(d), 5, what="the encoder's child process")
        time.sleep(3)
        for child in gst_children(d):
            child.kill()  # as a driver crash takes it down
        wait_until(lambda: media()["encoder"] == "libx265", 10, what="the next rung")
        time.sleep(3)
        reconnects = d.output("srt")["reconnects"]
        assert d.request("sim", action="encoder-fail")["ok"]
        wait_until(lambda: media()["encoder"] == "libx264", 10, what="H.264 from here")
        wait_until(lambda: d.output("srt")["reconnects"] > reconnects and d.output("srt")["connected"], 15,
                   what="a fresh connection for the new codec")
        conditions = d.request("status")["status"]["conditions"]
        assert "H.265 encoder failed: streaming H.264" in conditions, conditions
        falls = media()["fallbacks"]
        assert falls[0].startswith("x265enc -> libx265: x265enc: ") and falls[1].startswith("libx265 -> libx264"), falls
        time.sleep(3)
        d.request("stop")
        d.wait_state("READY")
        skipped = media()["frames_dropped"]  # ticks a starved media thread skipped (a loaded machine)
        ingest.stop()
        assert d.terminate() == 0
        assert "the video is H.264 from here on" in d.log()
        # The recording: H.265 segments, then H.264 ones from the change, none lost.
        pts, codecs, bad = read_back(segments(only_session(d.dir / "recordings")))
        assert bad == [], bad
        assert codecs[0] == "h265" and codecs[-1] == "h264" and codecs == sorted(codecs, reverse=True), codecs
        assert missing_frames(pts) == skipped, "no frame lost at either fallback"
        # At the ingest, before the codec change: H.265 through the bond and the relay, whole.
        with av.open(str(first)) as c:
            assert c.streams.video[0].codec_context.name == "hevc"
            decoded = 0
            for packet in c.demux(video=0):
                try:
                    decoded += len(packet.decode())
                except av.error.FFmpegError:
                    pass  # the H.264 of the second connection, read as the first one's H.265
            assert decoded >= 2 * fps, decoded
    finally:
        stop_gracefully(relay)
