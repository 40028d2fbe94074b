"""The ABR step response on the network bench: our controller against a
belacoder-equivalent one, on the same namespaces in the same run.

    sudo .venv/bin/python bench/abr.py [--seconds 40]

One veth uplink (tbf 20 Mb/s) through the bonding sender to `appliance relay`
and srt-live-transmit, SRT latency 1000 ms. An ideal encoder (exactly the
bitrate the controller asks for, plus 300 kb/s of audio) between 800 and
4000 kb/s. At a fifth of the run the uplink is capped to 2.5 Mb/s (tbf), at
half the cap is lifted. Printed per controller: time to fall (cap -> the
stream fits under it), time to recover (lift -> back at 95 % of the maximum),
the peak SRT send buffer while capped, and packets SRT dropped as too late.

The belacoder-equivalent is written here from belacoder's published
algorithm (BELABOX, update_bitrate()): send-buffer and RTT averages and
jitters, emergency drop to the minimum, fast and slow decreases every
200-250 ms, increases of 30 kb/s + 1/30 every 500 ms when the RTT is at its
minimum; run every 20 ms as there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

MIN_KBPS, MAX_KBPS, AUDIO_KBPS, LATENCY_MS, CAP_MBIT = 800, 4000, 300, 1000, 2.5
PAYLOAD = 1316


class BelacoderEquivalent:
    """belacoder's update_bitrate(), in kb/s; bs is the send buffer in packets."""

    interval = 0.02

    def __init__(self):
        self.bitrate = MAX_KBPS
        self.bs_avg = self.bs_jitter = 0.0
        self.prev_bs = 0
        self.rtt_avg = 0.0
        self.rtt_avg_delta = 0.0
        self.prev_rtt = 300
        self.rtt_min = 200.0
        self.rtt_jitter = 0.0
        self.next_incr = self.next_decr = 0.0

    def update(self, now: float, st: dict) -> int:
        bs, rtt = st["send_buffer_packets"], int(st["rtt_ms"])
        self.bs_avg = self.bs_avg * 0.99 + bs * 0.01
        self.bs_jitter *= 0.99
        if bs - self.prev_bs > self.bs_jitter:
            self.bs_jitter = bs - self.prev_bs
        self.prev_bs = bs
        self.rtt_avg = rtt if self.rtt_avg == 0 else self.rtt_avg * 0.99 + 0.01 * rtt
        delta_rtt = rtt - self.prev_rtt
        self.rtt_avg_delta = self.rtt_avg_delta * 0.8 + delta_rtt * 0.2
        self.prev_rtt = rtt
        self.rtt_min *= 1.001
        if rtt != 100 and rtt < self.rtt_min and self.rtt_avg_delta < 1.0:
            self.rtt_min = rtt
        self.rtt_jitter *= 0.99
        if delta_rtt > self.rtt_jitter:
            self.rtt_jitter = delta_rtt
        rtt_to_bs = lambda ms: ms * self.bitrate / 8 / PAYLOAD  # ms at the current rate, in packets
        bs_th3 = (self.bs_avg + self.bs_jitter) * 4
        bs_th2 = min(max(50, self.bs_avg + max(self.bs_jitter * 3.0, self.bs_avg)), rtt_to_bs(LATENCY_MS / 2))
        bs_th1 = max(50, self.bs_avg + self.bs_jitter * 2.5)
        rtt_th_max = self.rtt_avg + max(self.rtt_jitter * 4, self.rtt_avg * 15 / 100)
        rtt_th_min = self.rtt_min + max(1, self.rtt_jitter * 2)
        b = self.bitrate
        if b > MIN_KBPS and (rtt >= LATENCY_MS / 3 or bs > bs_th3):
            b, self.next_decr = MIN_KBPS, now + 0.2
        elif now > self.next_decr and (rtt > LATENCY_MS / 5 or bs > bs_th2):
            b, self.next_decr = b - 100 - b / 10, now + 0.25
        elif now > self.next_decr and (rtt > rtt_th_max or bs > bs_th1):
            b, self.next_decr = b - 100, now + 0.2
        elif now > self.next_incr and rtt < rtt_th_min and self.rtt_avg_delta < 0.01:
            b, self.next_incr = b + 30 + b / 30, now + 0.5
        self.bitrate = int(min(MAX_KBPS, max(MIN_KBPS, b)))
        return self.bitrate // 100 * 100


class Ours:
    interval = 0.1

    def __init__(self):
        from appliance.outputs.abr import Abr, AbrLimits

        self.abr = Abr(AbrLimits(MIN_KBPS, MAX_KBPS, LATENCY_MS, AUDIO_KBPS))
        self.sent = 0

    def update(self, now: float, st: dict) -> int:
        return self.abr.update(now, st["rtt_ms"], st["send_buffer_ms"], self.sent, st["send_buffer_bytes"]).bitrate_kbps


