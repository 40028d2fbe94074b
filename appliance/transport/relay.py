"""The SRTLA receiver: merges a sender's uplinks back into one SRT peer.

srtla_rec's semantics (specs/srtla.md): groups of links registered with
REG1/REG2/REG3; every datagram of a registered link forwarded to the SRT
server through one UDP socket per group (the server sees one peer); an SRTLA
ACK to a link after every 10 data packets from it; SRT ACKs back on every link,
all other return traffic on the link that delivered most recently; links
silent for 10 s and empty groups removed every 3 s.

Better than the reference where it is weak:
- an optional shared secret. Then every REG1 and every REG2 carries a proof
  bound to a challenge the relay gave that source address a moment ago, each
  challenge good once and for 10 s (docs/relay-auth.md): a captured REG1 or REG2
  replayed from anywhere, or a stale one, is refused and counted, and an address
  joins a group, and gets its return traffic, only once it proved itself;
- limits per source (groups, registrations a second) besides the global ones, so a
  flood from one address cannot crowd out other senders; groups that register and
  carry no data are reaped within seconds; memory stays bounded whatever unknown
  senders do.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from appliance.transport import relay_stats, srtla
from appliance.transport.relay_affinity import RelayAffinity
from appliance.transport.relay_fastpath import RelayFastPath
from appliance.transport.relay_gate import RelayGate, source_of
from appliance.transport.relay_server_side import BATCH, RECV_SIZE, RelayServerSide
from appliance.transport.relay_stats import show_addr as _show

log = logging.getLogger(__name__)

LINK_TIMEOUT = 10.0
GROUP_TIMEOUT = 10.0
CLEANUP_EVERY = 1.0
SERVER_RETRY = 1.0  # s between attempts to open a group's socket towards the ingest
WAITING_MAX = 64  # packets kept for the ingest while its socket is being made
_SEQ = struct.Struct(">I")
RCVBUF = 4 << 20  # a burst from many senders while the loop is busy (the kernel caps it at rmem_max)
IDLE_GROUP = 5.0  # s: registered, no data ever, no keepalive since (irlserver/srtla reaps any without data)
PER_SOURCE_GROUPS = 16  # a carrier NAT puts many boxes behind one address: not 1


def listening_socket(host: str, port: int, reuseport: bool = False) -> socket.socket:
    """Where the senders register: ADDRESS "" is every IPv4 and IPv6 address (one dual-stack
    socket, IPv4 senders seen as ::ffff:a.b.c.d), or every IPv4 one where IPv6 is off.
    reuseport: one of several workers' (relay_workers)."""
    if host:
        family, _, _, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
    else:
        where = ("::", port)
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except OSError:  # a kernel booted with ipv6.disable=1
            sock, where = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), ("0.0.0.0", port)
    try:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.bind(where)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class Link:
    addr: tuple
    last: float
    pending_acks: list[int] = field(default_factory=list)
    packets: int = 0  # what came in on it (data and control, keepalives aside)
    bytes: int = 0
    rtt_ms: float | None = None  # the sender's, where its keepalives carry it (srtla.keepalive_rtt_ms)
    sock: socket.socket | None = None  # its own, with several workers (relay_affinity)
    rate: tuple = (0.0, 0.0)  # (packets/s, bytes/s) over the last sample (relay_stats.sample)
    sampled: tuple = (0.0, 0, 0)  # (when, packets, bytes) at the last sample
    slot: int = -1  # in the C side's table, while it forwards this link's data (relay_fastpath)


@dataclass
class Group:
    gid: bytes
    created: float
    source: str = ""  # who made it (source_of), for the per-source limit
    links: dict[tuple, Link] = field(default_factory=dict)
    last_link: tuple | None = None
    sock: socket.socket | None = None  # its one UDP socket towards the SRT server (connected)
    opening: bool = False  # the server-side socket is being made: a second REG2 must not make another
    opened_at: float = 0.0  # when it was last tried (the ingest's name may not resolve yet)
    waiting: list[bytes] = field(default_factory=list)  # what came while it was being made
    bytes_in: int = 0
    dropped: int = 0  # its packets the relay could not forward
    stream_id: str | None = None
    last_keepalive: float = 0.0  # a box kept READY keeps its group registered with keepalives alone
    server_try: int = 0  # which of the server name's addresses (in getaddrinfo's order) it tries
    server_addr: tuple | None = None
    slot: int = -1  # in the C side's table (relay_fastpath)


