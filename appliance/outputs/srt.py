"""The SRT output: the MPEG-TS in 1316-byte messages to an SRT listener.

The media thread only queues the encoded frames (bounded). A sender thread
owns the muxer and the libsrt socket: it connects, sends, and when the
connection breaks reconnects with backoff. The recording never notices.

The backlog stays in our hands, not in SRT's: a frame is muxed and handed to
SRT only while SRT holds less than the links clear in a share of the latency.
What SRT holds it sends or drops as a whole, audio and video alike; in our
queue the video can be shed (whole frames, up to the next keyframe) and the
audio goes on. So when the links collapse, the audio is never what waits
behind a backlog or is dropped first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Callable

from appliance import backoff, codecs, conditions, heartbeat
from appliance.config import StreamSection
from appliance.hostnames import NameNotResolved
from appliance.media.mux import TsMuxer
from appliance.media.packets import EncodedPacket, Report, Session
from appliance.outputs.abr import VOICE, AbrLimits
from appliance.outputs.pop_watch import PopWatch
from appliance.outputs.send_gate import SendGate
from appliance.outputs.slate_lane import SLATE_FPS, SlateEncoder, SlateTick
from appliance.outputs.srt_follow import LinkFollower
from appliance.outputs.srt_route import SrtRoute
from appliance.transport.caller import stream_caller
from appliance.transport.libsrt import LIVE_PAYLOAD, SrtCaller

log = logging.getLogger(__name__)

QUEUE_FRAMES = 1000  # ~8 s of frames (30 video + 2 x 47 audio a second): beyond it, backlog to shed
# The oldest queued frame waited this long (s): the video is shed up to its next keyframe.
# (our queue does not count against SRT's latency, which starts when SRT gets a packet)
SHED_AFTER_MIN, SHED_AFTER_OF_LATENCY = 1.0, 1.0
ABR_EVERY = 0.1
# The sender's loop turns every few ms; its longest waits are a backoff (5 s) and a
# send (SRTO_SNDTIMEO, 1 s). A connect bounds itself (a lookup, 3 s per address).
STUCK_SECONDS = 8.0
CONNECT_SECONDS = 30.0
NOT_CONNECTED = conditions.SRT_NOT_CONNECTED
FIRST_FRAMES_WITHIN = 0.5  # s from GO to dialling: the frames queued meanwhile go, the first one too
_END = object()


class SrtOutput(SrtRoute):
    name = "srt"

    def __init__(self, cfg: StreamSection, report: Report | None = None, abr: AbrLimits | None = None,
                 set_bitrate: Callable[[int], None] | None = None,
                 plan: Callable[[], dict] | None = None):
        self.cfg = cfg
        self.pops = cfg.pops()
        self.plan = plan or (lambda: {"pop": 0, "why": "the first listed"})
        self.latency_rule = "as configured"
        self.watch = PopWatch([p.label for p in self.pops])
        self.report = report or (lambda condition, active: None)
        self.follow = LinkFollower(self.name, abr if cfg.adaptive_bitrate else None, set_bitrate or (lambda kbps: None),
                                   self.report)
        self._slate_on = False  # media thread: the stream's video is the slate
        self._slate_next = 0
        self._slate_lane = SlateEncoder(self.name)  # sender thread
        self._accepting = False
        self._init_route()
        # media thread -> sender thread: (monotonic time queued, frame, kept when shedding), or _END
        self._frames: deque = deque()
        self._queued_bytes = 0
        self._cv = threading.Condition()
        self._need_key = True  # sender thread: video resumes on a keyframe
        self._pending = bytearray()
        self._mux: TsMuxer | None = None
        self._gate = SendGate()  # sender thread
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.caller: SrtCaller | None = None
        self.connected = False
        self.connected_since: float | None = None  # wall time of the current connection
        self._began, self._first_connect = 0.0, True
        self.chunks_sent = 0
        self.frames_dropped = 0  # queue overflow, and stale on reconnect
        self.video_shed = 0  # video frames not sent so that the audio goes on
        self._shedding: int | None = None  # sender thread: video_shed when the shedding began
        self.reconnects = 0
        self.last_error = ""
        self.stats: dict = {}
        self._not_connected = conditions.Latch(self.report, NOT_CONNECTED)
        self._unresolved = conditions.Current(self.report)  # the name condition reported now

    # --- media thread -----------------------------------------------------------------------

    def start(self, session: Session) -> None:
        self._frames.clear()
        self._queued_bytes = 0
        self._pending = bytearray()
        self._session = session
        self._slate_on, self._need_key, self._shedding = False, True, None
        self._slate_lane = SlateEncoder(self.name)
        self._mux = TsMuxer(self._bytes, session.video, session.audio_extradata, session.track_names,
                            service_name=session.name)
        self._stop.clear()
        # The session's first connection sends from its first frame (the recording's) when it
        # dials at once (the bond kept warm: a few round trips); later, that second of frames
        # would go in one burst, which the links queue and the ABR takes for congestion.
        self._began, self._first_connect = time.monotonic(), True
        plan = self.plan()
        with self._route_lock:
            self._take_route(plan)
            self._accepting = True
        self.follow.start()
        if len(self.pops) > 1:
            log.info("stream: PoP %s, %s", self.pop.label, plan["why"], extra={"OUTPUT": self.name, "POP": self.pop.label})
        if self.cfg.latency_ms == "auto" and "latency" not in self.query:
            self.latency_rule = plan.get("latency_rule", "")
            log.info("stream: SRT latency %s", self.latency_rule, extra={"OUTPUT": self.name})
        self._thread = threading.Thread(target=self._sender, name="srt-sender", daemon=True)
        self._thread.start()

    def packet(self, pkt: EncodedPacket) -> None:
        if not self._accepting:
            return
        if pkt.stream == 0:
            if self.follow.lane == VOICE or (self._slate_on and not pkt.key):
                self._slate(pkt)  # the voice lane; or back to video, which resumes on its next keyframe
                return
            self._slate_on = False
        self._put(pkt, keep=pkt.stream != 0)

    def _put(self, item, keep: bool) -> None:
        with self._cv:
            if item is not _END:
                if len(self._frames) >= QUEUE_FRAMES:
                    self.frames_dropped += 1
                    if item.stream == 0:
                        self._need_key = True  # what follows referred to it
                    return
                self._queued_bytes += len(item.data)
            self._frames.append((time.monotonic(), item, keep))
            self._cv.notify()

    def _slate(self, pkt: EncodedPacket) -> None:
        """A still slate at a few frames a second in place of the video, on the video's clock."""
        first = not self._slate_on
        if first:
            self._slate_on, self._slate_next = True, pkt.pts
        if pkt.pts < self._slate_next:
            return
        self._slate_next = pkt.pts + 90000 // SLATE_FPS
        # The slate goes like the audio, never shed: a few bytes a frame, and a slate frame
        # shed behind a backlog of audio would blank it until its next keyframe.
        self._put(SlateTick(pkt.pts, first), keep=True)

    def stop(self) -> None:
        if self._accepting:
            self._accepting = False
            self._put(_END, keep=True)  # the sender sends what is queued, then the muxer's last bytes
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._stop.set()
            with self._cv:
                self._cv.notify()
            self._thread.join()
            self._thread = None
        if self._mux is not None:  # the sender never got to the end (not connected)
            self._mux.close()
            self._mux = None
        with self._route_lock:
            self._leave_route()
        self._not_connected.set(False)
        self._name_condition(None)
        self._slate_lane.close()
        self.follow.stop()

    def status(self) -> dict:
        return {"url": self.where(), "pop": self.pop.label, "pops": self.watch.labels, "pop_moves": self.watch.moves,
                "latency_ms": self.latency_ms, "latency_rule": self.latency_rule, "connected": self.connected,
                **({"connected_since": self.connected_since} if self.connected else {}),
                "chunks_sent": self.chunks_sent,
                "frames_dropped": self.frames_dropped, "reconnects": self.reconnects, "queued": len(self._frames),
                **({"last_error": self.last_error} if self.last_error else {}), "srt": self.stats,
                **({"bond": self.bonder.status()} if self.bonder is not None else {}),
                "lane": self.follow.lane, "video_shed": self.video_shed, **self.follow.status()}

    # --- the sender thread --------------------------------------------------------------------

    def _caller(self) -> SrtCaller:
        host, port = self.host, self.port
        if self.bonder is not None:
            host, port = "127.0.0.1", self.bonder.local_port  # the bond carries it to the relay
        return stream_caller(self.stream, host, port, self.query)

    def _sender(self) -> None:
        # Every failure the network throws (a name that does not resolve, an unreachable
        # or refused address, an address gone with its interface, timeouts) is an OSError
        # and is retried inside the loop; what reaches here is a bug of ours.
        try:
            with heartbeat.beating("srt-sender", STUCK_SECONDS, show=True) as hb:
                self._send_loop(hb)
        except Exception as e:  # a bug of ours: the stream stops, loudly; the recording goes on
            log.exception("stream: the sender failed: %s", e, extra={"OUTPUT": self.name})
            self.connected, self.last_error = False, f"sender failed: {e}"
            self._not_connected.set(True)
            if self.caller is not None:
                self.caller.close()

    def _send_loop(self, hb: heartbeat.Heartbeat) -> None:
        attempt, last_stats, waiting_since = 0, 0.0, time.monotonic()
        while not self._stop.is_set():
            hb.beat()
            why, index = self.watch.verdict(time.monotonic(), self.bonder)
            if why:
                self._next_pop(why, index)
                waiting_since = time.monotonic()
            if not self.connected and self.bonder is not None and not self.bonder.ready():
                # No uplink has registered with the relay yet: connecting now would only fail.
                self._name_condition(self.bonder.name_error)
                if time.monotonic() - waiting_since > 5 or self.bonder.name_error is not None:
                    self._broken(self.bonder.problem())
                self._stop.wait(0.05)
                continue
            if not self.connected:
                try:
                    began = time.monotonic()
                    if self._first_connect and began - self._began <= FIRST_FRAMES_WITHIN:
                        began = self._began  # (through the warm bond: the recording's first frame on)
                    self.caller = self.caller or self._caller()
                    with hb.allow(CONNECT_SECONDS):
                        self.caller.connect()
                except OSError as e:
                    self._name_condition(e if isinstance(e, NameNotResolved) else None)
                    self._broken(str(e))
                    self._stop.wait(backoff.delay(attempt))
                    attempt += 1
                    continue
                attempt = 0
                self._name_condition(None)
                self._connected(began)
            try:
                now = time.monotonic()
                if now - last_stats >= ABR_EVERY:
                    self.stats, last_stats = self.caller.stats(), now
                    self._adapt(now)
                self._shed(now)
                if not self._srt_has_room(now):
                    self._stop.wait(0.005)
                    continue
                item = self._take()
                if item is _END:
                    self._finish()
                    break
                if item is not None:
                    self._send_frame(item)
            except OSError as e:  # SrtError among them
                self._broken(str(e))
                if self._mux is None:
                    break  # it broke while sending the last bytes: there is nothing left to reconnect for
        if self.caller is not None:
            self.caller.close()
        self.connected = False

    def _take(self):
        with self._cv:
            if not self._frames:
                self._cv.wait(0.05)
            if not self._frames:
                return None
            _, item, _ = self._frames.popleft()
            if item is not _END:
                self._queued_bytes -= len(item.data)
            return item

    def _srt_has_room(self, now: float) -> bool:
        meter = self.follow.meter
        if meter.kbps is None:
            return True
        held, span = self.caller.buffered()
        return self._gate.has_room(now, min(meter.kbps, meter.kbps_now), self.latency_ms,
                                   self.stats.get("rtt_ms", 100.0), held, span)

    def _shed(self, now: float) -> None:
        """The links fell behind: the queued video goes (up to its next keyframe), the audio and the slate stay."""
        with self._cv:
            if not self._frames or now - self._frames[0][0] < self._stale_after():
                return
            kept = deque(entry for entry in self._frames if entry[2])
            shed = len(self._frames) - len(kept)
            if shed:
                self._queued_bytes = sum(len(p.data) for _, p, _ in kept if p is not _END)
                self._frames = kept
                self.video_shed += shed
                self._need_key = True
        if shed and self._shedding is None:
            self._shedding = self.video_shed - shed
            log.info("stream: the links fell behind: video shed until they catch up, the audio goes on",
                     extra={"OUTPUT": self.name})

    def _stale_after(self) -> float:
        """How long a frame may wait in the queue and still be worth sending to a live viewer."""
        return max(SHED_AFTER_MIN, self.latency_ms / 1000 * SHED_AFTER_OF_LATENCY)

    def _send_frame(self, pkt: EncodedPacket | SlateTick) -> None:
        if isinstance(pkt, SlateTick):
            for frame in self._slate_lane.encode(pkt, self._session.video, self._need_key):
                self._send_frame(frame)
            return
        if pkt.stream == 0:
            if self._need_key and not pkt.key:
                if self._shedding is not None:  # (not the wait for the first keyframe of a connection)
                    self.video_shed += 1
                return
            if pkt.key and pkt.codec and pkt.codec != self._mux.codec:
                self._recodec(pkt.codec)
            self._need_key = False
            if self._shedding is not None:
                log.info("stream: video resumes (%d frames shed)", self.video_shed - self._shedding,
                         extra={"OUTPUT": self.name})
                self._shedding = None
        self._mux.mux(pkt)
        while len(self._pending) >= LIVE_PAYLOAD:
            chunk = bytes(self._pending[:LIVE_PAYLOAD])
            del self._pending[:LIVE_PAYLOAD]
            self.caller.send(chunk)
            self.chunks_sent += 1

    def _recodec(self, codec: str) -> None:
        """The show's codec changed (an H.265 encoder failed, H.264 goes on): a new TS on a
        fresh connection, as an ingest's demuxer keeps the stream type it read first. The
        video resumes there on its next keyframe."""
        s, old = self._session, self._mux
        self._mux = TsMuxer(self._bytes, replace(s.video, codec=codec), s.audio_extradata, s.track_names,
                            service_name=s.name)
        old.close()
        raise OSError(f"the video is {codecs.CODEC_LABELS[codec]} from here: a fresh connection for the ingest")

    def _bytes(self, data: bytes) -> None:
        self._pending += data

    def _finish(self) -> None:
        mux, self._mux = self._mux, None
        mux.close()
        while self._pending:  # whole TS packets, at most a message at a time
            self.caller.send(bytes(self._pending[:LIVE_PAYLOAD]))
            del self._pending[:LIVE_PAYLOAD]

    def _adapt(self, now: float) -> None:
        """The adaptive bitrate: SRT's view of the links drives the encoder and the lane."""
        with self._cv:
            waited_ms = (now - self._frames[0][0]) * 1000 if self._frames else 0.0
            queued = self._queued_bytes
        bond_resent = self.bonder.resent - self.bonder.held if self.bonder is not None else 0
        self.follow.update(now, self.stats, self.chunks_sent * LIVE_PAYLOAD, bond_resent, waited_ms, queued)

    def _connected(self, handshake_began: float) -> None:
        # What queued while we were away (backing off, or waiting for the relay) is stale
        # for a live viewer: it goes, and the video starts on a keyframe. What queued
        # during the handshake alone is fresh and is sent: a burst of a few round trips,
        # not a backlog for the bitrate controller to mistake for congestion.
        with self._cv:
            since = max(handshake_began, time.monotonic() - self._stale_after())
            fresh = deque(item for item in self._frames if item[1] is _END or item[0] >= since)
            stale = len(self._frames) - len(fresh)
            self._frames = fresh
            self._queued_bytes = sum(len(p.data) for _, p, _ in fresh if p is not _END)
            self.frames_dropped += stale
        self._pending.clear()  # a partial chunk of the old connection: the new one starts on a TS packet
        self.follow.connected()
        self._need_key = True
        self.connected, self.connected_since, self._first_connect = True, time.time(), False
        if self.reconnects or self._not_connected.active:
            log.info("stream: reconnected to %s (%d stale frames dropped)", self.where(), stale,
                     extra={"OUTPUT": self.name})
        else:
            log.info("stream: connected to %s", self.where(), extra={"OUTPUT": self.name})
        self._not_connected.set(False)

    def _name_condition(self, error: NameNotResolved | None) -> None:  # "relay name does not resolve: HOST"
        self._unresolved.set(conditions.unresolved(error.role, error.host) if error is not None else None)

    def _broken(self, why: str) -> None:
        """Logged when the cause changes: the bonded wait reports it at every poll."""
        if self.connected:
            self.reconnects += 1
            log.warning("stream: connection to %s lost (%s): reconnecting", self.where(), why,
                        extra={"OUTPUT": self.name})
        elif not self._not_connected.active or why != self.last_error:
            log.warning("stream: cannot connect to %s (%s): retrying", self.where(), why, extra={"OUTPUT": self.name})
        self.connected = False
        self.last_error = why
        if self.caller is not None:
            self.caller.close()
        self._not_connected.set(True)
