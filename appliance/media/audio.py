"""FOH audio through sounddevice: one stream per device, split into tracks.

The desk's program feed and a clean/ambient feed are separate tracks (channels
1-2 and 3-4 of one interface, or two devices). Each track has a buffer that the
media thread pulls from at exactly 48 kHz of the shared monotonic clock, so
audio timestamps are the sample count on the same clock as video. The sound
card's crystal is not the system clock: the buffer's fill level shows the drift
and it is corrected one sample at a time (inaudible), never left to grow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from appliance import backoff
from appliance.config import AudioSection, AudioTrack
from appliance.worker import Worker

log = logging.getLogger(__name__)

RATE = 48000
# The buffer is kept near TARGET; beyond TOLERANCE either way it is corrected.
TARGET = 0.060
TOLERANCE = 0.015
# A backlog this large (a burst at stream start, a stall) is dropped at once.
RESYNC_ABOVE = 0.300
# Only the media thread trims a buffer: while it is stuck, the device's callbacks would
# grow it without end (0.4 MB/s a track). Beyond this the oldest samples go.
HOLD_AT_MOST = 2.0
# No callback for this long: the device is gone, reopen it. A stream that has
# just opened gets longer (some devices, PulseAudio's among them, take ~2 s).
STALL_AFTER = 1.0
FIRST_BLOCK_WITHIN = 3.0
# 10 ms blocks: PortAudio left to choose (blocksize 0) calls back with varying sizes
# about 150 times a second through ALSA's pulse plugin, and costs twice the CPU
# (0.024 against 0.012 CPU s/s a device on a 2-core x86); 10 ms stays far inside TARGET.
BLOCK = RATE // 100


class TrackBuffer:
    """Samples of one track (stereo float32), fed by the audio thread, pulled
    by the media thread. Underruns become silence (the timing never slips)."""

    def __init__(self, name: str, rate: int = RATE):
        self.name = name
        self.rate = rate
        self._blocks: deque[np.ndarray] = deque()
        self._fill = 0
        self._lock = threading.Lock()
        self._primed = False
        self._smoothed = 0.0
        self.underrun_samples = 0
        self.corrected_samples = 0
        self.resyncs = 0
        self.overflow_samples = 0

    def push(self, block: np.ndarray) -> None:
        """block: (n, 2) float32."""
        with self._lock:
            self._blocks.append(block)
            self._fill += len(block)
            over = self._fill - int(HOLD_AT_MOST * self.rate)
            if over > 0:
                self._discard(over)
                self.overflow_samples += over

    def reset(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._fill = 0
            self._primed = False

    def pull(self, n: int) -> np.ndarray:
        """Exactly n samples as (2, n) float32 (planar, as AAC wants it)."""
        target, tol = int(TARGET * self.rate), int(TOLERANCE * self.rate)
        with self._lock:
            if not self._primed:
                # Start with TARGET of latency so jitter never underruns.
                if self._fill < target + n:
                    return np.zeros((2, n), np.float32)
                self._primed = True
                self._discard(self._fill - n - target)
                self._smoothed = target
            if self._fill - n > RESYNC_ABOVE * self.rate:
                self._discard(self._fill - n - target)
                self._smoothed = target
                self.resyncs += 1
            # Decide on the smoothed fill: callback blocks make the raw fill jitter.
            self._smoothed += 0.05 * ((self._fill - n) - self._smoothed)
            take = n
            if self._smoothed > target + tol:
                take = n + 1  # the card runs fast: drop one sample
            elif self._smoothed < target - tol and self._fill >= n:
                take = n - 1  # the card runs slow: repeat one sample
            out = self._take(min(take, self._fill))
        got = len(out)
        if take != n and got == take:
            self.corrected_samples += 1
            out = out[:n] if take > n else np.concatenate([out, out[-1:]])
        elif got < n:
            self.underrun_samples += n - got
            out = np.concatenate([out, np.zeros((n - got, 2), np.float32)])
        return np.ascontiguousarray(out.T)

    def _take(self, n: int) -> np.ndarray:
        parts, need = [], n
        while need > 0 and self._blocks:
            block = self._blocks[0]
            if len(block) <= need:
                parts.append(self._blocks.popleft())
                need -= len(block)
            else:
                parts.append(block[:need])
                self._blocks[0] = block[need:]
                need = 0
        self._fill -= n - need
        return np.concatenate(parts) if parts else np.zeros((0, 2), np.float32)

    def _discard(self, n: int) -> None:
        self._take(max(0, n))


def _to_stereo(data: np.ndarray, channels: list[int]) -> np.ndarray:
    picked = data[:, [c - 1 for c in channels]]
    if picked.shape[1] == 1:
        return np.repeat(picked, 2, axis=1)
    return np.ascontiguousarray(picked[:, :2])


class AudioDevice(Worker):
    """One capture device feeding the tracks that use it; reopened when lost."""

    def __init__(self, device: str, tracks: list[tuple[AudioTrack, TrackBuffer]], on_change=None):
        self.device = device
        self.tracks = tracks
        self.channels = max(max(t.channels) for t, _ in tracks)
        self.on_change = on_change or (lambda device, ok, why: None)
        self.ok = False
        self.error = ""
        self.reopens = 0
        self.callbacks = 0
        self._reported_lost = False
        self._last_callback = 0.0
        self.worker_name = f"audio-{device}"
        self._init_worker()

    def status(self) -> dict:
        return {"device": self.device, "ok": self.ok, "reopens": self.reopens,
                **({"error": self.error} if self.error else {})}

    def _callback(self, indata, frames, time_info, status) -> None:
        self._last_callback = time.monotonic()
        self.callbacks += 1
        for track, buf in self.tracks:
            buf.push(_to_stereo(indata, track.channels))

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            stream = None
            try:
                import sounddevice as sd

                stream = sd.InputStream(device=self.device, channels=self.channels, samplerate=RATE,
                                        blocksize=BLOCK, dtype="float32", callback=self._callback)
                stream.start()
                why = self._watch()
            except Exception as e:  # PortAudioError, ValueError (no such device), OSError
                why = str(e) or type(e).__name__
            if why is not None:
                # Report before closing: closing a wedged stream can block
                # until the device comes back.
                self._lost(why)
            if stream is not None:
                try:
                    stream.close(ignore_errors=True)
                except Exception:
                    pass
            if why is None or self._stop.is_set():
                return
            self.reopens += 1
            self._stop.wait(backoff.delay(attempt))
            self.heartbeat.beat()
            attempt = 0 if self.ok else attempt + 1

    def _watch(self) -> str | None:
        """Watch an open stream: None when asked to stop, else why it failed."""
        first = self.callbacks
        self._last_callback = time.monotonic()
        while not self._stop.wait(0.1):
            self.heartbeat.beat()
            since = time.monotonic() - self._last_callback
            limit = STALL_AFTER if self.callbacks > first else FIRST_BLOCK_WITHIN
            if since > limit:
                return f"no audio from {self.device!r} for {since:.1f} s"
            if not self.ok and self.callbacks > first:
                self.ok, self.error = True, ""
                if self._reported_lost:
                    self._reported_lost = False
                    self.on_change(self.device, True, "")
        return None

    def _lost(self, why: str) -> None:
        if not self._reported_lost:
            self._reported_lost = True
            self.on_change(self.device, False, why)
        self.ok, self.error = False, why
        for _, buf in self.tracks:
            buf.reset()


def init_portaudio() -> str | None:
    """Import sounddevice (which initialises PortAudio) now; return why not.

    sounddevice points fd 2 at /dev/null while PortAudio enumerates devices, to
    hide ALSA's chatter: any log line another thread writes meanwhile is lost.
    So the daemon does it once, at a moment of its choosing, before the audio
    threads exist.
    """
    try:
        import sounddevice  # noqa: F401
    except (OSError, ImportError) as e:
        return f"PortAudio unavailable ({e}): apt-get install libportaudio2"
    return None


class AudioCapture:
    """Every configured track, grouped by device."""

    def __init__(self, cfg: AudioSection, on_change=None):
        self.buffers = {t.name: TrackBuffer(t.name) for t in cfg.tracks}
        by_device: dict[str, list] = {}
        for t in cfg.tracks:
            by_device.setdefault(t.device, []).append((t, self.buffers[t.name]))
        self.devices = [AudioDevice(dev, tracks, on_change) for dev, tracks in by_device.items()]

    def start(self) -> None:
        for d in self.devices:
            d.start()

    def stop(self) -> None:
        for d in self.devices:
            d.stop()

    def device_ok(self, track: str) -> bool:
        return any(d.ok for d in self.devices if any(t.name == track for t, _ in d.tracks))
