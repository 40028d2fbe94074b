"""The fleet's cost: the client a box runs, and the producer's exporter with 50 boxes.

    .venv/bin/python bench/fleet.py [--boxes 50] [--seconds 20] [--every 1]

A real Mosquitto on loopback (TLS, passwords, the ACL from docs/), configured as
the tests do. In one child process, `--boxes` fleet clients (the daemon's own
FleetClient, each with a live box's status) report every `--every` seconds; the
exporter (`appliance fleet exporter`) listens to all of them and is scraped once
a second. Over the window: CPU seconds per second of the clients' process (and per
box), of the exporter and of Mosquitto itself (the baseline: the broker moving the
same messages), the exporter's RSS, and the ratios.

With --daemon: the sim daemon live (320x180) twice, without the fleet and with it
reporting every second to the same broker: the CPU of its event-loop thread (where
the fleet client runs, status built and published) in each, and the difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mqttbroker import Mosquitto, free_port  # noqa: E402


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def clients_only(url: str, ca: str, boxes: int, every: float) -> None:
    from fleet_load import Clients

    c = Clients(url, ca, {f"box-{i:03d}": f"pw-box-{i:03d}" for i in range(boxes)}, every).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the bench closes it
    c.stop()


def loop_thread_cpu(pid: int) -> float:
    """The daemon's main thread (its event loop): user + system seconds."""
    fields = open(f"/proc/{pid}/task/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_cost(broker: Mosquitto, work: Path, seconds: float) -> tuple[float, float]:
    """(loop CPU s/s without the fleet, with it at 1 s)."""
    out = []
    for fleet in (False, True):
        d = work / ("with" if fleet else "without")
        d.mkdir()
        extra = (f'[fleet]\nenabled = true\nbroker = "{broker.local_url}"\nca_file = "{broker.ca}"\n'
                 'username = "box-000"\npassword = "pw-box-000"\ntelemetry_seconds = 1\n') if fleet else ""
        (d / "appliance.toml").write_text(
            f'[paths]\nstate_dir = "{d}/state"\nruntime_dir = "{d}/run"\nrecordings = "{d}/rec"\n'
            f'[device]\nname = "box-000"\n[video]\nwidth = 320\nheight = 180\nfps = 15\n[api]\nport = {free_port()}\n' + extra)
        cli = [sys.executable, "-m", "appliance"]
        proc = subprocess.Popen([*cli, "run", "--profile", "sim", "--config", str(d / "appliance.toml")], cwd=d,
                                stdout=subprocess.DEVNULL, stderr=open(d / "daemon.log", "wb"))
        try:
            deadline = time.monotonic() + 60
            while subprocess.run([*cli, "live", "--socket", str(d / "run" / "control.sock")],
                                 capture_output=True).returncode != 0:
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon did not go live")
                time.sleep(0.5)
            time.sleep(5)
            c0, t0 = loop_thread_cpu(proc.pid), time.monotonic()
            time.sleep(seconds)
            out.append((loop_thread_cpu(proc.pid) - c0) / (time.monotonic() - t0))
        finally:
            proc.terminate()
            proc.wait(30)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--daemon", action="store_true", help="also: a live daemon's loop with and without the fleet")
    ap.add_argument("--clients-only", nargs=2, metavar=("URL", "CA"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.clients_only:
        return clients_only(*a.clients_only, a.boxes, a.every)
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    users = {f"box-{i:03d}": f"pw-box-{i:03d}" for i in range(a.boxes)} | {"exporter": "pw-exporter"}
    broker = Mosquitto(work / "mqtt", "localhost", users).start()
    conf = work / "exporter.toml"
    conf.write_text(f'[fleet]\nbroker = "{broker.local_url}"\nca_file = "{broker.ca}"\nusername = "exporter"\n'
                    'password = "pw-exporter"\n')
    port = 19310
    if a.daemon:
        without, with_fleet = daemon_cost(broker, work, a.seconds)
        print(f"daemon live, its event loop: {without:.4f} CPU s/s without the fleet, {with_fleet:.4f} with it "
              f"reporting every 1 s: the fleet client costs {(with_fleet - without) * 1000:.2f} ms/s "
              f"(ratio {with_fleet / without:.2f})", flush=True)
    clients = subprocess.Popen([sys.executable, __file__, "--boxes", str(a.boxes), "--every", str(a.every),
                                "--clients-only", broker.local_url, str(broker.ca)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    exporter = subprocess.Popen([sys.executable, "-m", "appliance", "fleet", "exporter", "--listen", f"127.0.0.1:{port}",
                                 "--config", str(conf)], stdout=subprocess.DEVNULL, cwd=ROOT)
    try:
        assert clients.stdout.readline().strip() == "ready"
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            try:
                if urllib.request.urlopen(url, timeout=2).read().count(b"appliance_fleet_bitrate_bps{") == a.boxes:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the exporter never served every box")
            time.sleep(0.5)
        time.sleep(3)  # warm-up
        procs = {"clients": psutil.Process(clients.pid), "exporter": psutil.Process(exporter.pid),
                 "mosquitto": psutil.Process(broker.proc.pid)}
        start = {k: cpu(p) for k, p in procs.items()}
        t0, rss, scrapes, size = time.monotonic(), 0, 0, 0
        while time.monotonic() - t0 < a.seconds:
            size = len(urllib.request.urlopen(url, timeout=5).read())
            scrapes += 1
            rss = max(rss, procs["exporter"].memory_info().rss)
            time.sleep(1.0)
        dt = time.monotonic() - t0
        used = {k: (cpu(p) - start[k]) / dt for k, p in procs.items()}
    finally:
        clients.stdin.close()
        clients.wait(30)
        exporter.terminate()
        exporter.wait(10)
        broker.stop()
    per_box = used["clients"] / a.boxes
    print(f"{a.boxes} boxes, telemetry every {a.every:g} s, {dt:.0f} s, {scrapes} scrapes of {size / 1024:.0f} kB:")
    print(f"  fleet clients: {used['clients']:.4f} CPU s/s in all, {per_box * 1000:.2f} ms/s a box "
          f"(~{per_box * a.every / 5 * 1000:.2f} ms/s at the default 5 s)")
    print(f"  exporter:      {used['exporter']:.4f} CPU s/s, {rss / 2**20:.0f} MiB RSS")
    print(f"  mosquitto:     {used['mosquitto']:.4f} CPU s/s (baseline)")
    print(f"  ratios: exporter/broker {used['exporter'] / used['mosquitto']:.2f}, "
          f"clients/broker {used['clients'] / used['mosquitto']:.2f}")


if __name__ == "__main__":
    main()
