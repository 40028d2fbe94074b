"""Where the box keeps things: its state, its runtime files (the control socket), its
recordings. The config names them, else systemd's directories, else the FHS places."""

from __future__ import annotations

import os
from pathlib import Path

from appliance.config import Config


def state_dir(config: Config) -> Path:
    return config.paths.state_dir or Path(os.environ.get("STATE_DIRECTORY", "/var/lib/appliance").split(":")[0])


def runtime_dir(config: Config | None = None) -> Path:
    if config is not None and config.paths.runtime_dir:
        return config.paths.runtime_dir
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    system = Path("/run/appliance")
    if system.is_dir() or os.geteuid() == 0:
        return system
    # A developer's laptop: the daemon and the CLI must agree without root.
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/appliance-{os.getuid()}"
    return Path(base) / "appliance"


def recordings_dir(config: Config) -> Path:
    return config.paths.recordings or state_dir(config) / "recordings"
