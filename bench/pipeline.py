"""CPU seconds per encoded second: the appliance pipeline vs a bare PyAV loop.

    .venv/bin/python bench/pipeline.py [--seconds 10]

For 720p30 and 1080p30 with libx264 veryfast, in the same process and run:
  (a) the appliance's MediaPipeline with the recorder writing segments,
      paced in real time, fed frames from memory;
  (b) a bare PyAV loop encoding the same frames with the same settings and
      writing them to one MPEG-TS file, paced at the same frame rate;
  (c) the same loop as fast as it can, for the cost of pacing itself.
Prints a/b (goal <= 1.05), b/c, and the RSS after (a). No audio in either: this
measures what the pipeline adds around the video encoder.

Why (b) is paced: a live encoder waits for each frame, and libx264's threads go
to sleep between frames and come back to cold caches; encoding back to back keeps
them hot. That costs 12 to 16 % at 720p30 and 4 % at 1080p30 on a 2-core x86 (b/c),
the same for any live encoder (ffmpeg -re included), and was the "pipeline
overhead at 720p" when the baseline ran unpaced.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import psutil

from appliance.config import Config
from appliance.media.encoders import VideoEncoder
from appliance.media.packets import VideoSettings
from appliance.media.pipeline import MediaPipeline
from appliance.media.video import VideoSource
from appliance.outputs.recorder import Recorder


def make_frames(width: int, height: int, fps: int, count: int) -> list:
    frames = []
    with av.open(f"testsrc2=size={width}x{height}:rate={fps}", format="lavfi") as src:
        for frame in src.decode(video=0):
            frames.append(frame.reformat(format="yuv420p"))
            if len(frames) == count:
                break
    return frames


class MemorySource(VideoSource):
    """Frames from memory at the configured rate (no capture cost)."""

    kind = "memory"

    def __init__(self, cfg, frames):
        super().__init__(cfg)
        self._frames_list = frames

    def _frames(self):
        period, i, t = 1 / self.cfg.fps, 0, time.monotonic()
        while not self._stop.is_set():
            yield self._frames_list[i % len(self._frames_list)]
            i += 1
            t += period
            self._stop.wait(max(0.0, t - time.monotonic()))


def run_pipeline(cfg: Config, frames: list, seconds: float, workdir: Path) -> tuple[float, float, int]:
    recorder = Recorder(cfg.recording, workdir / "recordings")
    pipe = MediaPipeline(cfg, lambda c, a: None, workdir / "run", outputs=[recorder])
    pipe.video = MemorySource(cfg.video, frames)

    async def go():
        await pipe.start()
        await asyncio.sleep(1.0)  # let the source settle
        await pipe.start_live()
        cpu0 = time.process_time()
        await asyncio.sleep(seconds)
        encoded = pipe.frames_encoded
        cpu = time.process_time() - cpu0
        await pipe.stop_live()
        await pipe.stop()
        return cpu, encoded

    cpu, encoded = asyncio.run(go())
    return cpu, psutil.Process().memory_info().rss, encoded


def run_bare(cfg: Config, frames: list, count: int, workdir: Path, paced: bool) -> float:
    v, e = cfg.video, cfg.encoder
    settings = VideoSettings(v.width, v.height, v.fps, e.bitrate_kbps, e.bitrate_kbps, e.keyframe_seconds)
    cpu0 = time.process_time()
    enc = VideoEncoder(cfg.encoder.ladder[0], settings)
    with av.open(str(workdir / "bare.ts"), "w", format="mpegts") as out:
        stream = out.add_stream("h264", rate=v.fps)
        stream.width, stream.height, stream.pix_fmt = v.width, v.height, "yuv420p"
        stream.time_base = Fraction(1, 90000)
        t0 = time.monotonic()
        for i in range(count):
            if paced and (wait := t0 + i / v.fps - time.monotonic()) > 0:
                time.sleep(wait)
            for p in enc.encode(frames[i % len(frames)], i * 90000 // v.fps):
                pkt = av.Packet(p.data)
                pkt.pts, pkt.dts, pkt.time_base, pkt.stream = p.pts, p.dts, p.time_base, stream
                out.mux(pkt)
        for p in enc.flush():
            pkt = av.Packet(p.data)
            pkt.pts, pkt.dts, pkt.time_base, pkt.stream = p.pts, p.dts, p.time_base, stream
            out.mux(pkt)
    return time.process_time() - cpu0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    seconds = ap.parse_args().seconds
    logging.basicConfig(level=logging.WARNING)
    print(f"libx264 veryfast, {seconds:g} s of media per run; CPU s per encoded second (lower is better)")
    for width, height in ((1280, 720), (1920, 1080)):
        fps = 30
        cfg = Config.model_validate({
            "video": {"source": "testsrc", "width": width, "height": height, "fps": fps},
            "audio": {"tracks": []},
            "encoder": {"bitrate_kbps": 6000 if height == 1080 else 4000,
                        "ladder": [{"encoder": "libx264", "options": {"preset": "veryfast", "tune": "zerolatency"}}]},
            "recording": {"segment_seconds": 10},
        })
        frames = make_frames(width, height, fps, 60)
        with tempfile.TemporaryDirectory() as tmp:
            cpu_a, rss, encoded = run_pipeline(cfg, frames, seconds, Path(tmp))
            cpu_b = run_bare(cfg, frames, encoded, Path(tmp), paced=True)
            cpu_c = run_bare(cfg, frames, encoded, Path(tmp), paced=False)
        media_s = encoded / fps
        a, b, c = cpu_a / media_s, cpu_b / media_s, cpu_c / media_s
        print(f"{height}p{fps}: (a) pipeline+recorder {a:.3f}  (b) bare PyAV, paced {b:.3f}  a/b = {a / b:.3f}"
              f"  (goal <= 1.05)   (c) unpaced {c:.3f}  b/c = {b / c:.3f}  RSS(a) {rss / 2**20:.0f} MiB"
              f"  [{encoded} frames]")


if __name__ == "__main__":
    main()
