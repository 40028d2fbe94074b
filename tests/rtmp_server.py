"""An RTMP server a test can run: FFmpeg's listen mode through PyAV, in a child
process, writing what it receives to an MPEG-TS file (one process per run)."""

from __future__ import annotations

import subprocess
import sys
import time

SERVER = r"""
import sys, av
url, out = sys.argv[1], sys.argv[2]
inp = av.open(url, format="flv", options={"listen": "1"}, timeout=(60, 10))
o = av.open(out, "w", format="mpegts")
m = {s.index: o.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
print("receiving", flush=True)
try:
    for p in inp.demux(*[s for s in inp.streams if s.index in m]):
        if p.dts is None:
            continue
        p.stream = m[p.stream.index]
        o.mux(p)
except (av.error.FFmpegError, OSError):
    pass
o.close()
"""


class RtmpServer:
    def __init__(self, directory, port: int):
        self.dir, self.port, self.runs = directory, port, []

    @property
    def url(self) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live"

    def start(self):
        out = self.dir / f"rtmp-{len(self.runs)}.ts"
        p = subprocess.Popen([sys.executable, "-c", SERVER, f"{self.url}/secret-key", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.runs.append(p)
        time.sleep(0.5)  # listening
        return out

    def wait_receiving(self, timeout: float = 20) -> None:
        """Until the latest run has probed the stream and opened its file (0.3 s here; a CI
        run once had nothing after 4 s of streaming, and no file at all)."""
        import select

        p = self.runs[-1]
        ready, _, _ = select.select([p.stdout], [], [], timeout)
        line = p.stdout.readline() if ready else b""
        assert line.startswith(b"receiving"), f"the RTMP server was not receiving within {timeout} s"

    def stop(self):
        for p in self.runs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout:
                p.stdout.close()
