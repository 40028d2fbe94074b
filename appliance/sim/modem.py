"""A Quectel RM5xx AT port on a pty, speaking the replies of specs/quectel-at.md
byte for byte: echo on until ATE0, numeric errors after AT+CMEE=1, the three
serving-cell formats (LTE, NR5G-SA, NR5G-NSA), URCs at any time (RDY after a
reboot), and faults on demand (garbage, silence, unplug)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.sim.power import _Plugged, _SimDevice


@dataclass
class Cell:
    rat: str = "NR5G-NSA"  # LTE | NR5G-SA | NR5G-NSA
    state: str = "CONNECT"
    cell_id: str = "4940206"
    rsrp: int = -88
    rsrq: int = -10
    sinr: int = 18
    operator: str = "Sim Mobile"


class ModemSim(_SimDevice):
    def __init__(self, link: Path, cell: Cell | None = None):
        self.cell = cell or Cell()
        self.echo = True
        self.cmee = 0
        self.sim = "READY"  # or "absent"
        self.silent = False
        self.garbage: bytes | None = None  # sent once instead of the next reply
        self.urc_inside: str | None = None  # put once in the middle of the next reply
        self.commands: list[str] = []
        self._buf = b""
        self._port = _Plugged(link, "sim-modem", None, self._respond)

    def close(self) -> None:
        self._port.unplug()

    def replug(self) -> None:
        self._buf = b""
        self.echo, self.cmee = True, 0  # a re-enumerated module starts from its defaults
        super().replug()
        self.urc("RDY")

    def reboot(self) -> None:
        self.echo, self.cmee = True, 0
        self.urc("RDY")

    def urc(self, line: str) -> None:
        self._port.write(f"\r\n{line}\r\n".encode())

    # --- the command interpreter ---------------------------------------------------------------

    def _respond(self, data: bytes) -> bytes | None:
        self._buf += data
        out = b""
        while b"\r" in self._buf:
            raw, self._buf = self._buf.split(b"\r", 1)
            cmd = raw.decode("ascii", errors="replace").strip()
            if not cmd:
                continue
            self.commands.append(cmd)
            if self.silent:
                continue
            if self.garbage is not None:
                out += self.garbage
                self.garbage = None
                continue
            out += (raw + b"\r") if self.echo else b""
            lines, error = self._answer(cmd)
            if self.urc_inside and lines:
                lines.insert(len(lines) // 2 + 1, self.urc_inside)
                self.urc_inside = None
            out += b"".join(f"\r\n{line}\r\n".encode() for line in lines)
            if error is None:
                out += b"\r\nOK\r\n"
            else:
                out += (f"\r\n+CME ERROR: {error}\r\n" if self.cmee == 1 else "\r\nERROR\r\n").encode()
        return out or None

    def _answer(self, cmd: str) -> tuple[list[str], int | None]:
        c = self.cell
        up = cmd.upper()
        if up in ("AT", "AT+CMEE=1", "ATE0", "ATE1"):
            if up == "ATE0":
                self.echo = False
            elif up == "ATE1":
                self.echo = True
            elif up == "AT+CMEE=1":
                self.cmee = 1
            return [], None
        if up == "AT+CPIN?":
            return ([f"+CPIN: {self.sim}"], None) if self.sim != "absent" else ([], 10)
        if self.sim == "absent" and up.startswith(("AT+COPS", "AT+QENG", "AT+CGPADDR", "AT+QCSQ")):
            return [], 10
        if up == "AT+COPS?":
            act = {"LTE": 7, "NR5G-SA": 11, "NR5G-NSA": 13}[c.rat]
            return [f'+COPS: 0,0,"{c.operator}",{act}'], None
        if up == 'AT+QENG="SERVINGCELL"':
            return self.servingcell(), None
        if up == "AT+QCSQ":
            if c.rat == "LTE":
                return [f'+QCSQ: "LTE",{c.rsrp + 30},{c.rsrp},{c.sinr * 5},{c.rsrq}'], None
            return [f'+QCSQ: "NR5G",{c.rsrp},{c.sinr},{c.rsrq}'], None
        if up == "AT+QTEMP":
            return ['+QTEMP:"modem-ambient-usr","41"', '+QTEMP:"modem-skin-sensor","-273"', '+QTEMP:"cpu0-a7-usr","47"'], None
        if up == "AT+CGPADDR=1":
            return ['+CGPADDR: 1,"10.45.0.2"'], None
        if up == "AT+CSQ":
            return (["+CSQ: 99,99"] if c.rat == "NR5G-SA" else ["+CSQ: 21,99"]), None
        return [], 4

    def servingcell(self) -> list[str]:
        c = self.cell
        if c.rat == "LTE":
            return [f'+QENG: "servingcell","{c.state}","LTE","FDD",311,480,{c.cell_id},221,66536,66,5,5,D00,'
                    f'{c.rsrp},{c.rsrq},-56,{c.sinr},0,-,29']
        if c.rat == "NR5G-SA":
            return [f'+QENG: "servingcell","{c.state}","NR5G-SA","TDD",262,99,{c.cell_id},0,1,640320,77,1,'
                    f'{c.rsrp},{c.rsrq},{c.sinr},1,57']
        return [f'+QENG: "servingcell","{c.state}"',
                f'+QENG: "LTE","FDD",222,01,{c.cell_id},427,1350,3,5,5,BFF,-94,-15,-58,9,5,100,-',
                f'+QENG:"NR5G-NSA",222,01,920,{c.rsrp},{c.sinr},{c.rsrq},648768,78,10,1']
