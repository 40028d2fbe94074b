"""Power sources: each in its own thread, each reduced to one PowerState.

All of them share the hard parts: a source that stops answering turns stale
after `stale_polls` failed polls (NUT's rule: 5), logged once when lost and once
when back; a port that errors or vanishes (unplugged USB adapter: SerialException,
EIO, device node gone) is closed and reopened with backoff until it returns.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

from appliance import hostnames
from appliance.power import q1, vedirect
from appliance.power.forecast import RuntimeForecast
from appliance.power.model import PowerState
from appliance.polling import Polled, ReplyError, SerialPort

log = logging.getLogger(__name__)


class Source(Polled):
    kind = "source"
    # A poll is at most a connect (3 s) and a few one-second replies, every poll_seconds.
    stuck_after = 12.0

    def __init__(self, name: str, poll_seconds: float = 2.0, stale_polls: int = 5,
                 on_change: Callable[["Source"], None] | None = None):
        self.name = name
        self.poll_seconds = poll_seconds
        self.stale_polls = stale_polls
        self.on_change = on_change or (lambda source: None)
        self.state = PowerState(source=name, kind=self.kind)
        self.forecast = RuntimeForecast()
        self.failures = 0
        self.polls = 0
        self.errors = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self.worker_name = f"power-{name}"
        self._init_worker()

    # --- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        super().stop()
        self._safe_close()

    def status(self) -> dict:
        return {**self.state.as_dict(), "polls": self.polls, "errors": self.errors,
                **({"last_error": self.last_error} if self.last_error else {})}

    def _good(self, updates: dict) -> None:
        now = time.monotonic()
        with self._lock:
            for k, v in updates.items():
                setattr(self.state, k, v)
            self.state.updated = now
            was_stale = self.state.stale
            self.state.stale = False
            self.polls += 1
            self.failures = 0
            self.forecast.observe(now, self.state.charge_percent, self.state.on_mains)
            if self.state.runtime_seconds is None or self.state.runtime_from == "forecast":
                estimate = self.forecast.runtime_seconds()
                self.state.runtime_seconds = estimate
                self.state.runtime_from = "forecast" if estimate is not None else ""
        if was_stale:
            log.info("power: %s answers again", self.name, extra={"POWER_SOURCE": self.name})
        self.on_change(self)

    def _failed(self, why: str) -> None:
        with self._lock:
            self.errors += 1
            self.failures += 1
            self.last_error = why
            became_stale = not self.state.stale and self.failures >= self.stale_polls
            if became_stale:
                self.state.stale = True
        if became_stale:
            log.warning("power: lost contact with %s after %d failed polls (%s)", self.name, self.failures, why,
                        extra={"POWER_SOURCE": self.name})
            self.on_change(self)


class SerialSource(SerialPort, Source):
    def __init__(self, name: str, port: str, **kwargs):
        super().__init__(name, **kwargs)
        self.port_path = port
        self.port = None


class Q1Ups(SerialSource):
    """A Megatec/Voltronic UPS: Q1 polls; F and I once per connection."""

    kind = "ups"
    baud = 2400

    def __init__(self, name: str, port: str, nominal_volts: float | None = None, **kwargs):
        super().__init__(name, port, **kwargs)
        self.nominal_volts = nominal_volts  # configured: overrides F (as NUT's override.* does)
        self._no_charge_said = False
        self.rating: q1.Q1Rating | None = None
        self.identity: q1.Q1Identity | None = None
        self.bad_replies = 0
        self._io = threading.Lock()

    def _configure_lines(self, port) -> None:
        # NUT's settings: some cables draw their power from DTR.
        port.dtr, port.rts = True, False

    def _after_open(self) -> None:
        for cmd, parse, attr in ((b"F\r", q1.parse_rating, "rating"), (b"I\r", q1.parse_identity, "identity")):
            try:
                setattr(self, attr, parse(self._ask(cmd)))
            except (ReplyError, q1.Q1Error) as e:
                log.info("power: %s does not answer %s usefully (%s)", self.name, cmd.strip().decode(), e)
        if self.identity:
            self.state.detail = f"{self.identity.company} {self.identity.model} {self.identity.version}".strip()

    def _ask(self, command: bytes, timeout: float = 1.0) -> bytes:
        with self._io:
            port = self.port
            if port is None:
                raise ReplyError("port closed")
            port.reset_input_buffer()
            port.write(command)
            reply = bytearray()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                chunk = port.read(64)
                if chunk:
                    reply += chunk
                    if b"\r" in chunk:
                        break
            if not reply:
                raise ReplyError(f"no reply to {command.strip().decode()} within {timeout:g} s")
            return bytes(reply[: reply.index(b"\r") + 1] if b"\r" in reply else reply)

    def _poll(self) -> dict | None:
        try:
            s = q1.parse_q1(self._ask(b"Q1\r"))
        except q1.Q1Error as e:
            self.bad_replies += 1
            raise ReplyError(str(e)) from None
        charge = None
        nominal = self.nominal_volts or (self.rating.battery_volts if self.rating else None)
        if s.battery_volts is not None and nominal:
            charge = q1.charge_percent(s.battery_volts, nominal)
        elif not nominal and not self._no_charge_said:
            # Its own LB flag still makes on-battery critical; only the percentages are missing.
            self._no_charge_said = True
            log.warning("power: %s gives no nominal battery voltage (no F reply): no charge figure; set "
                        "power.ups_battery_volts to get one from the battery voltage", self.name)
        volts = s.battery_volts
        return {"on_mains": not s.utility_fail, "charge_percent": charge, "battery_volts": volts,
                "load_percent": s.load_percent, "temperature_c": s.temperature_c, "alarms": s.alarms}

    def command(self, cmd: bytes) -> bool:
        """Send a control command (shutdown, cancel, test); True if accepted."""
        try:
            reply = self._ask(cmd, timeout=1.0)
        except ReplyError:
            reply = b""  # no reply means accepted in this protocol
        return q1.command_accepted(cmd, reply)


class VeDirectMonitor(SerialSource):
    """A Victron battery monitor (or solar charger): listens, never sends."""

    kind = "battery-monitor"
    baud = 19200

    def __init__(self, name: str, port: str, **kwargs):
        super().__init__(name, port, **kwargs)
        self.parser = vedirect.VeDirectParser()
        self.fields: dict[str, str] = {}

    def _configure_lines(self, port) -> None:
        # The isolated VE.Direct-to-RS232 cable is powered from DTR/RTS.
        port.dtr, port.rts = True, True

    def _poll(self) -> dict | None:
        deadline = time.monotonic() + self.poll_seconds * 0.9
        got = False
        while time.monotonic() < deadline and not self._stop.is_set():
            data = self.port.read(256)
            if data:
                for block in self.parser.feed(data, time.monotonic()):
                    self.fields.update(block)  # live values and history merge by label
                    got = True
            elif not self.port.is_open:
                raise OSError("port closed")
        if not got:
            raise ReplyError("no valid VE.Direct block")
        r = vedirect.interpret(self.fields)
        runtime = None if r.minutes_to_go in (None, float("inf")) else r.minutes_to_go * 60
        discharging = r.amps is not None and r.amps < -0.05
        return {"on_mains": not discharging if r.amps is not None else None, "charge_percent": r.charge_percent,
                "battery_volts": r.volts, "temperature_c": r.temperature_c, "alarms": r.alarms,
                "runtime_seconds": runtime, "runtime_from": "device" if runtime is not None else "",
                "detail": r.model}

    def status(self) -> dict:
        return {**super().status(), "parser": vars(self.parser.counters)}


class NutUps(Source):
    """A UPS that NUT's upsd already manages (TCP 3493, LIST VAR)."""

    kind = "nut"

    def __init__(self, name: str, ups: str, host: str = "127.0.0.1", port: int = 3493, **kwargs):
        super().__init__(name, **kwargs)
        self.ups, self.host, self.port_number = ups, host, port
        self.sock: socket.socket | None = None
        self._buf = b""

    def _open(self) -> None:
        """In the poller's thread: the name looked up again (with a deadline), each address
        tried in turn; any failure is the poller's to log on change and retry."""
        failures = []
        for addr in hostnames.resolve(self.host, self.port_number, role="NUT server"):
            try:
                self.sock = socket.create_connection(addr[:2], timeout=3)
                self._buf = b""
                return
            except OSError as e:
                failures.append(f"{hostnames.display(addr)}: {e.strerror or e}")
        raise OSError(f"cannot reach upsd at {'; '.join(failures)}")

    def _close(self) -> None:
        if self.sock is not None:
            sock, self.sock = self.sock, None
            try:
                sock.sendall(b"LOGOUT\n")
            except OSError:
                pass
            sock.close()

    def _line(self) -> str:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OSError("upsd closed the connection")
            self._buf += chunk
            if len(self._buf) > 1 << 20:
                raise OSError("upsd sent an over-long line")
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", "replace").rstrip("\r")

    def _poll(self) -> dict | None:
        self.sock.sendall(f"LIST VAR {self.ups}\n".encode())
        first = self._line()
        if first.startswith("ERR"):
            raise ReplyError(f"upsd: {first[4:]}")
        if first != f"BEGIN LIST VAR {self.ups}":
            raise ReplyError(f"upsd: unexpected answer {first!r}")
        variables: dict[str, str] = {}
        while True:
            line = self._line()
            if line == f"END LIST VAR {self.ups}":
                break
            parts = line.split(" ", 3)
            if len(parts) == 4 and parts[0] == "VAR":
                variables[parts[2]] = parts[3].strip('"')
        status = variables.get("ups.status", "").split()
        if "OL" not in status and "OB" not in status:
            # WAIT (the driver has not connected yet) and the like: no reading.
            raise ReplyError(f"upsd reports ups.status {' '.join(status) or 'nothing'}")
        num = lambda k: _float(variables.get(k))  # noqa: E731
        runtime = num("battery.runtime")
        alarms = [a for a, flag in (("battery low", "LB"), ("replace battery", "RB"), ("overload", "OVER"))
                  if flag in status]
        return {"on_mains": "OB" not in status, "charge_percent": num("battery.charge"),
                "runtime_seconds": runtime, "runtime_from": "device" if runtime is not None else "",
                "battery_volts": num("battery.voltage"), "load_percent": num("ups.load"),
                "temperature_c": num("ups.temperature"), "alarms": alarms,
                "detail": " ".join(x for x in (variables.get("device.mfr"), variables.get("device.model")) if x)}


class BoardBattery(Source):
    """The board's own battery or charger (laptop, UPS HAT) as Linux exposes it."""

    kind = "board"

    def _poll(self) -> dict | None:
        import psutil

        b = psutil.sensors_battery()
        if b is None:
            raise ReplyError("no battery exposed by the kernel")
        runtime = None if b.secsleft in (psutil.POWER_TIME_UNLIMITED, psutil.POWER_TIME_UNKNOWN) else b.secsleft
        return {"on_mains": bool(b.power_plugged) if b.power_plugged is not None else None,
                "charge_percent": float(b.percent), "runtime_seconds": runtime,
                "runtime_from": "device" if runtime is not None else ""}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
