"""The relay's hot path in C (_relayfast.c), where it is built: the SRT data and
control of a registered link, forwarded to its group's socket towards the ingest
with the SRTLA ACKs, its keepalives, echoed, and what the ingest sends back, fanned
out to the links, never become Python objects. Python keeps every decision: who
registers, the gate, SRT handshakes (the stream id), the ingest's name and its
retries, the limits, the stats.

The C side holds a table of the links whose group has its socket open (address →
the group's socket) and counts for each; the relay moves a link in when it joins
such a group or the group's socket opens, out when it leaves or the socket closes,
and takes the counts once a second (cleanup) and for each view (/stats), adding
them to the same Link and Group fields the Python path counts in. A link or group
without the module (installed where there was no C compiler) forwards in Python: the same behaviour at about twice the CPU
(bench/relay_scale.py; docs/streaming.md).

A mixin of Relay's: the groups, links and counters are the relay's.
"""

from __future__ import annotations

import asyncio
import errno
import logging

try:
    from appliance.transport import _relayfast
except ImportError:  # (not built: installed without a C compiler)
    _relayfast = None

log = logging.getLogger("appliance.transport.relay")


class RelayFastPath:
    pump = None  # the C side, while the relay runs with it

    def _fast_start(self, wanted: bool) -> None:
        self._by_slot = {}  # the C side's group slots → the groups
        if not wanted:
            log.info("relay: forwarding in Python (--no-fast-path)")
        elif _relayfast is None:
            log.warning("relay: the C fast path is not built (installed without a C compiler): forwarding in "
                        "Python, at about twice the CPU")
        else:
            self.pump = _relayfast.Pump(self.sock.fileno(), self.max_groups * self.max_links, self._fast_refused)

    def _fast_stop(self) -> None:
        self.pump = None

    def _fast_group(self, group, loop: asyncio.AbstractEventLoop) -> bool:
        """The group's socket towards the ingest is open: into the C side, with its links
        (-> False: no C side, the Python path reads that socket). The C side's tables hold
        every group and link the relay admits (max_groups × max_links)."""
        if self.pump is None:
            return False
        group.slot = self.pump.group(group.sock.fileno())
        self._by_slot[group.slot] = group
        for link in group.links.values():
            self._fast_link(group, link)
        loop.add_reader(group.sock.fileno(), self._fast_from_server, group)
        return True

    def _fast_ungroup(self, group) -> None:
        """Its socket is closing: out of the C side, its counts and links with it."""
        if group.slot < 0:
            return
        self._take_group(group)
        for link in group.links.values():
            self._fast_unlink(group, link)
        self.pump.ungroup(group.slot)
        del self._by_slot[group.slot]
        group.slot = -1

    def _fast_link(self, group, link) -> None:
        if group.slot >= 0 and link.slot < 0:
            link.slot = self.pump.link(group.slot, link.addr[0], link.addr[1], link.pending_acks)
            link.pending_acks = []  # (the C side acknowledges them with its next ten)

    def _fast_unlink(self, group, link) -> None:
        if link.slot >= 0:
            counts, link.pending_acks = self.pump.unlink(link.slot)
            self._absorb(group, link, counts)
            link.slot = -1

    def sync_counters(self) -> None:
        """What the C side counted since the last time, into the links and groups."""
        if self.pump is None:
            return
        for group in list(self._by_slot.values()):
            self._take_group(group)
            for link in group.links.values():
                if link.slot >= 0:
                    self._absorb(group, link, self.pump.take(link.slot))
        full, lost = self.pump.take_senders()
        if full:
            self.dropped["the send buffer full"] += full
        if lost:
            self.dropped["undeliverable to a sender"] += lost

    def _take_group(self, group) -> None:
        last, forwarded, full, unreachable = self.pump.take_group(group.slot)
        self.forwarded += forwarded
        if full:
            self.dropped["the server's send buffer full"] += full
        if unreachable:
            self.dropped["server unreachable"] += unreachable
        group.dropped += full + unreachable
        for addr, link in group.links.items():
            if link.slot == last >= 0:
                group.last_link = addr

    @staticmethod
    def _absorb(group, link, counts: tuple) -> None:
        packets, nbytes, last, keepalive_at, rtt_ms = counts
        link.packets += packets
        link.bytes += nbytes
        group.bytes_in += nbytes
        link.last = max(link.last, last)
        if keepalive_at > group.last_keepalive:  # (the C side echoed it; Python never saw it)
            group.last_keepalive = keepalive_at
        if keepalive_at:
            link.rtt_ms = rtt_ms if rtt_ms >= 0 else None

    def _fast_refused(self, slot: int) -> None:
        """From the C side: a send to the group's ingest address met the ICMP error of an earlier one."""
        group = self._by_slot.get(slot)
        if group is not None:
            self._server_refused(group)

    def _fast_from_server(self, group) -> None:
        got, error = self.pump.from_server(group.slot)
        if got:
            self._answered(group)
        if error:
            self.dropped["server unreachable"] += 1
            if error == errno.ECONNREFUSED:
                self._server_refused(group)
