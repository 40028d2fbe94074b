"""Runtime left, from the measured discharge trend when the device has no figure."""

from __future__ import annotations

import time
from collections import deque

WINDOW = 600.0  # seconds of history the trend is fitted over
MIN_SPAN = 20.0  # seconds of discharge before a forecast is offered
SMOOTHING = 0.3


class RuntimeForecast:
    def __init__(self):
        self._samples: deque[tuple[float, float]] = deque()
        self._rate: float | None = None  # percent per second, smoothed
        self.computed_at: float | None = None  # wall clock

    def observe(self, now: float, charge: float | None, on_mains: bool | None) -> None:
        if on_mains or charge is None:
            # Charging or unknown: the discharge trend starts again next time.
            self._samples.clear()
            self._rate = None
            return
        self._samples.append((now, charge))
        while self._samples and now - self._samples[0][0] > WINDOW:
            self._samples.popleft()
        if len(self._samples) < 3 or now - self._samples[0][0] < MIN_SPAN:
            return
        n = len(self._samples)
        mt = sum(t for t, _ in self._samples) / n
        mc = sum(c for _, c in self._samples) / n
        var = sum((t - mt) ** 2 for t, _ in self._samples)
        if var <= 0:
            return
        slope = sum((t - mt) * (c - mc) for t, c in self._samples) / var  # % per second (negative)
        rate = -slope
        self._rate = rate if self._rate is None else (1 - SMOOTHING) * self._rate + SMOOTHING * rate
        self.computed_at = time.time()

    def runtime_seconds(self) -> float | None:
        if self._rate is None or self._rate <= 1e-6 or not self._samples:
            return None
        return self._samples[-1][1] / self._rate
