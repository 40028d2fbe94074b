"""The "NO VIDEO SIGNAL" slate: a frame as the pipeline takes it (drawn once a
second, 30 a second taken) against drawing it every time, in the same process.

    .venv/bin/python bench/slate.py [--frames 300]

Prints the milliseconds per frame of both at 720p and 1080p and their ratio.
"""

from __future__ import annotations

import argparse
import time

from appliance.media.video import Slate


def per_frame(fn, frames: int, fps: int) -> float:
    """CPU per frame, taking a frame each 1/fps s of wall clock (so the clock on the slate ticks)."""
    cpu = 0.0
    for _ in range(frames):
        t = time.process_time()
        fn()
        cpu += time.process_time() - t
        time.sleep(max(0.0, 1 / fps - 0.001))
    return cpu / frames * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()
    for w, h in ((1280, 720), (1920, 1080)):
        s = Slate(w, h)
        taken = per_frame(s.frame, args.frames, 30)
        drawn = per_frame(lambda: s.draw(time.strftime("%H:%M:%S")), args.frames, 30)
        print(f"{w}x{h}: taken {taken:.3f} ms/frame, drawn each time {drawn:.3f} ms/frame, "
              f"ratio {taken / drawn:.3f}")


if __name__ == "__main__":
    main()
