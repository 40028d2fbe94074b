"""The floor for a relay in CPython, for bench/relay_scale.py: bench/udp_forwarder.c's
job (each source's datagrams to the server through a socket of its own, and back) in
plain Python over epoll, with no protocol at all. What this costs over the C forwarder
is what CPython's calls cost per datagram, before any of the relay's own work.

    python bench/py_forwarder.py LISTEN_PORT SERVER_PORT   (both on 127.0.0.1)
"""

import select
import socket
import sys

BATCH = 64


def main() -> None:
    listen_port, server_port = int(sys.argv[1]), int(sys.argv[2])
    lsock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    lsock.bind(("127.0.0.1", listen_port))
    lsock.setblocking(False)
    server = ("127.0.0.1", server_port)
    upstream: dict[tuple, socket.socket] = {}
    back: dict[int, tuple[socket.socket, tuple]] = {}
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN)
    print("ready", flush=True)
    while True:
        for fd, _ in ep.poll():
            if fd == lsock.fileno():
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
