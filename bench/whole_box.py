"""The whole box against the DIY equivalent a user would otherwise script.

    .venv/bin/python bench/whole_box.py [--seconds 20] [--sizes 1280x720,1920x1080]

Needs Debian's ffmpeg (apt-get install ffmpeg) and srt-live-transmit (srt-tools).
For each size, in the same run, 30 fps, libx264 veryfast/zerolatency at 4 Mb/s,
two stereo 48 kHz AAC tracks at 128 kb/s, a recording in 10 s MPEG-TS segments,
and SRT out to a local srt-live-transmit listener (writing to /dev/null):
  (a) the daemon live in simulation (`appliance run --profile sim`): its test
      pattern (lavfi testsrc2, with the clock burnt in), its two sine tracks
      through its own PulseAudio;
  (b) Debian's ffmpeg CLI: lavfi testsrc2 and two lavfi sine sources paced with
      -re, the same encode, the segment muxer and SRT out through tee;
  (c) the same ffmpeg capturing its two tracks from the same kind of PulseAudio
      sine sources the daemon's simulation has (`-f pulse`), as a user scripting a
      box would capture the desk: (b)'s audio is synthesised, nearly free.
After a warm-up, CPU seconds per second (user + system) and RSS over the
measured window, for the process and its children (PulseAudio shown apart).
Prints (a)/(b) and (a)/(c) for CPU and RSS. Goal: CPU a/b <= 1.1, and the
daemon under 120 MiB RSS at 1080p30.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 6.0


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listener(port: int) -> subprocess.Popen:
    return subprocess.Popen(["srt-live-transmit", f"srt://:{port}?mode=listener&latency=200", "file://con"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def measure(root: psutil.Process, seconds: float, apart: str = "") -> tuple[float, float, float]:
    """(CPU s/s of the tree but `apart`, CPU s/s of `apart`, peak RSS MiB of the tree but `apart`)."""

    def sample():
        cpu, other, rss = 0.0, 0.0, 0
        for p in tree(root):
            try:
                t, name = p.cpu_times(), p.name()
                if apart and apart in name:
                    other += t.user + t.system
                else:
                    cpu += t.user + t.system
                    rss += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return cpu, other, rss

    c0, o0, _ = sample()
    t0, peak = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        time.sleep(0.5)
        peak = max(peak, sample()[2])
    c1, o1, _ = sample()
    wall = time.monotonic() - t0
    return (c1 - c0) / wall, (o1 - o0) / wall, peak / 2**20


def the_daemon(work: Path, width: int, height: int, port: int, seconds: float):
    config = work / "appliance.toml"
    config.write_text(f"""
[paths]
state_dir = "{work}/state"
runtime_dir = "{work}/run"
recordings = "{work}/rec"
[video]
width = {width}
height = {height}
fps = 30
[encoder]
bitrate_kbps = 4000
audio_bitrate_kbps = 128
ladder = [{{ encoder = "libx264", options = {{ preset = "veryfast", tune = "zerolatency" }} }}]
[recording]
segment_seconds = 10
[stream]
enabled = true
url = "srt://127.0.0.1:{port}"
latency_ms = 200
[api]
port = {free_port(socket.SOCK_STREAM)}
""")
    cli = [sys.executable, "-m", "appliance"]
    proc = subprocess.Popen([*cli, "run", "--profile", "sim", "--config", str(config)], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=open(work / "daemon.log", "wb"))
    try:
        sock = work / "run" / "control.sock"
        deadline = time.monotonic() + 60
        while subprocess.run([*cli, "live", "--socket", str(sock)], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the daemon did not go live:\n" + (work / "daemon.log").read_text()[-2000:])
            time.sleep(0.5)
        time.sleep(WARMUP)
        return measure(psutil.Process(proc.pid), seconds, apart="pulseaudio")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def diy_ffmpeg(work: Path, width: int, height: int, port: int, seconds: float, pulse: bool = False):
    rec = work / "diy"
    rec.mkdir()
    sim = None
    if pulse:
        import asyncio

        from appliance.sim.audio import SOURCES, PulseSim

        sim, saved = PulseSim(work / "sim"), dict(os.environ)
        asyncio.run(sim.start())  # (it points this process's environment at its server)
        os.environ.clear()
        os.environ.update(saved)
        server = sim.env["PULSE_SERVER"]
        audio = [a for name in SOURCES for a in ("-f", "pulse", "-server", server, "-sample_rate", "48000",
                                                   "-channels", "2", "-i", f"{name}.monitor")]
    else:
        audio = ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                 "-re", "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000"]
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
           f"testsrc2=size={width}x{height}:rate=30", *audio,
           "-map", "0:v", "-map", "1:a", "-map", "2:a",
           "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", "4000k", "-maxrate", "4000k",
           "-bufsize", "4000k", "-g", "30", "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "128k", "-ac", "2",
           "-f", "tee", f"[f=segment:segment_time=10:segment_format=mpegts]{rec}/seg-%05d.ts|"
                        f"[f=mpegts]srt://127.0.0.1:{port}?pkt_size=1316&latency=200000"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(work / "ffmpeg.log", "wb"))
    try:
        time.sleep(WARMUP)
        if proc.poll() is not None:
            raise SystemExit("ffmpeg stopped:\n" + (work / "ffmpeg.log").read_text()[-2000:])
        cpu, _, rss = measure(psutil.Process(proc.pid), seconds)
        server_cpu = measure(psutil.Process(sim.proc.pid), seconds / 4)[0] if sim else 0.0
        return cpu, server_cpu, rss
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if sim is not None:
            import asyncio

            asyncio.run(sim.stop())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--sizes", default="1280x720,1920x1080")
    args = ap.parse_args()
    for tool in ("ffmpeg", "srt-live-transmit"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed: apt-get install {'ffmpeg' if tool == 'ffmpeg' else 'srt-tools'}")
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    for size in args.sizes.split(","):
        width, height = map(int, size.split("x"))
        results = {}
        runs = (("a", the_daemon), ("b", diy_ffmpeg), ("c", lambda *a: diy_ffmpeg(*a, pulse=True)))
        for name, run in runs:
            port = free_port()
            ingest = listener(port)
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    results[name] = run(Path(tmp), width, height, port, args.seconds)
            finally:
                ingest.terminate()
                ingest.wait()
        (a_cpu, pulse, a_rss), (b_cpu, _, b_rss), (c_cpu, c_pulse, c_rss) = results["a"], results["b"], results["c"]
        print(f"{height}p30: (a) daemon {a_cpu:.3f} CPU s/s (+{pulse:.3f} its PulseAudio), {a_rss:.0f} MiB\n"
              f"         (b) ffmpeg, synthesised audio {b_cpu:.3f} CPU s/s, {b_rss:.0f} MiB: "
              f"a/b CPU {a_cpu / b_cpu:.2f}, RSS {a_rss / b_rss:.2f}\n"
              f"         (c) ffmpeg capturing PulseAudio {c_cpu:.3f} CPU s/s (+{c_pulse:.3f} its PulseAudio), "
              f"{c_rss:.0f} MiB: a/c CPU {a_cpu / c_cpu:.2f} (with PulseAudio {(a_cpu + pulse) / (c_cpu + c_pulse):.2f}),"
              f" RSS {a_rss / c_rss:.2f}")


if __name__ == "__main__":
    main()
