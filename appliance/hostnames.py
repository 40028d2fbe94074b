"""Host names: every address the box dials may be a name, an IPv4 or an IPv6 literal.

getaddrinfo() blocks, and has no timeout of its own: with the DNS server out
of reach glibc waits its resolv.conf timeout times its attempts (10 s by
default) and more with several servers. So a lookup runs in a short-lived
thread of its own ("resolve HOST") and the caller waits on it with its own
deadline, or polls it from a loop that must never block (the bond's). A
second lookup of the same name while one is under way joins it: a DNS outage
cannot pile up threads.

Literals are parsed at once, with no thread and no DNS.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

from appliance.errors import ApplianceError, ConfigError

TIMEOUT = 5.0


class NameNotResolved(ApplianceError, ConnectionError):
    """A host name gave no address (DNS failure, unknown name, or no answer in time)."""

    def __init__(self, host: str, why: str, role: str = "host"):
        self.host, self.why, self.role = host, why, role
        super().__init__(f"{role} name does not resolve: {host} ({why})")


def literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        return False


def _sockaddrs(infos) -> list[tuple]:
    out: list[tuple] = []
    for family, _, _, _, addr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and addr not in out:
            out.append(addr)
    return out


class Lookup:
    """One name being resolved in its thread. done() never blocks; wait() does, up to its timeout."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.started = time.monotonic()
        self._done = threading.Event()
        self._addrs: list[tuple] = []
        self._error = ""

    def _start(self) -> None:
        if literal(self.host):
            self._resolve(socket.AI_NUMERICHOST)
        else:
            threading.Thread(target=self._resolve, name=f"resolve {self.host}", daemon=True).start()

    def _resolve(self, flags: int = 0) -> None:
        try:
            self._addrs = _sockaddrs(socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM, 0, flags))
            if not self._addrs:
                self._error = "no IPv4 or IPv6 address"
        except socket.gaierror as e:
            self._error = e.strerror or str(e)
        except (OSError, UnicodeError) as e:  # a name that is not even a name (too long, bad IDNA)
            self._error = str(e)
        finally:
            self._done.set()
            with _lock:
                if _running.get((self.host, self.port)) is self:
                    del _running[(self.host, self.port)]

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, role: str = "host") -> list[tuple]:
        """The addresses (sockaddr tuples, in getaddrinfo's order); NameNotResolved if none."""
        if not self._done.is_set():
            raise NameNotResolved(self.host, "no answer yet", role)
        if self._error:
            raise NameNotResolved(self.host, self._error, role)
        return list(self._addrs)

    def wait(self, timeout: float = TIMEOUT, role: str = "host") -> list[tuple]:
        if not self._done.wait(timeout):
            raise NameNotResolved(self.host, f"no answer within {timeout:g} s", role)
        return self.result(role)


_lock = threading.Lock()
_running: dict[tuple[str, int], Lookup] = {}


def lookup(host: str, port: int) -> Lookup:
    """Start resolving (or join the lookup of the same name still under way)."""
    with _lock:
        running = _running.get((host, port))
        if running is not None and not running.done():
            return running
        look = _running[(host, port)] = Lookup(host, port)
    look._start()
    return look


def resolve(host: str, port: int, timeout: float = TIMEOUT, role: str = "host") -> list[tuple]:
    """Blocking, for threads that may wait (never the event loop or the media thread)."""
    return lookup(host, port).wait(timeout, role)


def split_host_port(netloc_url: str, key: str, scheme: str) -> tuple[str, int, dict]:
    """(host, port, query) of scheme://HOST:PORT[?query], HOST a name, an IPv4 or a
    [bracketed] IPv6 literal. ConfigError names the key (stream.url, --to ...)."""
    try:
        u = urlsplit(netloc_url)
        host, port = u.hostname, u.port
    except ValueError:
        host = port = None
    if u.scheme != scheme or not host or not port:
        raise ConfigError([f"{key}: {netloc_url!r} is not {scheme}://HOST:PORT (an IPv6 address goes in brackets)"])
    return host, port, {k: v[-1] for k, v in parse_qs(u.query).items()}


def parse_srt_url(url: str, key: str = "stream.url") -> tuple[str, int, dict]:
    return split_host_port(url, key, "srt")


def display(addr: tuple) -> str:
    """A sockaddr for people: 192.0.2.1:5000, [2001:db8::1]:5000."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
