"""The power component: sources from the profile and config, the policy, health.

Sources run in their own threads; twice a second the loop reads their states,
asks the pure policy what to do and does it: conditions for the panel and the
API, a bitrate ceiling when the battery is low, and at critical a countdown
after which live is stopped, the recording finalized and the box powered off
(the supervisor's POWER_CRITICAL). Each step is logged with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Callable

from appliance import conditions as C
from appliance.config import Config
from appliance.power import health
from appliance.power.policy import PowerPolicy, Thresholds, assess
from appliance.power.q1 import shutdown_command
from appliance.power.sources import BoardBattery, NutUps, Q1Ups, Source, VeDirectMonitor
from appliance.supervisor.state import Kind

log = logging.getLogger(__name__)

TICK = 0.5
HOT_HYSTERESIS = 5.0
UNDER_VOLTAGE = "under-voltage: the power supply is too weak"


class PowerMonitor:
    name = "power"

    def __init__(self, config: Config, post: Callable, report: Callable[[str, bool], None],
                 set_bitrate_cap: Callable[[int | None], None] | None = None, recordings: Path | None = None):
        self.config = config
        self.cfg = config.power
        self.post = post
        self.report = report
        self.set_bitrate_cap = set_bitrate_cap or (lambda kbps: None)
        self.recordings = recordings
        self.sources: list[Source] = []
        self.policy = PowerPolicy(Thresholds(self.cfg.low_percent, self.cfg.critical_percent, self.cfg.low_minutes,
                                             self.cfg.critical_minutes, self.cfg.grace_seconds, self.cfg.dead_seconds))
        self.assessment = None
        self.health: dict = {}
        self._hot = False
        self._under_voltage = False
        self._task: asyncio.Task | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        kw = {"poll_seconds": self.cfg.poll_seconds, "stale_polls": self.cfg.stale_polls}
        serial = self.config.serial
        if serial.ups:
            self.sources.append(Q1Ups("ups", serial.ups, nominal_volts=self.cfg.ups_battery_volts or None, **kw))
        if serial.battery:
            self.sources.append(VeDirectMonitor("battery", serial.battery, **kw))
        if self.cfg.nut:
            ups, _, where = self.cfg.nut.partition("@")
            host, _, port = where.partition(":")
            self.sources.append(NutUps(f"nut:{self.cfg.nut}", ups, host, int(port or 3493), **kw))
        if self.cfg.board_battery == "yes" or (self.cfg.board_battery == "auto" and _has_board_battery()):
            self.sources.append(BoardBattery("board", **kw))
        for s in self.sources:
            s.start()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="power-policy")
        log.info("power: watching %s", ", ".join(f"{s.name} ({s.kind})" for s in self.sources) or "nothing")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for s in self.sources:
            await asyncio.to_thread(s.stop)

    def status(self) -> dict:
        a = self.assessment
        return {
            "sources": {s.name: s.status() for s in self.sources},
            "on_battery": bool(a and a.on_battery), "low": bool(a and a.low), "critical": bool(a and a.critical),
            "shedding": self.policy.shedding,
            "shutdown_in_seconds": self.policy.seconds_left(time.monotonic()),
            "health": self.health,
        }

    # --- the policy loop ------------------------------------------------------------------

    async def _loop(self) -> None:
        health_every, n = max(1, int(self.cfg.poll_seconds / TICK)), 0
        while True:
            try:
                self.tick(time.monotonic())
                if n % health_every == 0:
                    await asyncio.to_thread(self._check_health)
            except Exception:
                log.exception("power policy tick failed")
            n += 1
            await asyncio.sleep(TICK)

    def tick(self, now: float) -> None:
        self.assessment = a = assess([s.state for s in self.sources], self.policy.thresholds, now)
        for d in self.policy.update(a, now):
            if d.kind == "condition":
                (log.warning if d.active else log.info)(
                    "power: %s %s%s", d.name, "now" if d.active else "cleared", f" ({d.reason})" if d.reason else "",
                    extra={"POWER": d.name})
                self.report(d.name, d.active)
            elif d.kind == "shed":
                cap = self.cfg.shed_bitrate_kbps if d.active else None
                log.warning("power: %s (%s)", f"battery low: capping the bitrate at {cap} kb/s to save power"
                            if d.active else "battery no longer low: bitrate cap lifted", d.reason)
                self.set_bitrate_cap(cap)
            elif d.kind == "countdown":
                log.warning("power: battery critical (%s): stopping and powering off in %.0f s unless mains return",
                            d.reason, self.cfg.grace_seconds, extra={"POWER": "countdown"})
            elif d.kind == "cancel":
                log.warning("power: shutdown cancelled: %s", d.reason, extra={"POWER": "cancelled"})
            elif d.kind == "power_off":
                log.warning("power: battery critical for %.0f s (%s): stopping live, finalizing the recording, "
                            "powering off", self.cfg.grace_seconds, d.reason, extra={"POWER": "power_off"})
                self.post(Kind.POWER_CRITICAL, f"battery critical: {d.reason}", "power")

    async def before_power_off(self, reason: str) -> None:
        """Runs after the recording is finalized, just before the shutdown command."""
        if self.cfg.ups_off_delay_minutes <= 0:
            return
        for s in self.sources:
            if isinstance(s, Q1Ups) and not s.state.stale:
                cmd = shutdown_command(self.cfg.ups_off_delay_minutes, 0)
                try:
                    ok = await asyncio.to_thread(s.command, cmd)
                except Exception as e:
                    log.error("power: could not tell %s to cut its output: %s", s.name, e)
                    continue
                log.warning("power: asked %s to cut its output in %g min and restore it when mains return (%s): %s",
                            s.name, self.cfg.ups_off_delay_minutes, cmd.strip().decode(),
                            "accepted" if ok else "REFUSED")

    # --- board health --------------------------------------------------------------------------

    def _check_health(self) -> None:
        thermal = self.config.thermal
        temps = health.read_temperatures(thermal.sensors)
        throttled = health.read_throttled(thermal.throttled)
        self.health = {"temperatures_c": {k: round(v, 1) for k, v in temps.items()}, "throttled": throttled,
                       "recordings_free_mb": None if self.recordings is None else
                       health.free_mb(self.recordings if self.recordings.exists() else self.recordings.parent)}
        hottest = max(temps.values(), default=None)
        if hottest is not None:
            hot = hottest >= thermal.warn_celsius or (self._hot and hottest >= thermal.warn_celsius - HOT_HYSTERESIS)
            if hot != self._hot:
                self._hot = hot
                (log.warning if hot else log.info)("board: %.1f °C (%s)", hottest, "overheating" if hot else "cooled down")
                self.report(C.OVERHEATING, hot)
        under = bool(throttled and "under-voltage" in throttled["now"])
        if under != self._under_voltage:
            self._under_voltage = under
            self.report(UNDER_VOLTAGE, under)


def _has_board_battery() -> bool:
    try:
        import psutil

        return psutil.sensors_battery() is not None
    except (AttributeError, OSError):
        return False
