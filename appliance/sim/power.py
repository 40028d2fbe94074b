"""Simulated power hardware on pty pairs, speaking the real protocols byte for byte.

- UpsSim: a Megatec Q1 UPS at 2400 baud (replies paced like the real line).
- VeDirectSim: a Victron battery monitor sending a block a second, with HEX
  frames interleaved (after the checksum, and now and then mid-block, as older
  firmware does) and the history block.
Both share a BatteryModel with scriptable scenarios: mains fail / restore, a
discharge curve, a given charge. Each device sits behind a stable symlink (as
udev's /dev/appliance-ups would be); unplug closes the pty and removes the
link, replug makes a new pty behind the same name.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from appliance.power import vedirect
from appliance.sim.pty import PtyDevice


class BatteryModel:
    """Charge that falls on battery and rises on mains, on the monotonic clock."""

    def __init__(self, charge: float = 100.0, discharge_per_second: float = 0.05,
                 charge_per_second: float = 0.02, load_percent: float = 34.0):
        self._lock = threading.Lock()
        self._charge = charge
        self.on_mains = True
        self.discharge_per_second = discharge_per_second
        self.charge_per_second = charge_per_second
        self.load_percent = load_percent
        self.ups_low = False  # the UPS's own battery-low flag, whatever the charge (a worn battery)
        self._t = time.monotonic()

    def _advance(self) -> None:
        now = time.monotonic()
        dt, self._t = now - self._t, now
        if self.on_mains:
            self._charge = min(100.0, self._charge + self.charge_per_second * dt)
        else:
            self._charge = max(0.0, self._charge - self.discharge_per_second * dt)

    @property
    def charge(self) -> float:
        with self._lock:
            self._advance()
            return self._charge

    def set(self, charge: float | None = None, on_mains: bool | None = None,
            discharge_per_second: float | None = None, ups_low: bool | None = None) -> None:
        with self._lock:
            self._advance()
            if ups_low is not None:
                self.ups_low = ups_low
            if charge is not None:
                self._charge = max(0.0, min(100.0, charge))
            if on_mains is not None:
                self.on_mains = on_mains
            if discharge_per_second is not None:
                self.discharge_per_second = discharge_per_second

    def minutes_to_go(self) -> float | None:
        if self.on_mains or self.discharge_per_second <= 0:
            return None
        return self.charge / self.discharge_per_second / 60


class _Plugged:
    """A PtyDevice behind a stable symlink, unpluggable and replugable."""

    def __init__(self, link: Path, name: str, baud: int | None, respond=None):
        self.link = Path(link)
        self.name, self.baud, self.respond = name, baud, respond
        self.dev: PtyDevice | None = None
        self.plug()

    def plug(self) -> None:
        if self.dev is not None:
            return
        self.dev = PtyDevice(self.respond, name=self.name, baud=self.baud)
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        os.symlink(self.dev.slave_path, tmp)
        os.replace(tmp, self.link)

    def unplug(self) -> None:
        self.link.unlink(missing_ok=True)
        if self.dev is not None:
            self.dev.close()
            self.dev = None

    def write(self, data: bytes) -> None:
        dev = self.dev
        if dev is not None:
            dev.write(data)


class _SimDevice:
    """What every simulated serial device has: a stable path, unplug and replug."""

    _port: _Plugged

    @property
    def path(self) -> str:
        return str(self._port.link)

    def unplug(self) -> None:
        self._port.unplug()

    def replug(self) -> None:
        self._port.plug()


class UpsSim(_SimDevice):
    """A line-interactive Megatec UPS: 24 V nominal battery (12 cells)."""

    NOMINAL = 24.0
    CELLS = 12

    def __init__(self, link: Path, model: BatteryModel | None = None, refuse: set[bytes] | None = None,
                 paced: bool = True):
        self.model = model or BatteryModel()
        self.refuse = set(refuse or ())
        self.commands: list[bytes] = []
        self.garbage: bytes | None = None  # reply this once instead of the next Q1 reply
        self.silent = False  # answer nothing (a hung UPS)
        self.answers_f = True  # False: F goes unanswered (many cheap UPSes)
        self._buf = b""
        self._port = _Plugged(link, "sim-ups", 2400 if paced else None, self._respond)

    def replug(self) -> None:
        self._buf = b""
        super().replug()

    def close(self) -> None:
        self._port.unplug()

    def q1_reply(self) -> bytes:
        m = self.model
        charge = m.charge
        low, high = 104 * self.NOMINAL / 120, 130 * self.NOMINAL / 120
        per_cell = (low + charge / 100 * (high - low)) / self.CELLS
        inp = 230.0 if m.on_mains else 0.0
        bits = f"{int(not m.on_mains)}{int(charge < 20 or m.ups_low)}0000{int(self._shutdown_pending())}1"
        reply = (f"({inp:05.1f} {inp:05.1f} {230.0:05.1f} {int(m.load_percent):03d} {50.0:04.1f} "
                 f"{per_cell:4.2f} {30.0:04.1f} {bits}\r")
        return reply.encode()

    def _shutdown_pending(self) -> bool:
        return any(c.startswith(b"S") for c in self.commands) and not any(c == b"C\r" for c in self.commands)

    def _respond(self, data: bytes) -> bytes | None:
        self._buf += data
        out = b""
        while b"\r" in self._buf:
            cmd, self._buf = self._buf.split(b"\r", 1)
            out += self._answer(cmd + b"\r") or b""
        if len(self._buf) > 64:
            self._buf = b""
        return out or None

    def _answer(self, cmd: bytes) -> bytes | None:
        if self.silent:
            return None
        if cmd == b"Q1\r":
            if self.garbage is not None:
                g, self.garbage = self.garbage, None
                return g
            return self.q1_reply()
        if cmd == b"F\r":
            return b"#230.0 004 024.0 50.0\r" if self.answers_f else None
        if cmd == b"I\r":
            return b"#" + b"SIMULATED".ljust(15) + b" " + b"Q1-SIM".ljust(10) + b" " + b"1.0".ljust(10) + b"\r"
        if cmd in self.refuse:
            return b"(NAK\r"
        if cmd[:1] in (b"S", b"T", b"C", b"Q") and len(cmd) <= 12:
            self.commands.append(cmd)
            return None  # accepted: no reply
        return cmd  # unknown: echoed back


class VeDirectSim(_SimDevice):
    """A BMV-712 on a power bank: a live block and a history block every second."""

    def __init__(self, link: Path, model: BatteryModel | None = None, interval: float = 1.0):
        self.model = model or BatteryModel()
        self.interval = interval
        self.corrupt_next = False  # send the next block with a wrong checksum
        self.sent = 0
        self._port = _Plugged(link, "sim-vedirect", None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-vedirect", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._port.unplug()

    def live_block(self) -> bytes:
        m = self.model
        charge = m.charge
        ttg = m.minutes_to_go()
        amps = -3250 if not m.on_mains else 800
        fields = [("PID", "0xA381"), ("V", str(int(12000 + 1400 * charge / 100))), ("I", str(amps)),
                  ("P", str(int(amps * 12.8 / 1000))), ("CE", str(int(-(100 - charge) * 1000))),
                  ("SOC", str(int(charge * 10))), ("TTG", "-1" if ttg is None else str(int(ttg))),
                  ("Alarm", "ON" if charge < 10 else "OFF"), ("Relay", "OFF"), ("AR", "4" if charge < 10 else "0"),
                  ("BMV", "712 Smart"), ("FW", "0416"), ("MON", "0")]
        return vedirect.block(fields)

    @staticmethod
    def history_block() -> bytes:
        return vedirect.block([("H1", "-60120"), ("H2", "-15420"), ("H4", "37"), ("H7", "11650"), ("H8", "14420")])

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.interval):
            live = self.live_block()
            if self.corrupt_next:
                self.corrupt_next = False
                live = live[:-1] + bytes([(live[-1] + 1) % 256])
            if n % 3 == 2:
                # older firmware: a HEX frame in the middle of the text block
                cut = live.index(b"\r\nSOC")
                live = live[:cut] + b":154\n" + live[cut:]
            self._port.write(live + b":154\n" + self.history_block())
            self.sent += 1
            n += 1
