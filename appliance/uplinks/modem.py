"""Modem health: the radio figures of the cellular uplink, in a thread.

Two sources, chosen in config (`[modem] source`):
- `at`: our AT client on the modem's AT port (Quectel RM5xx), over pyserial;
- `modemmanager`: `mmcli` for boxes where ModemManager owns the port.
Both poll every `poll_seconds` and keep one `Radio`; a cell change is noted,
because a handover is when a cellular link stalls.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from typing import Callable

from appliance.children import child_argv, child_env
from appliance.polling import Polled, ReplyError, SerialPort
from appliance.uplinks import at

log = logging.getLogger(__name__)
LINE_MAX = 4096  # bytes: the longest AT reply line is a few hundred

INIT = ("AT", "ATE0", "AT+CMEE=1")


class ModemSource(Polled):
    """What both sources share: the Radio, staleness, the cell-change note."""

    def __init__(self, name: str, poll_seconds: float = 2.0, on_change: Callable[["ModemSource"], None] | None = None):
        self.name = name
        self.poll_seconds = poll_seconds
        self.on_change = on_change or (lambda source: None)
        self.radio = at.Radio()
        self.updated = 0.0
        self.cell_changed_at = 0.0
        self.failures = 0
        self.errors = 0
        self.last_error = ""
        self.answering = False
        self.worker_name = f"modem-{name}"
        self._init_worker()

    def stop(self) -> None:
        super().stop()
        self._safe_close()

    def status(self) -> dict:
        return {"answering": self.answering, **self.radio.as_dict(), "errors": self.errors,
                **({"last_error": self.last_error} if self.last_error else {})}

    def _good(self, radio: at.Radio) -> None:
        if self.radio.cell_id and radio.cell_id and radio.cell_id != self.radio.cell_id:
            self.cell_changed_at = time.monotonic()
            log.info("modem: cell change %s -> %s (%s)", self.radio.cell_id, radio.cell_id, radio.rat,
                     extra={"MODEM": self.name})
        if not self.answering:
            log.info("modem: %s answers: %s, %s, RSRP %s dBm, SINR %s dB", self.name, radio.operator or "no operator",
                     radio.rat or "no cell", radio.rsrp, radio.sinr, extra={"MODEM": self.name})
        self.radio, self.updated, self.failures, self.answering = radio, time.monotonic(), 0, True
        self.on_change(self)

    def _failed(self, why: str) -> None:
        self.errors += 1
        self.failures += 1
        self.last_error = why
        if self.answering and self.failures >= 3:
            self.answering = False
            log.warning("modem: lost contact with %s (%s)", self.name, why, extra={"MODEM": self.name})
            self.on_change(self)


class ModemAt(SerialPort, ModemSource):
    baud = 115200

    def __init__(self, name: str, port: str, poll_seconds: float = 2.0, timeout: float = 2.0,
                 on_change: Callable[[ModemSource], None] | None = None):
        super().__init__(name, poll_seconds, on_change)
        self.port_path, self.timeout = port, timeout
        self.urcs: list[str] = []  # the most recent unsolicited lines, for status and tests
        self.reinit = False
        self.reboots = 0
        self._buf = b""
        self._io = threading.Lock()

    def _after_open(self) -> None:
        self._buf = b""
        self._init()

    def _init(self) -> None:
        for cmd in INIT:
            self.command(cmd)
        self.reinit = False

    # --- the line protocol ----------------------------------------------------------------

    def _line(self, deadline: float) -> str | None:
        """The next non-empty line (CR, LF or both end it), or None at the deadline."""
        while True:
            self._buf = self._buf.lstrip(b"\r\n")
            ends = [i for i in (self._buf.find(b"\r"), self._buf.find(b"\n")) if i >= 0]
            if ends:
                cut = min(ends)
                line, self._buf = self._buf[:cut], self._buf[cut + 1:]
                return line.decode("ascii", errors="replace").strip()
            if time.monotonic() > deadline:
                return None
            chunk = self.port.read(256)
            if chunk:
                self._buf += chunk
                if len(self._buf) > LINE_MAX:
                    # A port that never sends a line end (noise, a wrong baud rate): no line
                    # is that long; what came is dropped, and the wait goes on.
                    self._buf = b""
                    raise ReplyError(f"no line end in {LINE_MAX} bytes from the modem")

    def command(self, cmd: str, expect: str | None = None) -> list[str]:
        """Send one command; its reply lines (echo and URCs taken out). Raises
        ReplyError on timeout, at.AtError on ERROR / +CME ERROR."""
        with self._io:
            if self.port is None:
                raise ReplyError("port closed")
            self.port.write(cmd.encode() + b"\r")
            deadline = time.monotonic() + self.timeout
            body: list[str] = []
            while True:
                line = self._line(deadline)
                if line is None:
                    raise ReplyError(f"no reply to {cmd} within {self.timeout:g} s")
                if not line or line == cmd:
                    continue  # blank, or the echo (echo comes back on after a reboot)
                result = at.final_result(line)
                if result is not None:
                    if result[1] is not None:
                        raise result[1]
                    return body
                if (expect and line.startswith(expect)) or (not expect and not at.is_urc(line)):
                    body.append(line)
                else:
                    self._urc(line)

    def _urc(self, line: str) -> None:
        self.urcs = (self.urcs + [line])[-20:]
        if line == "RDY":
            self.reinit, self.reboots = True, self.reboots + 1
            log.warning("modem: %s restarted (RDY): initialising again", self.name, extra={"MODEM": self.name})
        elif line == "POWERED DOWN":
            log.warning("modem: %s powered down", self.name, extra={"MODEM": self.name})

    # --- one poll --------------------------------------------------------------------------

    def _poll(self) -> at.Radio | None:
        if self.port is not None and self.port.in_waiting:
            self._drain()
        if self.reinit:
            self._init()
        try:
            sim = at.parse_cpin(self.command("AT+CPIN?", "+CPIN:"))
        except at.AtError as e:
            if e.cme in (10, 13):
                return at.Radio(sim="absent" if e.cme == 10 else "failure", registered=False)
            raise ReplyError(f"AT+CPIN?: {e}") from None
        radio = at.Radio(sim=sim)
        if sim != "READY":
            return radio
        try:
            radio.registered, radio.operator, _ = at.parse_cops(self.command("AT+COPS?", "+COPS:"))
            cell = at.parse_servingcell(self.command('AT+QENG="servingcell"', "+QENG:"))
        except at.AtError as e:
            raise ReplyError(str(e)) from None
        for k in ("rat", "state", "band", "cell_id", "rsrp", "rsrq", "sinr", "lte_rsrp", "lte_sinr"):
            setattr(radio, k, getattr(cell, k))
        for cmd, expect, parse, attr in (("AT+QTEMP", "+QTEMP:", at.parse_qtemp, "temperature_c"),
                                         ("AT+CGPADDR=1", "+CGPADDR:", at.parse_cgpaddr, "address")):
            try:
                setattr(radio, attr, parse(self.command(cmd, expect)))
            except at.AtError:
                pass  # not every firmware has it: the rest still counts
        return radio

    def _drain(self) -> None:
        """URCs that came between polls."""
        with self._io:
            deadline = time.monotonic() + 0.05
            while (line := self._line(deadline)) is not None:
                if line:
                    self._urc(line)


class ModemManagerSource(ModemSource):
    """`mmcli` in key-value mode: for boxes where ModemManager owns the AT port."""

    def __init__(self, name: str, modem: str = "any", poll_seconds: float = 2.0, mmcli: str | None = None,
                 on_change: Callable[[ModemSource], None] | None = None):
        super().__init__(name, poll_seconds, on_change)
        self.modem = modem
        self.mmcli = mmcli or shutil.which("mmcli") or "mmcli"
        self._signal_setup = False

    def _run_mmcli(self, *args: str) -> dict:
        try:
            # (without the daemon's capabilities, nor its sd_notify socket)
            p = subprocess.run(child_argv([self.mmcli, "-m", self.modem, *args, "-K"]), capture_output=True, text=True,
                               timeout=5, env=child_env())
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ReplyError(f"mmcli: {e}") from None
        if p.returncode:
            raise ReplyError(f"mmcli: {p.stderr.strip() or p.returncode}")
        return parse_mmcli(p.stdout)

    def _poll(self) -> at.Radio | None:
        if not self._signal_setup:
            self._run_mmcli("--signal-setup=10")
            self._signal_setup = True
        m = self._run_mmcli()
        s = self._run_mmcli("--signal-get")
        return radio_from_mmcli(m, s)


def parse_mmcli(text: str) -> dict:
    """`mmcli -K` output: "key : value" lines ("--" = empty)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            value = value.strip()
            out[key.strip()] = None if value in ("--", "") else value
    return out


