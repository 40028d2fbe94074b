"""Service start -> READY=1, median of 5 runs, against a bare interpreter start.

    .venv/bin/python bench/startup.py [--runs 5]

Runs `appliance run --profile sim` as systemd would (NOTIFY_SOCKET set), times
the READY=1 notification, then SIGTERMs it: after a boot (the encoder probes
run) and for a restart within the same boot (their verdicts are cached). The baseline, measured in the same
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
    def appliance_run(work: Path) -> float:
        (work / "appliance.toml").write_text(
            f'[paths]\nstate_dir = "{work}/state"\nruntime_dir = "{work}/run"\nrecordings = "{work}/rec"\n')
        cmd = [sys.executable, "-m", "appliance", "run", "--profile", "sim", "--config", str(work / "appliance.toml")]
        return time_to_ready(cmd, work)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = [time_to_ready([sys.executable, "-c", BASELINE], root) for _ in range(runs)]
        # A boot: /run is empty, so the encoder probes run (a fresh directory each time).
        cold = []
        for i in range(runs):
            (root / f"cold{i}").mkdir()
            cold.append(appliance_run(root / f"cold{i}"))
        # A restart within the same boot (crash, watchdog): the probe verdicts are cached.
        (root / "warm").mkdir()
        appliance_run(root / "warm")
        warm = [appliance_run(root / "warm") for _ in range(runs)]
    b, a, w = statistics.median(base), statistics.median(cold), statistics.median(warm)
    fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)  # noqa: E731
    print(f"bare python        -> READY=1 : median {b:.3f} s  (runs: {fmt(base)})")
    print(f"appliance, boot    -> READY=1 : median {a:.3f} s  (runs: {fmt(cold)})")
    print(f"appliance, restart -> READY=1 : median {w:.3f} s  (runs: {fmt(warm)})")
    print(f"ratio boot/bare {a / b:.1f}x, restart/bare {w / b:.1f}x;  goal: boot median <= 3 s -> "
          f"{'met' if a <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
