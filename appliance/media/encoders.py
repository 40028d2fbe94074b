"""Encoders: the profile's ladder, probed in child processes, with fallback.

A rung is usable only if, in a child process and within a timeout, it opens,
encodes ~30 synthetic frames and emits packets that start with a keyframe
carrying SPS/PPS: opening is not enough (Jetson encoders open and then emit
nothing). Verdicts are cached per boot. At runtime an encoder that errors or
stalls is replaced by the next usable rung; the new one starts on a keyframe.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from appliance.children import child_argv, child_env
from appliance.fsutil import atomic_write
from appliance.media.annexb import ParameterSetInserter, starts_decodable
from appliance.media.encoder_faults import EncoderError, SimulatedFaults
from appliance.media.packets import AUDIO_TB, VIDEO_TB, EncodedPacket, VideoSettings

if TYPE_CHECKING:  # the probe child must start fast: no pydantic there
    from appliance.config import EncoderRung

log = logging.getLogger(__name__)

PROBE_FRAMES = 30
PROBE_TIMEOUT = 15.0
SOFTWARE = ("libx264", "libx265")  # reopened for a new bitrate (see set_bitrate)


@dataclass
class Verdict:
    encoder: str
    ok: bool
    reason: str
    seconds: float = 0.0
    cached: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _fits(rung: EncoderRung, s: VideoSettings) -> str:
    if s.width > rung.max_width or s.height > rung.max_height or s.fps > rung.max_fps:
        return (f"{s.width}x{s.height}@{s.fps} exceeds what {rung.encoder} can do here "
                f"({rung.max_width}x{rung.max_height}@{rung.max_fps})")
    return ""


def open_video(rung: EncoderRung, s: VideoSettings):
    import av

    too_big = _fits(rung, s)
    if too_big:
        raise EncoderError(too_big)
    ctx = av.CodecContext.create(rung.encoder, "w")
    ctx.width, ctx.height = s.width, s.height
    ctx.pix_fmt = rung.pix_fmt
    ctx.time_base = VIDEO_TB
    ctx.framerate = Fraction(s.fps)
    ctx.bit_rate = s.bitrate_kbps * 1000
    ctx.gop_size = s.gop
    ctx.max_b_frames = 0
    # Capped VBR with a one-second VBV: what a network link can carry.
    options = {"maxrate": f"{s.max_bitrate_kbps}k", "bufsize": f"{int(s.max_bitrate_kbps * s.vbv_seconds)}k"}
    if rung.encoder == "libx264":
        # Fixed GOP (segments and late joiners get a keyframe every interval),
        # forced keyframes as IDR, SPS/PPS repeated in-band.
        options.update({"sc_threshold": "0", "forced-idr": "1", "x264-params": "repeat-headers=1"})
        if rung.level:
            options["level"] = rung.level
    elif rung.encoder == "libx265":
        # The same for H.265 (VPS too), and no B-frames: libx265 ignores max_b_frames.
        options.update({"forced-idr": "1", "x265-params": f"repeat-headers=1:scenecut=0:bframes=0:open-gop=0:"
                                                          f"keyint={s.gop}:min-keyint={s.gop}:log-level=warning"})
    options.update(rung.options)
    ctx.options = options
    ctx.open()
    return ctx


def open_encoder(rung: EncoderRung, settings: VideoSettings):
    """The rung's encoder, opened: through PyAV, or a GStreamer element in a child process."""
    if rung.backend == "gstreamer":
        from appliance.media.gst_encoder import GstEncoder

        return GstEncoder(rung, settings)
    return VideoEncoder(rung, settings)


