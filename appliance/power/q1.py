"""Megatec / Voltronic "Q1" UPS protocol (specs/megatec-q1.md): pure parsers.

Every function here takes bytes and returns values or raises Q1Error; the
serial I/O lives in sources.py. NUT's rules are followed: a reply of the wrong
length, first byte or status field is bad as a whole; a numeric field made of
'@' or '-' (unknown to the UPS) drops just that value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from appliance.errors import ApplianceError

Q1_LEN = 46  # without the trailing CR
_NUMERIC = re.compile(rb"^[0-9 .]+$")


class Q1Error(ApplianceError, ValueError):
    """A reply that is not what the protocol says it should be."""


@dataclass(frozen=True)
class Q1Status:
    input_volts: float | None
    input_fault_volts: float | None
    output_volts: float | None
    load_percent: float | None
    frequency_hz: float | None
    battery_volts: float | None  # per cell (online types) or total (standby types)
    temperature_c: float | None
    utility_fail: bool  # b7: on battery
    battery_low: bool  # b6
    bypass_active: bool  # b5
    ups_failed: bool  # b4
    standby_type: bool  # b3
    test_in_progress: bool  # b2
    shutdown_active: bool  # b1
    beeper_on: bool  # b0
    dropped_fields: tuple[str, ...] = ()

    @property
    def alarms(self) -> list[str]:
        names = [("battery low", self.battery_low), ("UPS failed", self.ups_failed),
                 ("self-test running", self.test_in_progress), ("shutdown pending", self.shutdown_active)]
        return [n for n, on in names if on]


def _field(raw: bytes, name: str, dropped: list[str]) -> float | None:
    text = raw.strip()
    if not text or not _NUMERIC.match(text):
        dropped.append(name)
        return None
    try:
        value = float(text)
    except ValueError:
        dropped.append(name)
        return None
    return value if math.isfinite(value) else None


def parse_q1(reply: bytes) -> Q1Status:
    """Parse `(208.4 140.0 208.4 034 59.9 2.05 35.0 00110000\\r`."""
    body = reply[:-1] if reply.endswith(b"\r") else reply
    if len(body) != Q1_LEN:
        raise Q1Error(f"Q1 reply is {len(body)} bytes, expected {Q1_LEN}: {reply[:60]!r}")
    if body[:1] != b"(":
        raise Q1Error(f"Q1 reply does not start with '(': {reply[:60]!r}")
    bits = body[38:46]
    if len(bits) != 8 or any(b not in b"01" for b in bits):
        raise Q1Error(f"Q1 status bits are not 8 x 0/1: {bits!r}")
    if any(body[i:i + 1] != b" " for i in (6, 12, 18, 22, 27, 32, 37)):
        raise Q1Error(f"Q1 reply fields are not where the protocol puts them: {reply[:60]!r}")
    dropped: list[str] = []
    f = lambda a, b, name: _field(body[a:b], name, dropped)  # noqa: E731
    b = [c == ord("1") for c in bits]
    return Q1Status(
        input_volts=f(1, 6, "input voltage"), input_fault_volts=f(7, 12, "input fault voltage"),
        output_volts=f(13, 18, "output voltage"), load_percent=f(19, 22, "load"),
        frequency_hz=f(23, 27, "frequency"), battery_volts=f(28, 32, "battery voltage"),
        temperature_c=f(33, 37, "temperature"),
        utility_fail=b[0], battery_low=b[1], bypass_active=b[2], ups_failed=b[3], standby_type=b[4],
        test_in_progress=b[5], shutdown_active=b[6], beeper_on=b[7], dropped_fields=tuple(dropped),
    )


@dataclass(frozen=True)
class Q1Rating:
    volts: float | None
    amps: float | None
    battery_volts: float | None  # nominal battery voltage
    frequency_hz: float | None


def parse_rating(reply: bytes) -> Q1Rating:
    """Parse the F reply: `#220.0 000 024.0 50.0\\r`."""
    body = reply.rstrip(b"\r")
    if not body.startswith(b"#"):
        raise Q1Error(f"F reply does not start with '#': {reply[:40]!r}")
    parts = body[1:].split()
    if len(parts) != 4:
        raise Q1Error(f"F reply has {len(parts)} fields, expected 4: {reply[:40]!r}")
    dropped: list[str] = []
    v = [_field(p, n, dropped) for p, n in zip(parts, ("volts", "amps", "battery", "frequency"))]
    return Q1Rating(*v)


@dataclass(frozen=True)
class Q1Identity:
    company: str
    model: str
    version: str


def parse_identity(reply: bytes) -> Q1Identity:
    """Parse the I reply: '#' + company(15) + ' ' + model(10) + ' ' + version(10)."""
    body = reply.rstrip(b"\r")
    if not body.startswith(b"#") or len(body) != 38:
        raise Q1Error(f"I reply is not '#' and 37 characters: {reply[:50]!r}")
    text = body.decode("ascii", "replace")
    return Q1Identity(text[1:16].strip(), text[17:27].strip(), text[28:38].strip())


def command_accepted(command: bytes, reply: bytes) -> bool:
    """No reply, ACK or (ACK: accepted; the command echoed back or (NAK: refused."""
    r = reply.strip(b"\r\n ")
    if r in (b"", b"ACK", b"(ACK"):
        return True
    if r == b"(NAK" or r == command.strip(b"\r"):
        return False
    raise Q1Error(f"unexpected answer to {command!r}: {reply[:40]!r}")


def shutdown_command(off_minutes: float, restore_minutes: int | None = 0) -> bytes:
    """`S.5R0000`: output off after off_minutes; back on when mains return (R0000)
    or after restore_minutes; None: stay off."""
    if off_minutes < 1:
        tenths = max(2, min(9, round(off_minutes * 10)))
        off = f".{tenths}"
    else:
        off = f"{max(1, min(10, round(off_minutes))):02d}"
    if restore_minutes is None:
        return f"S{off}\r".encode()
    return f"S{off}R{max(0, min(9999, restore_minutes)):04d}\r".encode()


# --- charge from voltage, the NUT way ------------------------------------------------------

_PACKS = (120, 100, 80, 60, 48, 36, 30, 24, 18, 12, 8, 6, 4, 3, 2, 1, 0.5)


def battery_packs(volts: float, nominal: float) -> float | None:
    """How many cells/packs the reported voltage stands for (NUT's guess)."""
    for p in _PACKS:
        if p * volts > 1.25 * nominal:
            continue
        if p * volts < 0.8 * nominal:
            return None
        return p
    return None


def charge_percent(volts: float, nominal: float, packs: float | None = None) -> float | None:
    packs = packs or battery_packs(volts, nominal)
    if packs is None:
        return None
    low, high = 104 * nominal / 120, 130 * nominal / 120
    return max(0.0, min(100.0, 100 * (volts * packs - low) / (high - low)))
