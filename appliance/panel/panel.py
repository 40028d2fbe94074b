"""The front panel component: GO/FN buttons in, state out on the LEDs.

GO pressed while not live asks to go live at once (on the press, not the
release: the tech sees the LIVE light come on under their finger). GO pressed
while live must be held STOP_HOLD seconds: a knock never stops a show.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from appliance.config import PanelSection
from appliance.errors import ComponentError
from appliance.panel.factory import make_pin_factory
from appliance.supervisor.state import Kind, Snapshot, State

log = logging.getLogger(__name__)

STOP_HOLD = 2.0

Post = Callable[..., None]


class Panel:
    name = "panel"

    def __init__(self, config: PanelSection, post: Post):
        self.config = config
        self.post = post
        self.factory = None
        self.devices: dict = {}
        self._live = False
        self._lock = threading.Lock()
        self._presses = 0

    async def start(self) -> None:
        if self.config.backend == "none":
            raise ComponentError("no panel fitted on this board (backend = none)")
        self.factory = make_pin_factory(self.config)
        from gpiozero import LED, PWMLED, Button

        try:
            for name, pin in self.config.leds.model_dump().items():
                if pin is None:
                    continue
                cls = PWMLED if self.config.pwm else LED
                self.devices[f"led_{name}"] = cls(pin, active_high=self.config.active_high, pin_factory=self.factory)
            go = self.config.buttons.go
            if go is not None:
                button = Button(go, pull_up=True, hold_time=STOP_HOLD, pin_factory=self.factory)
                button.when_pressed = self._go_pressed
                button.when_held = self._go_held
                self.devices["button_go"] = button
        except Exception as e:
            self._close()
            raise ComponentError(f"panel pins cannot be claimed: {e}") from None
        self._show(State.BOOTING)

    async def stop(self) -> None:
        for name, dev in self.devices.items():
            if name.startswith("led_"):
                dev.off()
        self._close()

    def _close(self) -> None:
        for dev in self.devices.values():
            dev.close()
        self.devices.clear()
        if self.factory is not None:
            self.factory.close()
            self.factory = None

    def status(self) -> dict:
        return {
            "backend": self.config.backend,
            "leds": {k[4:]: _value(v) for k, v in self.devices.items() if k.startswith("led_")},
            "go_presses": self._presses,
        }

    # --- buttons (gpiozero threads) ---------------------------------------------

    def _go_pressed(self) -> None:
        with self._lock:
            self._presses += 1
            live = self._live
        if not live:
            self.post(Kind.GO, source="button")

    def _go_held(self) -> None:
        with self._lock:
            live = self._live
        if live:
            self.post(Kind.STOP, source="button (held)")

    # --- state (loop thread) ---------------------------------------------------------

    def on_state(self, before: Snapshot, after: Snapshot) -> None:
        with self._lock:
            self._live = after.state in (State.GOING_LIVE, State.LIVE, State.DEGRADED)
        self._show(after.state)

    def _show(self, state: State) -> None:
        status, live = self.devices.get("led_status"), self.devices.get("led_live")
        if status is not None:
            if state in (State.BOOTING, State.STOPPING):
                status.blink(on_time=0.5, off_time=0.5)
            elif state is State.FAULT:
                status.blink(on_time=0.1, off_time=0.1)
            else:
                status.on()
        if live is not None:
            if state is State.GOING_LIVE:
                live.blink(on_time=0.1, off_time=0.1)
            elif state in (State.LIVE, State.DEGRADED):
                live.on()
            else:
                live.off()


def _value(dev) -> float:
    try:
        return float(dev.value)
    except Exception:
        return 0.0
