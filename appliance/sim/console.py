"""The simulation's terminal: shows the appliance's state and presses its buttons.

Keys drive the same MockFactory pins the GPIO buttons are on, so a key press
goes through exactly the code a real button does:
    g   press GO        h   hold GO for 2.5 s (stops a live show)
    f   press FN (acknowledge warnings)
    F   hold FN for 5.5 s (safe shutdown: runs power.shutdown_command)
    q   quit (as Ctrl-C)
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import termios
import time
import tty

from appliance.supervisor.state import Snapshot, State

log = logging.getLogger(__name__)


class SimConsole:
    name = "sim-console"

    def __init__(self, service, panel, go_after: float | None = None):
        self.service = service
        self.panel = panel
        self.go_after = go_after
        self._saved_tty = None
        self._tasks: list[asyncio.Task] = []

    # --- buttons -------------------------------------------------------------------

    def _pin(self, button: str):
        number = getattr(self.panel.config.buttons, button)
        if self.panel.factory is None or number is None:
            raise RuntimeError(f"no simulated {button.upper()} button (panel not running)")
        return self.panel.factory.pin(number)

    async def press(self, button: str = "go", seconds: float = 0.15) -> None:
        pin = self._pin(button)
        print(f"\r[sim] {button.upper()} pressed for {seconds:.2f} s", file=sys.stderr)
        await asyncio.to_thread(pin.drive_low)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(pin.drive_high)

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self.service.listeners.append(self.on_state)
        loop = asyncio.get_running_loop()
        if sys.stdin.isatty():
            fd = sys.stdin.fileno()
            self._saved_tty = termios.tcgetattr(fd)
            tty.setcbreak(fd)
            loop.add_reader(fd, self._key)
            print("[sim] keys: g = press GO, h = hold GO 2.5 s (stop), f = FN (acknowledge), "
                  "F = hold FN 5.5 s (safe shutdown), q = quit", file=sys.stderr)
        if self.go_after is not None:
            self._tasks.append(loop.create_task(self._auto_go(), name="sim-auto-go"))
        self._tasks.append(loop.create_task(self._meters(), name="sim-meters"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._saved_tty is not None:
            fd = sys.stdin.fileno()
            asyncio.get_running_loop().remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None
        if self.on_state in self.service.listeners:
            self.service.listeners.remove(self.on_state)

    def status(self) -> dict:
        return {"interactive": self._saved_tty is not None}

    async def _auto_go(self) -> None:
        while self.service.snapshot.state is not State.READY:
            await asyncio.sleep(0.05)
        await asyncio.sleep(self.go_after)
        if self.service.snapshot.state is State.READY:
            await self.press("go")

    async def _meters(self) -> None:
        """A compact media line every few seconds: the demo's front panel for sound."""
        while True:
            await asyncio.sleep(5)
            media = self.service.records.get("media")
            if media is None or media.state != "running":
                continue
            m = media.component.status()
            parts = []
            if m["live"]:
                parts.append(f"{m['encoder']} {m['fps']} fps {m['bitrate_kbps'] / 1000:.1f} Mb/s")
            for name, a in m["audio"].items():
                parts.append(f"{name} {a['peak_dbfs']:.0f} dBFS" if a["device_ok"] else f"{name} missing")
            rec = m["outputs"].get("recorder", {})
            if rec.get("recording"):
                parts.append(f"rec {rec['bytes'] / 1e6:.0f} MB")
            print(f"\r[{time.strftime('%H:%M:%S')}]   " + " | ".join(parts), flush=True)

    def _key(self) -> None:
        ch = os.read(sys.stdin.fileno(), 1).decode(errors="ignore")
        presses = {"g": ("go", 0.15), "G": ("go", 0.15), "h": ("go", 2.5), "H": ("go", 2.5),
                   "f": ("fn", 0.15), "F": ("fn", 5.5)}
        if ch in presses:
            self._tasks.append(asyncio.get_running_loop().create_task(self.press(*presses[ch])))
        elif ch in "qQ":
            self.service.request_exit()

    def on_state(self, before: Snapshot, after: Snapshot) -> None:
        print(f"\r[{time.strftime('%H:%M:%S')}] {self.service.summary()}", flush=True)
        print(f"\r{'':11}{self.lamps()}", flush=True)

    def lamps(self) -> str:
        """The panel as text, as `appliance status` shows it."""
        from appliance.statusview import lamps

        return lamps(self.panel.status()) if self.panel.factory else ""
