"""A fleet through one relay: 10 senders at 4 Mb/s each, CPU per Mb/s and RSS of
`appliance relay` against a minimal C forwarder (bench/udp_forwarder.c, built
here with the system's gcc: batched reads, one send per datagram, no protocol)
moving the same datagrams in the same run; then our bonding sender's CPU per
Mb/s against the same forwarder carrying one such stream.

    .venv/bin/python bench/relay_scale.py [--seconds 15] [--senders 10] [--mbps 4] [--workers 2]

Each sender has two links (sockets on 127.0.X.1 and 127.0.X.2), registers with
the relay as SRTLA senders do (the forwarder needs no registration), alternates
its numbered 1332-byte SRT data packets between them and sends a keepalive on
each every 100 ms; the relay's SRTLA ACKs and echoes are read and dropped. A sink
stands for the ingest and checks that every sender's every packet arrived
("whole"). bench/py_forwarder.py, the C forwarder's job in plain Python over
epoll, shows what CPython's calls alone cost per datagram. The relay runs three
times: one process, then --workers of them sharing its port (both with the C hot
path, appliance/transport/relay_fastpath.py), then one forwarding in Python
(--no-fast-path). CPU is the relay's (or the forwarder's) CPU time over the measured seconds,
its workers' included, per megabit that reached the sink; memory is their PSS
summed. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from appliance.transport import srtla  # noqa: E402

WARMUP = 2.0
PAYLOAD = 1316


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_forwarder(work: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("the C forwarder needs gcc (apt install gcc)")
    exe = work / "udp_forwarder"
    subprocess.run([gcc, "-O2", "-o", str(exe), str(ROOT / "bench" / "udp_forwarder.c")], check=True)
    return exe


class Sink:
    """The ingest: counts each sender's packets by the number in them."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.got: dict[int, set[int]] = {}
        self.bytes = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-sink", daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                d = self.sock.recv(4096)
            except socket.timeout:
                continue
            if len(d) >= 16 + 4 and not d[0] & 0x80:
                self.bytes += len(d)
                seq = struct.unpack_from(">I", d)[0] & 0x7FFFFFFF
                self.got.setdefault(d[16] | d[17] << 8, set()).add(seq)

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


class Sender:
    def __init__(self, index: int, to: tuple[str, int]):
        self.index, self.to = index, to
        self.links = []
        for host in (f"127.0.{index + 1}.1", f"127.0.{index + 1}.2"):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            s.settimeout(2)
            self.links.append(s)
        self.sent = 0
        self.tail = bytes([index & 0xFF, index >> 8]) + b"\x47" * (PAYLOAD - 2)

    def register(self) -> None:
        """REG2 (unknown group) -> NGP, REG1 -> REG2 with the group id, REG2 per link -> REG3."""
        ident = srtla.sender_id()
        first = self.links[0]
        first.sendto(srtla.reg(srtla.REG2, ident), self.to)
        first.recv(300)
        first.sendto(srtla.reg(srtla.REG1, ident), self.to)
        gid = srtla.reg_id(first.recv(300), srtla.REG2)
        for s in self.links:
            s.sendto(srtla.reg(srtla.REG2, gid), self.to)
            assert s.recv(300) == srtla.short(srtla.REG3), "registered"
        for s in self.links:
            s.setblocking(False)

    def send_due(self, due: int) -> None:
        while self.sent < due:
            d = struct.pack(">IIII", self.sent & 0x7FFFFFFF, 0xC0000000, 0, 1) + self.tail
            self.links[self.sent % 2].sendto(d, self.to)
            self.sent += 1

    def keepalive_and_drain(self) -> None:
        for s in self.links:
            s.sendto(srtla.keepalive(int(time.monotonic() * 1000)), self.to)
            try:
                while True:
                    s.recv(2048)
            except (BlockingIOError, socket.timeout):
                pass

    def close(self):
        for s in self.links:
            s.close()


