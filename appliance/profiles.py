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

# A board no profile knows runs its real devices, never the simulation: the sim
# profile (test pattern, mock GPIO, simulated UPS) would leave the real GO button dead.
FALLBACK = "generic"
SIM = "sim"
# Where detection reads the board's files (/proc/device-tree, /sys, /dev): "/" but in tests.
ROOT_ENV = "APPLIANCE_BOARD_ROOT"


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
    matching pattern winning; x86 by the presence of DMI. Anything else: generic.
    """
    machine = machine or platform.machine()
    model = _read(root / "proc/device-tree/model")
    profiles = {name: load(name).data.get("board", {}) for name in available() if name not in (SIM, FALLBACK)}
    fallback = f"the {FALLBACK} profile runs the devices it finds; pick one with --profile NAME, or " \
               f"APPLIANCE_PROFILE=NAME in the unit's environment (available: {', '.join(sorted(profiles))})"
    if model:
        best = None
        for name, board in profiles.items():
            for pattern in board.get("match", []):
                if pattern in model and (best is None or len(pattern) > len(best[1])):
                    best = (name, pattern)
        if best:
            return best[0], f"device-tree model {model!r} matches {best[1]!r}"
        return FALLBACK, f"unrecognised board {model!r}: no profile matches it; {fallback}"
    dmi = root / "sys/class/dmi/id"
    vendor, product = _read(dmi / "sys_vendor"), _read(dmi / "product_name")
    if vendor or product:
        for name, board in profiles.items():
            if machine in board.get("arch", []) and not board.get("match"):
                return name, f"DMI {vendor} {product} on {machine}"
        return FALLBACK, f"unrecognised {machine} machine ({vendor} {product}): {fallback}"
    return FALLBACK, f"unrecognised board (no device-tree model, no DMI, {machine}): {fallback}"


def resolve(name: str | None, root: Path | None = None) -> Profile:
    """The named profile, or the detected one (logging how it was chosen)."""
    root = root or Path(os.environ.get(ROOT_ENV) or "/")
    name = name or os.environ.get("APPLIANCE_PROFILE") or None
    if name and name != FALLBACK:
        return load(name)
    if not name:
        name, why = detect(root)
        if name == FALLBACK:
            log.warning("board detection: %s", why)
        else:
            log.info("board detection: %s -> profile %s", why, name)
    profile = load(name)
    if name == FALLBACK:
        profile, found = fit_generic(profile, root)
        log.warning("generic profile: %s", "; ".join(found))
    return profile


def fit_generic(profile: Profile, root: Path) -> tuple[Profile, list[str]]:
    """The generic profile on this board: each part it names, if it is there (else the
    first capture card found for video; a UPS port that does not exist is dropped,
    not a fault). Returns the profile and what was found, for the log."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in profile.data.items()}
    found = []
    video = data.get("video", {})
    dev = root / str(video.get("device", "")).lstrip("/")
    if dev.exists():
        found.append(f"video {video['device']}")
    else:
        cards = sorted((root / "dev/v4l/by-id").glob("*-video-index0")) if (root / "dev/v4l/by-id").is_dir() else []
        if cards:
            video["device"] = "/" + str(cards[0].relative_to(root))
            found.append(f"video {video['device']} (no {dev.name})")
        else:
            found.append(f"no capture card ({video.get('device')} and /dev/v4l/by-id are empty: the slate until "
                         "one is plugged in)")
    cards = _read(root / "proc/asound/cards")
    found.append("audio: the default ALSA device" + (f" ({cards.splitlines()[0].strip()})" if cards else
                                                      " (no sound card listed in /proc/asound/cards)"))
    serial = data.get("serial", {})
    for part, what in (("ups", "UPS"), ("battery", "battery monitor"), ("modem_at", "modem")):
        path = serial.get(part, "")
        if path and (root / path.lstrip("/")).exists():
            found.append(f"{what} {path}")
        else:
            serial[part] = ""
            found.append(f"no {what}")
    found.append("no GPIO panel (backend none)")
    return Profile(profile.name, profile.path, data), found
