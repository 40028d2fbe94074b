"""What to do about the power: pure functions of the sources' states and time.

    mains       -> nothing
    on battery  -> condition (panel, API)
    low         -> condition, shed load (lower the encoder's bitrate ceiling)
    critical    -> condition and a countdown (grace); when it ends: stop live,
                   finalize the recording, power off. Only a source that answers
                   and reports mains back cancels it.

Critical as NUT's upsmon judges it (docs/power.md): on battery and the UPS's own
low-battery flag (OB+LB), or on battery below the critical thresholds; and a
source that falls silent while on battery is critical once it has been silent
for the dead time (upsmon's DEADTIME): a UPS that stops answering near empty is
about to die, not back on mains.

No I/O here: the monitor feeds assessments in and carries the decisions out,
and the tests walk every path with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance import conditions as C
from appliance.power.model import PowerState


@dataclass(frozen=True)
class Thresholds:
    low_percent: float = 30.0
    critical_percent: float = 10.0
    low_minutes: float = 20.0
    critical_minutes: float = 5.0
    grace_seconds: float = 15.0
    dead_seconds: float = 15.0  # silent this long while on battery: critical (NUT's DEADTIME)


@dataclass(frozen=True)
class Assessment:
    on_battery: bool = False
    low: bool = False
    critical: bool = False
    monitor_lost: bool = False
    mains_back: bool = False  # a source that answers reports mains
    # When that was read (monotonic; the newest such reading): only a reading taken after a
    # countdown began cancels it. A UPS read on mains a moment before the mains failed, and
    # unplugged before its next poll, still looks "answering" until it goes stale.
    mains_seen_at: float | None = None
    reason: str = ""  # the figures behind it, for the log


def assess(states: list[PowerState], t: Thresholds, now: float | None = None) -> Assessment:
    """now (monotonic): for a source silent since its last good reading (PowerState.updated)."""
    live = [s for s in states if not s.stale]
    lost = any(s.stale for s in states)
    on_battery = [s for s in live if s.on_mains is False]
    low = critical = False
    reasons = []
    for s in states:
        silent = s.age(now) if s.stale else None
        if s.stale and s.on_mains is False and silent is not None and silent >= t.dead_seconds:
            critical = True
            reasons.append(f"{s.source}: silent for {silent:.0f} s while on battery")
    for s in on_battery:
        bits = []
        if s.charge_percent is not None:
            bits.append(f"{s.charge_percent:.0f} %")
            low |= s.charge_percent < t.low_percent
            critical |= s.charge_percent < t.critical_percent
        if s.runtime_seconds is not None:
            bits.append(f"{s.runtime_seconds / 60:.1f} min left ({s.runtime_from})")
            low |= s.runtime_seconds < t.low_minutes * 60
            critical |= s.runtime_seconds < t.critical_minutes * 60
        if "battery low" in s.alarms:
            critical = True  # OB+LB: the UPS itself says it is about to give out, whatever its figures
            bits.append("the UPS reports battery low")
        reasons.append(f"{s.source}: on battery" + (", " + ", ".join(bits) if bits else ""))
    # A source that fell silent on battery is still on battery as far as anyone knows.
    on_battery = on_battery or [s for s in states if s.stale and s.on_mains is False]
    on_mains = [s.updated for s in live if s.on_mains is True]
    return Assessment(on_battery=bool(on_battery), low=low or critical, critical=critical, monitor_lost=lost,
                      mains_back=bool(on_mains), mains_seen_at=max(on_mains) if on_mains else None,
                      reason="; ".join(reasons))


@dataclass(frozen=True)
class Decision:
    kind: str  # "condition" | "shed" | "countdown" | "cancel" | "power_off"
    name: str = ""
    active: bool = True
    reason: str = ""


@dataclass
class PowerPolicy:
    thresholds: Thresholds = field(default_factory=Thresholds)
    conditions: set[str] = field(default_factory=set)
    shedding: bool = False
    deadline: float | None = None  # when the critical countdown ends
    began: float | None = None  # when it started: what cancels it is read after this
    fired: bool = False

    def _mains_since_began(self, a: Assessment) -> bool:
        return a.mains_back and not a.critical and a.mains_seen_at is not None and \
            (self.began is None or a.mains_seen_at > self.began)

    def update(self, a: Assessment, now: float) -> list[Decision]:
        out: list[Decision] = []
        wanted = {C.ON_BATTERY: a.on_battery, C.BATTERY_LOW: a.low and not a.critical,
                  C.BATTERY_CRITICAL: a.critical, C.POWER_MONITOR_LOST: a.monitor_lost}
        for name, active in wanted.items():
            if active != (name in self.conditions):
                (self.conditions.add if active else self.conditions.discard)(name)
                out.append(Decision("condition", name, active, a.reason))
        if a.low != self.shedding:
            self.shedding = a.low
            out.append(Decision("shed", active=a.low, reason=a.reason))
        if self.fired and self._mains_since_began(a):
            # The box is still here (its shutdown command failed) and mains came back:
            # the next time the battery runs low is a new episode, with its own countdown.
            self.fired, self.deadline = False, None
        if a.critical and not self.fired:
            if self.deadline is None:
                self.deadline, self.began = now + self.thresholds.grace_seconds, now
                out.append(Decision("countdown", active=True, reason=a.reason))
            elif now >= self.deadline:
                self.fired = True
                out.append(Decision("power_off", reason=a.reason))
        elif self.deadline is not None and not self.fired:
            if self._mains_since_began(a):
                self.deadline = None
                out.append(Decision("cancel", reason="mains are back"))
            elif now >= self.deadline:
                # Begun, it completes: a battery that reads above critical again under a
                # lighter load, or a UPS that fell silent, is no reason to run it flat.
                self.fired = True
                out.append(Decision("power_off", reason=a.reason or "the countdown ran out"))
        return out

    def seconds_left(self, now: float) -> float | None:
        return None if self.deadline is None or self.fired else max(0.0, self.deadline - now)
