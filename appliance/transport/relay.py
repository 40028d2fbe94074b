"""The SRTLA receiver: merges a sender's uplinks back into one SRT peer.

srtla_rec's semantics (specs/srtla.md): groups of links registered with
REG1/REG2/REG3; every datagram of a registered link forwarded to the SRT
server through one UDP socket per group (the server sees one peer); an SRTLA
ACK to a link after every 10 data packets from it; SRT ACKs back on every link,
all other return traffic on the link that delivered most recently; links
silent for 10 s and empty groups removed every 3 s.

Better than the reference where it is weak: an optional shared secret (only
senders that hold it can create groups), and hard limits on groups and links
so that whatever unknown senders do, memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field

from appliance.transport import srtla

log = logging.getLogger(__name__)

LINK_TIMEOUT = 10.0
GROUP_TIMEOUT = 10.0
CLEANUP_EVERY = 3.0


@dataclass
class Link:
    addr: tuple
    last: float
    received: int = 0
    pending_acks: list[int] = field(default_factory=list)


@dataclass
class Group:
    gid: bytes
    created: float
    links: dict[tuple, Link] = field(default_factory=dict)
    last_link: tuple | None = None
    transport: asyncio.DatagramTransport | None = None
    opening: bool = False  # the server-side socket is being made: a second REG2 must not make another
    bytes_in: int = 0


class _ServerSide(asyncio.DatagramProtocol):
    """The group's one UDP socket towards the SRT server."""

    def __init__(self, relay: "Relay", group: Group):
        self.relay, self.group = relay, group

    def datagram_received(self, data: bytes, addr) -> None:
        self.relay._from_server(self.group, data)

    def error_received(self, exc) -> None:
        self.relay.dropped["server unreachable"] += 1


