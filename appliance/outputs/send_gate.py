"""The SRT sender's gate: whether SRT may take the next frame now. SRT holds what the
links deliver in a share of its latency, no more: a standing queue deeper than that
leaves a lost packet's repair no time. Pure but for its own memory, and clocked by
the caller (tests drive it with a fake clock)."""

from __future__ import annotations

# SRT may hold what the links deliver in this share of the latency, and always a frame or two
# (what they carry in two frame times, at most 24 kB); and its oldest packet may have waited a
# few round trips (a loss and its repair), no more.
SRT_ROOM_OF_LATENCY = 0.25
SRT_ROOM_MIN, SRT_ROOM_MIN_S = 24_000, 0.066
SRT_SPAN_MIN, SRT_SPAN_OF_RTT, SRT_SPAN_SLACK = 60.0, 3.0, 30.0  # ms, x SRT's RTT, ms
SRT_STALL = 0.2  # s: SRT's buffer full and not draining for this long: it needs a nudge


class SendGate:
    def __init__(self):
        self.full_since: float | None = None  # SRT's buffer at its limit since
        self.full_held = 0

    def has_room(self, now: float, kbps: float, latency_ms: float, rtt_ms: float, held: int, span_ms: float) -> bool:
        """kbps: what the links deliver (the lower of the smoothed and the latest figure: a
        sudden fall shows in the latest first); held, span_ms: what SRT holds unacknowledged."""
        per_s = kbps * 1000 / 8  # bytes/s
        room = per_s * latency_ms / 1000 * SRT_ROOM_OF_LATENCY
        # Not a fixed floor: 24 kB is 280 ms of queue on links that carry 0.7 Mb/s, and a
        # standing queue that deep leaves a lost packet's repair no time within the latency.
        room_min = min(SRT_ROOM_MIN, per_s * SRT_ROOM_MIN_S)
        # The rate is measured ten times a second; the span is there at every frame. When
        # the links fall, what goes out before the fall is seen fills their queues and is
        # lost there, and its repair comes too late: the span stops it within a few round trips.
        # (SRT's smoothed RTT, not the path's best: a standing queue under a moderate cap
        # raises it, so the gate does not throttle links that are merely busy.)
        span_limit = min(latency_ms * SRT_ROOM_OF_LATENCY, max(SRT_SPAN_MIN, SRT_SPAN_OF_RTT * rtt_ms + SRT_SPAN_SLACK))
        if held <= room_min or (held < room and span_ms < span_limit):
            self.full_since = None
            return True
        if self.full_since is None or held < self.full_held:
            self.full_since, self.full_held = now, held  # (still draining)
            return False
        # Nothing drained for a while: in live mode SRT re-sends only what the receiver
        # reports missing, and drops what is too late only when given more; a packet lost
        # at the tail is reported only when a later one arrives. So one more frame goes.
        if now - self.full_since >= SRT_STALL:
            self.full_since = None
            return True
        return False
