"""The SRT output's adaptive side: libsrt's statistics (and the bond's) read every
ABR_EVERY into the adaptive bitrate, whose answer moves the encoder's bitrate and the
lane (video, or the voice lane: audio and a still slate). Without the ABR the
delivery meter still runs: the send gate paces by what the links carry."""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable

from appliance import conditions
from appliance.media.packets import Report
from appliance.outputs.abr import VIDEO, VOICE, Abr, AbrLimits, DeliveryMeter
from appliance.transport.libsrt import LIVE_PAYLOAD

log = logging.getLogger("appliance.outputs.srt")  # (its lines keep the output's source)


class LinkFollower:
    def __init__(self, name: str, limits: AbrLimits | None, set_bitrate: Callable[[int], None], report: Report):
        self.name, self.limits, self.set_bitrate, self.report = name, limits, set_bitrate, report
        self.abr: Abr | None = None
        self.meter = DeliveryMeter()
        self.changes: deque = deque(maxlen=50)  # (monotonic time, kb/s, lane, why)
        self.moves = 0  # every change, this process
        self.lane = VIDEO  # read by the media thread, written by the sender's
        self._resent = self._resent_seen = 0  # SRT's re-sends, all connections; this one's

    def start(self) -> None:
        """A new show."""
        self.lane = VIDEO
        self.abr = Abr(self.limits) if self.limits else None
        self.meter = self.abr.meter if self.abr else DeliveryMeter()

    def connected(self) -> None:
        """A new connection: libsrt's counters start again, and the links' rate, measured
        across the outage, would seem to have carried almost nothing."""
        self._resent_seen = 0
        self.meter.reset()

    def stop(self) -> None:
        if self.lane == VOICE:
            self.lane = VIDEO
            self.report(conditions.VOICE_LANE, False)

    def update(self, now: float, st: dict, sent: int, bond_resent: int, waited_ms: float, queued: int) -> None:
        # A counter, like `sent`, across reconnects (libsrt's starts again with each socket):
        # the meter takes differences. What the bond held back never loaded a link; what it
        # rescued from a dead one did (bond_resent: the second less the first).
        self._resent += max(0, st["packets_retransmitted"] - self._resent_seen)
        self._resent_seen = st["packets_retransmitted"]
        resent = (self._resent + bond_resent) * LIVE_PAYLOAD
        if self.abr is None:
            self.meter.update(now, sent, st["send_buffer_bytes"], resent)
            return
        before_kbps, before_lane = self.abr.bitrate, self.abr.lane
        out = self.abr.update(now, st["rtt_ms"], st["send_buffer_ms"] + waited_ms, sent, st["send_buffer_bytes"], queued,
                              resent)
        if out.lane != before_lane:
            self.lane = out.lane
            if out.lane == VOICE:
                log.warning("stream: voice lane: audio and a still slate until the links recover (%s)", out.reason,
                            extra={"OUTPUT": self.name, "EVENT": "voice_lane"})
            else:
                log.info("stream: video resumes at %d kb/s (%s)", out.bitrate_kbps, out.reason,
                         extra={"OUTPUT": self.name, "EVENT": "video_lane"})
            self.report(conditions.VOICE_LANE, out.lane == VOICE)
        if out.bitrate_kbps != before_kbps or out.lane != before_lane:
            self.changes.append((round(now, 3), out.bitrate_kbps, out.lane, out.reason))
            self.moves += 1
            # In the voice lane the stream carries no video: the recording gets the full bitrate back.
            self.set_bitrate(self.limits.max_kbps if out.lane == VOICE else out.bitrate_kbps)
            if out.bitrate_kbps < before_kbps:
                # (DEBUG: every few seconds on a busy cell; the journal gets them once a minute, summed up)
                log.debug("stream: bitrate %d -> %d kb/s: %s", before_kbps, out.bitrate_kbps, out.reason,
                          extra={"OUTPUT": self.name})

    def status(self) -> dict:
        if self.abr is None:
            return {}
        delivered = self.abr.delivered_kbps
        return {"abr": {"bitrate_kbps": self.abr.bitrate, "delivered_kbps": None if delivered is None else round(delivered),
                        "changes": list(self.changes)[-10:], "moves": self.moves}}
