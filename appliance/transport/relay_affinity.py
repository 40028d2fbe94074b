"""A group's links on one worker, when the relay runs several (relay_workers.py).

The workers' listening sockets share the port (SO_REUSEPORT), and the kernel hashes
each datagram to one of them by its addresses and ports: a sender's links, each from
its own address, would land on different workers. So:

- the worker that makes a group writes its index into the group id (the relay's
  half, byte 128), and every REG2 names its group by that id: a worker that gets a
  REG2 for another's group hands it to that one (a datagram over a Unix socket), so
  the owner alone registers, challenges and answers the group's links;
- a REG2 handed over says that the kernel gives that address's datagrams to another
  worker: the owner gives such a link a socket of its own, bound to the same port and
  connected to the link's address. The kernel prefers a connected socket whose peer
  matches to the hash of the reuseport group, so from then on everything that link
  sends reaches the owner. A link whose REG2 reached the owner directly is hashed to
  it already and needs none (each pinned link costs a wake-up of its own). The
  kernel leaves connected sockets out of the hash, so pinning one moves no other
  (tests/test_relay_workers.py would see it: links whose data went astray); were a
  link's datagrams ever to go astray, its sender hears nothing back on it and
  registers it again, and that REG2, handed over, pins it.

A mixin of Relay's: what it sends and the links it pins are the relay's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct

log = logging.getLogger("appliance.transport.relay")

_HANDED = struct.Struct(">BH")  # the sender's host's length, its port; then the host, then the datagram


def handed(d: bytes, addr) -> bytes:
    host = addr[0].encode()
    return _HANDED.pack(len(host), addr[1]) + host + d


def unhanded(m: bytes) -> tuple[bytes, tuple] | None:
    """-> (datagram, the sender's address), or None for what is not a hand-over."""
    if len(m) < _HANDED.size:
        return None
    n, port = _HANDED.unpack_from(m)
    host = m[_HANDED.size:_HANDED.size + n]
    if len(host) < n or not n:
        return None
    try:
        return m[_HANDED.size + n:], (host.decode("ascii"), port)
    except UnicodeDecodeError:
        return None


class RelayAffinity:
    worker: tuple[int, int]  # (this one's index, how many)
    hand_over: list[socket.socket] | None  # to each worker's inbox (None: the only one)
    inbox: socket.socket | None

    def _owner(self, gid: bytes) -> int | None:
        """The worker that holds this group, when it is another one."""
        index, count = self.worker
        return gid[128] if count > 1 and gid[128] < count and gid[128] != index else None

    def _relay_half(self) -> bytes:
        index, count = self.worker
        return bytes([index]) + os.urandom(127) if count > 1 else os.urandom(128)

    def _hand_over(self, owner: int, d: bytes, addr) -> None:
        try:
            self.hand_over[owner].send(handed(d, addr))
            self.handed += 1
        except BlockingIOError:
            self.dropped["REG2 for another worker, its inbox full"] += 1
        except OSError:
            self.dropped["REG2 for another worker, gone"] += 1

    def _start_inbox(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.inbox is not None:
            self.inbox.setblocking(False)
            loop.add_reader(self.inbox.fileno(), self._from_inbox)

    def _from_inbox(self) -> None:
        for _ in range(64):
            try:
                m = self.inbox.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            got = unhanded(m)
            if got is None:
                self.dropped["bad hand-over"] += 1
                continue
            self._reg2(*got, handed=True)

    def _stop_inbox(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.inbox is not None:
            loop.remove_reader(self.inbox.fileno())

    def _pin(self, link) -> None:
        """The link's own socket, connected to it (see above): for a handed-over REG2's."""
        listening = self.sock
        s = socket.socket(listening.family, socket.SOCK_DGRAM)
        try:
            if listening.family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                             listening.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.setblocking(False)
            s.bind(listening.getsockname())
            s.connect(link.addr)
        except OSError as e:  # (out of descriptors): the link stays, its datagrams may reach another worker
            s.close()
            self.dropped["links not pinned to their worker"] += 1
            log.warning("relay: cannot pin link %s to its worker: %s", link.addr, e)
            return
        asyncio.get_running_loop().add_reader(s.fileno(), self._readable, s)
        link.sock = s

    def _unpin(self, link) -> None:
        if link.sock is not None:
            try:
                asyncio.get_running_loop().remove_reader(link.sock.fileno())
            except RuntimeError:  # (no loop: the relay stopped with it)
                pass
            link.sock.close()
            link.sock = None
