"""A debounced push button with hold times, over a gpiozero Button.

Debounce is ours: gpiozero's mock pins do not simulate bounce_time, and some
backends implement it differently. The rule: the first edge is taken at once
(no added latency on GO); edges within DEBOUNCE after an accepted edge are
ignored, and at the end of that window the pin is read again, so a real
change hidden in the bounce is never lost.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

DEBOUNCE = 0.05


class DebouncedButton:
    def __init__(self, pin: int, factory, name: str, on_press: Callable[[], None] | None = None,
                 on_release: Callable[[float], None] | None = None,
                 holds: dict[float, Callable[[], None]] | None = None, debounce: float = DEBOUNCE):
        from gpiozero import Button

        self.name = name
        self.on_press = on_press or (lambda: None)
        self.on_release = on_release or (lambda seconds: None)
        self.holds = dict(holds or {})
        self.debounce = debounce
        self.presses = 0
        self.ignored_edges = 0
        self.last_press_at: float | None = None
        self._pressed = False
        self._accepted_at = -1e9
        self._press_id = 0
        self._lock = threading.RLock()
        self._timers: list[threading.Timer] = []
        self._closed = False
        self.button = Button(pin, pull_up=True, bounce_time=None, pin_factory=factory)
        self.button.when_pressed = self._edge
        self.button.when_released = self._edge

    def _edge(self) -> None:
        with self._lock:
            if self._closed:
                return
            now = time.monotonic()
            if now - self._accepted_at < self.debounce:
                self.ignored_edges += 1
                return
            self._apply(self.button.is_pressed, now)

    def _apply(self, pressed: bool, now: float) -> None:
        if pressed == self._pressed:
            return
        self._pressed = pressed
        self._accepted_at = now
        # Re-read after the bounce window: the state it settles in is the truth.
        self._timer(self.debounce, self._settle)
        if pressed:
            self.presses += 1
            self._press_id += 1
            self.last_press_at = now
            press_id = self._press_id
            for seconds, callback in self.holds.items():
                self._timer(seconds, lambda cb=callback, pid=press_id: self._held(pid, cb))
            self.on_press()
        else:
            self.on_release(now - (self.last_press_at or now))

    def _settle(self) -> None:
        with self._lock:
            if not self._closed:
                self._apply(self.button.is_pressed, time.monotonic())

    def _held(self, press_id: int, callback) -> None:
        with self._lock:
            still = self._pressed and press_id == self._press_id and not self._closed
        if still:
            callback()

    def _timer(self, seconds: float, fn) -> None:
        t = threading.Timer(seconds, fn)
        t.name = f"button-{self.name}"
        t.daemon = True
        self._timers = [x for x in self._timers if x.is_alive()]
        self._timers.append(t)
        t.start()

    @property
    def is_pressed(self) -> bool:
        return self._pressed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            timers, self._timers = self._timers, []
        for t in timers:
            t.cancel()
        for t in timers:
            if t is not threading.current_thread():
                t.join()
        self.button.close()
