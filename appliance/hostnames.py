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
import logging
import socket
import threading
import time
from dataclasses import dataclass
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


BROKER_PORTS = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class Broker:
    """An MQTT broker's URL: mqtts://HOST[:8883], wss://HOST[:443]/PATH, or the plain
    mqtt:// and ws:// (which carry passwords and commands in clear)."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def tls(self) -> bool:
        return self.scheme in ("mqtts", "wss")

    @property
    def transport(self) -> str:
        return "websockets" if self.scheme in ("ws", "wss") else "tcp"

    @property
    def loopback(self) -> bool:
        # By its spelling, with no DNS (a name that resolves to 127.0.0.1 today may not tomorrow).
        return self.host == "localhost" or (literal(self.host) and ipaddress.ip_address(self.host).is_loopback)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_broker_url(url: str, key: str = "fleet.broker") -> Broker:
    try:
        u = urlsplit(url)
        host, port = u.hostname, u.port
    except ValueError:
        u, host, port = None, None, None
    if u is None or u.scheme not in BROKER_PORTS or not host:
        raise ConfigError([f"{key}: {url!r} is not mqtts://HOST:PORT, wss://HOST/PATH, or mqtt:// for a broker "
                           "on this box"])
    path = (u.path or "/mqtt") if u.scheme in ("ws", "wss") else ""
    return Broker(u.scheme, host, port or BROKER_PORTS[u.scheme], path)


def display(addr: tuple) -> str:
    """A sockaddr for people: 192.0.2.1:5000, [2001:db8::1]:5000."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Destination:
    """A host:port that a loop which must never block sends datagrams to (the bond's).

    poll() is called from that loop: it starts lookups (each in its own thread),
    collects them when done, and keeps for each address family the address to send
    to. While nothing is carrying and the current address has not answered for
    `patience` seconds, the next address the name gave is tried, and once all were,
    the name is looked up again. A name that does not resolve keeps the addresses it
    had (a DNS blip does not stop a working stream), sets `error`, is logged once per
    cause and looked up again after `backoff`.
    """

    def __init__(self, host: str, port: int, role: str, backoff: tuple[float, ...] = (0.25, 0.5, 1.0),
                 patience: float = 3.0, log=None, prefix: str = ""):
        """log and prefix: the caller's logger, and how its lines begin ("bond: ")."""
        self.host, self.port, self.role, self.prefix = host, port, role, prefix
        self.backoff, self.patience = backoff, patience
        self.log = log or logging.getLogger(__name__)  # (the caller's: its lines under its name)
        self.current: dict[int, tuple] = {}  # family -> the address sent to
        self.error: NameNotResolved | None = None
        self._addrs: list[tuple] = []  # what the name resolved to
        self._tried: set[tuple] = set()  # of those, addresses given up on since the lookup
        self._lookup: Lookup | None = None
        self._next_lookup = 0.0
        self._fails = 0
        self._heard = 0.0  # the current address answered, or was chosen
        if literal(host):  # no lookup to wait for
            self._resolved(lookup(host, port).result(role), time.monotonic())

    def heard(self, now: float) -> None:
        self._heard = now

    def matches(self, family: int, addr: tuple) -> bool:
        current = self.current.get(family)
        return current is not None and addr[:2] == current[:2]

    def where(self) -> str:
        """As named, and the addresses it is reached at now."""
        named = display((self.host, self.port))
        at = sorted({display(a) for a in list(self.current.values())})
        return named if not at or at == [named] else f"{named} ({', '.join(at)})"

    def poll(self, now: float, carrying: bool) -> None:
        if self._lookup is not None:
            if not self._lookup.done():
                if now - self._lookup.started > TIMEOUT and self.error is None:
                    self._failed(NameNotResolved(self.host, f"no answer within {TIMEOUT:g} s", self.role), now)
                return
            look, self._lookup = self._lookup, None
            try:
                self._resolved(look.result(self.role), now)
            except NameNotResolved as e:
                self._failed(e, now)
            return
        if self.current and (carrying or now - self._heard < self.patience):
            return
        if self.current and self._next_address(now):
            return
        if now >= self._next_lookup:
            self._lookup = lookup(self.host, self.port)
            self._next_lookup = now + self.patience

    def _resolved(self, addrs: list[tuple], now: float) -> None:
        if self.error is not None:
            self.log.info("%s%s name %s resolves again", self.prefix, self.role, self.host)
        self.error, self._fails = None, 0
        if addrs != self._addrs:
            self.log.info("%s%s %s is at %s", self.prefix, self.role, self.host, ", ".join(display(a) for a in addrs))
        self._addrs, self._tried = addrs, set()
        self.current = {}
        for addr in addrs:  # the first address of each family, as the name lists them
            self.current.setdefault(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, addr)
        self._heard = now

    def _next_address(self, now: float) -> bool:
        moved = False
        for family, current in list(self.current.items()):
            self._tried.add(current)
            following = [a for a in self._addrs if a not in self._tried and (":" in a[0]) == (family == socket.AF_INET6)]
            if following:
                self.log.warning("%s%s %s does not answer at %s: trying %s", self.prefix, self.role, self.host,
                                 display(current), display(following[0]))
                self.current[family], moved = following[0], True
        if moved:
            self._heard = now
        return moved

    def _failed(self, e: NameNotResolved, now: float) -> None:
        if self.error is None or str(e) != str(self.error):
            self.log.warning("%s%s: retrying", self.prefix, e)
        self.error = e
        self._next_lookup = now + self.backoff[min(self._fails, len(self.backoff) - 1)]
        self._fails += 1
