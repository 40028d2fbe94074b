"""The front panel component: buttons in, the pattern table out on the LEDs.

Gestures:
  GO  short press while not live -> go live, on the press itself (the LIVE light
      answers under the tech's finger); while live it must be HELD 2 s to stop,
      so a knock never stops a show.
  FN  short press -> acknowledge the warnings now showing (they stop blinking
      until they clear and come back); held 5 s -> safe shutdown (the recording
      is finalized, then the box powers off).

One thread plays every LED's pattern from patterns.TABLE; a lamp test lights
everything for a second at start.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from appliance import heartbeat
from appliance.config import PanelSection
from appliance.errors import ComponentError
from appliance.panel import patterns
from appliance.panel.buttons import DebouncedButton
from appliance.panel.factory import make_pin_factory
from appliance.supervisor.state import OUTPUTS_RUNNING, Kind, Snapshot

log = logging.getLogger(__name__)

STOP_HOLD = 2.0
SHUTDOWN_HOLD = 5.0
ACK_MAX = 1.0  # an FN press shorter than this acknowledges
LAMP_TEST = 1.0
# The LED thread sleeps until the next edge of any pattern (at most this long), not
# on a fixed tick: a 100 Hz tick cost 1 % of a core on a box whose LEDs mostly shine
# steady. EDGE_SLACK lands it just past the edge, so the level read there is the new one.
LONGEST_SLEEP = 1.0
EDGE_SLACK = 0.001

Post = Callable[..., None]


class LedDriver:
    """Plays a pattern per LED from one thread; writes a pin only when it changes."""

    def __init__(self, leds: dict, clock=time.monotonic):
        self.leds = leds
        self.clock = clock
        self._patterns: dict[str, tuple[patterns.Pattern, float]] = {}
        self._lit: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Event()  # a new pattern: the thread's sleep is recomputed
        self._thread: threading.Thread | None = None
        self.override_until = 0.0  # the lamp test

    def set(self, led: str, pattern: patterns.Pattern) -> None:
        with self._lock:
            current = self._patterns.get(led)
            if current is None or current[0] is not pattern:
                # Start the new pattern at its beginning: a change is seen at once.
                self._patterns[led] = (pattern, self.clock())
        self._apply()
        self._changed.set()

    def pattern(self, led: str) -> patterns.Pattern | None:
        entry = self._patterns.get(led)
        return entry[0] if entry else None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="panel-leds", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread:
            self._thread.join()
            self._thread = None
        for led in self.leds.values():
            led.off()

    def _run(self) -> None:
        with heartbeat.beating("panel-leds", 10.0) as hb:
            while not self._stop.is_set():
                hb.beat()
                self._changed.clear()
                self._apply()
                self._changed.wait(self._sleep())

    def _sleep(self) -> float:
        now = self.clock()
        with self._lock:
            if now < self.override_until:
                return min(LONGEST_SLEEP, self.override_until - now + EDGE_SLACK)
            waits = [patterns.until_change(p, now - since) for p, since in self._patterns.values()]
        return min([LONGEST_SLEEP, *waits]) + EDGE_SLACK

    def _apply(self) -> None:
        now = self.clock()
        with self._lock:
            for name, led in self.leds.items():
                if now < self.override_until:
                    lit = True
                else:
                    entry = self._patterns.get(name)
                    lit = bool(entry) and patterns.level(entry[0], now - entry[1])
                if self._lit.get(name) != lit:
                    self._lit[name] = lit
                    led.value = 1 if lit else 0


class Panel:
    name = "panel"

    def __init__(self, config: PanelSection, post: Post):
        self.config = config
        self.post = post
        self.factory = None
        self.leds: dict = {}
        self.buttons: dict[str, DebouncedButton] = {}
        self.driver: LedDriver | None = None
        self.acknowledged: frozenset[str] = frozenset()
        self._snapshot = Snapshot()
        self._facts: frozenset[str] = frozenset()  # what the uplinks are doing (conditions.link_fact)
        self._rows: dict[str, patterns.Row] = {}
        self._lock = threading.Lock()
        self._go_pressed_live = False

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.backend == "none":
            # Not a fault: a box without a front panel (the generic profile, a PC) is steered
            # from the phone page or `appliance live`.
            log.info("panel: none fitted (panel.backend = none): GO from the status page or `appliance live`")
            return
        self.factory = make_pin_factory(self.config)
        from gpiozero import LED, PWMLED

        try:
            for name, pin in self.config.leds.model_dump().items():
                if pin is not None:
                    cls = PWMLED if self.config.pwm else LED
                    self.leds[name] = cls(pin, active_high=self.config.active_high, pin_factory=self.factory)
            b = self.config.buttons
            if b.go is not None:
                self.buttons["go"] = DebouncedButton(b.go, self.factory, "go", on_press=self._go_pressed,
                                                     holds={STOP_HOLD: self._go_held})
            if b.fn is not None:
                self.buttons["fn"] = DebouncedButton(b.fn, self.factory, "fn", on_release=self._fn_released,
                                                     holds={SHUTDOWN_HOLD: self._fn_held})
        except Exception as e:
            self._close()
            raise ComponentError(f"panel pins cannot be claimed: {e}") from None
        self.driver = LedDriver(self.leds)
        self.driver.override_until = time.monotonic() + LAMP_TEST
        self._show()
        self.driver.start()

    async def stop(self) -> None:
        self._close()

    def _close(self) -> None:
        if self.driver:
            self.driver.stop()
            self.driver = None
        for b in self.buttons.values():
            b.close()
        for led in self.leds.values():
            led.close()
        self.buttons.clear()
        self.leds.clear()
        if self.factory is not None:
            self.factory.close()
            self.factory = None

    def status(self) -> dict:
        return {
            "backend": self.config.backend,
            "fitted": self.config.backend != "none",
            "leds": {name: {"label": patterns.LED_LABELS[name], "pattern": row.pattern.value, "meaning": row.meaning,
                            "lit": _lit(self.leds.get(name))}
                     for name, row in self._rows.items() if name in self.leds},
            "acknowledged": sorted(self.acknowledged),
            "buttons": {name: {"presses": b.presses, "ignored_bounces": b.ignored_edges,
                               "last_press_at": b.last_press_at} for name, b in self.buttons.items()},
        }

    # --- buttons (gpiozero and timer threads) ------------------------------------------------

    def _go_pressed(self) -> None:
        with self._lock:
            live = self._snapshot.state in OUTPUTS_RUNNING
            self._go_pressed_live = live
        if not live:
            self.post(Kind.GO, source="GO button")

    def _go_held(self) -> None:
        with self._lock:
            stop = self._go_pressed_live
        if stop:
            self.post(Kind.STOP, source=f"GO button held {STOP_HOLD:g} s")

    def _fn_released(self, seconds: float) -> None:
        if seconds < ACK_MAX:
            with self._lock:
                self.acknowledged = frozenset(self._snapshot.conditions)
            log.info("FN: acknowledged %s", ", ".join(sorted(self.acknowledged)) or "nothing")
            self._show()

    def _fn_held(self) -> None:
        log.warning("FN held %g s: safe shutdown requested", SHUTDOWN_HOLD)
        self.post(Kind.POWER_OFF, f"FN button held {SHUTDOWN_HOLD:g} s", "FN button")

    # --- state (loop thread) -------------------------------------------------------------------

    def on_state(self, before: Snapshot, after: Snapshot) -> None:
        with self._lock:
            self._snapshot = after
            # A warning that cleared must show again if it comes back.
            self.acknowledged = self.acknowledged & after.conditions
        self._show()

    def set_facts(self, facts: frozenset[str]) -> None:
        """What the uplinks are doing (loop thread, from the uplink monitor): shown on change."""
        with self._lock:
            if facts == self._facts:
                return
            self._facts = facts
        self._show()

    def _show(self) -> None:
        with self._lock:
            snap, acked, facts = self._snapshot, self.acknowledged, self._facts
        self._rows = patterns.choose(snap.state, snap.conditions, acked, facts)
        if self.driver:
            for name, row in self._rows.items():
                if name in self.leds:
                    self.driver.set(name, row.pattern)


def _lit(led) -> bool:
    try:
        return bool(led is not None and led.value)
    except Exception:
        return False
