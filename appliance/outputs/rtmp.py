"""The RTMP/RTMPS output: a direct push to a platform (YouTube, Twitch).

Single path, no bonding: RTMP runs over one TCP connection. The media thread
only queues packets (bounded; on overflow the video is cut cleanly at the next
keyframe, never mid-GOP). A writer thread muxes them to MPEG-TS into the pipe
of a child process (appliance.outputs.rtmp_push) that re-muxes to FLV on the
server. When the child fails (server gone, refused, stalled) it is restarted
with backoff, starting again on a keyframe. The recording never notices.
"""

from __future__ import annotations

import logging
import queue
import subprocess
import sys
import tempfile
import threading
import time

from appliance import backoff, conditions, heartbeat
from appliance.children import child_argv, child_env
from appliance.config import RtmpSection
from appliance.configshow import redact_url
from appliance.media.mux import TsMuxer
from appliance.media.packets import EncodedPacket, Report, Session

log = logging.getLogger(__name__)

QUEUE_PACKETS = 600  # ~6 s of video and two audio tracks
STOP_WAIT = 5.0
# Its loop turns every 0.2 s; a write into a stalled server's pipe waits until the
# pusher gives up on it (RTMP's own timeouts). The stream over SRT and the recording
# do not wait on it: stuck, it is reported, not restarted.
STUCK_SECONDS = 20.0


