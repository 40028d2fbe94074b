"""The uplinks component in the daemon, on loopback: data caps and usage kept
across restarts, and the simulated modem's figures on the cellular uplink."""

from __future__ import annotations

import json
import subprocess
import time

from conftest import APPLIANCE, wait_until
from netsim import RelayThread


def test_a_metered_link_stops_at_its_cap_and_the_count_survives_a_restart(daemon_factory, ingest):
    ingest.start("&latency=500")
    relay = RelayThread()
    relay.relay.server = ("127.0.0.1", ingest.port)
    try:
        config = f"""
[stream]
enabled = true
url = "srt://127.0.0.1:{relay.addr[1]}"
latency_ms = 500
bond = true
uplinks = ["wired@127.0.0.2", "cell@127.0.0.3"]
[modem]
interface = "cell"
[links]
caps_mb = {{ cell = 1 }}
"""
        d = daemon_factory(config_extra=config).start()
        d.wait_state("READY", timeout=20)

        def uplinks():
            return d.component("uplinks")

        wait_until(lambda: uplinks()["links"].get("cell", {}).get("radio", {}).get("rat"), 10,
                   what="the simulated modem's figures on the cell uplink")
        d.request("live")
        wait_until(lambda: uplinks()["links"]["cell"]["standby"], 30, what="the cap reached")
        assert "uplink cell standby" in d.request("status")["status"]["conditions"]
        assert "uplinks: cell reached its data cap (1 MB): on standby" in d.log()
        bond = d.output("srt")["bond"]["links"]
        sent = bond["cell"]["packets"]
        time.sleep(2)
        bond = d.output("srt")["bond"]["links"]
        assert bond["cell"]["packets"] - sent < 20, "no more traffic on the capped link"
        assert bond["cell"]["state"] == "up", "still registered, as a last resort"
        used = uplinks()["links"]["cell"]["used_mb"]
        assert used >= 1.0
        d.request("stop")
        d.wait_state("READY")
        assert d.terminate() == 0
        saved = json.loads((d.dir / "state" / "usage.json").read_text())["bytes"]
        assert saved["cell"] >= 1_000_000
        d.start()  # the count, and so the cap, survive a restart
        d.wait_state("READY", timeout=20)
        assert uplinks()["links"]["cell"]["used_mb"] >= used
        d.request("live")
        wait_until(lambda: uplinks()["links"]["cell"]["standby"], 5, what="standby at once after the restart")
        # A new billing period: the tech zeroes the count, and the link carries traffic again.
        typo = subprocess.run([*APPLIANCE, "usage-reset", "cel", "--socket", str(d.socket)],
                              capture_output=True, text=True, timeout=30)
        assert typo.returncode == 1 and "no uplink 'cel'; did you mean 'cell'?" in typo.stderr, typo.stderr
        assert uplinks()["links"]["cell"]["used_mb"] >= used, "a wrong name resets nothing"
        reset = subprocess.run([*APPLIANCE, "usage-reset", "cell", "--socket", str(d.socket)],
                               capture_output=True, text=True, timeout=30)
        assert reset.returncode == 0 and reset.stdout.startswith("cell: ") and "MB -> 0" in reset.stdout, reset
        wait_until(lambda: not uplinks()["links"]["cell"]["standby"], 5, what="the cell link back from standby")
        sent = d.output("srt")["bond"]["links"]["cell"]["packets"]
        wait_until(lambda: d.output("srt")["bond"]["links"]["cell"]["packets"] - sent > 100, 10,
                   what="traffic on the cell link again")
        assert "uplinks: data usage reset: cell (was " in d.log()
        assert "uplink cell standby" not in d.request("status")["status"]["conditions"]
        d.request("stop")
        d.wait_state("READY")
        assert d.terminate() == 0
    finally:
        relay.close()
