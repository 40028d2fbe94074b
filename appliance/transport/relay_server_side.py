"""The relay's side towards the SRT server (the ingest): one connected UDP socket per
group, so the server sees one peer whatever the group's links; made off the loop's
path (the server's name is looked up in the executor), tried again while the name
does not resolve or the port refuses, and what the server sends back. A mixin of
Relay's: the groups and the counters are the relay's."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from appliance.transport import srtla
from appliance.transport.relay_stats import show_addr as _show

log = logging.getLogger("appliance.transport.relay")

RECV_SIZE = 2048
BATCH = 64  # datagrams read for one wake-up of the loop


class RelayServerSide:
    def _open_server_side(self, group) -> None:
        loop = asyncio.get_running_loop()

        async def connect():
            try:
                infos = await loop.getaddrinfo(*self.server, type=socket.SOCK_DGRAM)
                self._server_addrs = addrs = list(dict.fromkeys(i[4][:2] for i in infos))
                addr = addrs[(self._server_first + group.server_try) % len(addrs)]
                if self.groups.get(self._key(group.gid)) is group:  # (not expired while it was looked up)
                    sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_DGRAM)
                    try:
                        sock.setblocking(False)
                        sock.connect(addr)  # (UDP: at once; only what the server sends comes in)
                    except OSError:
                        sock.close()  # (no route to it now: tried again with the group's next packets)
                        raise
                    group.sock, group.server_addr = sock, addr
                    if not self._fast_group(group, loop):
                        loop.add_reader(sock.fileno(), self._from_server_side, group, sock)
                    for d in group.waiting:
                        self._forward(group, d)
                    group.waiting.clear()
                if self._server_error:
                    log.info("relay: the SRT server %s is reachable again", _show(self.server))
                    self._server_error = ""
            except OSError as e:  # (socket.gaierror among them: a name that does not resolve)
                self.dropped["server side not ready"] += len(group.waiting)
                group.waiting.clear()
                if str(e) != self._server_error:
                    log.error("relay: cannot reach the SRT server %s: %s: retrying", _show(self.server), e)
                self._server_error = str(e)
            finally:
                group.opening = False
        group.opening, group.opened_at = True, time.monotonic()
        task = loop.create_task(connect())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _forward(self, group, d: bytes) -> None:
        try:
            group.sock.send(d)
            self.forwarded += 1
        except BlockingIOError:
            self.dropped["the server's send buffer full"] += 1
            group.dropped += 1
        except ConnectionRefusedError:  # (the ICMP error of an earlier one: this one did not go)
            self.dropped["server unreachable"] += 1
            group.dropped += 1
            self._server_refused(group)
        except OSError:
            self.dropped["server unreachable"] += 1
            group.dropped += 1

    # --- from the server ------------------------------------------------------------------------

    def _from_server_side(self, group, sock: socket.socket) -> None:
        for _ in range(BATCH):
            try:
                d = sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                self.dropped["server unreachable"] += 1
                return self._server_refused(group)
            except OSError:
                self.dropped["server unreachable"] += 1
                return
            self._from_server(group, d)

    def _close_server_side(self, group) -> None:
        if group.sock is not None:
            self._fast_ungroup(group)
            asyncio.get_running_loop().remove_reader(group.sock.fileno())
            group.sock.close()
            group.sock = None

    def _server_refused(self, group) -> None:
        """The server's port refuses at this address (ICMP port unreachable: localhost is ::1 first,
        the server on IPv4 only): the group tries the next; the caller repeats its handshake."""
        if group.sock is None or group.opening:
            return
        refused = group.server_addr
        self._close_server_side(group)
        group.server_try += 1
        self._open_server_side(group)
        addrs = self._server_addrs
        after = addrs[(self._server_first + group.server_try) % len(addrs)] if addrs else None
        if (refused, after) != self._refusal and after != refused:  # said once, not per group
            self._refusal = (refused, after)
            log.warning("relay: the SRT server %s refuses at %s: trying %s", _show(self.server), _show(refused),
                        _show(after))

    def _answered(self, group) -> None:
        if group.server_addr is not None and group.server_try:  # this one answers: the next groups start here
            self._server_first, group.server_try = self._server_first + group.server_try, 0

    def _from_server(self, group, d: bytes) -> None:
        self._answered(group)
        if srtla.kind(d) == srtla.SRT_ACK:
            for addr in group.links:
                self._send(d, addr)
        elif group.last_link is not None:
            self._send(d, group.last_link)

