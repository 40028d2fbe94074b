"""Service start -> READY=1, median of 5 runs, against a bare interpreter start.

    .venv/bin/python bench/startup.py [--runs 5]

Runs `appliance run --profile sim` as systemd would (NOTIFY_SOCKET set), times
the READY=1 notification, then SIGTERMs it. The baseline, measured in the same
run, is `python -c pass` to the same kind of notification, so the ratio shows
what the appliance itself costs on this machine. Goal: median <= 3 s on the
development machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE = ("import os, socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM);"
            " s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])")


def time_to_ready(cmd: list[str], workdir: Path) -> float:
    sock_path = workdir / "notify.sock"
    sock_path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(sock_path))
        s.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
        try:
            while b"READY=1" not in s.recv(4096):
                pass
            elapsed = time.perf_counter() - t0
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    runs = ap.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "appliance.toml").write_text(
            f'[paths]\nstate_dir = "{work}/state"\nruntime_dir = "{work}/run"\n')
        appliance = [sys.executable, "-m", "appliance", "run", "--profile", "sim", "--config", str(work / "appliance.toml")]
        base = [time_to_ready([sys.executable, "-c", BASELINE], work) for _ in range(runs)]
        app = [time_to_ready(appliance, work) for _ in range(runs)]
    b, a = statistics.median(base), statistics.median(app)
    print(f"bare python -> READY=1 : median {b:.3f} s  (runs: {', '.join(f'{x:.3f}' for x in base)})")
    print(f"appliance   -> READY=1 : median {a:.3f} s  (runs: {', '.join(f'{x:.3f}' for x in app)})")
    print(f"ratio appliance/bare   : {a / b:.1f}x   goal: appliance median <= 3 s -> {'met' if a <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
