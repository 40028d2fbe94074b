"""The media path end to end: the real daemon, the sim profile (test pattern,
PulseAudio sine sources), recordings read back with PyAV."""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest

from appliance.config import EncoderRung
from appliance.media.encoders import Ladder
from appliance.media.packets import VideoSettings
from appliance.media.meters import Meter
from conftest import wait_until
from media_check import (
    decode_files, largest_gap, manifest, missing_frames, only_session, segments, starts_with_parameter_sets,
)

FPS = 30
FRAME = 90000 // FPS  # one frame in 1/90000


def media(d) -> dict:
    return d.request("status")["status"]["components"]["media"]


def go_live(d, timeout=20):
    d.wait_state("READY", timeout=timeout)
    assert d.request("live")["ok"]
    d.wait_state(("LIVE", "DEGRADED"), timeout=10)


def test_20_second_recording_decodes_with_both_tracks_in_sync(daemon_factory):
    d = daemon_factory().start()
    go_live(d)
    t0 = time.monotonic()
    # The meters read PulseAudio's -6 dBFS sine while live.
    wait_until(lambda: media(d)["audio"]["program"]["peak_dbfs"] > -7, 10, what="audio on the meters")
    status = media(d)
    assert status["encoder"] == "libx264"
    assert abs(status["audio"]["program"]["peak_dbfs"] - -6.0) <= 0.5
    time.sleep(max(0.0, 20 - (time.monotonic() - t0)))
    assert d.request("stop")["ok"]
    elapsed = time.monotonic() - t0
    d.wait_state("READY")
    assert d.terminate() == 0

    session = only_session(d.dir / "recordings")
    m = manifest(session)
    assert m["complete"] and m["encoder"] == "libx264" and m["audio_tracks"] == ["program", "ambient"]
    files = segments(session)
    assert [s["file"] for s in m["segments"]] == [f.name for f in files]
    assert not list(session.glob("*.part")), "every segment was closed and renamed"
    rec = decode_files(files)

    assert rec.decode_errors == 0
    frames = len(rec.video_pts)
    assert abs(frames - elapsed * FPS) <= 0.01 * elapsed * FPS, (frames, elapsed)
    assert largest_gap(rec.video_pts) == FRAME, "no frame missing anywhere"
    assert len(rec.audio) == 2, "program and ambient, each its own audio stream"
    video_end = (max(rec.video_pts) + FRAME) / 90000
    video_start = min(rec.video_pts) / 90000
    for stream, frames_ in rec.audio.items():
        start = min(t for t, _ in frames_)
        end = max(t + n / 48000 for t, n in frames_)
        assert abs(start - video_start) <= 1 / FPS, (stream, start, video_start)
        assert abs(end - video_end) <= 1 / FPS + 1024 / 48000, (stream, end, video_end)
        # A -6 dBFS sine has an RMS of -9 dBFS: the tone came through, unclipped.
        assert abs(rec.audio_rms_dbfs(stream) - -9.0) < 1.0, rec.audio_rms_dbfs(stream)
    for f, nals in zip(files, rec.first_video_nals):
        assert starts_with_parameter_sets(nals), f"{f.name} starts with {nals}"
    assert len(files) >= 2, "20 s at 10 s segments makes at least two"


def test_hardware_encoder_missing_is_rejected_and_libx264_chosen(tmp_path):
    ladder = Ladder(
        [EncoderRung(encoder="h264_v4l2m2m", hardware=True, device="/dev/video11", insert_sps_pps=True),
         EncoderRung(encoder="libx264", options={"preset": "veryfast"})],
        VideoSettings(1280, 720, 30, 4000, 4000), tmp_path / "cache.json")
    hw, sw = ladder.probe_all()
    assert not hw.ok and "h264_v4l2m2m" in hw.reason and "/dev/video11 is missing" in hw.reason
    assert sw.ok and "every keyframe with its SPS/PPS" in sw.reason
    assert [r.encoder for r in ladder.usable()] == ["libx264"]
    # Cached for this boot: a second probe runs no child process.
    again = Ladder(ladder.rungs, ladder.settings, tmp_path / "cache.json").probe_all()
    assert all(v.cached for v in again) and [v.ok for v in again] == [False, True]


RUNG_PAIR = """
[encoder]
ladder = [
  { encoder = "libx264", options = { preset = "ultrafast", tune = "zerolatency" } },
  { encoder = "libx264", options = { preset = "veryfast", tune = "zerolatency" } },
]
"""


