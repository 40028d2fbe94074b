"""The SRT output in the daemon: srt-live-transmit as the ingest, the TS decoded."""

from __future__ import annotations

import json
import subprocess
import time

from conftest import free_port, wait_until
from netsim import stop_gracefully
from media_check import decode_files, largest_gap, only_session, segments, starts_with_parameter_sets

FRAME = 3000



def test_stream_reaches_the_ingest_and_decodes(daemon_factory, ingest):
    first = ingest.start()
    d = daemon_factory(config_extra=f'[stream]\nenabled = true\nurl = "srt://localhost:{ingest.port}"\nlatency_ms = 200\n').start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    d.wait_state(("LIVE", "DEGRADED"))
    wait_until(lambda: d.output("srt")["connected"], 5, what="connected")
    time.sleep(6)
    st = d.output("srt")
    assert st["chunks_sent"] > 1000 and st["frames_dropped"] == 0 and st["srt"]["packets_sent"] > 0
    d.request("stop")
    d.wait_state("READY")
    ingest.stop()
    rec = decode_files([first])
    assert starts_with_parameter_sets(rec.first_video_nals[0]), "the stream starts on a keyframe with SPS/PPS"
    assert rec.decode_errors <= 1, "at most the packet the ingest's stop cut in half"
    assert len(rec.video_pts) >= 5 * 30, len(rec.video_pts)
    assert largest_gap(rec.video_pts) == FRAME, "no frame lost on the way"
    assert len(rec.audio) == 2, "both audio tracks travel with the video"
    assert d.terminate() == 0


def test_reconnects_after_the_ingest_restarts_and_the_recording_is_untouched(daemon_factory, ingest):
    ingest.start()
    d = daemon_factory(config_extra=f'[stream]\nenabled = true\nurl = "srt://127.0.0.1:{ingest.port}"\nlatency_ms = 200\n').start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    wait_until(lambda: d.output("srt")["connected"], 10, what="connected")
    time.sleep(2)
    ingest.stop()  # the ingest goes away ...
    wait_until(lambda: "stream: not connected to the SRT ingest" in d.request("status")["status"]["conditions"], 10,
               what="the loss noticed")
    assert d.state() == "DEGRADED"
    time.sleep(1)
    second = ingest.start()  # ... and comes back
    wait_until(lambda: d.output("srt")["connected"], 15, what="reconnected")
    wait_until(lambda: d.state() == "LIVE", 5, what="LIVE again")
    time.sleep(4)
    assert d.output("srt")["reconnects"] >= 1
    # The outage is not a measure of the links: no fall to the voice lane after it.
    assert all(lane == "video" for _, _, lane, _ in d.output("srt")["abr"]["changes"]), d.output("srt")["abr"]
    d.request("stop")
    d.wait_state("READY")
    ingest.stop()
    resumed = decode_files([second])
    assert len(resumed.video_pts) >= 3 * 30, "the stream flows again after the reconnect, at full rate"
    assert resumed.decode_errors <= 30, "a late joiner waits at most one GOP for a keyframe"
    rec = decode_files(segments(only_session(d.dir / "recordings")))
    assert largest_gap(rec.video_pts) == FRAME, "the recording never noticed"
    assert d.terminate() == 0


def test_no_ingest_at_all_degrades_but_records(daemon_factory):
    port = free_port()
    d = daemon_factory(config_extra=f'[stream]\nenabled = true\nurl = "srt://127.0.0.1:{port}"\n').start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    wait_until(lambda: "stream: not connected to the SRT ingest" in d.request("status")["status"]["conditions"], 10,
               what="the condition")
    time.sleep(1)
    rec = d.output("recorder")
    assert rec["recording"] and rec["bytes"] > 0
    d.request("stop")
    d.wait_state("READY")
    assert "stream: not connected" not in " ".join(d.request("status")["status"]["conditions"])
    assert d.terminate() == 0


