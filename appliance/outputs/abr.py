"""Adaptive bitrate, pure: SRT's statistics in, the video bitrate and lane out.

Fed ten times a second with what libsrt reports (RTT, the send buffer in ms
and bytes) and how many bytes we handed it. It learns from belacoder (fast
down, slow up) and fixes what BELABOX users meet:
- it falls to what the links actually carried (bytes in minus the growth of
  the send buffer, plus the re-sends), not by fixed steps, so the buffer drains before it reaches
  the SRT latency;
- the RTT baseline is the minimum of the last 30 s, not of all time, so a
  route that got slower does not pin the bitrate at the floor;
- after a short hiccup it climbs straight back towards the last bitrate that
  held, then probes above it in growing steps (15 %, then 40 %) once a second,
  and a step that proves one too many is undone at once;
- below the video floor it switches to the voice lane (audio and a still
  slate) and tries the video again with a backoff, instead of sending a video
  no one can watch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

VIDEO, VOICE = "video", "voice"
BASE_RTT_WINDOW = 30.0
RATE_WINDOW = 0.5


@dataclass
class AbrLimits:
    min_kbps: int  # the video floor: below it the voice lane
    max_kbps: int
    latency_ms: int
    audio_kbps: int = 256  # what the audio tracks take, TS overhead included


TS_OVERHEAD = 1.15  # the TS and PES headers on the audio packets


def audio_kbps(tracks: int, kbps_each: int) -> int:
    """What the audio tracks take on the wire, TS/PES overhead included: the part of the
    show the adaptive bitrate cannot lower, and pre-flight counts in what a link must carry."""
    return int(tracks * kbps_each * TS_OVERHEAD)


@dataclass
class AbrOutput:
    bitrate_kbps: int
    lane: str
    reason: str = ""


class RttFloor:
    """The lowest RTT of the last BASE_RTT_WINDOW seconds: the path without its queues."""

    def __init__(self):
        self._rtts: deque[tuple[float, float]] = deque()

    def update(self, now: float, rtt_ms: float) -> float:
        self._rtts.append((now, rtt_ms))
        while now - self._rtts[0][0] > BASE_RTT_WINDOW:
            self._rtts.popleft()
        return min(r for _, r in self._rtts)


class DeliveryMeter:
    """What the links carried, in kb/s over the last half second: the bytes handed
    to SRT minus the growth of its send buffer, plus what went out again as
    re-sends. (Under a cap on links of different depth, SRT re-sends much of what
    was only late; counted as goodput alone, the links would seem to carry half
    of what they do, and the video would go for no reason.)"""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """A new connection: what the old one carried before it broke says nothing now."""
        self._samples: deque[tuple[float, int, int, int]] = deque()  # (t, handed to SRT, in its buffer, re-sent)
        self.kbps: float | None = None
        self.kbps_now = float("inf")  # since the last sample: noisy, but without the window's lag

    def update(self, now: float, sent_bytes: int, buffer_bytes: int, resent_bytes: int = 0) -> float | None:
        self._samples.append((now, sent_bytes, buffer_bytes, resent_bytes))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        self.kbps = None if now - self._samples[0][0] < 0.2 else self._rate(self._samples[0], self._samples[-1])
        if len(self._samples) > 1:
            self.kbps_now = self._rate(self._samples[-2], self._samples[-1])
        return self.kbps

    @staticmethod
    def _rate(since: tuple[float, int, int, int], now: tuple[float, int, int, int]) -> float:
        (t0, s0, b0, r0), (t1, s1, b1, r1) = since, now
        return max(0.0, ((s1 - s0) - (b1 - b0) + (r1 - r0)) * 8 / 1000 / max(1e-3, t1 - t0))


class Abr:
    def __init__(self, limits: AbrLimits):
        self.l = limits
        self.bitrate = limits.max_kbps
        self.lane = VIDEO
        self.known_good = limits.max_kbps
        self._rtt_floor = RttFloor()
        self.meter = DeliveryMeter()
        self._last_change = self._last_cut = -1e9
        self._raised_from: int | None = None  # the bitrate before the last step up
        self._buffer_at_cut = 0.0
        self._delivered_hist: deque[tuple[float, float]] = deque()
        self._clear_since: float | None = None
        self._voice_backoff = 2.0
        self._voice_since = 0.0
        self._probe_until = 0.0

    @property
    def delivered_kbps(self) -> float | None:
        return self.meter.kbps

    def update(self, now: float, rtt_ms: float, buffer_ms: float, sent_bytes: int, buffer_bytes: int,
               queued_bytes: int = 0, resent_bytes: int = 0) -> AbrOutput:
        """buffer_ms: how long the oldest byte not yet delivered has waited, in SRT's
        send buffer or before it (queued_bytes: the sender's own backlog, not yet handed to SRT;
        resent_bytes: what has gone out again, in all)."""
        l = self.l
        base = self._rtt_floor.update(now, rtt_ms)
        delivered = self.meter.update(now, sent_bytes, buffer_bytes, resent_bytes)
        buffer_bytes += queued_bytes  # from here on: the whole backlog
        if delivered is not None:
            self._delivered_hist.append((now, delivered))
            while now - self._delivered_hist[0][0] > 2.0:
                self._delivered_hist.popleft()
        severe = buffer_ms > l.latency_ms / 3
        # Early: a queue building anywhere on the path shows in the RTT and the buffer
        # long before SRT has to drop; every 100 ms of waiting costs a 1/3 overload
        # 33 ms of backlog. So the thresholds follow the link's own RTT, not the latency.
        congested = severe or buffer_ms > max(50.0, 2 * base) or rtt_ms > max(base + 40.0, 1.5 * base)
        # SRT's buffer always holds about an RTT of unacknowledged packets: on a 60 ms
        # cellular link 70 ms of buffer is clear, not congestion.
        clear = buffer_ms < max(40.0, 1.3 * base + 10) and rtt_ms < base + max(30.0, 0.25 * base)
        self._clear_since = (self._clear_since or now) if clear else None

        if delivered is None:
            # The first moments of a connection carry what queued during its handshake,
            # under SRT's initial RTT guess: nothing there says what the links carry.
            return AbrOutput(self.bitrate, self.lane)
        if self.lane == VOICE:
            return self._in_voice(now, congested)
        if congested:
            if self._raised_from is not None and now - self._last_change < 2.0:
                # The last step up was one too many: straight back to where it held.
                self.bitrate = self.known_good = self._raised_from
                self._raised_from, self._last_cut, self._last_change = None, now, now
                self._buffer_at_cut = buffer_bytes
                return AbrOutput(self.bitrate, VIDEO, f"no room for more (buffer {buffer_ms:.0f} ms, RTT {rtt_ms:.0f} ms)")
            # After a cut the backlog needs time to drain: cut again only if the
            # buffer is still growing, or it got dangerously close to the latency.
            # (in bytes: its span in ms keeps growing while the oldest packet waits for a retransmission)
            growing = buffer_bytes > self._buffer_at_cut * 1.1 + 20_000
            recent = now - self._last_cut < (0.3 if severe else 1.0)
            if not recent and (growing or severe or now - self._last_cut >= 2.0):
                return self._cut(now, delivered, buffer_ms, rtt_ms, buffer_bytes, severe)
            return AbrOutput(self.bitrate, VIDEO)
        # Up once a second at most: every change costs the encoder an IDR.
        if self._clear_since is not None and now - self._last_change >= 1.0 and self.bitrate < l.max_kbps:
            if now - self._clear_since >= 10:
                self.known_good = max(self.known_good, self.bitrate)  # it held: remember it
            if self.bitrate < self.known_good * 0.95:
                step = (self.known_good - self.bitrate) / 2  # straight back towards what held before the hiccup
            else:
                held = now - self._clear_since
                step = max(100.0, self.bitrate * (0.15 if held < 2 else 0.40))
            self._raised_from, self._buffer_at_cut = self.bitrate, buffer_bytes
            self.bitrate = int(min(l.max_kbps, self.bitrate + max(50.0, step)))
            self._last_change = now
            return AbrOutput(self.bitrate, VIDEO, "the links have room")
        return AbrOutput(self.bitrate, self.lane)

    def _cut(self, now: float, delivered: float | None, buffer_ms: float, rtt_ms: float, buffer_bytes: int,
             severe: bool) -> AbrOutput:
        """Down to what the links delivered (the median of the last second: one
        sample in a retransmission burst says too little), with room to drain;
        at least a fifth (half for the first of an episode), at most half in one step,
        unless the buffer is past a third of the latency: then down to drain it.
        The voice lane only from the floor, and only when what the links carry
        cannot hold the video at its floor."""
        l = self.l
        was = self.bitrate
        recent = sorted(d for t, d in self._delivered_hist if now - t <= 1.0)
        capacity = recent[len(recent) // 2] if recent else None
        fit = capacity * 0.85 - l.audio_kbps if capacity is not None else was * 0.7
        # The first cut of an episode halves: nothing yet says how much the links lost,
        # and every 100 ms of overload now costs SRT a retransmission round later.
        first = now - self._last_cut > 5.0
        target = int(max(was * 0.5, min(was * (0.5 if first else 0.8), fit)))
        if was <= self.known_good * 1.05:
            self.known_good = int(min(self.known_good, was * 0.9))
        if severe:
            # The backlog is a third of the latency: drain it now (belacoder drops to the
            # floor here too), then climb straight back to what the links carry.
            target = int(min(target, max(fit, 0) * 0.5))
            self.known_good = int(max(l.min_kbps, min(self.known_good, fit)))
        self._last_change = self._last_cut = now
        self._buffer_at_cut, self._raised_from = buffer_bytes, None
        if target < l.min_kbps:
            # The voice lane when the links cannot carry the floor; a backlog to drain
            # on links that can is drained at the floor, with the video on.
            if was <= l.min_kbps and fit < l.min_kbps:
                return self._to_voice(now, f"the links carry {capacity or 0:.0f} kb/s, under the video floor")
            target = l.min_kbps
        self.bitrate = target
        return AbrOutput(self.bitrate, VIDEO, f"congestion (buffer {buffer_ms:.0f} ms, RTT {rtt_ms:.0f} ms, "
                                              f"the links carry {capacity or 0:.0f} kb/s)")

    def _to_voice(self, now: float, why: str) -> AbrOutput:
        # A video probe that choked within its 3 s doubles the wait before the next one.
        self._voice_backoff = min(20.0, self._voice_backoff * 2) if now <= self._probe_until else 2.0
        self.lane, self._voice_since = VOICE, now
        self.bitrate = self.l.min_kbps
        return AbrOutput(self.bitrate, VOICE, why)

    def _in_voice(self, now: float, congested: bool) -> AbrOutput:
        if congested:
            self._voice_since = now
        if self._clear_since is not None and now - self._voice_since >= self._voice_backoff:
            # Try the video again at its floor; if it chokes within 3 s, wait twice as long next time.
            self.lane, self._last_change, self._probe_until = VIDEO, now, now + 3.0
            self.bitrate = self.l.min_kbps
            self.known_good = self.l.min_kbps
            return AbrOutput(self.bitrate, VIDEO, "room for the video again")
        return AbrOutput(self.bitrate, VOICE)