def test_encoder_failing_mid_stream_falls_back_without_a_gap(daemon_factory):
    d = daemon_factory(config_extra=RUNG_PAIR).start()
    go_live(d)
    time.sleep(3)
    assert d.request("sim", action="encoder-fail")["ok"]
    wait_until(lambda: media(d)["fallbacks"], 5, what="the fallback")
    time.sleep(3)
    assert d.state() == "LIVE", "the show goes on"
    d.request("stop")
    d.wait_state("READY")
    skipped = media(d)["frames_dropped"]  # ticks a starved media thread skipped (a loaded machine)
    assert d.terminate() == 0
    assert "failed mid-stream" in d.log()
    rec = decode_files(segments(only_session(d.dir / "recordings")))
    assert missing_frames(rec.video_pts) == skipped, "the next rung takes over on the same frame: none lost"
    assert len(rec.video_pts) >= 5 * FPS


def test_a_short_stall_is_caught_up_and_a_long_one_skips_frames(daemon_factory):
    """The whole daemon is stopped (SIGSTOP) as a loaded CPU or a garbage collection
    would stop it: 0.25 s is caught up, no hole in the timeline; 1.5 s is skipped,
    counted and logged, and the timeline still follows the clock."""
    import signal

    d = daemon_factory().start()
    go_live(d)
    time.sleep(2)

    def stall(seconds):
        os.kill(d.proc.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(d.proc.pid, signal.SIGCONT)
        time.sleep(2)

    stall(0.25)
    assert media(d)["frames_dropped"] == 0, "a short stall is caught up"
    stall(1.5)
    d.request("stop")
    d.wait_state("READY")
    dropped = media(d)["frames_dropped"]  # the session's count stays until the next one
    assert d.terminate() == 0
    assert "video frames skipped" in d.log()
    assert dropped >= 0.9 * 1.5 * FPS, dropped
    pts = sorted(decode_files(segments(only_session(d.dir / "recordings"))).video_pts)
    holes = [(a / 90000, (b - a) / 90000) for a, b in zip(pts, pts[1:]) if b - a != FRAME]
    assert holes and holes[0][0] > 3.5 and holes[0][1] >= 1.2, f"no hole before the long stall: {holes}"
    assert len(pts) + dropped == pts[-1] // FRAME + 1, "every tick is a frame, or one counted as dropped"


def test_kill_9_while_recording_loses_only_the_open_segment_tail(daemon_factory):
    d = daemon_factory(config_extra="[recording]\nsegment_seconds = 3\n").start()
    go_live(d)
    session = None

    def two_closed():
        nonlocal session
        rec = d.dir / "recordings"
        dirs = [x for x in rec.iterdir()] if rec.exists() else []
        session = dirs[0] if dirs else None
        return session and len(segments(session)) >= 2 and list(session.glob("*.part"))
    wait_until(two_closed, 20, what="two closed segments and an open one")
    time.sleep(1.0)
    d.kill()

    closed = segments(session)
    for f in closed:
        rec = decode_files([f])
        assert len(rec.video_pts) >= 2 * FPS, f"{f.name} decodes whole"
    (open_seg,) = session.glob("*.part")
    rec = decode_files([open_seg])
    assert len(rec.video_pts) >= FPS // 2, "the open segment decodes up to its last packet"
    assert manifest(session)["open_segment"] == open_seg.name


def test_video_and_audio_loss_keep_timing_and_recover(daemon_factory):
    d = daemon_factory().start()
    go_live(d)
    wait_until(lambda: media(d)["audio"]["program"]["device_ok"], 10, what="audio up")
    time.sleep(1)
    d.request("sim", action="video-unplug")
    wait_until(lambda: "no video signal" in d.request("status")["status"]["conditions"], 5, what="no video")
    assert d.state() == "DEGRADED"
    time.sleep(2)
    d.request("sim", action="video-replug")
    wait_until(lambda: "no video signal" not in d.request("status")["status"]["conditions"], 10, what="video back")

    # Audio: the program input disappears from PulseAudio (a real unplug there).
    d.request("sim", action="audio-unplug", source="foh")
    wait_until(lambda: "audio program: device missing" in d.request("status")["status"]["conditions"], 10,
               what="audio loss noticed")
    time.sleep(2)
    d.request("sim", action="audio-replug", source="foh")
    wait_until(lambda: media(d)["audio"]["program"]["device_ok"], 15, what="audio back")
    wait_until(lambda: d.state() == "LIVE", 10, what="LIVE again")
    assert media(d)["slate_frames"] > FPS
    d.request("stop")
    d.wait_state("READY")
    assert d.terminate() == 0

    rec = decode_files(segments(only_session(d.dir / "recordings")), luma=True)
    assert largest_gap(rec.video_pts) == FRAME, "slate frames kept the timing continuous"
    dark = sum(1 for y in rec.video_luma if y < 30)  # the slate is black with white text
    assert dark >= FPS, dark
    video_seconds = len(rec.video_pts) / FPS
    for stream, frames_ in rec.audio.items():
        samples = sum(n for _, n in frames_)
        assert abs(samples / 48000 - video_seconds) < 0.2, "silence filled the audio gap"


def test_meter_reads_a_minus_6_dbfs_sine():
    t = np.arange(48000) / 48000
    tone = (10 ** (-6 / 20) * np.sin(2 * np.pi * 997 * t)).astype(np.float32)
    m = Meter("program")
    for block in np.split(np.vstack([tone, tone]), 30, axis=1):
        m.update(block)
    assert abs(m.peak - -6.0) <= 0.5
    assert abs(m.rms - -9.0) <= 0.5
    # BS.1770: a 997 Hz sine at -6 dBFS in both channels is about -6 LUFS.
    assert abs(m.loudness - -6.0) <= 0.5


def test_the_slate_clock_ticks_each_second():
    from appliance.media.video import Slate, luma

    def next_second():
        t = time.time()
        time.sleep(int(t) + 1.05 - t)

    slate = Slate(320, 180)
    next_second()
    first = luma(slate.frame()).copy()
    assert (luma(slate.frame()) == first).all(), "the same picture within the second"
    next_second()
    assert (luma(slate.frame()) != first).any(), "the clock on the slate moved on"


def test_meter_clip_and_silence_alarms():
    now = [0.0]
    m = Meter("program", silence_dbfs=-60, silence_seconds=5, clock=lambda: now[0])
    silence = np.zeros((2, 1600), np.float32)
    for _ in range(4 * FPS):  # 4 s of silence: not yet
        now[0] += 1 / FPS
        assert "silent" not in m.update(silence)
    fired = []
    for _ in range(2 * FPS):
        now[0] += 1 / FPS
        fired.append(m.update(silence).get("silent"))
    assert any(fired) and m.silent
    assert m.update(np.full((2, 1600), 0.1, np.float32)) == {"silent": False}
    assert m.update(np.full((2, 1600), 0.999, np.float32)) == {"clipping": True}
    assert m.clips == 1


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_filling_disk_deletes_old_sessions_then_stops_recording_cleanly(daemon_factory, small_disk):
    """Only our sessions (their manifest says so) are deleted, oldest first; one that cannot
    be deleted is skipped and said once; lost+found and a stranger's directory stay."""
    rec_dir = small_disk / "recordings"
    stuck = rec_dir / "20190101-000000-stuck"
    for i, name in enumerate(["20190101-000000-stuck", "20200101-000000-old", "20200102-000000-older"]):
        old = rec_dir / name
        old.mkdir(parents=True)
        (old / "seg-00001.ts").write_bytes(os.urandom(3 * 1024 * 1024))
        (old / "session.json").write_text(json.dumps({"session": name}))
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    (stuck / "busy").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(stuck / "busy")], check=True)
    (rec_dir / "lost+found").mkdir()
    (rec_dir / "notes").mkdir()
    (rec_dir / "notes" / "setlist.txt").write_text("not a session\n")
    os.utime(rec_dir / "lost+found", (1, 1))
    d = daemon_factory(config_extra="""
[recording]
segment_seconds = 1
min_free_mb = 5
warn_free_mb = 7
""")
    d.config.write_text(d.config.read_text().replace(f'recordings = "{d.dir / "recordings"}"',
                                                      f'recordings = "{rec_dir}"'))
    d.start()
    go_live(d)
    wait_until(lambda: "recording stopped: disk full" in d.request("status")["status"]["conditions"], 60,
               what="the disk-full event")
    st = d.request("status")["status"]
    assert st["state"] == "DEGRADED", "still live: the stream would go on"
    rec = st["components"]["media"]["outputs"]["recorder"]
    assert rec["stopped"] == "recording stopped: disk full" and not rec["recording"]
    log = d.log()
    assert "retention: deleted old session 20200101-000000-old" in log
    assert "retention: deleted old session 20200102-000000-older" in log
    assert log.index("20200101-000000-old") < log.index("20200102-000000-older"), "oldest first"
    assert log.count("retention: cannot delete old session 20190101-000000-stuck") == 1, "said once, then skipped"
    assert len([line for line in log.splitlines() if "retention:" in line]) <= 4, "no loop"
    assert "20190101-000000-stuck" in rec["undeletable_sessions"]
    assert (rec_dir / "lost+found").is_dir() and (rec_dir / "notes" / "setlist.txt").exists(), "not ours: kept"
    assert d.request("stop")["ok"]
    d.wait_state("READY")
    assert d.terminate() == 0
    subprocess.run(["umount", str(stuck / "busy")], check=True)
    (session,) = [d for d in rec_dir.iterdir() if d.name not in (stuck.name, "lost+found", "notes")]
    assert decode_files(segments(session)).video_pts, "what was recorded before the disk filled is intact"


