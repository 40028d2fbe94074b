"""Capture-to-ingest latency, measured: the test pattern's time code (the capture
time, media/timecode.py) read off every frame as it arrives at the ingest.

    .venv/bin/python bench/latency.py [--seconds 30] [--rtt-ms 40] [--cases auto,auto-cut,fixed-500]

The daemon live in simulation (sim profile), bonded over two uplinks (127.0.0.2
and 127.0.0.3) through a user-space delay forwarder per uplink (the kernel has no
netem: tests/netsim.Impairer, RTT-MS/2 each way) to `appliance relay` (named
"localhost") to srt-live-transmit, whose SRT latency is the least (120 ms) so
that the box's side rules the negotiation. The ingest writes each SRT message as
a UDP datagram to this script, which notes when each arrived, demuxes and
decodes as they come (one decoder thread: no frame held back) and reads each
frame's code. A frame's arrival is that of the datagram that carried its last
TS packet; its latency, that minus its capture time (one clock: same machine).

Cases: `auto` (latency_ms = "auto" after a pre-flight over the delayed links),
`auto-cut` (the same, the cell uplink black-holed halfway through), `fixed-500`
(latency_ms = 500: the baseline). Per case: the SRT latency used, median and
p95 capture to ingest, and frames lost at the ingest (missing between the
first and the last received); then the ratio of auto's median to fixed-500's.
The last line is the JSON of it all.
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

UPLINKS = {"wired": "127.0.0.2", "cell": "127.0.0.3"}
WARMUP = 1.0  # s of the session left out: the first keyframe's burst


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Arrivals(io.RawIOBase):
    """The ingest's datagrams as a stream for the demuxer, each byte's arrival kept."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf, self.ends, self.total, self.done = sock, bytearray(), [], 0, False
        self.times: list[float] = []

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self.buf:
            try:
                d = self.sock.recv(4096)
            except socket.timeout:
                if self.done:
                    return 0
                continue
            self.total += len(d)
            self.ends.append(self.total)
            self.times.append(time.time())
            self.buf += d
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        del self.buf[:n]
        return n

    def arrival(self, offset: int) -> float:
        i = min(bisect.bisect_right(self.ends, offset), len(self.times) - 1)
        return self.times[i]


