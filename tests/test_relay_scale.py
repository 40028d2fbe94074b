"""bench/relay_scale.py shortened, as a smoke test: 10 senders at 4 Mb/s through
`appliance relay` (and through the C forwarder it is measured against) arrive
whole, with a flood of strangers at the relay at the same time, and the relay's
memory stays under its bound: with one worker, and with two sharing the port."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

# The relay's bound, whatever strangers send (PSS, its workers' summed, as the cgroup counts
# them): the interpreter and its libraries (32 MiB, and some 6 MiB more for each further
# process), with every table full, the proofs it remembers (200 000: 74 MiB, measured with
# tracemalloc), the sources it rate-limits (100 000: 19 MiB) and its groups (200 of 8
# links), shared among the workers: about 135 MiB for one, 160 MiB for the most `auto`
# makes (4), under the unit's MemoryMax=256M. This flood fills none of them.
MEMORY_BOUND_MIB = 135


def test_ten_senders_arrive_whole_through_the_relay_under_a_flood_of_strangers():
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "relay_scale.py"), "--seconds", "3", "--no-bond",
                          "--flood", "3000"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    print(run.stdout, run.stderr[-2000:])
    assert run.returncode == 0, run.stdout + run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["c"]["whole"] and out["python_floor"]["whole"], out
    for key in ("relay", "relay_workers", "relay_python"):
        relay = out[key]
        assert relay["whole"] and relay["missing"] == 0, f"every sender's every packet reached the ingest: {relay}"
        assert relay["mbps"] >= 0.9 * 40 and relay["flood_sent"] > 5000, relay
        assert relay["memory_mib"] < MEMORY_BOUND_MIB, relay
    assert out["relay_workers"]["processes"] == 3, "the supervisor and its two workers"
