"""Victron VE.Direct TEXT protocol (specs/vedirect.md): a pure, incremental parser.

Bytes go in as they arrive (any split), valid blocks come out as dicts. A block
with a bad checksum is dropped whole and counted; HEX frames (':' .. LF) found
anywhere but in the checksum byte are skipped and do not count toward the sum;
limits (label 8, value 32, 22 fields) bound memory whatever the line carries;
500 ms of silence resets the parser. Nothing here raises on input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LABEL = 8
MAX_VALUE = 32
MAX_FIELDS = 22
MAX_HEX = 128
SILENCE_RESET = 0.5

_WAIT, _LF, _LABEL, _VALUE, _CHECKSUM, _HEX = range(6)


@dataclass
class Counters:
    blocks: int = 0
    bad_checksum: int = 0
    hex_frames: int = 0
    bad_hex_frames: int = 0
    malformed: int = 0
    resets: int = 0
    garbage_bytes: int = 0


def hex_frame_valid(frame: bytes) -> bool:
    """`:154` (without LF): command nibble + payload bytes + check byte == 0x55."""
    body = frame[1:].strip(b"\r")
    if not body or any(c not in b"0123456789ABCDEFabcdef" for c in body) or len(body) % 2 != 1:
        return False
    total = int(body[:1], 16) + sum(bytes.fromhex(body[1:].decode()))
    return total & 0xFF == 0x55


class VeDirectParser:
    def __init__(self):
        self.counters = Counters()
        self._state = _WAIT
        self._last = None
        self._reset_block()

    def _reset_block(self) -> None:
        self._sum = 0
        self._fields: dict[str, str] = {}
        self._label = bytearray()
        self._value = bytearray()
        self._resume = _WAIT
        self._hex = bytearray()

    def feed(self, data: bytes, now: float | None = None) -> list[dict[str, str]]:
        if now is not None:
            if self._last is not None and now - self._last > SILENCE_RESET and self._state not in (_WAIT,):
                self.counters.resets += 1
                self._state = _WAIT
                self._reset_block()
            self._last = now
        out: list[dict[str, str]] = []
        for byte in data:
            block = self._byte(byte)
            if block is not None:
                out.append(block)
        return out

    def _malformed(self) -> None:
        self.counters.malformed += 1
        self._state = _WAIT
        self._reset_block()

    def _byte(self, c: int) -> dict[str, str] | None:
        st = self._state
        if st == _HEX:
            if c == 0x0A:
                self.counters.hex_frames += 1
                if not hex_frame_valid(bytes(self._hex)):
                    self.counters.bad_hex_frames += 1
                self._hex = bytearray()
                self._state = self._resume
            elif len(self._hex) >= MAX_HEX:
                self.counters.bad_hex_frames += 1
                self._hex = bytearray()
                self._state = _WAIT
                self._reset_block()
            else:
                self._hex.append(c)
            return None
        if st == _CHECKSUM:
            # Any byte at all, ':' included, is the checksum here.
            self._sum = (self._sum + c) & 0xFF
            fields, ok = self._fields, self._sum == 0
            self._state = _WAIT
            self._reset_block()
            if ok:
                self.counters.blocks += 1
                return fields
            self.counters.bad_checksum += 1
            return None
        if c == 0x3A:  # ':' starts a HEX frame anywhere else
            self._resume = st
            self._hex = bytearray(b":")
            self._state = _HEX
            return None
        if st == _WAIT:
            if c == 0x0D:
                self._reset_block()
                self._sum = c
                self._state = _LF
            else:
                self.counters.garbage_bytes += 1
            return None
        self._sum = (self._sum + c) & 0xFF
        if st == _LF:
            if c == 0x0A:
                self._label = bytearray()
                self._state = _LABEL
            else:
                self._malformed()
        elif st == _LABEL:
            if c == 0x09:
                label = self._label.decode("ascii", "replace")
                if label == "Checksum":
                    self._state = _CHECKSUM
                elif not label:
                    self._malformed()
                else:
                    self._value = bytearray()
                    self._state = _VALUE
            elif c in (0x0D, 0x0A) or len(self._label) >= MAX_LABEL:
                self._malformed()
            else:
                self._label.append(c)
        elif st == _VALUE:
            if c == 0x0D:
                if len(self._fields) >= MAX_FIELDS:
                    self._malformed()
                    return None
                self._fields[self._label.decode("ascii", "replace")] = self._value.decode("ascii", "replace")
                self._state = _LF
            elif c == 0x0A or len(self._value) >= MAX_VALUE:
                self._malformed()
            else:
                self._value.append(c)
        return None


# --- meaning ------------------------------------------------------------------------------

ALARM_REASONS = {1: "low voltage", 2: "high voltage", 4: "low state of charge", 8: "low aux voltage",
                 16: "high aux voltage", 32: "low temperature", 64: "high temperature", 128: "mid-point deviation"}


def _number(fields: dict[str, str], label: str, divisor: int = 1) -> float | None:
    raw = fields.get(label)
    if raw is None or raw.strip() in ("", "---"):
        return None
    try:
        return int(raw) / divisor  # mV, mA, per mille: divide, so 876 reads 87.6 exactly
    except ValueError:
        return None


@dataclass
class BatteryReading:
    volts: float | None = None
    amps: float | None = None
    charge_percent: float | None = None
    minutes_to_go: float | None = None  # None: unknown (not synchronised); inf: not discharging
    temperature_c: float | None = None
    alarms: list[str] = field(default_factory=list)
    model: str = ""
    is_charger: bool = False


def interpret(fields: dict[str, str]) -> BatteryReading:
    """Merged fields of a battery monitor (or solar charger) -> one reading."""
    r = BatteryReading(volts=_number(fields, "V", 1000), amps=_number(fields, "I", 1000),
                       charge_percent=_number(fields, "SOC", 10), temperature_c=_number(fields, "T"))
    ttg = _number(fields, "TTG")
    r.minutes_to_go = None if ttg is None else (float("inf") if ttg < 0 else ttg)
    if fields.get("Alarm") == "ON":
        bits = int(_number(fields, "AR") or 0)
        r.alarms = [name for bit, name in ALARM_REASONS.items() if bits & bit] or ["alarm"]
    r.is_charger = "CS" in fields and "SOC" not in fields
    if r.is_charger and fields.get("ERR", "0") not in ("0", ""):
        r.alarms.append(f"charger error {fields['ERR']}")
    r.model = fields.get("BMV") or fields.get("PID", "")
    return r


def block(fields: list[tuple[str, str]]) -> bytes:
    """Encode fields as a valid block (checksum included): for the simulator and tests."""
    body = b"".join(b"\r\n" + k.encode() + b"\t" + v.encode() for k, v in fields) + b"\r\nChecksum\t"
    return body + bytes([(256 - sum(body) % 256) % 256])