class VideoEncoder(SimulatedFaults):
    def __init__(self, rung: EncoderRung, settings: VideoSettings):
        self.rung = rung
        self.name = rung.encoder
        self.settings = settings
        self.ctx = open_video(rung, settings)
        self._opened_kbps = settings.bitrate_kbps
        self.psi = ParameterSetInserter(self.ctx.extradata, rung.codec)
        self.frames_in = 0
        self.packets_out = 0
        self._stall_frames = max(2 * settings.fps, 10)

    def set_bitrate(self, kbps: int) -> None:
        kbps = int(kbps)
        if self.rung.encoder not in SOFTWARE:
            self.ctx.bit_rate = kbps * 1000
            return
        if kbps == self._opened_kbps:
            return
        # libx264 does re-read bit_rate on every frame (libx265 does not at all), but
        # its ABR follows over ~1.5 s while the VBV ceiling stays where it was opened;
        # a link that just shrank cannot wait that long (the backlog would outgrow the
        # SRT latency). Reopening costs ~4 ms and one IDR, and the new rate holds from
        # its first frame.
        # A small VBV keeps that IDR from bursting into a link that is already full.
        s = replace(self.settings, bitrate_kbps=kbps, max_bitrate_kbps=kbps, vbv_seconds=0.3)
        self.ctx = open_video(self.rung, s)
        self.psi = ParameterSetInserter(self.ctx.extradata, self.rung.codec)
        self.frames_in = self.packets_out = 0
        self._opened_kbps = kbps

    def encode(self, frame, pts: int) -> list[EncodedPacket]:
        from av.video.frame import PictureType

        self._simulate()
        frame.pts = pts
        frame.time_base = VIDEO_TB
        # Decoded frames say "I": that would force a keyframe every frame.
        frame.pict_type = PictureType.NONE
        try:
            packets = self.ctx.encode(frame)
        except Exception as e:
            raise EncoderError(f"{self.name}: {e}") from e
        self.frames_in += 1
        out = [self._wrap(p) for p in packets]
        self.packets_out += len(out)
        if self.frames_in - self.packets_out > self._stall_frames:
            raise EncoderError(f"{self.name}: stalled ({self.frames_in} frames in, {self.packets_out} packets out)")
        return out

    def _wrap(self, p) -> EncodedPacket:
        key = bool(p.is_keyframe)
        data = self.psi.process(bytes(p), key)
        return EncodedPacket(0, data, p.pts, p.dts if p.dts is not None else p.pts, key, VIDEO_TB, self.rung.codec)

    def flush(self) -> list[EncodedPacket]:
        try:
            return [self._wrap(p) for p in self.ctx.encode(None)]
        except Exception:
            return []

    def close(self) -> None:
        self.ctx = None


