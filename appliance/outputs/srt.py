"""The SRT output: the MPEG-TS in 1316-byte messages to an SRT listener.

The media thread only muxes and queues (bounded; on overflow whole chunks are
dropped and counted, never partial ones). A sender thread owns the libsrt
socket: it connects, sends, and when the connection breaks reconnects with
backoff. The recording never notices.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Callable
from urllib.parse import parse_qs, urlparse

from appliance import conditions
from appliance.config import StreamSection
from appliance.errors import ConfigError
from appliance.media.encoders import EncodedPacket
from appliance.media.mux import TsMuxer
from appliance.outputs import Report, Session
from appliance.transport.libsrt import LIVE_PAYLOAD, SrtCaller, SrtError
from appliance.uplinks.abr import VIDEO, VOICE, Abr, AbrLimits

log = logging.getLogger(__name__)

QUEUE_CHUNKS = 2000  # ~5 s at 4 Mb/s: beyond SRT's own buffer, this is backlog to shed
# Above this fill the video waits for its next keyframe and the audio goes first.
VIDEO_YIELDS_AT = QUEUE_CHUNKS // 4
ABR_EVERY = 0.1
SLATE_FPS = 5
BACKOFF = (0.5, 1.0, 2.0, 4.0, 5.0)
NOT_CONNECTED = conditions.SRT_NOT_CONNECTED


def parse_srt_url(url: str) -> tuple[str, int, dict]:
    u = urlparse(url)
    if u.scheme != "srt" or not u.hostname or not u.port:
        raise ConfigError([f"stream.url: {url!r} is not srt://HOST:PORT"])
    return u.hostname, u.port, {k: v[-1] for k, v in parse_qs(u.query).items()}


class SrtOutput:
    name = "srt"

    def __init__(self, cfg: StreamSection, report: Report | None = None, abr: AbrLimits | None = None,
                 set_bitrate: Callable[[int], None] | None = None):
        self.cfg = cfg
        self.abr_limits = abr if cfg.adaptive_bitrate else None
        self.set_bitrate = set_bitrate or (lambda kbps: None)
        self.abr: Abr | None = None
        self.abr_changes: deque = deque(maxlen=50)  # (monotonic time, kb/s, lane, why)
        self.lane = VIDEO
        self._slate_on = False  # media thread: the stream's video is the slate
        self._slate_enc = None
        self._slate_next = 0
        self._video_gap = False
        self.video_yielded = 0
        self.host, self.port, self.query = parse_srt_url(cfg.url)
        self.report = report or (lambda condition, active: None)
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_CHUNKS)
        self._pending = bytearray()
        self._mux: TsMuxer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.caller: SrtCaller | None = None
        self.connected = False
        self.chunks_sent = 0
        self.chunks_dropped = 0
        self.reconnects = 0
        self.last_error = ""
        self.stats: dict = {}
        self._reported = False
        self.bonder = None
        self._last_uplinks: dict[str, str] = {}

    def where(self) -> str:
        return f"srt://{self.host}:{self.port}" + (" (bonded, SRTLA)" if self.cfg.bond else "")

    # --- media thread -----------------------------------------------------------------------

    def start(self, session: Session) -> None:
        self._queue = queue.Queue(QUEUE_CHUNKS)
        self._pending = bytearray()
        self._session = session
        self.lane, self._slate_on, self._video_gap = VIDEO, False, False
        self.abr = Abr(self.abr_limits) if self.abr_limits else None
        self._mux = TsMuxer(self._bytes, session.video, session.audio_extradata, session.track_names,
                            service_name=session.name)
        self._stop.clear()
        if self.cfg.bond:
            from appliance.transport.bond import Bonder
            from appliance.transport.uplinks import resolve_uplinks

            self._last_uplinks = resolve_uplinks(self.cfg.uplinks)
            secret = self.cfg.relay_secret.get_secret_value().encode() or None
            self.bonder = Bonder((self.host, self.port), self._last_uplinks, secret)
            self.bonder.start()
        self._thread = threading.Thread(target=self._send_loop, name="srt-sender", daemon=True)
        self._thread.start()

    def packet(self, pkt: EncodedPacket) -> None:
        if self._mux is None:
            return
        if pkt.stream == 0:
            if self.lane == VOICE or (self._slate_on and not pkt.key):
                self._slate(pkt)  # the voice lane; or back to video, which resumes on its next keyframe
                return
            self._slate_on = False
            # The audio goes first: with a backlog the video waits for its next keyframe.
            if self._queue.qsize() > VIDEO_YIELDS_AT or (self._video_gap and not pkt.key):
                self._video_gap = True
                self.video_yielded += 1
                return
            self._video_gap = False
        self._mux.mux(pkt)

    def _slate(self, pkt: EncodedPacket) -> None:
        """A still slate at a few frames a second in place of the video, on the video's clock."""
        if not self._slate_on:
            self._slate_on, self._slate_next = True, pkt.pts
        if pkt.pts < self._slate_next:
            return
        s = self._session.video
        if self._slate_enc is None:
            from appliance.config import EncoderRung
            from appliance.media.encoders import VideoEncoder, VideoSettings
            from appliance.media.video import Slate

            self._slate_enc = VideoEncoder(
                EncoderRung(codec="libx264", options={"preset": "ultrafast", "tune": "zerolatency"}),
                VideoSettings(s.width, s.height, SLATE_FPS, 100, 150, keyframe_seconds=1.0))
            self._slate_src = Slate(s.width, s.height, "VIDEO PAUSED", "AUDIO CONTINUES")
        self._slate_next = pkt.pts + 90000 // SLATE_FPS
        for out in self._slate_enc.encode(self._slate_src.frame(), pkt.pts):
            self._mux.mux(out)

    def _bytes(self, data: bytes) -> None:
        self._pending += data
        while len(self._pending) >= LIVE_PAYLOAD:
            chunk = bytes(self._pending[:LIVE_PAYLOAD])
            del self._pending[:LIVE_PAYLOAD]
            self._enqueue(chunk)

    def _enqueue(self, chunk: bytes) -> None:
        try:
            self._queue.put_nowait(chunk)
        except queue.Full:
            self.chunks_dropped += 1

    def stop(self) -> None:
        if self._mux is not None:
            mux, self._mux = self._mux, None
            mux.close()
        if self._pending:
            self._enqueue(bytes(self._pending))  # a whole number of TS packets
            self._pending = bytearray()
        try:
            self._queue.put(None, timeout=1)
        except queue.Full:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self.bonder is not None:
            self.bonder.stop()
            self.bonder = None
            self.caller = None  # it pointed at the bond's port
        if self._reported:
            self._reported = False
            self.report(NOT_CONNECTED, False)
        self._slate_enc = None
        if self.lane == VOICE:
            self.lane = VIDEO
            self.report(conditions.VOICE_LANE, False)

    def status(self) -> dict:
        return {"url": self.where(), "connected": self.connected, "chunks_sent": self.chunks_sent,
                "chunks_dropped": self.chunks_dropped, "reconnects": self.reconnects, "queued": self._queue.qsize(),
                **({"last_error": self.last_error} if self.last_error else {}), "srt": self.stats,
                **({"bond": self.bonder.status()} if self.bonder is not None else {}),
                "lane": self.lane, "video_yielded": self.video_yielded,
                **({"abr": {"bitrate_kbps": self.abr.bitrate, "delivered_kbps": None if self.abr.delivered_kbps is None
                            else round(self.abr.delivered_kbps), "changes": list(self.abr_changes)[-10:]}}
                   if self.abr is not None else {})}

    # --- the sender thread --------------------------------------------------------------------

    def _caller(self) -> SrtCaller:
        c = self.cfg
        host, port = self.host, self.port
        if self.bonder is not None:
            host, port = "127.0.0.1", self.bonder.local_port  # the bond carries it to the relay
        return SrtCaller(host, port, latency_ms=int(self.query.get("latency", c.latency_ms)),
                         stream_id=self.query.get("streamid", c.stream_id.get_secret_value()),
                         passphrase=c.passphrase.get_secret_value())

    def _send_loop(self) -> None:
        attempt, last_stats, waiting_since = 0, 0.0, time.monotonic()
        while not self._stop.is_set():
            if not self.connected and self.bonder is not None and not self.bonder.ready():
                # No uplink has registered with the relay yet: connecting now would only fail.
                if time.monotonic() - waiting_since > 5 and not self._reported:
                    self._broken("no uplink registered with the relay")
                self._stop.wait(0.05)
                continue
            if not self.connected:
                try:
                    self.caller = self.caller or self._caller()
                    self.caller.connect()
                except SrtError as e:
                    self._broken(str(e))
                    self._stop.wait(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                    attempt += 1
                    continue
                attempt = 0
                self._connected()
            try:
                chunk = self._queue.get(timeout=0.2)
            except queue.Empty:
                chunk = b""
            if chunk is None:
                break
            try:
                if chunk:
                    self.caller.send(chunk)
                    self.chunks_sent += 1
                now = time.monotonic()
                if now - last_stats >= ABR_EVERY:
                    self.stats, last_stats = self.caller.stats(), now
                    self._adapt(now)
            except SrtError as e:
                self._broken(str(e))
        if self.caller is not None:
            self.caller.close()
        self.connected = False

    def _adapt(self, now: float) -> None:
        """The adaptive bitrate: SRT's view of the links drives the encoder and the lane."""
        if self.abr is None:
            return
        st = self.stats
        before_kbps, before_lane = self.abr.bitrate, self.abr.lane
        out = self.abr.update(now, st["rtt_ms"], st["send_buffer_ms"], self.chunks_sent * LIVE_PAYLOAD,
                              st["send_buffer_bytes"])
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
            self.abr_changes.append((round(now, 3), out.bitrate_kbps, out.lane, out.reason))
            # In the voice lane the stream carries no video: the recording gets the full bitrate back.
            self.set_bitrate(self.abr_limits.max_kbps if out.lane == VOICE else out.bitrate_kbps)
            if out.bitrate_kbps < before_kbps:
                log.info("stream: bitrate %d -> %d kb/s: %s", before_kbps, out.bitrate_kbps, out.reason,
                         extra={"OUTPUT": self.name})

    def set_uplinks(self, now: dict[str, str]) -> None:
        """Interfaces come and go (a modem re-attaching): the bond follows, live.
        The uplinks component, which watches the interfaces, calls this (any thread)."""
        if self.bonder is None:
            return
        if now != self._last_uplinks:
            log.info("stream: uplinks changed: %s", ", ".join(f"{n} {a}" for n, a in now.items()) or "none")
            self._last_uplinks = now
            self.bonder.set_uplinks(now)

    def _connected(self) -> None:
        # What queued while we were away is stale for a live viewer: start fresh.
        stale = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put_nowait(None)
                break
            stale += 1
        self.chunks_dropped += stale
        self.connected = True
        if self.reconnects or self._reported:
            log.info("stream: reconnected to %s (%d stale chunks dropped)", self.where(), stale,
                     extra={"OUTPUT": self.name})
        else:
            log.info("stream: connected to %s", self.where(), extra={"OUTPUT": self.name})
        if self._reported:
            self._reported = False
            self.report(NOT_CONNECTED, False)

    def _broken(self, why: str) -> None:
        if self.connected:
            self.reconnects += 1
            log.warning("stream: connection to %s lost (%s): reconnecting", self.where(), why,
                        extra={"OUTPUT": self.name})
        elif not self._reported:
            log.warning("stream: cannot connect to %s (%s): retrying", self.where(), why, extra={"OUTPUT": self.name})
        self.connected = False
        self.last_error = why
        if self.caller is not None:
            self.caller.close()
        if not self._reported:
            self._reported = True
            self.report(NOT_CONNECTED, True)
