"""The media pipeline: one thread, one clock, one encoder set, a list of outputs.

The media thread ticks at the output frame rate on the monotonic clock. Every
tick it takes the video source's latest frame (or the slate), pulls exactly one
frame's worth of samples from each audio track (silence if the device is away),
meters them, and, while live, encodes them and hands the packets to every
output. Video PTS is the tick count, audio PTS the sample count: both from the
same clock, so A/V sync holds by construction. A stall of up to half a second
(a busy CPU) is caught up: the missed ticks run back to back on the latest
picture, and the timeline has no hole. Further behind, the thread drops video
frames (counted and logged), never audio.

The supervisor sees the pipeline as a component (sources and meters run from
boot, so the panel can show "no video" before GO) and as a live output
(encoders and outputs run while live).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Callable

from appliance import codecs, conditions, heartbeat
from appliance.config import Config
from appliance.media.audio import RATE, AudioCapture, init_portaudio
from appliance.media.encoder_faults import EncoderError
from appliance.media.encoders import AudioEncoder, Ladder, VideoEncoder, open_encoder
from appliance.media.meters import Meter
from appliance.media.packets import EncodedPacket, Output, Session, VideoSettings
from appliance.media.video import Slate, make_source

log = logging.getLogger(__name__)

# A stall this long is caught up, not skipped: on a loaded two-core box the thread
# has been seen to miss 233 ms of ticks, and skipping left a hole in the recording
# and the stream alike. Catching up costs a burst of encodes (a few ms each).
MAX_BEHIND_SECONDS = 0.5
SKIP_LOG_EVERY = 10.0
# The media thread ticks every frame: this many frame times without a tick is a wedged
# call, an encoder that does not return, and the show is frozen while the box looks LIVE.
# Never under 3 s: a healthy libx264 starved of CPU (two cores three times oversubscribed)
# was seen to take 2.4 s over one frame, and a restart costs the show ten seconds.
STUCK_FRAMES = 60
STUCK_MIN_SECONDS = 3.0
# A command (GO: open the encoder and the outputs; STOP: flush, finalize) bounds its own
# waits; this long and no longer it may keep the thread from ticking.
COMMAND_SECONDS = 12.0


class MediaPipeline:
    name = "media"

    def __init__(self, cfg: Config, report: Callable[[str, bool], None], runtime_dir: Path,
                 outputs: list[Output] | None = None, fault: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.report = report
        self.fault = fault or (lambda why: None)
        self.outputs: list[Output] = list(outputs or [])
        v, e = cfg.video, cfg.encoder
        self.settings = VideoSettings(v.width, v.height, v.fps, e.bitrate_kbps, e.bitrate_kbps, e.keyframe_seconds,
                                      codec=e.codec)
        self.samples_per_tick = RATE // v.fps
        self._cap_kbps: int | None = None
        self._wanted_kbps = e.bitrate_kbps
        self.ladder = Ladder(e.rungs(), self.settings, runtime_dir / "encoder-probe.json")
        self.video = make_source(v)
        self.audio = AudioCapture(cfg.audio, self._audio_changed)
        self.tracks = [t.name for t in cfg.audio.tracks]
        self.meters = {t.name: Meter(t.name, cfg.audio.silence_dbfs, cfg.audio.silence_seconds) for t in cfg.audio.tracks}
        self.slate = Slate(v.width, v.height)

        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._commands: deque = deque()
        self._bitrate_pending: int | None = None
        self._bitrate_lock = threading.Lock()
        self._live = False
        self._active: list[Output] = []  # the outputs running this session
        self._broken: list[str] = []
        self._venc: VideoEncoder | None = None
        self._rungs: list = []
        self._rung_index = 0
        self._aencs: list[AudioEncoder] = []
        self._tick = 0
        self._signal = True
        # A source takes a moment to deliver its first frame: no alarm for that.
        self._grace_until = 0.0
        self.first_packet_at: float | None = None
        self.session: Session | None = None
        # Counters for status and metrics.
        self.frames_encoded = 0
        self.frames_dropped = 0
        self.slate_frames = 0
        # What else the session's record carries (the last pre-flight): set by the composition.
        self.session_extras: Callable[[], dict] = dict
        self.fallbacks: list[str] = []
        self._rate_window: deque = deque()  # (time, bytes) of recent packets
        self._fps_window: deque = deque()
        self.latest_frame = None  # for the API's snapshot

    # --- component ---------------------------------------------------------------

    async def start(self) -> None:
        # The encoder probes take longest: start them first, in the background.
        probing = asyncio.ensure_future(asyncio.to_thread(self.ladder.probe_all))
        # In the loop's thread on purpose: nothing else may log while PortAudio
        # initialises (see init_portaudio).
        problem = init_portaudio()
        if problem:
            log.error("audio: %s", problem)
        self._grace_until = time.monotonic() + 3.0
        self.video.start()
        self.audio.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="media", daemon=True)
        self._thread.start()
        await probing
        self._rungs = self.ladder.usable()
        if not self._rungs:
            self.fault("no usable video encoder: " + "; ".join(f"{v.encoder}: {v.reason}" for v in self.ladder.verdicts))

    async def stop(self) -> None:
        if self._live:
            await self.stop_live()
        self._stop.set()
        if self._thread:
            await asyncio.to_thread(self._thread.join, 10)
            self._thread = None
        await asyncio.to_thread(self.video.stop)
        await asyncio.to_thread(self.audio.stop)

    def status(self) -> dict:
        now = time.monotonic()
        window = [(t, b) for t, b in list(self._rate_window) if now - t <= 2.0]
        fps_window = [t for t in list(self._fps_window) if now - t <= 1.0]
        return {
            "live": self._live,
            "encoder": self._venc.name if self._venc else None,
            "encoder_hardware": bool(self._venc and self._venc.rung.hardware),
            "ladder": [v.as_dict() for v in self.ladder.verdicts],
            "fallbacks": self.fallbacks,
            "fps": len(fps_window) if self._live else 0,
            "bitrate_kbps": round(sum(b for _, b in window) * 8 / 2.0 / 1000) if self._live else 0,
            "target_bitrate_kbps": self.settings.bitrate_kbps,
            "bitrate_cap_kbps": self._cap_kbps,
            "frames_encoded": self.frames_encoded,
            "first_packet_at": self.first_packet_at,  # monotonic, this session
            "frames_dropped": self.frames_dropped,
            "slate_frames": self.slate_frames,
            "video": self.video.status(),
            "audio": {name: {**self.meters[name].status(), "device_ok": self.audio.device_ok(name),
                             "underrun_samples": self.audio.buffers[name].underrun_samples,
                             "overflow_samples": self.audio.buffers[name].overflow_samples,
                             "drift_corrections": self.audio.buffers[name].corrected_samples}
                      for name in self.tracks},
            "outputs": {o.name: {**o.status(), "failed": o.name in self._broken} for o in self.outputs},
        }

    # --- live output ---------------------------------------------------------------

    async def start_live(self) -> None:
        if not self._rungs:
            raise RuntimeError("no usable video encoder")
        await asyncio.to_thread(self._call, self._begin)

    async def stop_live(self) -> None:
        await asyncio.to_thread(self._call, self._end)

    def set_bitrate(self, kbps: int) -> None:
        """Called by the adaptive bitrate (any thread, ten times a second); applied on the
        next tick. Only the newest figure waits: a stuck media thread must not queue them up."""
        with self._bitrate_lock:
            pending, self._bitrate_pending = self._bitrate_pending, int(kbps)
            if pending is None:
                self._commands.append(self._apply_pending_bitrate)

    def _apply_pending_bitrate(self) -> None:
        with self._bitrate_lock:
            kbps, self._bitrate_pending = self._bitrate_pending, None
        if kbps is not None:
            self._apply_bitrate(kbps)

    def set_bitrate_cap(self, kbps: int | None) -> None:
        """A ceiling below the configured maximum (power saving); None lifts it."""
        def apply():
            self._cap_kbps = kbps
            self._apply_bitrate(self._wanted_kbps)
        self._commands.append(apply)

    def inject_encoder_fault(self) -> None:
        """Simulated encoder failure (sim profile, tests)."""
        self._commands.append(lambda: self._venc and self._venc.inject_fault())

    def inject_encoder_hang(self, seconds: float) -> None:
        """Simulated wedged encoder (sim profile, tests): the next encode call blocks."""
        if not self._live:
            raise RuntimeError("encoder-hang: the encoder runs only while live")
        self._commands.append(lambda: self._venc and self._venc.inject_hang(seconds))

    def _call(self, fn) -> None:
        """Run fn in the media thread between ticks and wait for it."""
        done = threading.Event()
        error: list[BaseException] = []

        def wrapped():
            try:
                fn()
            except BaseException as e:
                error.append(e)
            finally:
                done.set()

        self._commands.append(wrapped)
        if not done.wait(30):
            raise TimeoutError("the media thread did not answer in 30 s")
        if error:
            raise error[0]

    # --- in the media thread ------------------------------------------------------------

    def _begin(self) -> None:
        self._rung_index = 0  # (the best rung again: a failure was this session's)
        for condition in (conditions.ENCODER_SOFTWARE, conditions.ENCODER_CODEC_CHANGED):
            self.report(condition, False)
        self._venc = self._open_encoder()
        self._aencs = [AudioEncoder(i + 1, self.cfg.encoder.audio_bitrate_kbps) for i in range(len(self.tracks))]
        started = time.time()
        name = time.strftime("%Y%m%d-%H%M%S", time.localtime(started)) + f"-{self.cfg.device.name}"
        self.session = Session(
            name=name, started=started, video=self.settings, track_names=self.tracks,
            audio_extradata=[a.ctx.extradata for a in self._aencs], encoder=self._venc.name,
            settings={"bitrate_kbps": self.settings.bitrate_kbps, "keyframe_seconds": self.settings.keyframe_seconds,
                      "audio_bitrate_kbps": self.cfg.encoder.audio_bitrate_kbps, "source": self.video.describe(),
                      **self.session_extras()},
        )
        self._active = []
        for out in self.outputs:
            try:
                out.start(self.session)
                self._active.append(out)
            except Exception as e:
                self._output_failed(out, f"failed to start: {e}")
        self._tick = 0
        self.first_packet_at = None
        self.frames_encoded = self.frames_dropped = self.slate_frames = 0
        self._live = True

    def _end(self) -> None:
        self._live = False
        packets = []
        if self._venc:
            packets += self._venc.flush()
            self._venc.close()
        for a in self._aencs:
            packets += a.flush()
        self._deliver(packets)
        problems = []
        for out in self._active:
            try:
                out.stop()
            except Exception as e:
                log.error("output %s did not stop cleanly: %s", out.name, e)
                problems.append(f"{out.name}: {e}")
        for name in self._broken:
            self.report(conditions.component_failed(f"output {name}"), False)
        self._active, self._broken = [], []
        self._venc, self._aencs = None, []
        if problems:  # for the stop's record (last_stop): never a clean stop that was not made
            raise RuntimeError("; ".join(problems))

    def _open_encoder(self) -> VideoEncoder:
        while self._rung_index < len(self._rungs):
            rung = self._rungs[self._rung_index]
            try:
                self.settings = replace(self.settings, codec=rung.codec)
                enc = open_encoder(rung, self.settings)
                log.info("encoder: %s (%s)", rung.encoder, "hardware" if rung.hardware else "software",
                         extra={"ENCODER": rung.encoder})
                return enc
            except Exception as e:
                log.error("encoder %s failed to open: %s", rung.encoder, e, extra={"ENCODER": rung.encoder})
                self._rung_index += 1
        raise EncoderError("every encoder of the ladder failed")

    def _fall_back(self, failed: VideoEncoder, why: str) -> VideoEncoder | None:
        log.error("encoder %s failed mid-stream (%s): switching to the next rung", failed.name, why,
                  extra={"ENCODER": failed.name})
        failed.close()
        self._rung_index += 1
        try:
            enc = self._open_encoder()
        except EncoderError as e:
            self.fault(f"video encoder: {e}")
            return None
        self.fallbacks.append(f"{failed.name} -> {enc.name}: {why}")
        if failed.rung.hardware and not enc.rung.hardware:
            self.report(conditions.ENCODER_SOFTWARE, True)
        if enc.rung.codec != failed.rung.codec:
            # (the outputs see it in the packets: a new segment, a fresh connection)
            log.warning("encoder: the video is %s from here on", codecs.CODEC_LABELS[enc.rung.codec],
                        extra={"ENCODER": enc.name})
            self.report(conditions.ENCODER_CODEC_CHANGED, True)
        if self.session:
            self.session.encoder = enc.name
            self.session.video = self.settings
        return enc

    def _apply_bitrate(self, kbps: int) -> None:
        e = self.cfg.encoder
        self._wanted_kbps = int(kbps)
        ceiling = min(e.bitrate_kbps, self._cap_kbps or e.bitrate_kbps)
        kbps = max(e.min_bitrate_kbps, min(ceiling, int(kbps)))
        if kbps != self.settings.bitrate_kbps:
            log.debug("encoder bitrate: %d kb/s%s", kbps, f" (capped at {self._cap_kbps})" if self._cap_kbps else "")
        self.settings = replace(self.settings, bitrate_kbps=kbps)
        if self._venc:
            self._venc.settings = self.settings
            self._venc.set_bitrate(kbps)

    def _run(self) -> None:
        fps = self.cfg.video.fps
        with heartbeat.beating("media", max(STUCK_MIN_SECONDS, STUCK_FRAMES / fps), show=True) as hb:
            self._ticks(hb)

    def _ticks(self, hb: heartbeat.Heartbeat) -> None:
        period = 1 / self.cfg.video.fps
        max_behind = max(1, int(MAX_BEHIND_SECONDS * self.cfg.video.fps))
        next_t = time.monotonic()
        logged_at = -SKIP_LOG_EVERY
        while not self._stop.is_set():
            hb.beat()
            while self._commands:
                try:
                    with hb.allow(COMMAND_SECONDS):
                        self._commands.popleft()()
                except Exception:  # a bad request must not end the show
                    log.exception("media: a command failed")
            now = time.monotonic()
            if now < next_t:
                self._stop.wait(next_t - now)
                continue
            behind = int((now - next_t) / period)
            if behind > max_behind:
                # Too slow to keep up: skip video frames (audio is still pulled for them).
                for _ in range(behind):
                    self._one_tick(now, video=False)
                    hb.beat()
                next_t += behind * period
                if now - logged_at >= SKIP_LOG_EVERY:  # at most every 10 s under a sustained overload
                    logged_at = now
                    log.warning("media: %.0f ms behind, %d video frames skipped (%d this session): "
                                "the box stalled or its CPU cannot keep up",
                                behind * period * 1000, behind, self.frames_dropped)
            self._one_tick(now, video=True)
            next_t += period

    def _one_tick(self, now: float, video: bool) -> None:
        try:
            self._tick_inner(now, video)
        except Exception:
            # Nothing may kill the media thread: log and keep the clock running.
            log.exception("media tick failed")
        self._tick += 1

    def _tick_inner(self, now: float, video: bool) -> None:
        frame = self.video.latest(now)
        signal = frame is not None or now < self._grace_until
        if signal != self._signal:
            self._signal = signal
            self.report(conditions.NO_VIDEO, not signal)
        blocks = []
        for name in self.tracks:
            block = self.audio.buffers[name].pull(self.samples_per_tick)
            for condition, active in self.meters[name].update(block).items():
                self.report(conditions.audio(name, condition), active)
            blocks.append(block)
        if frame is not None:
            self.latest_frame = frame
        if not self._live:
            return
        packets: list[EncodedPacket] = []
        if video:
            if frame is None:
                frame = self.slate.frame()
                self.slate_frames += 1
            packets += self._encode(frame, self._tick * 90000 // self.cfg.video.fps)
            if self._venc is not None:
                self.frames_encoded += 1
                self._fps_window.append(now)
        else:
            self.frames_dropped += 1
        apts = self._tick * self.samples_per_tick
        for enc, block in zip(self._aencs, blocks):
            packets += enc.encode(block, apts)
        self._deliver(packets)
        while self._fps_window and now - self._fps_window[0] > 1.0:
            self._fps_window.popleft()

    def _encode(self, frame, pts: int) -> list[EncodedPacket]:
        """On failure the next rung takes over from the first frame the failed one did not
        answer (an encoder in a child process works a frame or two ahead): none is lost."""
        packets: list[EncodedPacket] = []
        todo = deque([(pts, frame)])
        while todo and self._venc is not None:
            try:
                packets += self._venc.encode(todo[0][1], todo[0][0])
                todo.popleft()
            except EncoderError as e:
                packets += e.packets
                self._venc = self._fall_back(self._venc, str(e))
                todo.extendleft(reversed([u for u in e.unanswered if u[0] < todo[0][0]]))
        return packets

    def _deliver(self, packets: list[EncodedPacket]) -> None:
        if not packets:
            return
        now = time.monotonic()
        if self.first_packet_at is None:
            self.first_packet_at = now
        for p in packets:
            self._rate_window.append((now, len(p.data)))
            for out in list(self._active):
                try:
                    out.packet(p)
                except Exception as e:  # an output must never break the media thread
                    self._active.remove(out)
                    self._output_failed(out, f"broke: {e}")
        while self._rate_window and now - self._rate_window[0][0] > 2.0:
            self._rate_window.popleft()

    def _output_failed(self, out, why: str) -> None:
        """The output is dead for this session; the others (and the show) go on."""
        log.error("output %s %s", out.name, why, extra={"OUTPUT": out.name})
        self._broken.append(out.name)
        self.report(conditions.component_failed(f"output {out.name}"), True)

    def _audio_changed(self, device: str, ok: bool, why: str) -> None:
        for t in self.cfg.audio.tracks:
            if t.device == device:
                if not ok:
                    log.warning("audio %s: device %r lost: %s", t.name, device, why, extra={"AUDIO": t.name})
                else:
                    log.info("audio %s: device %r back", t.name, device, extra={"AUDIO": t.name})
                self.report(conditions.audio(t.name, "device missing"), not ok)