class AudioEncoder:
    """AAC-LC, stereo, 48 kHz: what every ingest and MPEG-TS accept."""

    def __init__(self, stream: int, bitrate_kbps: int = 128, codec: str = "aac"):
        import av

        self.stream = stream
        ctx = av.CodecContext.create(codec, "w")
        ctx.sample_rate = 48000
        ctx.layout = "stereo"
        ctx.format = "fltp"
        ctx.bit_rate = bitrate_kbps * 1000
        ctx.time_base = AUDIO_TB
        ctx.open()
        self.ctx = ctx
        self._av = av

    def encode(self, planar, pts: int) -> list[EncodedPacket]:
        frame = self._av.AudioFrame.from_ndarray(planar, format="fltp", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = pts
        frame.time_base = AUDIO_TB
        return [self._wrap(p) for p in self.ctx.encode(frame)]

    def _wrap(self, p) -> EncodedPacket:
        return EncodedPacket(self.stream, bytes(p), p.pts, p.dts if p.dts is not None else p.pts, True, AUDIO_TB)

    def flush(self) -> list[EncodedPacket]:
        try:
            return [self._wrap(p) for p in self.ctx.encode(None)]
        except Exception:
            return []


# --- probing -------------------------------------------------------------------

def _probe_here(rung: EncoderRung, s: VideoSettings) -> dict:
    """Runs in the child: open, encode synthetic frames, check the packets."""
    import av
    import numpy as np

    enc = open_encoder(rung, s)
    packets: list[EncodedPacket] = []
    # A moving ramp in yuv420p: cheap to make, not trivially compressible.
    yuv = np.full((s.height * 3 // 2, s.width), 128, np.uint8)
    ramp = (np.arange(s.width) % 256).astype(np.uint8)
    for i in range(PROBE_FRAMES):
        yuv[: s.height] = np.roll(ramp, i * 8)[None, :]
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        if rung.pix_fmt != "yuv420p":
            frame = frame.reformat(format=rung.pix_fmt)
        packets += enc.encode(frame, i * 3000)
    packets += enc.flush()
    enc.close()
    return judge(packets, rung.codec)


def judge(packets: list[EncodedPacket], codec: str) -> dict:
    """A probe's verdict on what a rung emitted: packets, a keyframe first, the
    parameter sets in front of every keyframe."""
    if not packets:
        return {"ok": False, "reason": f"opened, but emitted no packets for {PROBE_FRAMES} frames"}
    if not packets[0].key:
        return {"ok": False, "reason": "the first packet is not a keyframe"}
    for p in packets:
        why = starts_decodable(p.data, codec) if p.key else ""
        if why:
            return {"ok": False, "reason": f"a keyframe a decoder cannot start on: {why}"}
    sets = "VPS/SPS/PPS" if codec == "h265" else "SPS/PPS"
    return {"ok": True, "reason": f"{len(packets)} packets, every keyframe with its {sets}"}


def probe(rung: EncoderRung, s: VideoSettings, timeout: float = PROBE_TIMEOUT) -> Verdict:
    """Probe one rung in a child process (a crashing or hanging driver cannot
    take the daemon with it)."""
    t0 = time.monotonic()
    too_big = _fits(rung, s)
    if too_big:
        return Verdict(rung.encoder, False, too_big)
    job = json.dumps({"rung": {**rung.model_dump(), "codec": rung.codec}, "settings": asdict(s)})
    try:
        r = subprocess.run(child_argv([sys.executable, "-m", "appliance.media.encoders", job]),
                           capture_output=True, text=True, timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired:
        return Verdict(rung.encoder, False, f"no answer within {timeout:g} s (driver hung)", time.monotonic() - t0)
    elapsed = time.monotonic() - t0
    try:
        answer = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return Verdict(rung.encoder, False, f"probe process died (exit {r.returncode}): {tail}", elapsed)
    reason = answer["reason"]
    if not answer["ok"] and rung.backend == "gstreamer":
        from appliance.media.gst_encoder import explain

        reason = explain(rung, reason)
    if not answer["ok"] and rung.device and not Path(rung.device).exists():
        reason += f" ({rung.device} is missing: no such hardware on this board)"
    return Verdict(rung.encoder, answer["ok"], reason, elapsed)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


@dataclass
class Ladder:
    """The profile's rungs with their verdicts, best first."""

    rungs: list[EncoderRung]
    settings: VideoSettings
    cache: Path | None = None
    verdicts: list[Verdict] = field(default_factory=list)

    def probe_all(self) -> list[Verdict]:
        from concurrent.futures import ThreadPoolExecutor

        cached = self._load_cache()
        todo = [r for r in self.rungs if self._key(r) not in cached]
        # Each probe is a child process: run them side by side, boot is waiting.
        with ThreadPoolExecutor(max_workers=max(1, len(todo)), thread_name_prefix="encoder-probe") as pool:
            fresh = dict(zip((self._key(r) for r in todo), pool.map(lambda r: probe(r, self.settings), todo)))
        verdicts = []
        for rung in self.rungs:
            key = self._key(rung)
            if key in cached:
                v = Verdict(**{**cached[key], "cached": True})
            else:
                v = fresh[key]
                cached[key] = {k: val for k, val in v.as_dict().items() if k != "cached"}
            (log.info if v.ok else log.warning)(
                "encoder %s: %s%s", rung.encoder, "usable" if v.ok else "rejected: " + v.reason,
                " (cached this boot)" if v.cached else f" (probed in {v.seconds:.1f} s)",
                extra={"ENCODER": rung.encoder, "USABLE": int(v.ok)})
            verdicts.append(v)
        self.verdicts = verdicts
        self._save_cache(cached)
        return verdicts

    def usable(self) -> list[EncoderRung]:
        return [r for r, v in zip(self.rungs, self.verdicts) if v.ok]

    def _key(self, rung: EncoderRung) -> str:
        s = self.settings
        return json.dumps([rung.model_dump(), s.width, s.height, s.fps], sort_keys=True)

    def _load_cache(self) -> dict:
        if not self.cache:
            return {}
        try:
            data = json.loads(self.cache.read_text())
            return data["verdicts"] if data.get("boot_id") == _boot_id() else {}
        except (OSError, ValueError, KeyError):
            return {}

    def _save_cache(self, verdicts: dict) -> None:
        if not self.cache:
            return
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.cache, json.dumps({"boot_id": _boot_id(), "verdicts": verdicts}).encode())
        except OSError as e:
            log.warning("cannot cache encoder verdicts in %s: %s", self.cache, e)


def _why(codec: str, e: Exception) -> str:
    if type(e).__name__ == "UnknownCodecError":
        return f"{codec} is not in this FFmpeg build"
    if getattr(e, "errno", None) is not None and getattr(e, "strerror", None):
        return f"cannot open {codec}: {e.strerror} (error {e.errno})"
    return f"cannot open {codec}: {e}"


def _child(argv: list[str]) -> int:
    job = json.loads(argv[0])
    rung = SimpleNamespace(**job["rung"])
    settings = VideoSettings(**job["settings"])
    try:
        answer = _probe_here(rung, settings)
    except Exception as e:
        answer = {"ok": False, "reason": _why(rung.encoder, e)}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