def test_bitrate_changes_while_running():
    """The adaptive bitrate drives the encoder live: the output follows."""
    import av

    from appliance.media.encoders import VideoEncoder

    settings = VideoSettings(640, 360, 30, 2000, 2000)
    enc = VideoEncoder(EncoderRung(encoder="libx264", options={"preset": "veryfast", "tune": "zerolatency"}), settings)
    with av.open("testsrc2=size=640x360:rate=30", format="lavfi") as src:
        frames = [f.reformat(format="yuv420p") for _, f in zip(range(180), src.decode(video=0))]

    def bits(chunk, start):
        return sum(len(p.data) for i, f in enumerate(chunk) for p in enc.encode(f, (start + i) * FRAME)) * 8

    high = bits(frames[:90], 0) / 3
    enc.set_bitrate(500)
    bits(frames[90:120], 90)  # one second for the rate control to settle
    low = bits(frames[120:], 120) / 2
    assert high > 1_500_000 and low < 750_000, (high, low)


def test_an_output_that_breaks_is_dropped_and_the_others_go_on(tmp_path):
    """picamera2's rule: a broken output marks itself dead, never the encoder thread."""
    import asyncio

    from appliance.config import Config
    from appliance.media.pipeline import MediaPipeline
    from appliance.outputs.recorder import Recorder

    class Flaky:
        name = "flaky"
        def __init__(self):
            self.packets = 0
        def start(self, session):
            pass
        def packet(self, pkt):
            self.packets += 1
            if self.packets == 20:
                raise OSError("network card on fire")
        def stop(self):
            pass
        def status(self):
            return {"packets": self.packets}

    cfg = Config.model_validate({"video": {"width": 320, "height": 240, "fps": 30}, "audio": {"tracks": []},
                                 "encoder": {"ladder": [{"encoder": "libx264", "options": {"preset": "ultrafast"}}]}})
    reports = []
    flaky = Flaky()
    rec = Recorder(cfg.recording, tmp_path / "rec")
    pipe = MediaPipeline(cfg, lambda c, a: reports.append((c, a)), tmp_path / "run", outputs=[flaky, rec])

    async def run():
        await pipe.start()
        await pipe.start_live()
        await asyncio.sleep(2)
        encoded = pipe.frames_encoded
        await pipe.stop_live()
        await pipe.stop()
        return encoded

    encoded = asyncio.run(run())
    assert flaky.packets == 20, "no packet after it broke"
    assert ("output flaky failed", True) in reports and ("output flaky failed", False) in reports
    assert encoded >= 45, "the encoder thread never noticed"
    assert decode_files(segments(only_session(tmp_path / "rec"))).video_pts, "the recorder got everything"


