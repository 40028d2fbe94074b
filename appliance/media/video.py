"""Video sources: a V4L2 capture card, a paced test pattern, a looping file.

Each source runs in its own named thread and keeps only its latest frame,
already converted to the pipeline's size and pixel format, stamped with the
monotonic clock at capture. The media thread samples it at the output frame
rate (a frame synchroniser): a slow, fast or dead source never changes the
output's timing. A source that fails or stops delivering is reopened with
backoff; meanwhile the pipeline shows the slate.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from pathlib import Path

import numpy as np

from appliance import backoff
from appliance.config import VideoSection
from appliance.media import timecode
from appliance.media.font import draw_text, text_width
from appliance.worker import Worker

log = logging.getLogger(__name__)

# A frame older than this is no signal: the slate replaces it.
STALE_AFTER = 0.5


def luma(frame) -> np.ndarray:
    """A writable view of a yuv420p frame's Y plane (no copy)."""
    plane = frame.planes[0]
    return np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, : frame.width]


def burn_text(frame, text: str, x: int, y: int, scale: int) -> None:
    """White text on a black box in a yuv420p frame (the box's colour removed too)."""
    draw_text(luma(frame), text, x, y, scale)
    x0, y0 = max(0, x - scale) // 2, max(0, y - scale) // 2
    x1, y1 = (x + text_width(text, scale)) // 2 + 1, (y + 8 * scale) // 2 + 1
    for plane in frame.planes[1:]:
        view = np.frombuffer(plane, np.uint8).reshape(frame.height // 2, plane.line_size)
        view[y0:y1, x0:x1] = 128


class VideoSource(Worker):
    """Base: the capture thread, the latest frame, loss and reopen with backoff."""

    kind = "video"

    def __init__(self, cfg: VideoSection):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._latest = None
        self._latest_at = 0.0
        self.worker_name = f"video-{self.kind}"
        self._init_worker()
        self.frames = 0
        self.reopens = 0
        self.error = ""
        self.signal = False
        self._fault: OSError | None = None

    # --- the media thread's side -----------------------------------------------

    def latest(self, now: float):
        with self._lock:
            if self._latest is not None and now - self._latest_at <= STALE_AFTER:
                return self._latest
        return None

    def status(self) -> dict:
        return {"source": self.describe(), "signal": self.signal, "frames": self.frames,
                "reopens": self.reopens, **({"error": self.error} if self.error else {})}

    def describe(self) -> str:
        return self.kind

    # --- lifecycle -------------------------------------------------------------

    def unplug(self) -> None:
        """Simulated device loss (sim profile and tests): reads fail with ENODEV."""
        self._fault = OSError(errno.ENODEV, "No such device (simulated unplug)")

    def replug(self) -> None:
        self._fault = None

    # --- the capture thread ---------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if self._fault:
                    raise self._fault
                for frame in self._frames():
                    if self._stop.is_set():
                        return
                    if self._fault:
                        raise self._fault
                    self.heartbeat.beat()
                    frame = self._convert(frame)
                    with self._lock:
                        self._latest, self._latest_at = frame, time.monotonic()
                    self.frames += 1
                    if not self.signal:
                        self.signal, self.error, attempt = True, "", 0
                        log.info("video: signal from %s", self.describe(), extra={"VIDEO": "signal"})
                raise OSError(errno.ENODATA, "source ended")
            except Exception as e:  # PyAV raises many kinds; all mean "no signal"
                if self._stop.is_set():
                    return
                if self.signal or not self.error:
                    log.warning("video: lost %s: %s", self.describe(), e, extra={"VIDEO": "lost"})
                self.signal, self.error = False, str(e)
                delay = backoff.delay(attempt)
                attempt += 1
                self.reopens += 1
                self._stop.wait(delay)
                self.heartbeat.beat()

    def _convert(self, frame):
        c = self.cfg
        if frame.width != c.width or frame.height != c.height or frame.format.name != "yuv420p":
            frame = frame.reformat(width=c.width, height=c.height, format="yuv420p")
        return frame

    def _frames(self):
        raise NotImplementedError


class TestPattern(VideoSource):
    """lavfi testsrc2 paced in real time, with the wall clock burnt in so the
    glass-to-glass latency can be read off a received frame, by eye (the text at
    the bottom) or by a program (media/timecode.py's blocks at the top)."""

    kind = "testsrc"

    def describe(self) -> str:
        return f"test pattern {self.cfg.width}x{self.cfg.height}@{self.cfg.fps}"

    def _frames(self):
        import av

        c = self.cfg
        late_after, made_in = 2 / c.fps, 0.5 / c.fps
        with av.open(f"testsrc2=size={c.width}x{c.height}:rate={c.fps},realtime", format="lavfi") as src:
            frames, start = src.decode(video=0), None
            while True:
                asked = time.monotonic()
                frame = next(frames, None)
                if frame is None:
                    return
                now = time.monotonic()
                if frame.time is not None:
                    if start is None:
                        start = now - frame.time
                    if now - (start + frame.time) > late_after and now - asked < made_in:
                        # Late and handed over at once: after a stall the realtime filter gives
                        # every frame it owes in a burst. A capture card drops them; so do we, or
                        # drawing them would starve the media thread just as it catches up. (A
                        # board too slow to make the pattern in time is late too, but slowly:
                        # those frames are kept.)
                        continue
                yield frame

    def _convert(self, frame):
        frame = super()._convert(frame)
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        scale = max(2, self.cfg.height // 120)
        burn_text(frame, stamp, scale * 2, self.cfg.height - 10 * scale, scale)
        u, v = (np.frombuffer(p, np.uint8).reshape(frame.height // 2, p.line_size) for p in frame.planes[1:])
        timecode.stamp(luma(frame), u, v, int(now * 1000))  # the same instant, for a machine
        return frame


class V4L2Capture(VideoSource):
    """A USB HDMI capture card (MJPEG or YUYV) through FFmpeg's video4linux2."""

    kind = "v4l2"

    def describe(self) -> str:
        return f"{self.cfg.device} ({self.cfg.input_format})"

    def _frames(self):
        import av

        c = self.cfg
        options = {"video_size": f"{c.width}x{c.height}", "framerate": str(c.fps)}
        if c.input_format != "auto":
            options["input_format"] = c.input_format
        if not Path(c.device).exists():
            raise OSError(errno.ENOENT, f"{c.device}: missing device node (capture card unplugged?)")
        with av.open(c.device, format="video4linux2", options=options) as src:
            for frame in src.decode(video=0):
                yield frame


class LoopingFile(VideoSource):
    """A rehearsal file played in a loop at its own pace."""

    kind = "file"

    def describe(self) -> str:
        return f"file {self.cfg.file}"

    def _frames(self):
        import av

        while not self._stop.is_set():
            with av.open(str(self.cfg.file)) as src:
                stream = src.streams.video[0]
                start = time.monotonic()
                first = None
                for frame in src.decode(stream):
                    if frame.pts is not None and frame.time_base is not None:
                        t = float(frame.pts * frame.time_base)
                        first = t if first is None else first
                        delay = start + (t - first) - time.monotonic()
                        if delay > 0:
                            self._stop.wait(delay)
                    yield frame


def make_source(cfg: VideoSection) -> VideoSource:
    return {"testsrc": TestPattern, "v4l2": V4L2Capture, "file": LoopingFile}[cfg.source](cfg)


class Slate:
    """"NO VIDEO SIGNAL" and the time, at the pipeline's size: keeps the stream
    and the recording on time while the source is away."""

    def __init__(self, width: int, height: int, title: str = "NO VIDEO SIGNAL", subtitle: str = ""):
        import av

        self.width, self.height = width, height
        self.title, self.subtitle = title, subtitle
        self._av = av
        self._scale = max(2, height // 90)
        self._shown: tuple[str, object] | None = None  # (the clock's text, its frame)

    def frame(self):
        # Drawn again only when the clock's second changes: at 1080p a drawing costs
        # milliseconds, thirty times a second while the source is away.
        clock = time.strftime("%H:%M:%S")
        if self._shown is None or self._shown[0] != clock:
            self._shown = (clock, self.draw(clock))
        return self._shown[1]

    def draw(self, clock: str):
        frame = self._av.VideoFrame(self.width, self.height, "yuv420p")
        y = luma(frame)
        y[:] = 16
        for plane in frame.planes[1:]:
            np.frombuffer(plane, np.uint8)[:] = 128
        s = self._scale
        title = self.title
        draw_text(y, title, (self.width - text_width(title, s)) // 2, self.height // 2 - 8 * s, s)
        now = f"{self.subtitle}  {clock}" if self.subtitle else clock
        draw_text(y, now, (self.width - text_width(now, s // 2 or 1)) // 2, self.height // 2 + 4 * s, s // 2 or 1)
        return frame