def radio_from_mmcli(modem: dict, signal: dict) -> at.Radio:
    def num(key):
        v = signal.get(key)
        try:
            return float(v) if v is not None else None
        except ValueError:
            return None

    tech = (modem.get("modem.generic.access-technologies") or "").lower()
    nr = num("modem.signal.5g.rsrp") is not None
    r = at.Radio(sim="READY" if modem.get("modem.generic.sim") else "absent",
                 registered=modem.get("modem.3gpp.registration-state") in ("home", "roaming"),
                 operator=modem.get("modem.3gpp.operator-name"),
                 rat=("NR5G-NSA" if "lte" in tech else "NR5G-SA") if "5gnr" in tech else ("LTE" if "lte" in tech else None),
                 state=modem.get("modem.generic.state"))
    if nr:
        r.rsrp, r.rsrq, r.sinr = num("modem.signal.5g.rsrp"), num("modem.signal.5g.rsrq"), num("modem.signal.5g.snr")
        r.lte_rsrp, r.lte_sinr = num("modem.signal.lte.rsrp"), num("modem.signal.lte.snr")
    else:
        r.rsrp, r.rsrq, r.sinr = num("modem.signal.lte.rsrp"), num("modem.signal.lte.rsrq"), num("modem.signal.lte.snr")
    return r

