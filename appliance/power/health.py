"""Board health: CPU temperature, throttling and under-voltage, recording space."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

# The Raspberry Pi firmware's get_throttled bits (now / since boot).
THROTTLE_BITS = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled", 3: "soft temperature limit"}


def read_temperatures(sensors: list[str]) -> dict[str, float]:
    """°C per sensor: the profile's sysfs files, else every thermal zone psutil sees."""
    out: dict[str, float] = {}
    for pattern in sensors:
        for path in sorted(glob.glob(pattern)) or [pattern]:
            try:
                out[path] = int(Path(path).read_text().strip()) / 1000
            except (OSError, ValueError):
                continue
    if not sensors:
        try:
            import psutil

            for chip, entries in (psutil.sensors_temperatures() or {}).items():
                for e in entries:
                    out[f"{chip}/{e.label or 'temp'}"] = float(e.current)
        except (AttributeError, OSError):
            pass
    return out


def read_throttled(path: str) -> dict | None:
    if not path:
        return None
    try:
        value = int(Path(path).read_text().strip(), 16)
    except (OSError, ValueError):
        return None
    return {"raw": hex(value), "now": [n for b, n in THROTTLE_BITS.items() if value >> b & 1],
            "since_boot": [n for b, n in THROTTLE_BITS.items() if value >> (b + 16) & 1]}


def free_mb(directory: Path) -> float | None:
    try:
        return shutil.disk_usage(directory).free / 1e6
    except OSError:
        return None