def test_the_test_pattern_drops_the_frames_it_owes_after_a_stall():
    """Every Python thread is held for a second (a C call that keeps the GIL, as a long
    garbage collection would): afterwards the pattern goes on from the present, as a
    capture card does, instead of drawing the 30 frames it owes at once."""
    import ctypes

    from appliance.config import VideoSection
    from appliance.media.video import TestPattern

    src = TestPattern(VideoSection(width=640, height=360, fps=FPS))
    src.start()
    try:
        wait_until(lambda: src.frames >= 10, 10, what="the pattern running")
        before = src.frames
        ctypes.PyDLL(None).usleep(1_000_000)  # PyDLL: the GIL stays held
        time.sleep(1.0)
        made = src.frames - before
    finally:
        src.stop()
    assert 0.5 * FPS <= made <= 1.4 * FPS, f"{made} frames in 2 s of which 1 s stalled"


def test_recording_too_slow_clears_once_the_disk_has_kept_up_again(tmp_path):
    """One hiccup of a slow card is not a fault for the rest of the show."""
    from fractions import Fraction

    from appliance.conditions import RECORDER_BEHIND
    from appliance.config import RecordingSection
    from appliance.media.packets import EncodedPacket
    from appliance.outputs.recorder import QUEUE_PACKETS, Recorder

    reports = []
    rec = Recorder(RecordingSection(), tmp_path, lambda c, a: reports.append((c, a)))  # its writer not started:
    rec.kept_up_for = 0.3                                                              # a disk that has stopped
    pkt = EncodedPacket(1, b"\x00" * 100, 0, 0, True, Fraction(1, 48000))
    for _ in range(QUEUE_PACKETS + 5):
        rec.packet(pkt)
    assert reports == [(RECORDER_BEHIND, True)] and rec.dropped == 5
    while not rec._queue.empty():  # the disk catches up
        rec._queue.get_nowait()
    rec.packet(pkt)
    assert reports[-1] == (RECORDER_BEHIND, True), "not at once: it must keep up for a while"
    time.sleep(0.4)
    rec.packet(pkt)
    assert reports[-1] == (RECORDER_BEHIND, False)


