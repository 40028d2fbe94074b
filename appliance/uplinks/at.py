"""Quectel RM5xx AT replies (specs/quectel-at.md): pure functions over lines.

Nothing here does I/O. Parsers take the lines of one reply (without the final
result) and return what they found, or None for a field a reply does not carry;
firmware differences (no space after the colon, missing trailing fields, "-"
for unavailable) are accepted. Garbage never raises out of a parser: it raises
AtError, which says what was wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from appliance.errors import ApplianceError

CME = {3: "operation not allowed", 4: "not supported", 10: "no SIM", 11: "SIM PIN required",
       12: "SIM PUK required", 13: "SIM failure", 14: "SIM busy", 30: "no network service", 100: "unknown error"}

# Unsolicited lines we act on or recognise; anything else outside a reply is a URC too.
URC_PREFIXES = ("RDY", "POWERED DOWN", "+CPIN:", "+QIND:", "+CEREG:", "+CGREG:", "+CREG:", "+QUSIM:", "+QSTAT")


class AtError(ApplianceError, ValueError):
    """A reply that is an error, or that we could not read."""

    def __init__(self, message: str, cme: int | None = None):
        super().__init__(message)
        self.cme = cme


@dataclass
class Radio:
    """What the modem says about its radio link; None where it did not say."""

    sim: str | None = None  # READY, SIM PIN, absent, ...
    registered: bool | None = None
    operator: str | None = None
    rat: str | None = None  # LTE, NR5G-SA, NR5G-NSA
    state: str | None = None  # SEARCH, LIMSRV, NOCONN, CONNECT
    band: str | None = None
    cell_id: str | None = None
    rsrp: float | None = None  # dBm (NR's on NSA)
    rsrq: float | None = None  # dB
    sinr: float | None = None  # dB
    lte_rsrp: float | None = None  # the anchor LTE cell on NSA
    lte_sinr: float | None = None
    temperature_c: float | None = None
    address: str | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


def final_result(line: str) -> tuple[bool, AtError | None] | None:
    """(True, None) for OK, (True, error) for ERROR / +CME ERROR, None for any other line."""
    if line == "OK":
        return True, None
    if line == "ERROR":
        return True, AtError("ERROR")
    for prefix in ("+CME ERROR:", "+CMS ERROR:"):
        if line.startswith(prefix):
            code = line[len(prefix):].strip()
            n = int(code) if code.isdigit() else None
            text = CME.get(n, code) if n is not None else code
            return True, AtError(f"{line} ({text})" if n is not None else line, n)
    return None


def is_urc(line: str) -> bool:
    return line.startswith(URC_PREFIXES)


def fields(line: str, prefix: str) -> list[str]:
    """The comma-separated fields after `prefix` ("+QENG:"), quotes removed,
    commas inside quotes kept. Accepts "+QENG:" with or without a space."""
    if not line.startswith(prefix):
        raise AtError(f"expected {prefix} in {line!r}")
    out, cur, quoted = [], [], False
    for ch in line[len(prefix):].strip():
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if quoted:
        raise AtError(f"unterminated quote in {line!r}")
    out.append("".join(cur).strip())
    return out


def _num(v: str | None) -> float | None:
    if v is None or v in ("", "-"):
        return None
    try:
        return float(v)
    except ValueError:
        raise AtError(f"not a number: {v!r}") from None


def _at(fs: list[str], i: int) -> str | None:
    return fs[i] if i < len(fs) else None


def _only(lines: list[str], prefix: str) -> list[str]:
    for line in lines:
        if line.startswith(prefix):
            return fields(line, prefix)
    raise AtError(f"no {prefix} line in the reply")


# --- one parser per command ------------------------------------------------------------------

def parse_cpin(lines: list[str]) -> str:
    return _only(lines, "+CPIN:")[0]


def parse_cops(lines: list[str]) -> tuple[bool, str | None, int | None]:
    """(registered, operator, access technology: 7 LTE, 11/12 NR, 13 EN-DC)."""
    fs = _only(lines, "+COPS:")
    if len(fs) < 3:
        return False, None, None
    act = _num(_at(fs, 3))
    return True, fs[2] or None, None if act is None else int(act)


def parse_cgpaddr(lines: list[str]) -> str | None:
    fs = _only(lines, "+CGPADDR:")
    addr = _at(fs, 1)
    return None if not addr or addr in ("0.0.0.0", "0:0:0:0:0:0:0:0") else addr


def parse_qtemp(lines: list[str]) -> float | None:
    """The hottest sensor; -273 means no sensor."""
    temps = []
    for line in lines:
        if line.startswith("+QTEMP:"):
            fs = fields(line, "+QTEMP:")
            t = _num(_at(fs, 1))
            if t is not None and t > -273:
                temps.append(t)
    return max(temps) if temps else None


def parse_servingcell(lines: list[str]) -> Radio:
    """AT+QENG="servingcell" in its three shapes: LTE, NR5G-SA, and NR5G-NSA (three lines)."""
    r = Radio()
    rows = [fields(line, "+QENG:") for line in lines if line.startswith("+QENG:")]
    if not rows:
        raise AtError("no +QENG line in the reply")
    for fs in rows:
        if fs[0] == "servingcell":
            r.state = _at(fs, 1)
            rat = _at(fs, 2)
            if rat == "LTE":
                _lte(r, fs[3:])
                r.rat = "LTE"
            elif rat == "NR5G-SA":
                # duplex, MCC, MNC, cellID, PCID, TAC, ARFCN, band, DL_bw, RSRP, RSRQ, SINR, scs, srxlev
                r.rat, r.cell_id = "NR5G-SA", _at(fs, 6)
                band = _at(fs, 10)
                r.band = f"n{band}" if band not in (None, "", "-") else None
                r.rsrp, r.rsrq, r.sinr = _num(_at(fs, 12)), _num(_at(fs, 13)), _num(_at(fs, 14))
            elif rat is not None:
                raise AtError(f"unknown serving-cell technology {rat!r}")
        elif fs[0] == "LTE":  # the NSA anchor: no "servingcell" prefix
            _lte(r, fs[1:])
            r.lte_rsrp, r.lte_sinr = r.rsrp, r.sinr
            r.rat = r.rat or "LTE"
        elif fs[0] == "NR5G-NSA":
            # MCC, MNC, PCID, RSRP, SINR, RSRQ, ARFCN, band, DL_bw, scs: SINR comes BEFORE RSRQ here
            r.rat = "NR5G-NSA"
            r.rsrp, r.sinr, r.rsrq = _num(_at(fs, 4)), _num(_at(fs, 5)), _num(_at(fs, 6))
            band = _at(fs, 8)
            if band not in (None, "", "-"):
                r.band = f"{r.band}+n{band}" if r.band else f"n{band}"
    if r.state is None and r.rat is None:
        raise AtError("the serving-cell reply names no cell")
    return r


def _lte(r: Radio, fs: list[str]) -> None:
    # FDD|TDD, MCC, MNC, cellID, PCID, EARFCN, band, UL_bw, DL_bw, TAC, RSRP, RSRQ, RSSI, SINR, CQI, tx_power, srxlev
    r.cell_id = _at(fs, 3)
    band = _at(fs, 6)
    r.band = f"B{band}" if band not in (None, "", "-") else None
    r.rsrp, r.rsrq, r.sinr = _num(_at(fs, 10)), _num(_at(fs, 11)), _num(_at(fs, 13))