class Flood:
    """Strangers at once: REG1s with fresh ids and REG2s with made-up groups from many
    addresses (127.200-203.X.Y), SRT-shaped data from unregistered ones, and junk."""

    def __init__(self, to: tuple[str, int], pps: float):
        self.to, self.pps, self.sent = to, pps, 0
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(256)]
        for i, s in enumerate(self.socks):
            s.bind((f"127.{200 + i // 64}.{i % 64}.1", 0))
            s.setblocking(False)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-flood", daemon=True)

    def _run(self):
        import os

        t0, kinds = time.monotonic(), 0
        while not self.stop.is_set():
            due = int((time.monotonic() - t0) * self.pps)
            while self.sent < due:
                s = self.socks[self.sent % len(self.socks)]
                kinds = (kinds + 1) % 4
                d = (srtla.reg(srtla.REG1, os.urandom(256)) if kinds == 0 else
                     srtla.reg(srtla.REG2, os.urandom(256)) if kinds == 1 else
                     struct.pack(">IIII", self.sent, 0, 0, 1) + bytes(1316) if kinds == 2 else os.urandom(40))
                try:
                    s.sendto(d, self.to)
                    s.recv(2048)  # (what the relay answers, if anything: dropped)
                except (BlockingIOError, ConnectionRefusedError):
                    pass
                self.sent += 1
            time.sleep(0.002)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        for s in self.socks:
            s.close()


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    return [proc, *proc.children(recursive=True)]  # (the relay's workers)


