"""The RTMP/RTMPS pusher, run as a child process by the RTMP output:

    APPLIANCE_RTMP_URL=rtmp://host/app/key python -m appliance.outputs.rtmp_push

It reads MPEG-TS on stdin and re-muxes the video and the first audio track to
FLV on the URL with PyAV (no re-encoding). FFmpeg's RTMP code can block on a
stalled TCP connection or crash on a bad server reply: in a child process
neither can touch the daemon. The URL comes in the environment, never in argv,
because it carries the stream key and argv is world-readable in /proc.

Prints "connected" on stdout once the server took the stream header; exits 0
when stdin ends, 1 with one line on stderr when the server or the input fails.
"""

from __future__ import annotations

import os
import sys

# How long a stalled server may hold a write before we give up (microseconds).
RW_TIMEOUT_US = 5_000_000


def main() -> int:
    import av

    url = os.environ.get("APPLIANCE_RTMP_URL", "")
    if not url:
        print("rtmp: APPLIANCE_RTMP_URL is not set", file=sys.stderr)
        return 2
    av.logging.set_level(av.logging.ERROR)
    where, key = url.rsplit("/", 1)[0] + "/…", url.rsplit("/", 1)[1]

    def fail(what: str, e: Exception) -> int:
        # FFmpeg's messages quote the URL, and the URL carries the key.
        print(f"rtmp: {what}: {str(e).replace(url, where).replace(key, '…')}", file=sys.stderr)
        return 1

    try:
        # Small probes: the stream starts on a keyframe with SPS/PPS, so the
        # demuxer knows everything within a second instead of five.
        inp = av.open(sys.stdin.buffer, "r", format="mpegts",
                      options={"probesize": "500000", "analyzeduration": "1000000"})
    except (av.error.FFmpegError, OSError) as e:
        return fail("cannot read the stream", e)
    if not inp.streams.video:
        print("rtmp: the stream has no video", file=sys.stderr)
        return 1
    v = inp.streams.video[0]
    a = inp.streams.audio[0] if inp.streams.audio else None  # FLV carries one audio track: the program
    try:
        out = av.open(url, "w", format="flv", options={"rw_timeout": str(RW_TIMEOUT_US)}, timeout=(5.0, 5.0))
    except (av.error.FFmpegError, OSError) as e:
        return fail(f"cannot connect to {where}", e)
    try:
        ov = out.add_stream_from_template(v)
        oa = out.add_stream_from_template(a) if a is not None else None
        started = False
        for pkt in inp.demux(*(s for s in (v, a) if s is not None)):
            if pkt.dts is None:
                continue
            pkt.stream = ov if pkt.stream.index == v.index else oa
            out.mux(pkt)
            if not started:
                started = True
                print("connected", flush=True)
        out.close()
        return 0
    except (av.error.FFmpegError, OSError) as e:
        return fail(where, e)


if __name__ == "__main__":
    sys.exit(main())
