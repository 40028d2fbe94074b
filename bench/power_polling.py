"""CPU cost of power monitoring: the source threads, against the wall clock.

    .venv/bin/python bench/power_polling.py [--seconds 20]

A Q1 UPS (2 s polls, 2400 baud) and a VE.Direct monitor (a block a second)
are simulated on ptys; psutil reads the CPU time of our source threads alone
(not the simulators'). Prints CPU seconds per wall second (a fraction of one core)
and, as the baseline of the same run, an idle thread sleeping the same time.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil

from appliance.power.sources import Q1Ups, VeDirectMonitor
from appliance.sim.power import BatteryModel, UpsSim, VeDirectSim


def thread_cpu(names: set[str]) -> float:
    ids = {t.native_id for t in threading.enumerate() if t.name in names}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id in ids)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    seconds = ap.parse_args().seconds
    with tempfile.TemporaryDirectory() as tmp:
        model = BatteryModel()
        ups_sim, bmv_sim = UpsSim(Path(tmp) / "ups", model), VeDirectSim(Path(tmp) / "bmv", model)
        sources = [Q1Ups("ups", ups_sim.path), VeDirectMonitor("battery", bmv_sim.path)]
        stop = threading.Event()
        idle = threading.Thread(target=lambda: [stop.wait(2.0) for _ in iter(int, 1) if not stop.is_set()],
                                name="idle-baseline", daemon=True)
        for s in sources:
            s.start()
        idle.start()
        time.sleep(3)  # connected, F and I answered
        names = {"power-ups", "power-battery"}
        c0, b0, t0 = thread_cpu(names), thread_cpu({"idle-baseline"}), time.monotonic()
        time.sleep(seconds)
        c1, b1, t1 = thread_cpu(names), thread_cpu({"idle-baseline"}), time.monotonic()
        polls = sum(s.polls for s in sources)
        stop.set()
        for s in sources:
            s.stop()
        ups_sim.close()
        bmv_sim.close()
    wall = t1 - t0
    print(f"power sources: {(c1 - c0) / wall * 100:.3f} % of one core over {wall:.0f} s ({polls} good readings)")
    print(f"idle baseline: {(b1 - b0) / wall * 100:.3f} % of one core")


if __name__ == "__main__":
    main()
