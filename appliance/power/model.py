"""One normalised power state per source, whatever the protocol behind it."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field


@dataclass
class PowerState:
    source: str  # e.g. "ups", "battery", "nut:ups@localhost"
    kind: str  # "ups" | "battery-monitor" | "nut" | "board"
    on_mains: bool | None = None  # None: unknown
    charge_percent: float | None = None
    runtime_seconds: float | None = None  # the device's own figure, or our forecast
    runtime_from: str = ""  # "device" | "forecast" | ""
    battery_volts: float | None = None
    load_percent: float | None = None
    temperature_c: float | None = None
    alarms: list[str] = field(default_factory=list)
    updated: float = 0.0  # monotonic time of the last good reading
    stale: bool = False  # no good reading for stale_polls polls in a row
    detail: str = ""  # model, firmware: for status

    def age(self, now: float | None = None) -> float | None:
        if not self.updated:
            return None
        return (now if now is not None else time.monotonic()) - self.updated

    def as_dict(self) -> dict:
        d = asdict(self)
        age = self.age()
        d["age_seconds"] = None if age is None else round(age, 1)
        d.pop("updated")
        return d