def test_bonded_stream_through_the_relay_decodes(daemon_factory, ingest, tmp_path):
    from conftest import APPLIANCE, ROOT

    first = ingest.start()
    relay_port = free_port()
    secret = tmp_path / "relay.secret"
    secret.write_text("a-shared-secret-for-the-relay")
    relay = subprocess.Popen([*APPLIANCE, "relay", "--listen", str(relay_port),
                              "--to", f"srt://localhost:{ingest.port}", "--secret-file", str(secret)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        d = daemon_factory(config_extra=f"""
[stream]
enabled = true
url = "srt://localhost:{relay_port}"
latency_ms = 500
bond = true
uplinks = ["wired@127.0.0.2", "cell@127.0.0.3"]
relay_secret = "a-shared-secret-for-the-relay"
""").start()
        d.wait_state("READY", timeout=20)
        d.request("live")
        wait_until(lambda: d.output("srt")["connected"], 15, what="connected through the bond")
        time.sleep(5)
        links = d.output("srt")["bond"]["links"]
        assert set(links) == {"wired", "cell"} and all(l["state"] == "up" for l in links.values())
        assert all(l["packets"] > 100 for l in links.values()), links
        assert "a-shared-secret" not in json.dumps(d.request("status"))
        d.request("stop")
        d.wait_state("READY")
        ingest.stop()
        rec = decode_files([first])
        # joined on its first keyframe after connecting; the ingest's latency trims the tail
        assert rec.decode_errors <= 1 and len(rec.video_pts) >= 3 * 30
        assert largest_gap(rec.video_pts) == FRAME
        assert d.terminate() == 0
    finally:
        stop_gracefully(relay)


def test_a_slow_handshake_loses_no_frame(daemon_factory, ingest):
    """Frames that queue while the handshake is held up are fresh, not stale: they all go."""
    from netsim import Impairer

    first = ingest.start()
    path = Impairer(("127.0.0.1", ingest.port))
    try:
        # (the default latency: the backlog leaves in one burst, through a proxy written in Python)
        d = daemon_factory(config_extra=f'[stream]\nenabled = true\nurl = "srt://127.0.0.1:{path.addr[1]}"\n'
                                        'latency_ms = 1000\n').start()
        d.wait_state("READY", timeout=20)
        path.held.add("127.0.0.1")  # the handshake waits, as behind a slow cellular attach
        d.request("live")
        time.sleep(0.5)
        assert not d.output("srt")["connected"]
        path.held.clear()
        wait_until(lambda: d.output("srt")["connected"], 5, what="connected")
        time.sleep(4)  # (the ingest holds the last second: the latency)
        st = d.output("srt")
        d.request("stop")
        d.wait_state("READY")
        ingest.stop()
        assert st["frames_dropped"] == 0, st
        rec = decode_files([first])
        assert starts_with_parameter_sets(rec.first_video_nals[0]), "the stream starts on a keyframe with SPS/PPS"
        # Every frame encoded (the recording has them all) up to the ingest's last: a tick the
        # media thread missed on a loaded machine is a gap in both, and not the handshake's.
        encoded = decode_files(segments(only_session(d.dir / "recordings"))).video_pts
        lost = sorted(set(p for p in encoded if p <= rec.video_pts[-1]) - set(rec.video_pts))
        assert not lost, f"{len(lost)} frames lost on the way, from pts {lost[:5]} ({st['srt']})"
        assert len(rec.video_pts) >= 3 * 30, len(rec.video_pts)
        assert rec.video_pts[0] == 0, "the viewer sees the show from its first frame"
        assert d.terminate() == 0
    finally:
        path.close()


def test_an_ingest_name_that_resolves_only_after_go_streams_by_itself(daemon_factory, ingest, private_hosts):
    out = ingest.start()
    d = daemon_factory(prefix=private_hosts.prefix, config_extra=f"""
[stream]
enabled = true
url = "srt://ingest.bench.test:{ingest.port}"
latency_ms = 200
""").start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    condition = "ingest name does not resolve: ingest.bench.test"
    wait_until(lambda: condition in d.request("status")["status"]["conditions"], 10, what="the name's condition")
    time.sleep(3)
    assert not d.output("srt")["connected"] and d.state() == "DEGRADED", "live, recording, not streaming"
    private_hosts.set({"ingest.bench.test": "127.0.0.1"})
    wait_until(lambda: d.output("srt")["connected"], 15, what="connected once the name resolves")
    wait_until(lambda: condition not in d.request("status")["status"]["conditions"], 5, what="the condition gone")
    assert d.log().count("cannot connect to srt://ingest.bench.test") == 1, "said once, not at every retry"
    time.sleep(3)
    d.request("stop")
    d.wait_state("READY")
    ingest.stop()
    assert len(decode_files([out]).video_pts) >= 2 * 30
    rec = decode_files(segments(only_session(d.dir / "recordings")))
    assert largest_gap(rec.video_pts) == FRAME, "the recording never noticed"
    assert d.terminate() == 0
