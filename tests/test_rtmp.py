"""The RTMP output in the daemon, against FFmpeg's RTMP listen mode."""

from __future__ import annotations

import time

import pytest

from conftest import free_port, wait_until
from media_check import decode_files, largest_gap, missing_frames, only_session, segments
from rtmp_server import RtmpServer

FRAME = 3000


@pytest.fixture
def server(tmp_path):
    s = RtmpServer(tmp_path, free_port())
    yield s
    s.stop()



def test_rtmp_reconnects_after_the_server_restarts_and_the_recording_is_untouched(daemon_factory, server):
    first = server.start()
    d = daemon_factory(config_extra=f'[rtmp]\nenabled = true\nurl = "{server.url}"\nstream_key = "secret-key"\n').start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    wait_until(lambda: d.output("rtmp")["connected"], 15, what="streaming to the RTMP server")
    server.wait_receiving()
    time.sleep(4)
    assert "secret-key" not in str(d.request("status")), "the stream key never shows"
    server.stop()  # the platform drops us ...
    wait_until(lambda: "stream: not connected to the RTMP server" in d.request("status")["status"]["conditions"], 15,
               what="the loss noticed")
    assert d.state() == "DEGRADED"
    second = server.start()  # ... and takes us back
    wait_until(lambda: d.output("rtmp")["connected"], 20, what="reconnected")
    wait_until(lambda: d.state() == "LIVE", 5, what="LIVE again")
    server.wait_receiving()
    time.sleep(4)
    st = d.output("rtmp")
    assert st["reconnects"] == 1, st
    d.request("stop")
    d.wait_state("READY")
    server.stop()
    for out, seconds in ((first, 3), (second, 3)):
        got = decode_files([out])
        assert len(got.video_pts) >= seconds * 30, (out, len(got.video_pts))
        assert got.decode_errors == 0, "each connection starts on a keyframe"
        assert missing_frames(got.video_pts) == 0, "nothing missing within a connection (FLV times are in ms)"
        assert len(got.audio) == 1, "FLV carries the program track"
    rec = decode_files(segments(only_session(d.dir / "recordings")))
    assert largest_gap(rec.video_pts) == FRAME, "the recording never noticed"
    assert "secret-key" not in d.log()
    assert d.terminate() == 0


def caps(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v, 16) for k, v in (line.split(":\t") for line in f if line.startswith("Cap"))}


def children_of(pid: int) -> list[int]:
    """Of every thread: a child belongs to the thread that started it."""
    from pathlib import Path

    return [int(p) for t in Path(f"/proc/{pid}/task").iterdir() for p in (t / "children").read_text().split()]


CAP_NET_RAW = 1 << 13


def test_the_daemon_with_only_its_units_cap_net_raw_keeps_it_and_its_rtmp_child_gets_none(daemon_factory, server):
    """As its unit runs it: no capability but the ambient CAP_NET_RAW (SO_BINDTODEVICE), no new
    privileges; the RTMP pusher, which dials out through FFmpeg, starts with no capability at all.
    (uid 0 with SECBIT_NOROOT has the capabilities of any other user: this machine's Python lives
    in /root, which another user could not run.)"""
    server.start()
    d = daemon_factory(config_extra=f'[rtmp]\nenabled = true\nurl = "{server.url}"\nstream_key = "k"\n',
                       prefix=["setpriv", "--securebits=+noroot,+noroot_locked,+no_setuid_fixup", "--no-new-privs",
                               "--bounding-set=-all,+net_raw", "--inh-caps=-all,+net_raw", "--ambient-caps=+net_raw",
                               "--"]).start()
    d.wait_state("READY", timeout=30)
    d.request("live")
    wait_until(lambda: d.output("rtmp")["connected"], 20, what="streaming to the RTMP server")
    daemon = d.request("status")["status"]["pid"]
    assert caps(daemon)["CapAmb"] == caps(daemon)["CapEff"] == CAP_NET_RAW, "the daemon holds it, and only it"
    pushers = [p for p in children_of(daemon) if b"rtmp_push" in open(f"/proc/{p}/cmdline", "rb").read()]
    assert pushers, children_of(daemon)
    for p in pushers:
        c = caps(p)
        assert c["CapEff"] == c["CapPrm"] == c["CapAmb"] == c["CapInh"] == 0, c
    server.wait_receiving()
    d.request("stop")
    d.wait_state("READY")
    assert d.terminate() == 0


def test_an_rtmp_server_name_that_resolves_only_after_go_streams_by_itself(daemon_factory, server, private_hosts):
    out = server.start()
    url = server.url.replace("127.0.0.1", "rtmp.bench.test")
    d = daemon_factory(prefix=private_hosts.prefix,
                       config_extra=f'[rtmp]\nenabled = true\nurl = "{url}"\nstream_key = "secret-key"\n').start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    wait_until(lambda: "rtmp.bench.test" in d.output("rtmp").get("last_error", ""), 15, what="the failure's cause shown")
    time.sleep(3)
    assert not d.output("rtmp")["connected"] and d.state() == "DEGRADED"
    private_hosts.set({"rtmp.bench.test": "127.0.0.1"})
    wait_until(lambda: d.output("rtmp")["connected"], 20, what="streaming once the name resolves")
    failures = [line for line in d.log().splitlines() if "rtmp: cannot stream to" in line]
    assert len(failures) == 1, "said once, not at every retry:\n" + "\n".join(failures)
    server.wait_receiving()
    time.sleep(2)
    d.request("stop")
    d.wait_state("READY")
    server.stop()
    assert len(decode_files([out]).video_pts) >= 30
    rec = decode_files(segments(only_session(d.dir / "recordings")))
    assert largest_gap(rec.video_pts) == FRAME, "the recording never noticed"
    assert "secret-key" not in d.log()
    assert d.terminate() == 0
