"""CPU per Mb/s of the bonding sender and of the relay, at 4, 8 and 16 Mb/s over
two uplinks on loopback, against a plain UDP forwarder in the same run.

    .venv/bin/python bench/bond.py [--seconds 8]

libsrt caller -> Bonder (uplinks 127.0.0.2 and 127.0.0.3) -> Relay -> the
srt-live-transmit ingest (output discarded). psutil reads the CPU time of the
bond's thread and of the relay's thread alone. The baseline is a minimal
Python UDP forwarder thread moving the same packets, so the ratio says what
our per-packet work costs over merely moving the datagrams in Python.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from netsim import RelayThread  # noqa: E402

from appliance.transport.bond import Bonder  # noqa: E402
from appliance.transport.libsrt import SrtCaller  # noqa: E402


def thread_cpu(name: str) -> float:
    ids = {t.native_id for t in threading.enumerate() if t.name == name}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(mbps: float, seconds: float) -> tuple[float, float, float]:
    port = free_port()
    ingest = subprocess.Popen([shutil.which("srt-live-transmit"), f"srt://:{port}?mode=listener", "file://con"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    relay = RelayThread()
    relay.relay.server = ("127.0.0.1", port)
    bond = Bonder(relay.addr, {"a": "127.0.0.2", "b": "127.0.0.3"})
    bond.start()
    # the baseline: a bare forwarder of the same datagrams
    fwd_in = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fwd_in.bind(("127.0.0.1", 0))
    fwd_in.settimeout(0.2)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def forward():
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while not stop.is_set():
            try:
                d, _ = fwd_in.recvfrom(2048)
            except socket.timeout:
                continue
            out.sendto(d, sink.getsockname())
    fwd = threading.Thread(target=forward, name="bench-forwarder")
    fwd.start()
    try:
        while not all(link.state == "up" for link in bond.links.values()):
            time.sleep(0.05)
        caller = SrtCaller("127.0.0.1", bond.local_port, latency_ms=500)
        caller.connect()
        feeder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rate = mbps * 1e6 / 8 / 1316
        payload = bytes([0x47]) * 1316
        b0, r0, f0 = thread_cpu("srtla-bond"), thread_cpu("test-relay"), thread_cpu("bench-forwarder")
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < seconds:
            caller.send(payload)
            feeder.sendto(payload + bytes(16), fwd_in.getsockname())
            i += 1
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        b1, r1, f1 = thread_cpu("srtla-bond"), thread_cpu("test-relay"), thread_cpu("bench-forwarder")
        caller.close()
        mb = i * 1316 * 8 / 1e6
        return (b1 - b0) / mb, (r1 - r0) / mb, (f1 - f0) / mb
    finally:
        stop.set()
        fwd.join()
        bond.stop()
        relay.close()
        ingest.terminate()
        ingest.wait(5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    seconds = ap.parse_args().seconds
    print("CPU milliseconds per megabit (two uplinks, loopback); baseline: a bare Python UDP forwarder")
    for mbps in (4, 8, 16):
        b, r, f = run(mbps, seconds)
        print(f"{mbps:>2} Mb/s: bond {b * 1000:.2f} ms/Mb ({b / f:.1f}x baseline)   "
              f"relay {r * 1000:.2f} ms/Mb ({r / f:.1f}x)   baseline {f * 1000:.2f} ms/Mb")


if __name__ == "__main__":
    main()