@pytest.fixture
def freezable_disk(tmp_path):
    """A real ext4 on a loop device that fsfreeze can stop: every write to it blocks until
    it thaws, as on a card that stops answering."""
    assert os.geteuid() == 0, "a loop mount needs root (CI runs as root)"
    image, mnt = tmp_path / "card.img", tmp_path / "card"
    subprocess.run(["truncate", "-s", "96M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    yield mnt
    subprocess.run(["fsfreeze", "-u", str(mnt)], capture_output=True)
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_stop_that_could_not_finalize_the_recording_says_so(daemon_factory, freezable_disk):
    rec_dir = freezable_disk / "recordings"
    d = daemon_factory(config_extra="[recording]\nsegment_seconds = 2\nmin_free_mb = 5\nwarn_free_mb = 10\n")
    d.config.write_text(d.config.read_text().replace(f'recordings = "{d.dir / "recordings"}"',
                                                      f'recordings = "{rec_dir}"'))
    d.start()
    go_live(d)
    wait_until(lambda: d.output("recorder")["segments"] >= 1, 20, what="a segment written")
    subprocess.run(["fsfreeze", "-f", str(freezable_disk)], check=True)
    try:
        assert d.request("stop")["ok"]
        d.wait_state("READY", timeout=30)
        # (1 loaded run in 16 found the control socket silent for 5 s here, frozen card and
        # all: not explained yet, see the session note; what this test asserts is the report)
        status = wait_until(lambda: _status_or_none(d), 30, what="the status")
        last = status["last_stop"]
        assert last["finalized"] is False and "recording not finalized" in last["problems"][0], last
        assert "the recording may not be finalized" in d.log()
        assert "not finalized" in status["components"]["media"]["outputs"]["recorder"]["not_finalized"]
        # The card holds the recorder's thread in the kernel: said, and no restart asked for.
        wait_until(lambda: "recording stalled: the disk does not answer" in d.request("status")["status"]["conditions"], 20,
                   what="the condition")
        assert "withholding WATCHDOG" not in d.log()
        # The card does not stop the show: GO goes live again, without the recorder.
        assert d.request("live")["ok"]
        d.wait_state(("LIVE", "DEGRADED"), timeout=15)  # (live, with conditions)
        wait_until(lambda: "output recorder failed" in d.request("status")["status"]["conditions"], 10, what="the recorder's condition")
    finally:
        subprocess.run(["fsfreeze", "-u", str(freezable_disk)], check=True)
    assert d.terminate() == 0


def _status_or_none(d):
    from appliance.errors import ControlError

    try:
        return d.request("status")["status"]
    except ControlError:
        return None
