"""Hardware profiles: one TOML per board in hw_profiles/, and board detection."""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import read_toml
from appliance.errors import ConfigError, ProfileError

log = logging.getLogger(__name__)

FALLBACK = "sim"


def search_path() -> list[Path]:
    """Where profiles live: $APPLIANCE_PROFILES, the checkout, the system share."""
    dirs = []
    if os.environ.get("APPLIANCE_PROFILES"):
        dirs.append(Path(os.environ["APPLIANCE_PROFILES"]))
    dirs.append(Path(__file__).resolve().parent.parent / "hw_profiles")
    dirs.append(Path("/usr/share/appliance/hw_profiles"))
    return dirs


def available() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in search_path():
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found.setdefault(f.stem, f)
    return found


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    data: dict[str, Any]


def load(name: str) -> Profile:
    profiles = available()
    if name not in profiles:
        import difflib

        hint = difflib.get_close_matches(name, list(profiles), n=1)
        raise ProfileError(
            f"no hardware profile {name!r}"
            + (f'; did you mean "{hint[0]}"?' if hint else "")
            + f" (available: {', '.join(sorted(profiles)) or 'none found in ' + ', '.join(map(str, search_path()))})"
        )
    path = profiles[name]
    try:
        data = read_toml(path)
    except ConfigError as e:
        raise ProfileError(str(e)) from None
    return Profile(name, path, data)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\x00", b"").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def detect(root: Path = Path("/"), machine: str | None = None) -> tuple[str, str]:
    """Pick the profile for the board we run on: (profile name, why).

    Device-tree boards (Pi, Jetson) by /proc/device-tree/model, the longest
    matching pattern winning; x86 by the presence of DMI. Anything else: sim.
    """
    machine = machine or platform.machine()
    model = _read(root / "proc/device-tree/model")
    profiles = {name: load(name).data.get("board", {}) for name in available()}
    if model:
        best = None
        for name, board in profiles.items():
            for pattern in board.get("match", []):
                if pattern in model and (best is None or len(pattern) > len(best[1])):
                    best = (name, pattern)
        if best:
            return best[0], f"device-tree model {model!r} matches {best[1]!r}"
        return FALLBACK, f"unrecognised board {model!r}: no profile matches it, falling back to {FALLBACK}"
    dmi = root / "sys/class/dmi/id"
    vendor, product = _read(dmi / "sys_vendor"), _read(dmi / "product_name")
    if vendor or product:
        for name, board in profiles.items():
            if machine in board.get("arch", []) and not board.get("match"):
                return name, f"DMI {vendor} {product} on {machine}"
        return FALLBACK, f"unrecognised {machine} machine ({vendor} {product}): falling back to {FALLBACK}"
    return FALLBACK, f"unrecognised board (no device-tree model, no DMI, {machine}): falling back to {FALLBACK}"


def resolve(name: str | None, root: Path = Path("/")) -> Profile:
    """The named profile, or the detected one (logging how it was chosen)."""
    if name:
        return load(name)
    name, why = detect(root)
    if name == FALLBACK:
        log.warning("board detection: %s", why)
    else:
        log.info("board detection: %s -> profile %s", why, name)
    return load(name)