class Relay(RelayGate, RelayServerSide, RelayAffinity, RelayFastPath):
    def __init__(self, listen: tuple[str, int], server: tuple[str, int], secret: bytes | None = None,
                 max_groups: int = 200, max_links: int = 8, *, sock: socket.socket | None = None,
                 worker: tuple[int, int] = (0, 1), gate_key: bytes | None = None,
                 hand_over: list[socket.socket] | None = None, inbox: socket.socket | None = None,
                 fast: bool = True):
        """sock: bound already (by relay_workers, one per worker); worker, gate_key, hand_over,
        inbox: one of several (relay_affinity); fast: the C hot path where it is built (relay_fastpath)."""
        self.listen, self.server = listen, server
        self.secret = secret or None
        self._init_gate(gate_key, worker[1])
        self.worker, self.hand_over, self.inbox = worker, hand_over, inbox
        self.max_groups, self.max_links = max_groups, max_links
        self.fast = fast
        self.groups: dict[bytes, Group] = {}  # by _key(gid)
        self._groups_of: Counter[str] = Counter()
        self.by_addr: dict[tuple, Group] = {}
        self.dropped: Counter[str] = Counter()
        self.forwarded = 0
        self.handed = 0  # REG2s for another worker's group, handed to it (relay_affinity)
        self.busy, self.busy_sampled = 0.0, (0.0, 0.0, 0)  # of a core (relay_stats.sample)
        self.sock = sock  # the one the senders register and send on
        self._cleanup: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()
        self._server_error = ""  # logged once while it lasts
        self._server_first = 0  # the server name's address that answered last (an index, modulo)
        self._server_addrs: list[tuple] = []  # the name's addresses at the last lookup
        self._refusal: tuple = ()  # (refusing, next) last said

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.sock is None:  # (the name --bind gives is looked up off the loop)
            self.sock = await loop.run_in_executor(None, listening_socket, *self.listen)
        self.sock.setblocking(False)
        self._fast_start(self.fast)
        loop.add_reader(self.sock.fileno(), self._readable)
        self._start_inbox(loop)
        self.listen = self.sock.getsockname()[:2]
        self._cleanup = loop.create_task(self._cleanup_loop(), name="relay-cleanup")
        log.info("relay: listening on %s, forwarding to %s%s", _show(self.listen), _show(self.server),
                 " (shared secret required)" if self.secret else "")

    async def stop(self) -> None:
        if self._cleanup:
            self._cleanup.cancel()
        for task in list(self._pending):  # server sides being made (a lookup in the executor)
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        for g in list(self.groups.values()):
            self._drop_group(g)
        self._stop_inbox(asyncio.get_running_loop())
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        self._fast_stop()

    def status(self) -> dict:
        return {"groups": len(self.groups), "links": sum(len(g.links) for g in self.groups.values()),
                "forwarded": self.forwarded, "handed_over": self.handed, "busy": round(self.busy, 3),
                "dropped": dict(self.dropped)}

    # --- who may register -------------------------------------------------------------------

    def _key(self, gid: bytes) -> bytes:
        """A group by its id; with a secret, less the sender's proof (fresh in every REG2)."""
        return gid[:srtla.PROOF_AT] + gid[128:] if self.secret else gid

    # --- from the senders ----------------------------------------------------------------------

    def _readable(self, sock: socket.socket | None = None) -> None:
        """What is waiting, up to BATCH datagrams for one wake-up of the loop (asyncio's
        datagram transport reads one per wake-up: most of the relay's CPU went there).
        sock: a link's own (relay_affinity), else the listening one."""
        if self.pump is not None:  # one recvmmsg; the links' SRT data forwarded in there
            for d, addr in self.pump.read((sock or self.sock).fileno()):
                self._from_sender(d, addr)
            return
        recv = (sock or self.sock).recvfrom
        for _ in range(BATCH):
            try:
                d, addr = recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # (an ICMP error for something we sent: nothing to read)
                continue
            self._from_sender(d, addr)

    def _from_sender(self, d: bytes, addr) -> None:
        if len(addr) > 2:
            addr = addr[:2]  # (IPv6's flow and scope)
        if len(d) >= srtla.MIN_SRT and not d[0] & 0x80:  # SRT data: the hot path, straight on
            return self._data(d, addr, 0)
        t = srtla.kind(d)
        if t is None:
            self.dropped["short"] += 1
        elif t == srtla.REG1:
            self._reg1(d, addr)
        elif t == srtla.REG2:
            self._reg2(d, addr)
        elif t in (srtla.REG3, srtla.REG_ERR, srtla.REG_NGP, srtla.REG_NAK, srtla.ACK):
            self.dropped["unexpected type"] += 1
        else:
            self._data(d, addr, t)

    def _send(self, data: bytes, addr) -> None:
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            self.dropped["the send buffer full"] += 1
        except (OSError, AttributeError):  # (a link's address gone; or stopped)
            self.dropped["undeliverable to a sender"] += 1

    def _reg1(self, d: bytes, addr) -> None:
        ident = srtla.reg_id(d, srtla.REG1)
        if ident is None:
            self.dropped["bad REG1 length"] += 1
            return
        now = time.monotonic()
        if not self._allowed(addr, now):
            self.dropped["registrations over the per-source rate"] += 1
            return  # no answer: a reply to a flood would only amplify it
        if addr in self.by_addr:
            self.dropped["REG1 from a registered address"] += 1
            return self._send(srtla.short(srtla.REG_ERR), addr)
        if self.secret and (why := self._refused(srtla.REG1, ident, addr, now)):
            self.dropped[f"REG1 {why}"] += 1
            return self._send(srtla.short(srtla.REG_ERR), addr)
        src = source_of(addr)
        if self._groups_of[src] >= PER_SOURCE_GROUPS:
            self.dropped["REG1 over the per-source group limit"] += 1
            return self._send(srtla.short(srtla.REG_ERR), addr)
        if len(self.groups) >= self.max_groups:
            self.dropped["REG1 over the group limit"] += 1
            return self._send(srtla.short(srtla.REG_ERR), addr)
        gid = ident[:128] + self._relay_half()
        self.groups[self._key(gid)] = Group(gid, now, src)
        self._groups_of[src] += 1
        log.info("relay: new group from %s", _show(addr))
        self._send(srtla.reg(srtla.REG2, gid), addr)

    def _reg2(self, d: bytes, addr, handed: bool = False) -> None:
        """handed: by another worker, which the kernel gives this address's datagrams (and which
        counted it against its source's rate)."""
        gid = srtla.reg_id(d, srtla.REG2)
        if gid is None:
            self.dropped["bad REG2 length"] += 1
            return
        now = time.monotonic()
        if not handed and not self._allowed(addr, now):
            self.dropped["registrations over the per-source rate"] += 1
            return
        if (owner := self._owner(gid)) is not None:
            return self._hand_over(owner, d, addr)  # its group is that worker's, and so must its links be
        group = self.groups.get(self._key(gid))
        if group is None:
            if self.secret:  # the challenge its REG1 must answer
                return self._send(srtla.with_challenge(srtla.REG_NGP, self._challenge(addr, int(now))), addr)
            return self._send(srtla.short(srtla.REG_NGP), addr)
        if self.secret and (why := self._refused(srtla.REG2, gid, addr, now, addr in group.links)):
            # A group id seen on the wire is no key: this address proves itself, or it stays out.
            self.dropped[f"REG2 {why}"] += 1
            return self._send(srtla.with_challenge(srtla.REG_NAK, self._challenge(addr, int(now))), addr)
        other = self.by_addr.get(addr)
        if other is not None and other is not group:
            return self._send(srtla.short(srtla.REG_ERR), addr)
        if addr not in group.links:
            if len(group.links) >= self.max_links:
                self.dropped["REG2 over the link limit"] += 1
                return self._send(srtla.short(srtla.REG_ERR), addr)
            group.links[addr] = Link(addr, time.monotonic())
            self.by_addr[addr] = group
            self._fast_link(group, group.links[addr])
            log.info("relay: link %s joined a group (%d links)", _show(addr), len(group.links))
            if group.sock is None and not group.opening:
                self._open_server_side(group)
        if handed and group.links[addr].sock is None:
            self._pin(group.links[addr])
        group.links[addr].last = time.monotonic()
        self._send(srtla.short(srtla.REG3), addr)

    def _data(self, d: bytes, addr, t: int) -> None:
        group = self.by_addr.get(addr)
        if group is None:
            self.dropped["unregistered"] += 1
            return
        link = group.links[addr]
        link.last = now = time.monotonic()
        if t == srtla.KEEPALIVE:
            group.last_keepalive = link.last
            link.rtt_ms = srtla.keepalive_rtt_ms(d)
            return self._send(d, addr)  # echoed whole: the sender's timestamp comes back
        if len(d) < srtla.MIN_SRT:
            self.dropped["shorter than an SRT header"] += 1
            return
        group.last_link = addr
        if link.slot >= 0:  # (SRT control from a link whose data the C side forwards)
            self.pump.delivered(link.slot)
        group.bytes_in += len(d)
        link.packets += 1
        link.bytes += len(d)
        if t == srtla.HANDSHAKE and group.stream_id is None:
            group.stream_id = srtla.srt_stream_id(d)  # (the caller's conclusion: what the producer calls it)
        if group.sock is not None:
            self._forward(group, d)
        elif group.opening and len(group.waiting) < WAITING_MAX:
            group.waiting.append(d)  # the first packets (SRT's handshake) while the socket is made
        else:
            self.dropped["server side not ready"] += 1
            group.dropped += 1
            if not group.opening and now - group.opened_at >= SERVER_RETRY:
                self._open_server_side(group)  # the last try failed (name, route): again
        if not t:  # SRT data: its sequence number goes into the link's next SRTLA ACK
            link.pending_acks.append(_SEQ.unpack_from(d)[0] & 0x7FFFFFFF)
            if len(link.pending_acks) == srtla.ACK_SEQS:
                self._send(srtla.srtla_ack(link.pending_acks), addr)
                link.pending_acks = []

    # --- housekeeping -----------------------------------------------------------------------------

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(CLEANUP_EVERY)
            self.cleanup(time.monotonic())

    def cleanup(self, now: float) -> None:
        self._prune_gate(now)
        self.sync_counters()
        relay_stats.sample(self, now)
        for group in list(self.groups.values()):
            for addr, link in list(group.links.items()):
                if now - link.last > LINK_TIMEOUT:
                    self._fast_unlink(group, link)
                    del group.links[addr]
                    self.by_addr.pop(addr, None)
                    self._unpin(link)
                    log.info("relay: link %s silent for %.0f s: removed", _show(addr), LINK_TIMEOUT)
                    if group.last_link == addr:
                        group.last_link = None
            if not group.links and now - group.created > GROUP_TIMEOUT:
                self._drop_group(group)
            elif not group.bytes_in and now - max(group.created, group.last_keepalive) > IDLE_GROUP:
                self.dropped["groups that never carried data"] += 1
                log.info("relay: a group from %s carried no data nor keepalives in %.0f s: removed", group.source,
                         IDLE_GROUP)
                self._drop_group(group)

    def _drop_group(self, group: Group) -> None:
        if self.groups.pop(self._key(group.gid), None) is not None:
            self._groups_of[group.source] -= 1
            if self._groups_of[group.source] <= 0:
                del self._groups_of[group.source]
        for addr, link in group.links.items():
            self.by_addr.pop(addr, None)
            self._unpin(link)
        self._close_server_side(group)

