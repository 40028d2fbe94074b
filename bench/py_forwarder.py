"""The floor for a relay in CPython, for bench/relay_scale.py: bench/udp_forwarder.c's
job (each source's datagrams to the server through a socket of its own, and back) in
plain Python over epoll, with no protocol at all. What this costs over the C forwarder
is what CPython's calls cost per datagram, before any of the relay's own work.

    python bench/py_forwarder.py LISTEN_PORT SERVER_PORT [--recvmmsg]   (both on 127.0.0.1)

--recvmmsg reads the listening socket in batches through ctypes (recvmmsg(2)), as
the C forwarder does: at a fleet's packet rates a wake-up finds some ten datagrams,
and ctypes' cost per call and per field then exceeds the system calls it saves.
"""

import ctypes
import select
import socket
import struct
import sys

BATCH = 64
SIZE = 2048
NAME = 16  # a sockaddr_in
MSG_DONTWAIT = 0x40


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(_Iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


class Batches:
    """recvmmsg(2) into buffers made once: -> [(datagram view, sockaddr bytes)]."""

    def __init__(self, fd: int):
        self.fd = fd
        self.recvmmsg = ctypes.CDLL(None, use_errno=True).recvmmsg
        self.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        self.bufs, self.names = ctypes.create_string_buffer(BATCH * SIZE), ctypes.create_string_buffer(BATCH * NAME)
        self.iovs, self.msgs = (_Iovec * BATCH)(), (_Mmsghdr * BATCH)()
        for i in range(BATCH):
            self.iovs[i].base, self.iovs[i].len = ctypes.addressof(self.bufs) + i * SIZE, SIZE
            hdr = self.msgs[i].hdr
            hdr.name, hdr.namelen = ctypes.addressof(self.names) + i * NAME, NAME
            hdr.iov, hdr.iovlen = ctypes.pointer(self.iovs[i]), 1
        self.data, self.name = memoryview(self.bufs).cast("B"), memoryview(self.names).cast("B")

    def read(self) -> list:
        n = self.recvmmsg(self.fd, ctypes.addressof(self.msgs), BATCH, MSG_DONTWAIT, None)
        out = []
        for i in range(max(n, 0)):
            out.append((self.data[i * SIZE:i * SIZE + self.msgs[i].len], bytes(self.name[i * NAME:i * NAME + 8])))
            self.msgs[i].hdr.namelen = NAME
        return out


def main() -> None:
    listen_port, server_port = int(sys.argv[1]), int(sys.argv[2])
    batched = "--recvmmsg" in sys.argv[3:]
    lsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    lsock.bind(("127.0.0.1", listen_port))
    lsock.setblocking(False)
    server = ("127.0.0.1", server_port)
    upstream: dict[tuple, socket.socket] = {}
    back: dict[int, tuple[socket.socket, tuple]] = {}
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN)
    batches = Batches(lsock.fileno()) if batched else None
    print("ready", flush=True)
    while True:
        for fd, _ in ep.poll():
            if fd == lsock.fileno() and batches is not None:
                while got := batches.read():
                    for d, name in got:
                        up = upstream.get(name)
                        if up is None:
                            up = upstream[name] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                            up.connect(server)
                            up.setblocking(False)
                            back[up.fileno()] = (up, (socket.inet_ntoa(name[4:8]), struct.unpack(">H", name[2:4])[0]))
                            ep.register(up.fileno(), select.EPOLLIN)
                        up.send(d)
                    if len(got) < BATCH:
                        break
            elif fd == lsock.fileno():
                for _ in range(BATCH):
                    try:
                        d, addr = lsock.recvfrom(2048)
                    except BlockingIOError:
                        break
                    up = upstream.get(addr)
                    if up is None:
                        up = upstream[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.connect(server)
                        up.setblocking(False)
                        back[up.fileno()] = (up, addr)
                        ep.register(up.fileno(), select.EPOLLIN)
                    up.send(d)
            else:
                up, addr = back[fd]
                for _ in range(BATCH):
                    try:
                        d = up.recv(2048)
                    except BlockingIOError:
                        break
                    lsock.sendto(d, addr)


if __name__ == "__main__":
    main()
