"""The GStreamer encoder rung: the OS's own hardware encoder elements (JetPack's
NVENC, Raspberry Pi OS's V4L2 codec, VA-API on x86) in a child process, with the
same contract as the PyAV rungs (encoders.VideoEncoder): frames in, access units
out with the parameter sets on every keyframe, the bitrate changed while it runs,
an EncoderError when it fails or stalls, so the pipeline moves to the next rung.

Frames go to the child through a pipe (gst_child.py says the framing): one copy
into the pipe and one out, which bench/gst_transport.py measures against the
encode itself at 1080p30. Shared memory would save those copies, at the price of
a second synchronisation channel; the pipe also tells us at once when the child
is gone. Writes have a deadline: a wedged driver stops reading, and the media
thread must not wait on it longer than a frame or two.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from appliance import heartbeat
from appliance.children import child_argv, child_env
from appliance.media.annexb import ParameterSetInserter, has_keyframe_picture
from appliance.media.encoder_faults import EncoderError, SimulatedFaults
from appliance.media.gst_child import HEADER, read_exact
from appliance.media.packets import VIDEO_TB, EncodedPacket, VideoSettings

log = logging.getLogger(__name__)

CHILD = Path(__file__).with_name("gst_child.py")
# The OS's Python: it has the OS's GStreamer bindings, which a virtual environment has not.
GST_PYTHON = os.environ.get("APPLIANCE_GST_PYTHON", "/usr/bin/python3")
OPEN_SECONDS = 10.0  # a hardware encoder's first open (NVENC loads its firmware)
WRITE_SECONDS = 2.0  # a frame not taken within this is a wedged child (the media thread may wait 3 s)
FLUSH_SECONDS = 3.0
PIPE_BYTES = 1 << 20  # the largest pipe an unprivileged process may ask for (pipe-max-size)


@dataclass(frozen=True)
class Element:
    """What we know of one encoder element: its properties for a live stream (a
    template over {kbps}, {bps}, {gop}, {vbv_ms}), the property that takes a new
    bitrate while it runs and its units per kb/s, and the package that ships it."""

    properties: str
    bitrate: tuple[str, int]
    package: str
    before: str = ""  # elements in front of it (into the encoder's own memory)
    after: str = ""  # caps behind it (a level, a profile)


_NV = ("control-rate=1 bitrate={bps} iframeinterval={gop} idrinterval={gop} insert-sps-pps=true "
       "insert-vui=true num-B-Frames=0 maxperf-enable=true preset-level=1")
_VA = "rate-control=cbr bitrate={kbps} key-int-max={gop} b-frames=0"
_VAAPI = "rate-control=cbr bitrate={kbps} keyframe-period={gop} max-bframes=0"
_QSV = "rate-control=cbr bitrate={kbps} gop-size={gop} b-frames=0"
ELEMENTS = {
    # GStreamer's software encoders: a fallback, and the stand-ins the tests use.
    "x264enc": Element("tune=zerolatency speed-preset=veryfast bframes=0 key-int-max={gop} bitrate={kbps} "
                       "vbv-buf-capacity={vbv_ms} option-string=scenecut=0", ("bitrate", 1),
                       "gstreamer1.0-plugins-ugly"),
    "x265enc": Element("tune=zerolatency speed-preset=veryfast key-int-max={gop} bitrate={kbps} "
                       "option-string=repeat-headers=1:scenecut=0:bframes=0:open-gop=0:min-keyint={gop}:log-level=warning",
                       ("bitrate", 1), "gstreamer1.0-plugins-bad"),
    # JetPack 5/6 (nvidia-l4t-gstreamer): NVENC through V4L2, fed NV12 in NVMM memory by nvvidconv.
    "nvv4l2h264enc": Element(_NV, ("bitrate", 1000), "nvidia-l4t-gstreamer (JetPack)",
                             before="nvvidconv ! video/x-raw(memory:NVMM),format=NV12"),
    "nvv4l2h265enc": Element(_NV, ("bitrate", 1000), "nvidia-l4t-gstreamer (JetPack)",
                             before="nvvidconv ! video/x-raw(memory:NVMM),format=NV12"),
    # Raspberry Pi OS on a Pi 4 (bcm2835-codec, /dev/video11): gstreamer1.0-plugins-good's V4L2 elements.
    "v4l2h264enc": Element('extra-controls="controls,video_bitrate={bps},video_bitrate_mode=1,'
                           'h264_i_frame_period={gop},repeat_sequence_header=1"', ("", 0),
                           "gstreamer1.0-plugins-good, which makes it only where the encoder's device exists",
                           after="video/x-h264,level=(string)4.1"),
    # x86: Intel and AMD through VA-API (gstreamer1.0-plugins-bad's va, or gstreamer1.0-vaapi), Intel QSV.
    "vah264enc": Element(_VA, ("bitrate", 1), "gstreamer1.0-plugins-bad"),
    "vah265enc": Element(_VA, ("bitrate", 1), "gstreamer1.0-plugins-bad"),
    "vaapih264enc": Element(_VAAPI, ("bitrate", 1), "gstreamer1.0-vaapi"),
    "vaapih265enc": Element(_VAAPI, ("bitrate", 1), "gstreamer1.0-vaapi"),
    "qsvh264enc": Element(_QSV, ("bitrate", 1), "gstreamer1.0-plugins-bad"),
    "qsvh265enc": Element(_QSV, ("bitrate", 1), "gstreamer1.0-plugins-bad"),
}
UNKNOWN = Element("bitrate={kbps}", ("bitrate", 1), "?")  # an element of a rung's own choosing


def job(rung, s: VideoSettings) -> dict:
    """What the child builds: the elements between raw frames and the parser."""
    element = ELEMENTS.get(rung.encoder, UNKNOWN)
    values = {"kbps": s.bitrate_kbps, "bps": s.bitrate_kbps * 1000, "gop": s.gop,
              "vbv_ms": int(s.vbv_seconds * 1000)}
    props = element.properties.format(**values)
    if rung.options:
        props += " " + " ".join(f"{k}={v}" for k, v in rung.options.items())
    chain = [p for p in (element.before, f"{rung.encoder} name=enc {props}", element.after) if p]
    return {"codec": rung.codec, "width": s.width, "height": s.height, "fps": s.fps,
            "elements": " ! ".join(chain), "bitrate_property": element.bitrate[0],
            "bitrate_scale": element.bitrate[1]}


def explain(rung, reason: str) -> str:
    """A failed probe's reason in words a tech can act on."""
    missing = re.search(r'no element "([^"]+)"', reason)
    if missing is None:
        return reason
    name, notes = missing.group(1), []
    if name != rung.encoder:
        notes.append(f"the {rung.encoder} rung needs it")
    if rung.encoder in ELEMENTS:
        notes.append(f"it comes with {ELEMENTS[rung.encoder].package}")
    return f"the GStreamer element {name} is missing" + (f" ({'; '.join(notes)})" if notes else "")


