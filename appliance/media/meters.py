"""Audio metering per track: peak, RMS, short-term loudness, clip and silence.

Pure numpy over blocks the media thread already has. Short-term loudness is
EBU R128's (3 s window, K-weighted, BS.1770), with the K-weighting applied in
the frequency domain (Parseval) so no per-sample Python loop or scipy is needed.
"""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

CLIP_DBFS = -0.1
FLOOR_DBFS = -120.0

# BS.1770 K-weighting at 48 kHz: high shelf, then the RLB high-pass.
_K_STAGES = (
    ((1.53512485958697, -2.69169618940638, 1.19839281085285), (1.0, -1.69065929318241, 0.73248077421585)),
    ((1.0, -2.0, 1.0), (1.0, -1.99004745483398, 0.99007225036621)),
)


def dbfs(amplitude: float) -> float:
    return 20 * math.log10(amplitude) if amplitude > 1e-6 else FLOOR_DBFS


def peak_dbfs(block: np.ndarray) -> float:
    return dbfs(float(np.max(np.abs(block)))) if block.size else FLOOR_DBFS


def rms_dbfs(block: np.ndarray) -> float:
    # A full-scale sine reads 0 dBFS peak and -3 dBFS RMS (AES17 convention not applied).
    return dbfs(float(np.sqrt(np.mean(np.square(block, dtype=np.float64))))) if block.size else FLOOR_DBFS


def _k_gain(n: int, rate: int = 48000) -> np.ndarray:
    """|H(f)|^2 of the K-weighting at the rfft bins of an n-sample block."""
    z = np.exp(-1j * 2 * np.pi * np.fft.rfftfreq(n, 1 / rate) / rate)
    h = np.ones_like(z)
    for b, a in _K_STAGES:
        h *= (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    return np.abs(h) ** 2


class Meter:
    """One track's meter. `update()` takes planar blocks (channels, n) and
    returns the conditions that changed: {"silent": bool, "clipping": bool}."""

    def __init__(self, name: str, silence_dbfs: float = -60.0, silence_seconds: float = 10.0,
                 rate: int = 48000, clock=time.monotonic):
        self.name = name
        self.rate = rate
        self.silence_dbfs = silence_dbfs
        self.silence_seconds = silence_seconds
        self.clock = clock
        self.peak = FLOOR_DBFS
        self.rms = FLOOR_DBFS
        self.loudness = -math.inf
        self.clips = 0
        self.silent = False
        self.clipping = False
        self._ms = deque()  # (samples, K-weighted sum of mean squares) over 3 s
        self._quiet_since: float | None = None
        self._clip_until = 0.0
        self._gains: dict[int, np.ndarray] = {}

    def update(self, block: np.ndarray) -> dict[str, bool]:
        now = self.clock()
        n = block.shape[-1]
        self.peak = peak_dbfs(block)
        self.rms = rms_dbfs(block)
        gain = self._gains.get(n)
        if gain is None:
            gain = self._gains[n] = _k_gain(n, self.rate)
        spectrum = np.abs(np.fft.rfft(block, axis=-1)) ** 2
        # Parseval for the one-sided spectrum: double all but DC (and Nyquist).
        weights = np.full(spectrum.shape[-1], 2.0)
        weights[0] = 1.0
        if n % 2 == 0:
            weights[-1] = 1.0
        energy = float(np.sum(spectrum * gain * weights)) / (n * n)  # summed over channels
        self._ms.append((n, energy * n))
        total = sum(s for s, _ in self._ms)
        while total - self._ms[0][0] >= 3 * self.rate:
            total -= self._ms.popleft()[0]
        mean = sum(e for _, e in self._ms) / total
        self.loudness = -0.691 + 10 * math.log10(mean) if mean > 1e-12 else -math.inf

        changed: dict[str, bool] = {}
        if self.peak >= CLIP_DBFS:
            self.clips += 1
            self._clip_until = now + 2.0
        clipping = now < self._clip_until
        if clipping != self.clipping:
            self.clipping = changed["clipping"] = clipping
        if self.rms < self.silence_dbfs:
            self._quiet_since = self._quiet_since if self._quiet_since is not None else now
        else:
            self._quiet_since = None
        silent = self._quiet_since is not None and now - self._quiet_since >= self.silence_seconds
        if silent != self.silent:
            self.silent = changed["silent"] = silent
        return changed

    def status(self) -> dict:
        return {"peak_dbfs": round(self.peak, 1), "rms_dbfs": round(self.rms, 1),
                "loudness_lufs": round(self.loudness, 1) if math.isfinite(self.loudness) else None,
                "clips": self.clips, "clipping": self.clipping, "silent": self.silent}
