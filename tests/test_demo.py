"""README's first command: scripts/demo goes live by itself and its stream,
bonded over two loopback uplinks through the local relay, reaches the ingest."""

from __future__ import annotations

import json
import os
import signal
import re
import subprocess

from conftest import APPLIANCE, ROOT, free_port, run_cli, wait_until
from media_check import decode_files, missing_frames


def test_demo_goes_live_and_streams_through_the_local_relay(tmp_path):
    demo = tmp_path / "demo"
    env = {**os.environ, "DEMO_DIR": str(demo), "DEMO_API_PORT": str(free_port()),
           "DEMO_RELAY_PORT": str(free_port()), "DEMO_INGEST_PORT": str(free_port())}
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC"):
        env.pop(var, None)
    log = open(tmp_path / "demo.log", "wb")
    p = subprocess.Popen([str(ROOT / "scripts" / "demo")], stdout=log, stderr=subprocess.STDOUT, env=env,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: "-> LIVE (" in (tmp_path / "demo.log").read_text(errors="replace"), 60,
                   interval=0.2, what="the demo going live")
        wait_until(lambda: (demo / "received.ts").exists() and (demo / "received.ts").stat().st_size > 2_000_000, 30,
                   interval=0.2, what="the stream arriving at the demo's ingest")
        # What the tech reads: where the stream goes, each uplink's share, the link LEDs solid.
        sock = ["--socket", str(demo / "run" / "control.sock")]
        text = wait_until(lambda: _status_with_both_links_carrying(sock), 15, what="both uplinks carrying")
        assert "stream: srt://" in text and "(bonded, SRTLA), connected since" in text, text
        assert "WIRED[solid]" in text and "5G[solid]" in text, text
        screen = tmp_path / "watch.out"
        with open(screen, "w") as f:
            # Started as a background job would be, with SIGINT ignored: Ctrl-C must end it all the same.
            watch = subprocess.Popen([*APPLIANCE, "status", *sock, "--watch", "0.3"], stdout=f,
                                     stderr=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        # Ctrl-C once it has redrawn (a loaded box takes a while to start Python).
        try:
            wait_until(lambda: screen.read_text().count("\x1b[H\x1b[2J") >= 2, 30, what="two redraws")
            watch.send_signal(signal.SIGINT)
            _, err = watch.communicate(timeout=10)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
        assert watch.returncode == 0, err
        assert "uplink sim-cell" in screen.read_text() and "Traceback" not in err
        status = json.loads(run_cli("status", *sock, "--json").stdout)
        media = status["components"]["media"]
        srt = media["outputs"]["srt"]
        # Frames the box itself says it skipped (a starved media thread) or shed (a sender
        # that fell behind): a loaded machine may; the path to the ingest must add none.
        accounted = media["frames_dropped"] + srt["video_shed"] + srt["frames_dropped"]
    finally:
        os.killpg(p.pid, signal.SIGINT)  # Ctrl-C, as a user would
        rc = p.wait(30)
        log.close()
    text = (tmp_path / "demo.log").read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert "bond: uplink sim-wired up" in text and "bond: uplink sim-cell up" in text
    got = decode_files([demo / "received.ts"])
    assert len(got.video_pts) >= 60 and missing_frames(got.video_pts) <= accounted, (missing_frames(got.video_pts),
                                                                                     accounted)
    assert len(got.audio) == 2


def _status_with_both_links_carrying(sock) -> str | None:
    text = run_cli("status", *sock).stdout
    shares = dict(re.findall(r"uplink (sim-wired|sim-cell): up[^\n]*?, (\d+) % of the traffic", text))
    return text if len(shares) == 2 and all(int(v) > 0 for v in shares.values()) else None