def i420_planes(frame) -> list[memoryview]:
    """The picture as I420 bytes, without a copy where its planes have no row padding."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    planes = frame.planes
    if all(p.line_size == p.width for p in planes):
        return [memoryview(p).cast("B") for p in planes]
    return [memoryview(frame.to_ndarray()).cast("B")]  # (height * 3/2, width): the planes, unpadded


class GstEncoder(SimulatedFaults):
    """One running child. Not thread-safe: the media thread alone calls it."""

    def __init__(self, rung, settings: VideoSettings, python: str = GST_PYTHON):
        self.rung, self.name, self.settings = rung, rung.encoder, settings
        self.frames_in = self.packets_out = 0
        self._stall_frames = max(2 * settings.fps, 10)
        self._out: deque[EncodedPacket] = deque()
        self._pending: deque[tuple[int, object]] = deque()  # (pts, frame) sent, not yet answered
        self._ended = threading.Event()
        self._error = ""
        self.psi = ParameterSetInserter(None, rung.codec)  # (the parser repeats them: this is the backstop)
        spec = job(rung, settings)
        self._retunable = bool(spec["bitrate_property"])  # else the element keeps the bitrate it opened with
        self._child = subprocess.Popen(child_argv([python, str(CHILD), json.dumps(spec)]), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), bufsize=0)
        self._stdin = self._child.stdin.fileno()
        try:
            import fcntl

            fcntl.fcntl(self._stdin, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # the default 64 KiB: more write calls, the same frames
        os.set_blocking(self._stdin, False)
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"gst-{self.name}", daemon=True)
        self._reader.start()
        self._errors = threading.Thread(target=self._drain_stderr, name=f"gst-{self.name}-err", daemon=True)
        self._errors.start()
        if not self._ready.wait(OPEN_SECONDS) or self._ended.is_set():
            self.close()
            raise EncoderError(self._error or f"{self.name}: not ready within {OPEN_SECONDS:g} s")

    # --- the contract ---------------------------------------------------------------------------

    def encode(self, frame, pts: int) -> list[EncodedPacket]:
        self._simulate()
        if self._ended.is_set():
            self._fail(self._error or f"{self.name}: the encoder process ended")
        # Until its first access unit the encoder is starting (x265's thread pools, NVENC's
        # firmware): it may take its first frames slowly, and that is no wedge.
        limit = WRITE_SECONDS if self.packets_out or self._out else OPEN_SECONDS
        with heartbeat.allowing(limit):
            sent = self._send(b"F", pts, *i420_planes(frame), within=limit)
        if not sent:
            self._fail(self._error or f"{self.name}: took no frame for {limit:g} s (wedged)")
        self.frames_in += 1
        self._pending.append((pts, frame))
        out = self._take()
        if self.frames_in - self.packets_out > self._stall_frames:
            self._fail(f"{self.name}: stalled ({self.frames_in} frames in, {self.packets_out} packets out)")
        return out

    @property
    def backlog(self) -> int:
        """Frames the child took and has not answered yet (its own latency, or falling behind)."""
        return self.frames_in - self.packets_out - len(self._out)

    def _fail(self, why: str):
        out = self._take()
        raise EncoderError(why, packets=out, unanswered=list(self._pending))

    def set_bitrate(self, kbps: int) -> None:
        if self._retunable:
            self._send(b"B", int(kbps))

    def flush(self) -> list[EncodedPacket]:
        if self._send(b"E"):
            self._ended.wait(FLUSH_SECONDS)
        return self._take()

    def close(self) -> None:
        child = self._child
        try:
            child.stdin.close()
        except OSError:
            pass
        try:
            child.wait(1.0)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        self._reader.join(2.0)
        self._errors.join(2.0)

    # --- the pipe -------------------------------------------------------------------------------

    def _send(self, kind: bytes, value: int = 0, *payload, within: float = WRITE_SECONDS) -> bool:
        """Writes one message (its payload in parts) within `within` seconds; False when the
        child does not take it in time or is gone."""
        deadline = time.monotonic() + within
        size = sum(len(p) for p in payload)
        for part in (HEADER.pack(kind, size, value), *payload):
            view = memoryview(part)
            while view:
                try:
                    view = view[os.write(self._stdin, view):]
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not select.select([], [self._stdin], [], left)[1]:
                        return False
                except OSError as e:  # EPIPE: the child is gone
                    self._error = self._error or f"{self.name}: the encoder process is gone ({e.strerror})"
                    return False
        return True

    def _take(self) -> list[EncodedPacket]:
        out = []
        while self._out:
            out.append(self._out.popleft())
        self.packets_out += len(out)
        if out:  # no B-frames: a packet answers every frame up to its pts
            while self._pending and self._pending[0][0] <= out[-1].pts:
                self._pending.popleft()
        return out

    def _read(self) -> None:
        stream = self._child.stdout
        # The reader waits on the child, which waits on the media thread's frames: it beats
        # with every message, and a child silent for long is the media thread's to judge.
        with heartbeat.beating(f"gst-{self.name}", 30.0) as hb:
            while True:
                head = read_exact(stream, HEADER.size)
                if head is None:
                    break
                kind, length, value = HEADER.unpack(head)
                payload = read_exact(stream, length) if length else b""
                if payload is None:
                    break
                hb.beat()
                if kind == b"P":
                    data = bytes(memoryview(payload)[1:])
                    # A keyframe is a picture a decoder can start on (an IDR): some elements also
                    # flag the I-frames of a scene cut, which a segment must not start on.
                    key = payload[:1] == b"\x01" and has_keyframe_picture(data, self.rung.codec)
                    data = self.psi.process(data, key)
                    self._out.append(EncodedPacket(0, data, value, value, key, VIDEO_TB, self.rung.codec))
                elif kind == b"R":
                    self._ready.set()
                elif kind == b"X":
                    self._error = f"{self.name}: {payload.decode(errors='replace')}"
                    log.error("encoder %s: %s", self.name, payload.decode(errors="replace"),
                              extra={"ENCODER": self.name})
                elif kind == b"D":
                    break
        if not self._error and self._child.poll() not in (None, 0):
            self._error = f"{self.name}: the encoder process died (exit {self._child.returncode})"
        self._ended.set()
        self._ready.set()

    def _drain_stderr(self) -> None:
        for line in self._child.stderr:
            text = line.decode(errors="replace").strip()
            if text:
                log.debug("encoder %s: %s", self.name, text, extra={"ENCODER": self.name})
