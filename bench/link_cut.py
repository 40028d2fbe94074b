"""The link-cut run on the network bench: frames lost, time to notice the dead
link, and time until its traffic moved, for our sender and for the reference
sender's rules (a link is dead after 4 s of silence, nothing re-sent) in the
same run, on the same namespaces.

    sudo .venv/bin/python bench/link_cut.py [--seconds 30]

Two veth uplinks (tbf 20 Mb/s each) to `appliance relay` to srt-live-transmit,
SRT latency 500 ms, 4 Mb/s of numbered 1316-byte messages; uplink up0 is
black-holed (nftables, both directions) at a third of the run and restored at
two thirds. A frame is counted lost when any message of it (30 frames/s) did
not reach the ingest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

RATE = 380  # messages per second: 4 Mb/s
PER_FRAME = RATE / 30


def chunk(i: int) -> bytes:
    return bytes([0x47]) + i.to_bytes(4, "big") + bytes([i % 251]) * 1311


def blackhole(relay_ns: str, on: bool) -> None:
    from netns import apply_nft

    apply_nft({"dn0": "drop"} if on else {}, ["ip", "netns", "exec", relay_ns])  # uplink -> relay
    apply_nft({"up0": "drop"} if on else {})  # relay -> uplink (we run in the appliance namespace)


def inner(mode: str, seconds: float, relay_ns: str) -> None:
    """Runs inside the appliance namespace: the SRT caller and the bonding sender."""
    from netns import RELAY_ADDR, UPLINKS

    from appliance.transport.bond import Bonder
    from appliance.transport.libsrt import SrtCaller

    rules = dict(dead_range=(4.0, 4.0), rescue=False) if mode == "reference" else {}
    bond = Bonder((RELAY_ADDR, 5000), {name: addr for name, (addr, _) in UPLINKS.items()}, **rules)
    bond.start()
    try:
        while not all(link.state == "up" for link in bond.links.values()):
            time.sleep(0.05)
        caller = SrtCaller("127.0.0.1", bond.local_port, latency_ms=500)
        caller.connect()
        n = int(seconds * RATE)
        cut_i, restore_i = n // 3, 2 * n // 3
        t0, cut_at = time.monotonic(), None
        for i in range(n):
            if i == cut_i:
                cut_at = time.monotonic()
                blackhole(relay_ns, True)
            if i == restore_i:
                blackhole(relay_ns, False)
            caller.send(chunk(i))
            delay = t0 + (i + 1) / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        deadline = time.monotonic() + 10
        while caller.stats()["send_buffer_packets"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        caller.close()
        up0 = bond.links["up0"]
        # Time from the cut itself (not from the last reply) to the sender's verdict.
        notice = moved = None
        if up0.died_at is not None:
            silent_from = up0.died_at - up0.notice_ms[-1] / 1000
            notice = round((up0.died_at - cut_at) * 1000)
            moved = round((silent_from + up0.moved_ms[-1] / 1000 - cut_at) * 1000)
        print(json.dumps({"sent": n, "notice_ms": notice, "moved_ms": moved, "resent": bond.resent}))
    finally:
        bond.stop()


def outer(seconds: float) -> None:
    from netns import NetBench

    bench = NetBench(rate_mbit=20)
    work = Path(f"/tmp/link-cut-{os.getpid()}")
    work.mkdir(exist_ok=True)
    results = {}
    try:
        runs = bench.compare(__file__, ("reference", "ours"), ["--seconds", str(seconds), "--relay-ns", bench.relay_ns],
                             work)
    finally:
        bench.close()
    for mode, (r, out) in runs.items():
        data = out.read_bytes()
        got = {int.from_bytes(data[i + 1:i + 5], "big") for i in range(0, len(data) - 1315, 1316)}
        lost = set(range(r["sent"])) - got
        r["messages_lost"] = len(lost)
        r["frames_lost"] = len({int(i / PER_FRAME) for i in lost})
        results[mode] = r
    print(f"link cut after {seconds / 3:.0f} s of {seconds:.0f} s at 4 Mb/s, two uplinks, SRT latency 500 ms")
    print(f"{'sender':<10} {'frames lost':>12} {'notice (ms)':>12} {'moved (ms)':>11} {'re-sent':>8}")
    for mode, r in results.items():
        print(f"{mode:<10} {r['frames_lost']:>12} {str(r['notice_ms']):>12} {str(r['moved_ms']):>11} {r['resent']:>8}")
    ours, ref = results["ours"], results["reference"]
    if ours["notice_ms"] and ref["notice_ms"]:
        print(f"time to notice, ours / reference: {ours['notice_ms'] / ref['notice_ms']:.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--inner", choices=("ours", "reference"))
    ap.add_argument("--relay-ns")
    a = ap.parse_args()
    inner(a.inner, a.seconds, a.relay_ns) if a.inner else outer(a.seconds)
