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