def _cpu(procs: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def _memory_mib(procs: list[psutil.Process]) -> float:
    """PSS summed: the pages the workers share since the fork counted once, as the cgroup's
    MemoryMax counts them (RSS would count them in every worker)."""
    return sum(p.memory_full_info().pss for p in procs) / 2**20


def drive(senders: list[Sender], mbps: float, seconds: float, proc: psutil.Process, sink: Sink) -> dict:
    rate = mbps * 1e6 / 8 / PAYLOAD
    t0 = time.monotonic()
    measuring = cpu0 = bytes0 = None
    procs = _tree(proc)
    last_ka = 0.0
    while (elapsed := time.monotonic() - t0) < WARMUP + seconds:
        if measuring is None and elapsed >= WARMUP:
            measuring, cpu0, bytes0 = time.monotonic(), _cpu(procs), sink.bytes
        for s in senders:
            s.send_due(int(elapsed * rate))
        if elapsed - last_ka >= 0.1:
            last_ka = elapsed
            for s in senders:
                s.keepalive_and_drain()
        time.sleep(0.002)
    cpu = _cpu(procs) - cpu0
    span = time.monotonic() - measuring
    moved_mb = (sink.bytes - bytes0) * 8 / 1e6
    time.sleep(0.5)  # the last packets
    whole = all(len(sink.got.get(s.index, ())) == s.sent for s in senders)
    missing = sum(s.sent - len(sink.got.get(s.index, ())) for s in senders)
    return {"cpu_ms_per_mb": round(cpu * 1000 / moved_mb, 3) if moved_mb else None,
            "mbps": round(moved_mb / span, 1), "cpu_percent": round(100 * cpu / span, 1),
            "memory_mib": round(_memory_mib(procs), 1), "processes": len(procs), "whole": whole,
            "missing": missing}


def run_one(kind: str, n: int, mbps: float, seconds: float, exe: Path | None, flood_pps: float = 0,
            workers: int = 1) -> dict:
    sink = Sink()
    port = free_port()
    if kind in ("c", "py", "py-recvmmsg"):
        cmd = [str(exe)] if kind == "c" else [sys.executable, str(ROOT / "bench" / "py_forwarder.py")]
        extra = ["--recvmmsg"] if kind == "py-recvmmsg" else []
        proc = subprocess.Popen([*cmd, str(port), str(sink.port), *extra], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
    else:
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "relay", "--listen", str(port), "--bind",
                                 "127.0.0.1", "--to", f"srt://127.0.0.1:{sink.port}", "--max-groups", str(max(200, n)),
                                 "--workers", str(workers), *(["--no-fast-path"] if kind == "relay-py" else [])],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    senders = [Sender(i, ("127.0.0.1", port)) for i in range(n)]
    try:
        deadline = time.monotonic() + 15
        for s in senders:
            while True:
                try:
                    if kind.startswith("relay"):
                        s.register()
                    else:
                        for link in s.links:
                            link.setblocking(False)
                    break
                except (socket.timeout, ConnectionRefusedError, AssertionError):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{kind}: sender {s.index} could not register")
        flood = Flood(("127.0.0.1", port), flood_pps) if flood_pps else None
        if flood:
            flood.thread.start()
        result = drive(senders, mbps, seconds, psutil.Process(proc.pid), sink)
        if flood:
            flood.close()
            result["flood_sent"] = flood.sent
        return result
    finally:
        for s in senders:
            s.close()
        proc.terminate()
        proc.wait(10)
        sink.close()


def bonding_sender(mbps: float, seconds: float) -> float:
    """Our bonding sender's thread, libsrt's caller -> Bonder (two links) -> `appliance relay`
    (its own process: a relay thread beside it would charge the GIL's hand-overs to the
    bond) -> srt-live-transmit: CPU ms per Mb."""
    from appliance.transport.bond import Bonder
    from appliance.transport.libsrt import SrtCaller

    port, relay_port = free_port(), free_port()
    ingest = subprocess.Popen([shutil.which("srt-live-transmit"), f"srt://:{port}?mode=listener", "file://con"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay = subprocess.Popen([sys.executable, "-m", "appliance", "relay", "--listen", str(relay_port), "--bind",
                              "127.0.0.1", "--to", f"srt://127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=ROOT)
    time.sleep(1.0)  # (both listening)
    bond = Bonder(("127.0.0.1", relay_port), {"a": "127.0.0.2", "b": "127.0.0.3"})
    bond.start()
    try:
        while not all(link.state == "up" for link in bond.links.values()):
            time.sleep(0.05)
        caller = SrtCaller("127.0.0.1", bond.local_port, latency_ms=500)
        caller.connect()
        thread = next(t for t in psutil.Process().threads()
                      if t.id in {x.native_id for x in threading.enumerate() if x.name == "srtla-bond"})
        rate, t0, i = mbps * 1e6 / 8 / PAYLOAD, time.monotonic(), 0
        c0 = None
        while time.monotonic() - t0 < WARMUP + seconds:
            if c0 is None and time.monotonic() - t0 >= WARMUP:
                c0, i0 = _thread_cpu(thread.id), i
            caller.send(b"\x47" * PAYLOAD)
            i += 1
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        cpu = _thread_cpu(thread.id) - c0
        caller.close()
        return cpu * 1000 / ((i - i0) * (PAYLOAD + 16) * 8 / 1e6)
    finally:
        bond.stop()
        for p in (relay, ingest):
            p.terminate()
            p.wait(5)


def _thread_cpu(tid: int) -> float:
    return next(t.user_time + t.system_time for t in psutil.Process().threads() if t.id == tid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--senders", type=int, default=10)
    ap.add_argument("--mbps", type=float, default=4)
    ap.add_argument("--no-bond", action="store_true", help="skip the bonding sender's part")
    ap.add_argument("--workers", type=int, default=2, help="the relay's second run: this many workers")
    ap.add_argument("--recvmmsg", action="store_true", help="also the plain Python forwarder reading with "
                    "recvmmsg through ctypes")
    ap.add_argument("--flood", type=float, default=0, metavar="PPS",
                    help="also a flood of strangers at this many datagrams a second, through the relay only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        exe = build_forwarder(Path(work))
        out = {"senders": args.senders, "mbps_each": args.mbps}
        runs = (("c", "c", 1), ("python_floor", "py", 1),
                *((("python_recvmmsg", "py-recvmmsg", 1),) if args.recvmmsg else ()),
                ("relay", "relay", 1), ("relay_workers", "relay", args.workers), ("relay_python", "relay-py", 1))
        for key, kind, workers in runs:
            r = run_one(kind, args.senders, args.mbps, args.seconds, exe, args.flood if kind.startswith("relay") else 0,
                        workers)
            out[key] = r
            print(f"{key:13} {r['mbps']} Mb/s through it: {r['cpu_ms_per_mb']} ms CPU per Mb "
                  f"({r['cpu_percent']} % of a core, {r['processes']} processes), memory {r['memory_mib']} MiB, "
                  f"{'whole' if r['whole'] else str(r['missing']) + ' packets missing'}", flush=True)
        for key in ("python_floor", "python_recvmmsg", "relay", "relay_workers", "relay_python"):
            if key not in out:
                continue
            out[f"{key}_vs_c"] = round(out[key]["cpu_ms_per_mb"] / out["c"]["cpu_ms_per_mb"], 2)
        print(f"relay / C forwarder: {out['relay_vs_c']}, with {args.workers} workers {out['relay_workers_vs_c']} "
              f"(goal 1.5); forwarding in Python (--no-fast-path) {out['relay_python_vs_c']}; the same forwarding "
              f"in plain Python, no protocol: {out['python_floor_vs_c']}")
        if not args.no_bond:
            one = run_one("c", 1, args.mbps, args.seconds, exe)
            bond = bonding_sender(args.mbps, args.seconds)
            out["bond_ms_per_mb"], out["c_one_stream_ms_per_mb"] = round(bond, 3), one["cpu_ms_per_mb"]
            out["bond_vs_c"] = round(bond / one["cpu_ms_per_mb"], 2)
            print(f"bonding sender {bond:.3f} ms CPU per Mb against the C forwarder's {one['cpu_ms_per_mb']} for one "
                  f"{args.mbps} Mb/s stream: {out['bond_vs_c']} (goal 1.5)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
