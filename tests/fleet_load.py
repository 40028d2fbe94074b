"""Many fleet clients in one process (the client alone, not a daemon each), reporting
a live box's status, for the fleet's scale test and bench/fleet.py."""

from __future__ import annotations

import asyncio
import threading
import time


def live_status(box: str) -> dict:
    """What a live box's status holds, in the shape Service.status() gives it."""
    return {
        "state": "LIVE", "since": time.time() - 60, "conditions": [], "fault": "", "live_intent": True,
        "power_off": None, "version": "0.1.0", "profile": "sim", "device": box,
        "components": {
            "media": {"state": "running", "encoder": "libx264", "fps": 30, "bitrate_kbps": 4100,
                      "target_bitrate_kbps": 4000, "frames_dropped": 0,
                      "audio": {"program": {"peak_dbfs": -6.0, "rms_dbfs": -9.0, "loudness_lufs": -14.0,
                                            "clipping": False, "silent": False}},
                      "outputs": {"recorder": {"recording": True, "bytes": 10_000_000, "segments": 3},
                                  "srt": {"connected": True, "lane": "video"}}},
            "uplinks": {"state": "running", "links": {
                "wired": {"state": "up", "rtt_ms": 12.0, "share_percent": 60.0, "health": 1.0, "loss_percent": 0.0},
                "cell": {"state": "up", "rtt_ms": 48.0, "share_percent": 40.0, "health": 0.9, "loss_percent": 0.4}},
                "modem": {"rat": "NR5G-NSA", "rsrp": -88.0, "sinr": 18.0, "operator": "Sim Mobile"}},
            "power": {"state": "running", "on_battery": False, "low": False,
                      "sources": {"ups": {"on_mains": True, "charge_percent": 100.0, "runtime_seconds": 3600,
                                          "stale": False}}},
        },
    }


class Clients:
    """`n` FleetClients named fleet-00 ... in a thread of their own with its own loop."""

    def __init__(self, broker_url: str, ca, passwords: dict[str, str], every: float = 1.0):
        self.broker_url, self.ca, self.passwords, self.every = broker_url, ca, passwords, every
        self.clients = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="fleet-clients")
        self._ready = threading.Event()

    async def _main(self) -> None:
        from appliance.config import FleetSection
        from appliance.fleet.client import FleetClient

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()

        async def answer(req: dict) -> dict:
            return {"ok": True, "state": "LIVE"}

        for box, password in self.passwords.items():
            s = FleetSection(enabled=True, broker=self.broker_url, ca_file=self.ca, username=box, password=password,
                             telemetry_seconds=self.every)
            status = live_status(box)
            self.clients.append(FleetClient(s, box, lambda status=status: status, answer))
        for c in self.clients:
            await c.start()
        self._ready.set()
        await self._stop.wait()
        for c in self.clients:
            await c.stop()

    def start(self) -> "Clients":
        self._thread.start()
        assert self._ready.wait(30), "the fleet clients did not start"
        return self

    @property
    def connected(self) -> int:
        return sum(c.connected for c in self.clients)

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
