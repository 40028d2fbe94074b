"""State that must survive a crash, a watchdog restart or a power blip."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from appliance.fsutil import atomic_write

log = logging.getLogger(__name__)


class StateStore:
    """A small JSON file in the state directory, always replaced atomically."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / "state.json"
        self.data: dict = {}

    def load(self) -> dict:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self.data = {}
            return self.data
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            # Atomic writes make this unlikely; if it happens, keep the evidence
            # and start clean rather than refuse to boot.
            bad = self.path.with_suffix(".corrupt")
            self.path.replace(bad)
            log.error("state file %s is corrupt (%s): moved to %s, starting with no saved state", self.path, e, bad)
            data = {}
        self.data = data
        return data

    def save(self, **changes) -> None:
        self.data = {**self.data, **changes, "updated": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.data, indent=2, sort_keys=True).encode() + b"\n")

    @property
    def live_intent(self) -> bool:
        return bool(self.data.get("live_intent"))