class Relay(asyncio.DatagramProtocol):
    def __init__(self, listen: tuple[str, int], server: tuple[str, int], secret: bytes | None = None,
                 max_groups: int = 200, max_links: int = 8):
        self.listen, self.server = listen, server
        self.secret = secret or None
        self.max_groups, self.max_links = max_groups, max_links
        self.groups: dict[bytes, Group] = {}
        self.by_addr: dict[tuple, Group] = {}
        self.dropped: Counter[str] = Counter()
        self.forwarded = 0
        self.transport: asyncio.DatagramTransport | None = None
        self._cleanup: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=self.listen)
        self.listen = self.transport.get_extra_info("sockname")[:2]
        self._cleanup = loop.create_task(self._cleanup_loop(), name="relay-cleanup")
        log.info("relay: listening on %s:%d, forwarding to %s:%d%s", *self.listen, *self.server,
                 " (shared secret required)" if self.secret else "")

    async def stop(self) -> None:
        if self._cleanup:
            self._cleanup.cancel()
        for g in list(self.groups.values()):
            self._drop_group(g)
        if self.transport:
            self.transport.close()

    def status(self) -> dict:
        return {"groups": len(self.groups), "links": sum(len(g.links) for g in self.groups.values()),
                "forwarded": self.forwarded, "dropped": dict(self.dropped)}

    # --- from the senders ----------------------------------------------------------------------

    def datagram_received(self, d: bytes, addr) -> None:
        addr = addr[:2]
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
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def _reg1(self, d: bytes, addr) -> None:
        ident = srtla.reg_id(d, srtla.REG1)
        if ident is None:
            self.dropped["bad REG1 length"] += 1
            return
        if addr in self.by_addr:
            self.dropped["REG1 from a registered address"] += 1
            return self._send(srtla.short(srtla.REG_ERR), addr)
        if self.secret and not srtla.id_signed(ident, self.secret):
            self.dropped["REG1 without the shared secret"] += 1
            return self._send(srtla.short(srtla.REG_ERR), addr)
        if len(self.groups) >= self.max_groups:
            self.dropped["REG1 over the group limit"] += 1
            return self._send(srtla.short(srtla.REG_ERR), addr)
        gid = ident[:128] + os.urandom(128)
        self.groups[gid] = Group(gid, time.monotonic())
        log.info("relay: new group from %s:%d", *addr)
        self._send(srtla.reg(srtla.REG2, gid), addr)

    def _reg2(self, d: bytes, addr) -> None:
        gid = srtla.reg_id(d, srtla.REG2)
        if gid is None:
            self.dropped["bad REG2 length"] += 1
            return
        group = self.groups.get(gid)
        if group is None:
            return self._send(srtla.short(srtla.REG_NGP), addr)
        other = self.by_addr.get(addr)
        if other is not None and other is not group:
            return self._send(srtla.short(srtla.REG_ERR), addr)
        if addr not in group.links:
            if len(group.links) >= self.max_links:
                self.dropped["REG2 over the link limit"] += 1
                return self._send(srtla.short(srtla.REG_ERR), addr)
            group.links[addr] = Link(addr, time.monotonic())
            self.by_addr[addr] = group
            log.info("relay: link %s:%d joined a group (%d links)", *addr, len(group.links))
            if group.transport is None and not group.opening:
                self._open_server_side(group)
        group.links[addr].last = time.monotonic()
        self._send(srtla.short(srtla.REG3), addr)

    def _open_server_side(self, group: Group) -> None:
        loop = asyncio.get_running_loop()

        async def connect():
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _ServerSide(self, group), remote_addr=self.server)
                if self.groups.get(group.gid) is group:
                    group.transport = transport
                else:
                    transport.close()  # the group expired while its socket was being made
            except OSError as e:
                log.error("relay: cannot reach the SRT server %s:%d: %s", *self.server, e)
            finally:
                group.opening = False
        group.opening = True
        task = loop.create_task(connect())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _data(self, d: bytes, addr, t: int) -> None:
        group = self.by_addr.get(addr)
        if group is None:
            self.dropped["unregistered"] += 1
            return
        link = group.links[addr]
        link.last = time.monotonic()
        if t == srtla.KEEPALIVE:
            return self._send(d, addr)  # echoed whole: the sender's timestamp comes back
        if len(d) < srtla.MIN_SRT:
            self.dropped["shorter than an SRT header"] += 1
            return
        group.last_link = addr
        group.bytes_in += len(d)
        if group.transport is not None:
            group.transport.sendto(d)
            self.forwarded += 1
        else:
            self.dropped["server side not ready"] += 1
        seq = srtla.srt_seq(d)
        if seq is not None:
            link.received += 1
            link.pending_acks.append(seq)
            if len(link.pending_acks) == srtla.ACK_SEQS:
                self._send(srtla.srtla_ack(link.pending_acks), addr)
                link.pending_acks = []

    # --- from the server ------------------------------------------------------------------------

    def _from_server(self, group: Group, d: bytes) -> None:
        if srtla.kind(d) == srtla.SRT_ACK:
            for addr in group.links:
                self._send(d, addr)
        elif group.last_link is not None:
            self._send(d, group.last_link)

    # --- housekeeping -----------------------------------------------------------------------------

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(CLEANUP_EVERY)
            self.cleanup(time.monotonic())

    def cleanup(self, now: float) -> None:
        for group in list(self.groups.values()):
            for addr, link in list(group.links.items()):
                if now - link.last > LINK_TIMEOUT:
                    del group.links[addr]
                    self.by_addr.pop(addr, None)
                    log.info("relay: link %s:%d silent for %.0f s: removed", *addr, LINK_TIMEOUT)
                    if group.last_link == addr:
                        group.last_link = None
            if not group.links and now - group.created > GROUP_TIMEOUT:
                self._drop_group(group)

    def _drop_group(self, group: Group) -> None:
        self.groups.pop(group.gid, None)
        for addr in group.links:
            self.by_addr.pop(addr, None)
        if group.transport is not None:
            group.transport.close()
            group.transport = None


async def serve(listen_port: int, to: str, secret: bytes | None, bind: str = "0.0.0.0",
                max_groups: int = 200, max_links: int = 8) -> None:
    """`appliance relay`: run until SIGTERM/SIGINT."""
    import signal

    from appliance.transport.names import parse_srt_url

    host, port, _ = parse_srt_url(to, "--to")
    relay = Relay((bind, listen_port), (host, port), secret, max_groups, max_links)
    await relay.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await relay.stop()
