"""Network pieces for transport tests: the relay in a thread, and a user-space
UDP path per uplink that can black-hole or drop (this kernel has no netem)."""

from __future__ import annotations

import asyncio
import heapq
import random
import selectors
import shutil
import socket
import subprocess
import threading
import time

from appliance.transport.relay import Relay


def stop_gracefully(proc: subprocess.Popen, timeout: float = 5) -> None:
    """SIGINT (a clean exit that flushes its output), then SIGKILL if it lingers."""
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class Ingest:
    """srt-live-transmit listening (the reference SRT peer), writing what it
    receives to a file per run. It buffers its stdout: read a run's file after stop()."""

    def __init__(self, directory, port: int):
        self.exe = shutil.which("srt-live-transmit")
        assert self.exe, "scripts/test installs srt-tools"
        self.dir, self.port, self.runs = directory, port, []

    def start(self, extra: str = ""):
        out = self.dir / f"ingest-{len(self.runs)}.ts"
        f = open(out, "wb")
        p = subprocess.Popen([self.exe, f"srt://:{self.port}?mode=listener{extra}", "file://con"], stdout=f,
                             stderr=subprocess.DEVNULL)
        self.runs.append((p, f, out))
        time.sleep(0.3)
        return out

    def stop(self):
        for p, f, _ in self.runs:
            stop_gracefully(p)
            f.close()


class RelayThread:
    """The relay on its own asyncio loop in a thread; clients are plain UDP sockets."""

    def __init__(self, secret=None, max_groups=200, max_links=8, fast=True):
        self.server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # stands in for the SRT server
        self.server.bind(("127.0.0.1", 0))
        self.server.settimeout(2)
        self.relay = Relay(("127.0.0.1", 0), self.server.getsockname(), secret, max_groups, max_links, fast=fast)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-relay")
        self.thread.start()
        assert self._ready.wait(5)
        self.addr = self.relay.listen

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.relay.start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.relay.stop())
        self.loop.close()

    def call(self, fn, *args):
        done = threading.Event()
        self.loop.call_soon_threadsafe(lambda: (fn(*args), done.set()))
        assert done.wait(5)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.server.close()




class Impairer:
    """Stands between the bonding sender and the relay: one upstream socket per
    sender source address (so the relay sees one peer per uplink), with per-link
    black-hole, random loss, hold (a queue that stops draining, then delivers
    all it held, in order) and delay (`delay_s`: each way, so the RTT grows by twice
    it), both directions. `delay_all` delays every link alike: a PoP farther away."""

    def __init__(self, upstream: tuple[str, int], bind: tuple[str, int] = ("127.0.0.1", 0)):
        self.upstream = upstream
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(bind)
        self.addr = self.sock.getsockname()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self.routes: dict[tuple, socket.socket] = {}
        self.blackholed: set[str] = set()  # source IPs
        self.loss: dict[str, float] = {}
        self.held: set[str] = set()  # source IPs
        self._holding: dict[str, list] = {}
        self.forwarded: dict[str, int] = {}
        self.delay_s: dict[str, float] = {}
        self.delay_all = 0.0
        self.first_data_at: float | None = None  # monotonic: the first SRT data packet (a TS payload) through
        self._due: list = []  # (time due, n, send, datagram, to): the delayed, in order
        self._n = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-impairer")
        self.thread.start()

    def _cut(self, ip: str) -> bool:
        return ip in self.blackholed or random.random() < self.loss.get(ip, 0.0)

    def _run(self):
        while not self._stop.is_set():
            for ip in [ip for ip in self._holding if ip not in self.held]:
                for send, d, to in self._holding.pop(ip):
                    send(d, to)
            now = time.monotonic()
            while self._due and self._due[0][0] <= now:
                _, _, send, d, to = heapq.heappop(self._due)
                send(d, to)
            wait = min(0.005 if self.held else 0.05, max(0.0, self._due[0][0] - now) if self._due else 1.0)
            for key, _ in self.sel.select(wait):
                if key.data is None:
                    d, src = self.sock.recvfrom(4096)
                    if self._cut(src[0]):
                        continue
                    up = self.routes.get(src)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.bind(("127.0.0.1", 0))
                        self.routes[src] = up
                        self.sel.register(up, selectors.EVENT_READ, src)
                    self.forwarded[src[0]] = self.forwarded.get(src[0], 0) + 1
                    if self.first_data_at is None and len(d) >= 16 + 188 and not d[0] & 0x80:
                        self.first_data_at = time.monotonic()
                    self._deliver(src[0], up.sendto, d, self.upstream)
                else:
                    src = key.data
                    d, _ = key.fileobj.recvfrom(4096)
                    if not self._cut(src[0]):
                        self._deliver(src[0], self.sock.sendto, d, src)

    def _deliver(self, ip: str, send, d: bytes, to) -> None:
        delay = self.delay_s.get(ip, self.delay_all)
        if delay:
            self._n += 1
            heapq.heappush(self._due, (time.monotonic() + delay, self._n, send, d, to))
        elif ip in self.held or ip in self._holding:
            self._holding.setdefault(ip, []).append((send, d, to))
        else:
            send(d, to)

    def close(self):
        self._stop.set()
        self.thread.join()
        for s in self.routes.values():
            s.close()
        self.sock.close()
        self.sel.close()