class RtmpOutput:
    name = "rtmp"

    def __init__(self, cfg: RtmpSection, report: Report | None = None):
        self.cfg = cfg
        self.report = report or (lambda condition, active: None)
        self._queue: queue.Queue[EncodedPacket | None] = queue.Queue(QUEUE_PACKETS)
        self._gap = False  # media thread: a packet was dropped, wait for a keyframe
        self._session: Session | None = None
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen | None = None
        self._mux: TsMuxer | None = None
        self.connected = False
        self.packets_sent = 0
        self.packets_dropped = 0
        self.reconnects = 0
        self.last_error = ""
        self._not_connected = conditions.Latch(self.report, conditions.RTMP_NOT_CONNECTED)
        self._logged = ""  # the cause last logged: a new one is logged, the same one is not
        self._ever_connected = False

    def where(self) -> str:
        return redact_url(self.cfg.url)  # without the key (stream_key), nor one in a query

    # --- media thread -----------------------------------------------------------------------

    def start(self, session: Session) -> None:
        self._session = session
        self._queue = queue.Queue(QUEUE_PACKETS)
        self._ending = threading.Event()
        self._gap = False
        self._thread = threading.Thread(target=self._run, args=(self._queue, self._ending), name="rtmp-writer",
                                        daemon=True)
        self._thread.start()

    def packet(self, pkt: EncodedPacket) -> None:
        if self._gap:
            if not (pkt.stream == 0 and pkt.key):
                self.packets_dropped += 1
                return
            self._gap = False
        try:
            self._queue.put_nowait(pkt)
        except queue.Full:
            self.packets_dropped += 1
            self._gap = True

    def stop(self) -> None:
        """The writer sends what is queued, ends the pusher (EOF: a clean FLV end) and exits.
        Only the writer touches the muxer and the pipe; from here, at most a signal."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._ending.set()
            with heartbeat.allowing(3 * STOP_WAIT):
                thread.join(STOP_WAIT)
                child = self._child
                if thread.is_alive() and child is not None:
                    # The writer is stuck in a write to a stalled server: killed, the pusher's
                    # pipe breaks, and the writer's own failure path closes the rest.
                    log.warning("rtmp: the pusher does not take the last packets: ending it", extra={"OUTPUT": self.name})
                    child.kill()
                thread.join(STOP_WAIT)
            if thread.is_alive():
                log.error("rtmp: the writer did not stop within %g s", 2 * STOP_WAIT, extra={"OUTPUT": self.name})
        self._not_connected.set(False)

    def status(self) -> dict:
        return {"url": self.where(), "connected": self.connected, "packets_sent": self.packets_sent,
                "packets_dropped": self.packets_dropped, "reconnects": self.reconnects,
                "queued": self._queue.qsize(), **({"last_error": self.last_error} if self.last_error else {})}

    # --- the writer thread --------------------------------------------------------------------

    def _run(self, packets: queue.Queue, ending: threading.Event) -> None:
        with heartbeat.beating("rtmp-writer", STUCK_SECONDS) as hb:
            self._write(packets, ending, hb)

    def _write(self, packets: queue.Queue, ending: threading.Event, hb: heartbeat.Heartbeat) -> None:
        attempt, retry_at = 0, 0.0
        while True:
            hb.beat()
            try:
                pkt = packets.get(timeout=0.2)
            except queue.Empty:
                if ending.is_set():
                    break  # (what was queued before the stop is written first)
                pkt = False
            if self._child is not None and self._child.poll() is not None:
                self._failed()
                attempt, retry_at = attempt + 1, time.monotonic() + backoff.delay(attempt)
                continue
            if self.connected and attempt:
                attempt = 0
            if not pkt:
                continue
            if self._child is None:
                if ending.is_set() or time.monotonic() < retry_at or not (pkt.stream == 0 and pkt.key):
                    continue  # a viewer can only start on a keyframe
                try:
                    self._spawn()
                except OSError as e:  # no process to be had (fork failed, setpriv gone): retried
                    self._child = None
                    self._failed(f"cannot start the pusher: {e}")
                    attempt, retry_at = attempt + 1, time.monotonic() + backoff.delay(attempt)
                    continue
            try:
                self._mux.mux(pkt)
                self.packets_sent += 1
            except Exception:  # noqa: BLE001 - a broken pipe surfaces from PyAV as any of several errors
                self._failed()
                attempt, retry_at = attempt + 1, time.monotonic() + backoff.delay(attempt)
        self._close_child()
        self.connected = False

    def _spawn(self) -> None:
        env = child_env({"APPLIANCE_RTMP_URL": self.cfg.full_url()})
        self._stderr = tempfile.TemporaryFile()
        self._child = subprocess.Popen(child_argv([sys.executable, "-m", "appliance.outputs.rtmp_push"]),
                                       stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        threading.Thread(target=self._watch_child, args=(self._child,), name="rtmp-child-out", daemon=True).start()
        s = self._session
        self._mux = TsMuxer(self._child.stdin.write, s.video, s.audio_extradata, s.track_names, service_name=s.name)

    def _watch_child(self, child: subprocess.Popen) -> None:
        for line in child.stdout:
            if line.strip() == b"connected" and child is self._child:
                self._connected()

    def _connected(self) -> None:
        self.connected = True
        if self._ever_connected:
            self.reconnects += 1
            log.info("rtmp: reconnected to %s", self.where(), extra={"OUTPUT": self.name})
        else:
            log.info("rtmp: streaming to %s", self.where(), extra={"OUTPUT": self.name})
        self._ever_connected = True
        self._not_connected.set(False)

    def _failed(self, why: str = "") -> None:
        why = self._close_child(kill=True) or why or "the pusher stopped"
        was = self.connected
        self.connected = False
        self.last_error = why
        if was:
            log.warning("rtmp: connection to %s lost (%s): reconnecting", self.where(), why, extra={"OUTPUT": self.name})
        elif not self._not_connected.active or why != self._logged:
            log.warning("rtmp: cannot stream to %s (%s): retrying", self.where(), why, extra={"OUTPUT": self.name})
        self._logged = why
        self._not_connected.set(True)

    def _close_child(self, kill: bool = False) -> str:
        """Ends the child (EOF first, so it closes the FLV cleanly) and returns its last error line."""
        child, mux = self._child, self._mux
        self._child = self._mux = None
        if child is None:
            return ""
        if mux is not None:
            try:
                mux.close()
            except Exception:  # noqa: BLE001 - the pipe is already broken
                pass
        try:
            child.stdin.close()
        except OSError:
            pass
        try:
            child.wait(0.5 if kill else STOP_WAIT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        self._stderr.close()
        why = lines[-1] if lines else (f"exit status {child.returncode}" if child.returncode else "")
        key = self.cfg.stream_key.get_secret_value()
        return why.replace(key, "…") if key else why
