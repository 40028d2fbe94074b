"""The SRTLA bonding sender: one SRT stream spread over every uplink.

The local SRT caller (libsrt) sends to our loopback port; each SRT packet goes
out over one uplink socket (bound to that uplink's source address) to an SRTLA
receiver (`appliance relay`, or BELABOX srtla_rec), and whatever comes back is
handed to the caller. Wire format and registration as specs/srtla.md.

Where the reference sender is weak, this one does better without changing the
wire format:
- keepalives carry our timestamp every 100 ms, so each link's RTT is known;
- a link is dead when nothing came back on it for 4 x its smoothed RTT (within
  150..300 ms), not 4 s, and a returning link proves itself first (bond_link.py);
- the packets still in flight on a dead link are re-sent at once on the healthy
  links (SRT drops the duplicates) instead of waiting for SRT's NAKs;
- a link whose socket refuses a packet (interface down) is dead at once, and the
  packet goes out on another;
- a retransmission whose original is younger than its link's RTT is held: over
  links of different depth SRT NAKs what is merely late, and re-sending it would
  feed a retransmission storm on links that are already queueing;
- the link policy (uplinks/) weighs each link's share by its health, and can put
  a link on standby (failover backup, data cap): registered, keepalives only.

The relay may be named by a host name (hostnames.Destination): looked up in a
thread of its own, never on the packet path, and again whenever no link is
carrying and the relay has not answered for a while; an address that does not
answer gives way to the next one the name resolves to. Replies are matched
against the address each link sends to.
One thread, one selector: no asyncio, no locks on the packet path. Its parts:
bond_link.py (one uplink and its rules), bond_register.py (registration with the
relay), flight.py (the packets in flight, for holds, NAKs and the rescue).
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from collections import Counter, deque

from appliance import hostnames
from appliance.transport import srtla
from appliance.transport.bond_link import DEAD_MAX, DEAD_MIN, Link, LinkStats, open_socket
from appliance.transport.bond_register import Registration
from appliance.transport.flight import FlightTable
from appliance.worker import Worker

log = logging.getLogger(__name__)

KEEPALIVE_EVERY = 0.1
REGISTER_EVERY = 0.5
LOOKUP_BACKOFF = (0.25, 0.5, 1.0)  # s between lookups of a name that does not resolve (a resolver caches the no)


class Bonder(Worker):
    """Call start(); point the SRT caller at ("127.0.0.1", bonder.local_port)."""

    worker_name = "srtla-bond"
    # Every packet of the stream passes through it; its loop turns every 10 ms (5 s: a
    # thread starved of CPU on an overloaded box is late, not wedged).
    show_needs = True
    stuck_after = 5.0

    def __init__(self, relay: tuple[str, int], sources: dict[str, str], secret: bytes | None = None,
                 dead_range: tuple[float, float] = (DEAD_MIN, DEAD_MAX), rescue: bool = True):
        """dead_range and rescue exist for the benchmark, which runs the reference
        sender's rules (dead after 4 s, no rescue) as its baseline."""
        self.relay = hostnames.Destination(*relay, "relay", LOOKUP_BACKOFF, log=log, prefix="bond: ")
        self.dead_range, self.rescue = dead_range, rescue
        self.reg = Registration(secret, self.relay.where)
        self.sel = selectors.DefaultSelector()
        self.local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.local.bind(("127.0.0.1", 0))
        self.local.setblocking(False)
        self.local_port = self.local.getsockname()[1]
        self.sel.register(self.local, selectors.EVENT_READ, None)
        self.caller: tuple | None = None
        self.links: dict[str, Link] = {}
        self.flight = FlightTable()
        self.held = 0  # retransmissions not sent: the original was still on its way
        self.resent = 0
        self.dropped: Counter[str] = Counter()
        self._epoch = time.monotonic()
        self._init_worker()
        self._changes: deque = deque()
        self._weights: dict[str, float] = {}
        self._standby: set[str] = set()
        for name, source in sources.items():
            self._add_link(name, source)

    # --- lifecycle (any thread) -----------------------------------------------------------------

    def stop(self) -> None:
        if super().stop():
            # The caller's last words may still wait in our socket: srt_close sends SHUTDOWN
            # just before the bond is stopped. Unforwarded, the ingest holds the old connection
            # until its idle timeout (5 s), and one that takes a single caller (srt-live-transmit)
            # refuses the next one meanwhile: a quick stop-and-go, or pre-flight's next link.
            try:
                self._from_caller()
            except OSError:
                pass
        for link in list(self.links.values()):
            link.sock.close()
        self.local.close()
        self.sel.close()

    def ready(self) -> bool:
        """At least one uplink is registered and proven."""
        return any(link.state == "up" for link in list(self.links.values()))

    def set_policy(self, weights: dict[str, float], standby: set[str]) -> None:
        """From the link policy (any thread): per-link shares and the links on standby."""
        self._changes.append(("policy", dict(weights), set(standby)))

    def set_uplinks(self, sources: dict[str, str]) -> None:
        """Live changes: an interface that appears joins, one that vanishes leaves."""
        self._changes.append(dict(sources))

    def link_stats(self) -> dict[str, LinkStats]:
        """Each link's state, RTT and counters, for the link policy (any thread)."""
        return {n: link.stats() for n, link in list(self.links.items())}

    @property
    def group(self) -> bytes | None:
        """The relay's id for our group, once registered."""
        return self.reg.group

    def status(self) -> dict:
        return {"registered": self.group is not None, "links": {n: l.status() for n, l in self.links.items()},
                "relay": self.relay.where(), **({"relay_error": self.problem()} if not self.ready() else {}),
                "resent": self.resent, "held": self.held, "dropped": dict(self.dropped)}

    @property
    def name_error(self) -> hostnames.NameNotResolved | None:
        return self.relay.error

    def problem(self) -> str:
        """Why no link carries, for the status and the stream's condition: the current cause."""
        if self.relay.error is not None:
            return str(self.relay.error)
        links = list(self.links.values())
        if not links:
            return "no uplink has an address"
        if not self.relay.current:
            return f"looking up the relay's name {self.relay.host}"
        if not any(link.family in self.relay.current for link in links):
            return f"the relay {self.relay.host} has no address of the uplinks' family"
        return f"no uplink registered with the relay {self.relay.where()}"

    # --- links ------------------------------------------------------------------------------------

    def _add_link(self, name: str, source: str) -> None:
        try:
            s = open_socket(name, source)
        except OSError as e:
            log.warning("bond: uplink %s (%s) unusable: %s", name, source, e)
            return
        self.links[name] = link = Link(name, source, s, s.family, in_flight=self.flight.carried_by(name),
                                       dead_range=self.dead_range)
        link.apply_policy(self._weights, self._standby)
        self.sel.register(s, selectors.EVENT_READ, name)
        log.info("bond: uplink %s joins from %s", name, source, extra={"LINK": name})

    def _remove_link(self, name: str) -> None:
        link = self.links.pop(name, None)
        if link is None:
            return
        self.sel.unregister(link.sock)
        link.sock.close()
        self._rescue(link, time.monotonic())
        self.flight.drop_link(name)
        log.warning("bond: uplink %s left", name, extra={"LINK": name})

    def _apply_changes(self) -> None:
        while self._changes:
            wanted = self._changes.popleft()
            if isinstance(wanted, tuple):
                _, self._weights, self._standby = wanted
                for link in self.links.values():
                    link.apply_policy(self._weights, self._standby)
                continue
            for name in list(self.links):
                if name not in wanted or wanted[name] != self.links[name].source:
                    self._remove_link(name)
            for name, source in wanted.items():
                if name not in self.links:
                    self._add_link(name, source)

    # --- the loop -----------------------------------------------------------------------------------

    def _run(self) -> None:
        next_house = 0.0
        while not self._stop.is_set():
            self.heartbeat.beat()
            for key, _ in self.sel.select(timeout=0.01):
                try:
                    if key.data is None:
                        self._from_caller()
                    else:
                        self._from_link(key.data)
                except OSError as e:
                    self.dropped[f"socket error: {e.strerror}"] += 1
            now = time.monotonic()
            if now >= next_house:
                self._apply_changes()
                self._housekeeping(now)
                next_house = now + 0.02

    def _ms(self) -> int:
        return int((time.monotonic() - self._epoch) * 1000)

    def _from_caller(self) -> None:
        while True:
            try:
                d, addr = self.local.recvfrom(2048)
            except BlockingIOError:
                return
            self.caller = addr
            if self._still_flying(d):
                continue
            self._send(d)

    def _still_flying(self, d: bytes) -> bool:
        """A retransmission SRT asked for because packets over two links of different
        depth arrive out of order, not because one was lost: its original is younger
        than its link's current RTT. Sending it again would only add load to links
        that are already queueing (a retransmission storm). If the original was in
        fact lost, SRT's periodic NAK asks again after an RTT, and then it goes."""
        seq = srtla.srt_seq(d)
        flying = self.flight.sent_on(seq) if seq is not None else None
        link = self.links.get(flying[0]) if flying is not None else None
        if link is None or link.state != "up" or not link.rtts:
            return False
        if time.monotonic() - flying[1] < max(link.rtts[-1], link.srtt or 0.0) + 0.01:
            self.held += 1
            return True
        return False

    def _send(self, d: bytes) -> bool:
        """On the best live link; if that one refuses the packet, the next best tries."""
        tried: set[str] = set()
        while (link := self._choose(tried)) is not None:
            if self._send_on(link, d):
                return True
            tried.add(link.name)
        self.dropped["no live uplink"] += 1
        return False

    def _send_on(self, link: Link, d: bytes) -> bool:
        try:
            self._sendto(link, d)
        except OSError as e:
            if isinstance(e, BlockingIOError) or e.errno == errno.ENOBUFS:
                link.congested()
                self.dropped[f"{link.name} queue full"] += 1
            else:
                # The interface went down or lost its route: no need to wait for silence.
                self._declare_dead(link, time.monotonic(), why=f"send failed: {e.strerror}")
            return False
        link.sent += 1
        link.bytes_sent += len(d)
        link.last_sent = time.monotonic()
        seq = srtla.srt_seq(d)
        if seq is not None:
            self.flight.sent(seq, link.name, d, link.last_sent)
        return True

    def _choose(self, exclude: set[str] = frozenset()) -> Link | None:
        """The best live link; links on standby only when no other is live (failover)."""
        best = spare = None
        for link in self.links.values():
            if link.state != "up" or link.name in exclude:
                continue
            if link.standby:
                if spare is None or link.score() > spare.score():
                    spare = link
            elif best is None or link.score() > best.score():
                best = link
        return best or spare

    def _from_link(self, name: str) -> None:
        link = self.links.get(name)
        if link is None:
            return
        while True:
            try:
                d, addr = link.sock.recvfrom(2048)
            except BlockingIOError:
                return
            if not self.relay.matches(link.family, addr):
                self.dropped["not from the relay"] += 1
                continue
            now = time.monotonic()
            self.relay.heard(now)
            self._handle(link, d, now)

    def _sendto(self, link: Link, d: bytes) -> None:
        relay = self.relay.current.get(link.family)
        if relay is None:
            raise OSError(errno.EDESTADDRREQ, "the relay's address is not known")
        link.sock.sendto(d, relay)

    def _handle(self, link: Link, d: bytes, now: float) -> None:
        """One datagram from the relay. Only a well-formed one proves the link alive;
        anything else is dropped and counted by what was wrong with it."""
        t = srtla.kind(d)
        if t is None:
            self.dropped["short"] += 1
        elif t == srtla.REG_NGP:
            link.last_rx = now
            link.challenge = srtla.challenge_of(d) or link.challenge
            if self.reg.stale(link, now, self.links.values()):
                self.dropped["stale REG_NGP"] += 1
            elif (reg1 := self.reg.reg1(link, now)) is not None:
                self._sendto(link, reg1)
        elif t == srtla.REG2:
            if (why := self.reg.grouped(d)) is not None:
                self.dropped[why] += 1
            else:
                link.last_rx = now
                for other in self.links.values():
                    self._reg2(other, now)
        elif t == srtla.REG3:
            link.last_rx = now
            if link.state in ("registering", "dead"):
                if link.state == "dead":
                    log.info("bond: uplink %s answers again: on probation", link.name, extra={"LINK": link.name})
                link.state, link.echoes_since_reg = "probation", 0
                link.rtts.clear()
        elif t == srtla.REG_NAK and self.reg.asks_proof(d):
            link.last_rx, link.challenge = now, srtla.challenge_of(d)
            self._reg2(link, now)
        elif t in (srtla.REG_ERR, srtla.REG_NAK):
            self.dropped["registration refused"] += 1
        elif t == srtla.KEEPALIVE:
            sent = srtla.keepalive_timestamp(d)
            if sent is None or sent > self._ms():
                self.dropped["bad keepalive"] += 1
                return
            link.last_rx = now
            if link.echo((self._ms() - sent) / 1000):
                log.info("bond: uplink %s up (RTT %.0f ms)", link.name, link.srtt * 1000, extra={"LINK": link.name})
        elif t == srtla.ACK:
            seqs = srtla.parse_srtla_ack(d)
            if not seqs:
                self.dropped["bad SRTLA ACK length"] += 1
                return
            link.last_rx = now
            self._srtla_ack(link, seqs)
        elif 0x9000 <= t < 0xA000:
            self.dropped["unknown SRTLA type"] += 1
        elif len(d) < srtla.MIN_SRT:
            self.dropped["short SRT packet"] += 1
        else:
            link.last_rx = now
            if t == srtla.SRT_ACK:
                ack = srtla.srt_ack_number(d)
                if ack is not None:
                    self.flight.acked_below(ack)
            elif t == srtla.SRT_NAK:
                self._naked(srtla.srt_nak_ranges(d))
            if self.caller is not None:
                self.local.sendto(d, self.caller)  # SRT's own traffic, back to the caller

    def _srtla_ack(self, link: Link, seqs: list[int]) -> None:
        link.acked += len(seqs)
        for seq in seqs:
            if self.flight.arrived(link.name, seq):
                if len(link.in_flight) * 1000 > link.window:
                    link.widen(29)
        for other in self.links.values():
            if other.state == "up":
                other.widen(1)

    def _naked(self, ranges: list[tuple[int, int]]) -> None:
        for first, last in ranges:
            for seq in range(first, min(last, first + 256) + 1):
                hit = self.flight.lost(seq)
                if hit is not None and hit[0] in self.links:
                    self.links[hit[0]].lost(first=hit[1])

    # --- housekeeping: keepalives, registration, dead links ----------------------------------------

    def _housekeeping(self, now: float) -> None:
        self.relay.poll(now, carrying=any(link.state in ("up", "probation") for link in self.links.values()))
        for link in list(self.links.values()):
            if link.state in ("registering", "dead") and now - link.last_reg >= REGISTER_EVERY:
                link.last_reg = now
                self._reg2(link, now)
            if link.state != "registering" and now - link.last_keepalive >= KEEPALIVE_EVERY:
                link.last_keepalive = now
                try:
                    self._sendto(link, srtla.keepalive(self._ms(), link.srtt))  # (our RTT: for the relay's view)
                except OSError:
                    pass
            if link.state in ("up", "probation") and link.last_rx and now - link.last_rx > link.dead_after():
                if link.state == "up" and not any(o.state == "up" for o in self.links.values() if o is not link):
                    # Every link went quiet: a queue filling behind a fall in capacity, far more
                    # often than every link cut at once. Declared dead, the last one would only
                    # turn SRT's packets away; kept, they wait in that queue and arrive.
                    if not link.kept:
                        link.kept = True
                        log.warning("bond: uplink %s silent for %.0f ms, but it is the last one: kept", link.name,
                                    (now - link.last_rx) * 1000, extra={"LINK": link.name})
                    continue
                self._declare_dead(link, now)
            elif link.kept and now - link.last_rx <= link.dead_after():
                link.kept = False
                log.info("bond: uplink %s answers again", link.name, extra={"LINK": link.name})

    def _reg2(self, link: Link, now: float) -> None:
        try:
            self._sendto(link, self.reg.reg2(link, now))
        except OSError:
            pass  # an uplink that cannot send is found dead by its silence, or by its next data packet

    def _declare_dead(self, link: Link, now: float, why: str | None = None) -> None:
        if link.state == "dead":
            return
        silent = link.die(now)
        if why:
            log.warning("bond: uplink %s dead: %s", link.name, why, extra={"LINK": link.name})
        else:
            log.warning("bond: uplink %s dead: nothing back for %.0f ms (limit %.0f ms from its RTT)", link.name,
                        silent * 1000, link.dead_after() * 1000,
                        extra={"LINK": link.name, "SILENT_MS": round(silent * 1000)})
        moved = self._rescue(link, now)
        # Its traffic has moved once nothing new goes to it (the scores may have turned
        # away from it before it was declared dead) and what it held was re-sent.
        link.moved_ms.append(round(((now if moved else max(link.last_rx, link.last_sent)) - link.last_rx) * 1000, 1))

    def _rescue(self, link: Link, now: float) -> int:
        """Re-send what was in flight on a lost link over the healthy ones, now."""
        if not self.rescue:
            return 0
        moved = 0
        for packet in self.flight.take(link.name):
            moved += self._send(packet)
        self.resent += moved
        if moved:
            log.info("bond: re-sent %d in-flight packets of %s on the other uplinks", moved, link.name)
        return moved