def read_ingest(port: int, out: dict) -> threading.Thread:
    import av

    from appliance.media import timecode

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.5)
    stream = Arrivals(sock)
    out.update(frames=[], stream=stream)

    def run():
        try:
            with av.open(io.BufferedReader(stream, 65536), format="mpegts",
                         options={"probesize": "65536", "analyzeduration": "0"}) as c:
                video = c.streams.video[0]
                video.codec_context.thread_count = 1  # frame threads would hold frames back
                for packet in c.demux(video):
                    if packet.pos is None or packet.pos < 0:
                        continue
                    last_ts = packet.pos + -(-packet.size // 184) * 188  # (its PES in 184-byte payloads)
                    arrived = stream.arrival(last_ts)
                    for frame in packet.decode():
                        y = frame.to_ndarray(format="gray")
                        out["frames"].append((frame.pts, arrived, timecode.read(y)))
        except Exception as e:  # noqa: BLE001 - said in the result
            out["error"] = f"{type(e).__name__}: {e}"
        finally:
            sock.close()

    t = threading.Thread(target=run, name="ingest-reader", daemon=True)
    t.start()
    return t


def daemon_config(work: Path, relay_port: int, latency: str, size: str) -> Path:
    w, h = size.split("x")
    config = work / "appliance.toml"
    config.write_text(f"""
[paths]
state_dir = "{work}/state"
runtime_dir = "{work}/run"
recordings = "{work}/rec"
[video]
width = {w}
height = {h}
fps = 30
[stream]
enabled = true
url = "srt://localhost:{relay_port}"
latency_ms = {latency}
bond = true
uplinks = [{", ".join(f'"{n}@{a}"' for n, a in UPLINKS.items())}]
[api]
port = {free_port(socket.SOCK_STREAM)}
""")
    return config


def one_case(name: str, seconds: float, rtt_ms: float, size: str, work: Path) -> dict:
    from media_check import missing_frames
    from netsim import Impairer, stop_gracefully

    from appliance.supervisor import control

    work.mkdir(parents=True, exist_ok=True)
    ingest_port, out_port = free_port(), free_port()
    result: dict = {"case": name}
    out: dict = {}
    reader = read_ingest(out_port, out)
    procs = [subprocess.Popen([shutil.which("srt-live-transmit"), f"srt://:{ingest_port}?mode=listener&latency=120",
                               f"udp://127.0.0.1:{out_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    relay_port = free_port()
    cli = [sys.executable, "-m", "appliance"]
    procs.append(subprocess.Popen([*cli, "relay", "--listen", str(relay_port), "--to", f"srt://localhost:{ingest_port}"],
                                  stdout=subprocess.DEVNULL, stderr=open(work / "relay.log", "wb"), cwd=ROOT))
    path = Impairer(("127.0.0.1", relay_port))
    for addr in UPLINKS.values():
        path.delay_s[addr] = rtt_ms / 2000
    config = daemon_config(work, path.addr[1], '"auto"' if name.startswith("auto") else name.split("-")[1], size)
    box = subprocess.Popen([*cli, "run", "--profile", "sim", "--config", str(config)], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=open(work / "daemon.log", "wb"))
    sock = work / "run" / "control.sock"

    def ask(cmd: str, timeout: float = 5, **args) -> dict:
        return control.request(sock, cmd, timeout=timeout, **args)

    def wait_for(what: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except (OSError, control.ControlError):
                pass
            if time.monotonic() > deadline or box.poll() is not None:
                raise SystemExit(f"{name}: {what} did not happen:\n" + (work / "daemon.log").read_text()[-3000:])
            time.sleep(0.2)

    try:
        wait_for("READY", lambda: ask("status")["status"]["state"] == "READY", 60)
        if name.startswith("auto"):
            report = ask("preflight", timeout=90, seconds=4)["preflight"]
            result["preflight"] = {c["name"]: {"rtt_ms": c["rtt_ms"], "jitter_ms": c["jitter_ms"], "verdict": c["verdict"]}
                                   for c in report["links"]}
        wait_for("the bond kept warm", lambda: ask("status")["status"]["components"]["media"]["outputs"]["srt"]
                 .get("bond", {}).get("registered"), 20)
        assert ask("live")["ok"]
        wait_for("the stream", lambda: ask("status")["status"]["components"]["media"]["outputs"]["srt"]["connected"], 20)
        srt = ask("status")["status"]["components"]["media"]["outputs"]["srt"]
        result["latency_ms"], result["latency_rule"] = srt["latency_ms"], srt["latency_rule"]
        time.sleep(seconds / 2)
        if name.endswith("-cut"):
            path.blackholed.add(UPLINKS["cell"])  # the modem's upstream dies: nothing through, either way
        time.sleep(seconds / 2)
        ask("stop")
        wait_for("READY again", lambda: ask("status")["status"]["state"] == "READY", 30)
        result["box_skipped"] = ask("status")["status"]["components"]["media"]["frames_dropped"]
    finally:
        box.send_signal(signal.SIGTERM)
        box.wait(30)
        for p in procs:
            stop_gracefully(p)
        path.close()
        out["stream"].done = True
        reader.join(10)
    frames = out["frames"]
    if "error" in out:
        result["reader_error"] = out["error"]
    start = frames[0][1] if frames else 0.0
    lat = sorted(((arrived * 1000 - code) % 2**32) for _, arrived, code in frames
                 if code is not None and arrived - start >= WARMUP)
    result.update(frames=len(frames), unread=sum(1 for f in frames if f[2] is None),
                  lost=missing_frames([f[0] for f in frames]) if len(frames) > 1 else None,
                  median_ms=round(statistics.median(lat)) if lat else None,
                  p95_ms=round(lat[int(len(lat) * 0.95)]) if lat else None)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rtt-ms", type=float, default=40)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--cases", default="auto,auto-cut,fixed-500")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="latency-"))
    results = []
    try:
        for case in args.cases.split(","):
            r = one_case(case, args.seconds, args.rtt_ms, args.size, work / case)
            results.append(r)
            print(f"{case:10} SRT latency {r.get('latency_ms')} ms ({r.get('latency_rule')}): capture to ingest median "
                  f"{r['median_ms']} ms, p95 {r['p95_ms']} ms; {r['frames']} frames, {r['lost']} lost, "
                  f"{r['unread']} unread", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work: {work}", file=sys.stderr)
    by = {r["case"]: r for r in results}
    summary = {"rtt_ms": args.rtt_ms, "size": args.size, "cases": results}
    if "auto" in by and "fixed-500" in by and by["fixed-500"]["median_ms"]:
        summary["auto_vs_fixed_500"] = round(by["auto"]["median_ms"] / by["fixed-500"]["median_ms"], 2)
        print(f"auto / fixed 500 ms, median: {summary['auto_vs_fixed_500']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
