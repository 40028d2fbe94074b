"""One uplink of the bond: its socket, its share of the stream (a window, as the
reference sender keeps), its RTT from our keepalives, and its life: registering,
on probation, up, dead.

Its rules, where the reference sender is weak: dead when nothing came back for
4 x its smoothed RTT (clamped to 150..300 ms) instead of 4 s; back only after
stable keepalive RTTs (probation), with a full starting window.
"""

from __future__ import annotations

import socket
import statistics
from collections import deque
from dataclasses import dataclass, field

DEAD_MIN, DEAD_MAX = 0.15, 0.30
PROBATION_ECHOES = 5
WINDOW_MIN, WINDOW_START, WINDOW_MAX = 1000, 20000, 60000


@dataclass(frozen=True)
class LinkStats:
    """What the link policy reads of a link (uplinks/monitor.py), copied out of the bond's thread."""

    state: str
    rtt_ms: float | None
    packets: int  # data packets sent on it
    bytes: int
    naks: int  # its transmissions the receiver reported lost, each counted once


@dataclass
class Link:
    name: str
    source: str
    sock: socket.socket
    family: int = socket.AF_INET
    state: str = "registering"  # registering | probation | up | dead
    window: int = WINDOW_START
    in_flight: set[int] = field(default_factory=set)  # the flight table's set for this link
    srtt: float | None = None
    rtts: deque = field(default_factory=lambda: deque(maxlen=8))
    last_rx: float = 0.0
    last_reg: float = 0.0
    last_keepalive: float = 0.0
    echoes_since_reg: int = 0
    sent: int = 0
    bytes_sent: int = 0
    died_at: float | None = None
    last_sent: float = 0.0
    notice_ms: list[float] = field(default_factory=list)  # silence -> declared dead, per failure
    moved_ms: list[float] = field(default_factory=list)  # silence -> its traffic carried elsewhere
    dead_range: tuple[float, float] = (DEAD_MIN, DEAD_MAX)
    weight: float = 1.0  # the link policy's health score: a worsening link gets a smaller share
    kept: bool = False  # silent past its dead time, but the last link up
    reg_sent: bytes = b""  # the id in the last REG2 sent on it, and since when
    reg_group_since: float = 0.0
    standby: bool = False  # registered and kept alive, carries data only when nothing else can
    naks: int = 0  # its transmissions the receiver reported lost, each counted once
    acked: int = 0  # packets the relay says it received on this link (its SRTLA ACKs)
    challenge: bytes | None = None  # the relay's latest for this link's address (a relay with a secret)

    def dead_after(self) -> float:
        rtt = self.srtt if self.srtt is not None else 0.05
        return min(self.dead_range[1], max(self.dead_range[0], 4 * rtt))

    def score(self) -> float:
        return self.weight * self.window / (len(self.in_flight) + 1)

    def echo(self, rtt: float) -> bool:
        """A keepalive came back after rtt seconds. True when that proved it: it is up again."""
        self.rtts.append(rtt)
        self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt
        self.echoes_since_reg += 1
        if self.state != "probation" or not self._stable():
            return False
        # A full starting window, as a new link gets. Left at the minimum it was cut to
        # when it died, it would never win a packet again on a path fast enough that the
        # other link's in-flight stays small.
        self.state, self.window = "up", max(self.window, WINDOW_START)
        return True

    def apply_policy(self, weights: dict[str, float], standby: set[str]) -> None:
        """The link policy's share for it (its health, within 0.01..1) and whether it stands by."""
        self.weight = max(0.01, min(1.0, weights.get(self.name, 1.0)))
        self.standby = self.name in standby

    def widen(self, by: int) -> None:
        self.window = min(WINDOW_MAX, self.window + by)

    def congested(self) -> None:
        """Its socket's queue is full: congestion, not death. It gets less for a while."""
        self.window = max(WINDOW_MIN, self.window // 2)

    def lost(self, first: bool) -> None:
        """The receiver NAKed one of its packets: a smaller share on every NAK, as the
        reference does; the loss counted once (first: the first NAK of that transmission)."""
        self.window = max(WINDOW_MIN, self.window - 100)
        self.naks += first

    def die(self, now: float) -> float:
        """Declared dead; returns how long it had been silent."""
        silent = now - self.last_rx
        self.state, self.died_at, self.kept = "dead", now, False
        self.notice_ms.append(round(silent * 1000, 1))
        self.window = WINDOW_MIN
        return silent

    def _stable(self) -> bool:
        if self.echoes_since_reg < PROBATION_ECHOES or len(self.rtts) < PROBATION_ECHOES:
            return False
        recent = list(self.rtts)[-PROBATION_ECHOES:]
        return max(recent) <= 2 * statistics.median(recent) + 0.02

    def stats(self) -> LinkStats:
        return LinkStats(self.state, None if self.srtt is None else round(self.srtt * 1000, 1), self.sent,
                         self.bytes_sent, self.naks)

    def status(self) -> dict:
        return {"source": self.source, "state": self.state, "rtt_ms": None if self.srtt is None else round(self.srtt * 1000, 1),
                "window": self.window, "in_flight": len(self.in_flight), "packets": self.sent, "bytes": self.bytes_sent,
                "dead_notice_ms": self.notice_ms[-5:], "moved_ms": self.moved_ms[-5:], "naks": self.naks,
                "weight": self.weight, "standby": self.standby, "acked": self.acked, "kept": self.kept}


def open_socket(name: str, source: str) -> socket.socket:
    """A datagram socket bound to the uplink's address, and pinned to its interface
    where we are allowed to (CAP_NET_RAW), non-blocking. OSError when it cannot be."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if not source.startswith("127."):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, name.encode())
            except OSError:
                pass
        s.bind((source, 0))
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s