def tc(mbit: float) -> None:
    burst = max(16, int(mbit * 1000 / 8 / 10))
    subprocess.run(["tc", "qdisc", "change", "dev", "up0", "root", "tbf", "rate", f"{mbit}mbit", "burst", f"{burst}kb",
                    "latency", "300ms"], check=True)


def inner(which: str, seconds: float) -> None:
    from netns import RELAY_ADDR, UPLINKS

    from appliance.transport.bond import Bonder
    from appliance.transport.libsrt import SrtCaller

    ctl = Ours() if which == "ours" else BelacoderEquivalent()
    bond = Bonder((RELAY_ADDR, 5000), {"up0": UPLINKS["up0"][0]})
    bond.start()
    try:
        while not bond.ready():
            time.sleep(0.05)
        caller = SrtCaller("127.0.0.1", bond.local_port, latency_ms=LATENCY_MS)
        caller.connect()
        chunk = b"\x47\x1f\xff\x10" + b"\xff" * 184
        chunk *= 7
        cap_at, lift_at = seconds / 5, seconds / 2
        t0 = time.monotonic()
        bitrate, credit, last, next_ctl = MAX_KBPS, 0.0, t0, t0
        capped = lifted = False
        timeline, peak_buffer = [], 0
        while (now := time.monotonic()) - t0 < seconds:
            if not capped and now - t0 >= cap_at:
                tc(CAP_MBIT)
                capped = True
            if not lifted and now - t0 >= lift_at:
                tc(20)
                lifted = True
            credit += (now - last) * (bitrate + AUDIO_KBPS) * 1000 / 8
            last = now
            while credit >= PAYLOAD:
                caller.send(chunk)
                credit -= PAYLOAD
                if isinstance(ctl, Ours):
                    ctl.sent += PAYLOAD
            if now >= next_ctl:
                st = caller.stats()
                bitrate = ctl.update(now, st)
                next_ctl = now + ctl.interval
                timeline.append((round(now - t0, 3), bitrate, st["send_buffer_ms"]))
                if capped and not lifted:
                    peak_buffer = max(peak_buffer, st["send_buffer_ms"])
            time.sleep(0.002)
        st = caller.stats()
        caller.close()
        if os.environ.get("ABR_TIMELINE"):
            for t, b, buf in timeline:
                print(f"{t:7.2f} {b:5d} {buf:5d}", file=sys.stderr)
        fits = (CAP_MBIT * 1000) - AUDIO_KBPS
        fell = next((t - cap_at for t, b, _ in timeline if t >= cap_at and b <= fits), None)
        back = next((t - lift_at for t, b, _ in timeline if t >= lift_at and b >= MAX_KBPS * 0.95), None)
        print(json.dumps({"fell_s": fell, "recovered_s": back, "peak_buffer_ms": peak_buffer,
                          "dropped": st["packets_dropped"], "mean_capped_kbps":
                          round(sum(b for t, b, _ in timeline if cap_at + 2 <= t < lift_at) /
                                max(1, sum(1 for t, _, _ in timeline if cap_at + 2 <= t < lift_at)))}))
    finally:
        bond.stop()


def outer(seconds: float) -> None:
    from netns import NetBench

    bench = NetBench(rate_mbit=20)
    work = Path(f"/tmp/abr-bench-{os.getpid()}")
    work.mkdir(exist_ok=True)
    try:
        runs = bench.compare(__file__, ("belacoder", "ours"), ["--seconds", str(seconds)], work, LATENCY_MS)
    finally:
        bench.close()
    results = {which: r for which, (r, _) in runs.items()}
    print(f"ABR step: {MAX_KBPS} kb/s max, uplink capped to {CAP_MBIT} Mb/s at {seconds / 5:.0f} s, "
          f"lifted at {seconds / 2:.0f} s; SRT latency {LATENCY_MS} ms")
    print(f"{'controller':<12} {'fall (s)':>9} {'recover (s)':>12} {'peak buffer (ms)':>17} {'dropped':>8} "
          f"{'kb/s while capped':>18}")
    for which, r in results.items():
        f = lambda v: "never" if v is None else f"{v:.2f}"
        print(f"{which:<12} {f(r['fell_s']):>9} {f(r['recovered_s']):>12} {r['peak_buffer_ms']:>17} "
              f"{r['dropped']:>8} {r['mean_capped_kbps']:>18}")
    o, b = results["ours"], results["belacoder"]
    if o["recovered_s"] and b["recovered_s"]:
        print(f"time to recover, ours / belacoder: {o['recovered_s'] / b['recovered_s']:.3f}")
    if o["peak_buffer_ms"] and b["peak_buffer_ms"]:
        print(f"peak send buffer, ours / belacoder: {o['peak_buffer_ms'] / b['peak_buffer_ms']:.3f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--inner", choices=("ours", "belacoder"))
    a = ap.parse_args()
    inner(a.inner, a.seconds) if a.inner else outer(a.seconds)
