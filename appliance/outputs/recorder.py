"""The local recorder: segmented MPEG-TS that no power cut or network can lose.

- Segments (default 10 s) are cut on video keyframes, so each starts with a
  keyframe carrying SPS/PPS and decodes alone.
- The open segment is `NAME.ts.part`; every packet reaches the page cache at
  once (a kill -9 loses nothing written) and it is fsync'ed every couple of
  seconds (a power cut loses at most that); on close it is fsync'ed and renamed
  to `NAME.ts` atomically.
- A manifest per session (`session.json`: start, segments, encoder, settings)
  is rewritten atomically after every segment.
- Free space: the oldest sessions (never the current one) are deleted below
  `min_free_mb`; a warning below `warn_free_mb`; if the disk still fills,
  recording stops with a clear "recording stopped: disk full" and nothing
  crashes.

All disk work happens in the recorder's own thread; the media thread only
queues packets (a full queue drops and counts, it never waits on a slow card).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

from appliance import heartbeat
from appliance.conditions import DISK_FULL, DISK_LOW, RECORDER_BEHIND, RECORDER_FAILED
from appliance.config import RecordingSection
from appliance.errors import ApplianceError
from appliance.fsutil import atomic_write, fsync_dir
from appliance.media.mux import TsMuxer
from appliance.media.packets import EncodedPacket, Report, Session

log = logging.getLogger(__name__)

QUEUE_PACKETS = 1500  # ~15 s of 30 fps video plus two audio tracks
FSYNC_EVERY = 2.0
MANIFEST = "session.json"
KEPT_UP_FOR = 60.0  # s without a dropped packet: "too slow" clears
# A stop waits this long for the last segment's close, fsync and rename: a card that
# has stopped answering must not hold the media thread (and the next GO) for ever.
FINALIZE_SECONDS = 5.0
# The queue holds ~15 s; a card's garbage collection stalls a write for a second or
# two. This long without a packet written is a recorder that no longer records.
STUCK_SECONDS = 10.0



class RecorderNotFinalized(ApplianceError, OSError):
    """The stop's finalize did not complete in time (the card does not answer)."""


class Recorder:
    name = "recorder"

    def __init__(self, cfg: RecordingSection, directory: Path, report: Report | None = None):
        self.cfg = cfg
        self.directory = Path(directory)
        self.report = report or (lambda condition, active: None)
        self.session: Session | None = None
        self.session_dir: Path | None = None
        self.segments: list[dict] = []
        self.dropped = 0
        self.bytes = 0
        self._open_bytes = 0  # the open segment's size at its last fsync (the recorder thread's)
        self.dead = ""
        self.deleted_sessions: list[str] = []
        self.undeletable: dict[str, str] = {}  # old sessions retention could not delete -> why (skipped)
        self._queue: queue.Queue = queue.Queue(QUEUE_PACKETS)
        self._thread: threading.Thread | None = None
        self._unfinished: threading.Thread | None = None  # a session's thread that did not finalize in time
        self.not_finalized = ""  # why the last stop did not finalize the recording
        self._ending = threading.Event()
        self._mux: TsMuxer | None = None
        self._seg_path: Path | None = None
        self._seg_start: float | None = None
        self._seg_last: float | None = None
        self._seg_index = 0
        self._last_fsync = 0.0
        self._low_warned = False
        self._behind = False
        self._dropped_at = 0.0
        self.kept_up_for = KEPT_UP_FOR

    # --- the media thread's side -------------------------------------------------

    def packet(self, pkt: EncodedPacket) -> None:
        if self.dead:
            return
        try:
            self._queue.put_nowait(pkt)
        except queue.Full:
            self.dropped += 1
            self._dropped_at = time.monotonic()
            if not self._behind:
                self._behind = True
                log.error("recorder: the disk cannot keep up, dropping packets", extra={"OUTPUT": self.name})
                self.report(RECORDER_BEHIND, True)
            return
        if self._behind and time.monotonic() - self._dropped_at >= self.kept_up_for:
            # One hiccup (a slow card's garbage collection) is not a lasting fault.
            self._behind = False
            log.info("recorder: the disk has kept up for %.0f s again", self.kept_up_for, extra={"OUTPUT": self.name})
            self.report(RECORDER_BEHIND, False)

    # --- lifecycle (loop side, through to_thread) -------------------------------------------

    def start(self, session: Session) -> None:
        if self._unfinished is not None and self._unfinished.is_alive():
            # It still holds this recorder's open segment: a second writer would interleave with it.
            raise RuntimeError("the last session's recording is still being finalized: the disk does not answer")
        self._unfinished, self.not_finalized = None, ""
        # A new session starts with a clean slate: last session's disk-full or
        # write error is history (retention runs again before every segment).
        for condition in (DISK_FULL, RECORDER_FAILED, DISK_LOW):
            self.report(condition, False)
        self._low_warned = False
        self.session = session
        self.segments = []
        self.dropped = 0
        self.bytes = 0
        self._open_bytes = 0
        self.dead = ""
        self._seg_index = 0
        self._behind = False
        # Called in the media thread: the directory and the first manifest are made in
        # the recorder's own thread, so a card that does not answer holds only that one.
        self.session_dir = self.directory / session.name
        self._queue = queue.Queue(QUEUE_PACKETS)
        self._ending = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._queue, self._ending), name="recorder",
                                        daemon=True)
        self._thread.start()
        log.info("recording to %s", self.session_dir, extra={"OUTPUT": self.name, "SESSION": session.name})

    def stop(self) -> None:
        """Finalize: the last segment closed, fsync'ed, renamed; manifest written. Raises
        RecorderNotFinalized when that did not happen within FINALIZE_SECONDS."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._ending.set()
        with heartbeat.allowing(FINALIZE_SECONDS + 1):
            thread.join(FINALIZE_SECONDS)
        if self._behind:
            self.report(RECORDER_BEHIND, False)
        if thread.is_alive():
            self._unfinished = thread
            self.not_finalized = why = f"recording not finalized: the disk did not answer within {FINALIZE_SECONDS:g} s"
            log.error("%s (%s)", why, self.session_dir, extra={"OUTPUT": self.name})
            raise RecorderNotFinalized(why)
        log.info("recording finalized: %d segments, %.1f MB in %s", len(self.segments), self.bytes / 1e6,
                 self.session_dir, extra={"OUTPUT": self.name})

    def status(self) -> dict:
        return {
            "session": self.session.name if self.session else None,
            "directory": str(self.session_dir) if self.session_dir else None,
            "segments": len(self.segments),
            "bytes": self.bytes + self._open_bytes,
            "seconds": round(sum(s["duration"] or 0 for s in self.segments), 1),  # (a truncated one: unknown)
            "dropped_packets": self.dropped,
            "recording": self._thread is not None and not self.dead,
            **({"stopped": self.dead} if self.dead else {}),
            **({"not_finalized": self.not_finalized} if self.not_finalized else {}),
            **({"undeletable_sessions": dict(self.undeletable)} if self.undeletable else {}),
        }

    # --- the recorder thread ------------------------------------------------------------

    def _run(self, packets: queue.Queue, ending: threading.Event) -> None:
        with heartbeat.beating("recorder", STUCK_SECONDS, show=True, disk=True) as hb:
            self._record(packets, ending, hb)

    def _record(self, packets: queue.Queue, ending: threading.Event, hb: heartbeat.Heartbeat) -> None:
        try:
            self.session_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._fail(e)
        else:
            self._write_manifest(open_segment=None)
        while True:
            hb.beat()
            try:
                pkt = packets.get(timeout=0.25)
            except queue.Empty:
                if ending.is_set():
                    break  # (all that was queued before the stop is written first)
                continue
            if self.dead:
                continue
            try:
                self._write(pkt)
            except OSError as e:
                self._fail(e)
            except Exception as e:  # PyAV wraps write errors in its own types
                self._fail(e)
        try:
            self._close_segment()
        except Exception as e:
            self._fail(e)
        self._write_manifest(open_segment=None, complete=True)

    def _write(self, pkt: EncodedPacket) -> None:
        t = pkt.seconds
        if pkt.stream == 0 and pkt.key:
            if (self._mux is None or t - self._seg_start >= self.cfg.segment_seconds - 1e-6
                    or pkt.codec and pkt.codec != self._mux.codec):  # (a fallback changed it: a segment holds one)
                self._close_segment()
                if not self._open_segment(t, pkt.codec):
                    return
        if self._mux is None:
            return  # waiting for the first keyframe: a segment must start with one
        self._mux.mux(pkt)
        if pkt.stream == 0:
            self._seg_last = t
        now = time.monotonic()
        if now - self._last_fsync >= FSYNC_EVERY:
            self._fsync(self._seg_path)
            self._last_fsync = now
            # For the status, which must not touch the disk: a stat on the loop waits behind
            # a rename in this directory on a card that has stopped answering.
            self._open_bytes = self._seg_path.stat().st_size

    def _open_segment(self, t: float, codec: str = "") -> bool:
        if not self._make_room():
            return False
        self._seg_index += 1
        self._seg_path = self.session_dir / f"seg-{self._seg_index:05d}.ts.part"
        s = self.session
        video = replace(s.video, codec=codec or s.video.codec)
        self._mux = TsMuxer(self._seg_path, video, s.audio_extradata, s.track_names, service_name=s.name)
        self._seg_start = self._seg_last = t
        self._last_fsync = time.monotonic()
        self._write_manifest(open_segment=self._seg_path.name)
        return True

    def _close_segment(self) -> None:
        if self._mux is None:
            return
        mux, path, start, last = self._mux, self._seg_path, self._seg_start, self._seg_last
        self._mux = None
        mux.close()
        self._fsync(path)
        final = path.with_name(path.name[: -len(".part")])
        os.replace(path, final)
        fsync_dir(final.parent)
        size = final.stat().st_size
        self.bytes, self._open_bytes = self.bytes + size, 0
        self._seg_path = None
        self.segments.append({"file": final.name, "start": round(start, 3),
                              "duration": round(last - start + 1 / self.session.video.fps, 3), "bytes": size,
                              "codec": mux.codec})
        self._write_manifest(open_segment=None)

    def _fsync(self, path: Path | None) -> None:
        if path is None or not path.exists():
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _fail(self, e: Exception) -> None:
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in str(e)
        self.dead = DISK_FULL if full else f"{RECORDER_FAILED}: {e}"
        log.error("%s (%s)", self.dead, self.session_dir, extra={"OUTPUT": self.name})
        self.report(DISK_FULL if full else RECORDER_FAILED, True)
        # Keep what was written: the open segment decodes up to its last packet.
        if self._mux is not None:
            try:
                self._mux.close()
            except Exception:
                pass
            self._mux = None
        if self._seg_path is not None and self._seg_path.exists():
            try:
                final = self._seg_path.with_name(self._seg_path.name[: -len(".part")])
                os.replace(self._seg_path, final)
                self.segments.append({"file": final.name, "start": self._seg_start, "duration": None,
                                      "bytes": final.stat().st_size, "truncated": True})
            except OSError:
                pass
            self._seg_path = None

    # --- free space ------------------------------------------------------------------------

    def _free_mb(self) -> float:
        return shutil.disk_usage(self.directory).free / 1e6

    def _make_room(self) -> bool:
        free = self._free_mb()
        if free < self.cfg.warn_free_mb and not self._low_warned:
            self._low_warned = True
            log.warning("%s: %.0f MB free on %s", DISK_LOW, free, self.directory)
            self.report(DISK_LOW, True)
        while free < self.cfg.min_free_mb:
            oldest = self._oldest_other_session()
            if oldest is None:
                self._fail(OSError(errno.ENOSPC, f"No space left: {free:.0f} MB free, need {self.cfg.min_free_mb} MB"))
                return False
            errors: list[OSError] = []
            shutil.rmtree(oldest, onerror=lambda fn, path, exc: errors.append(exc[1]))
            if oldest.exists():
                # Skipped from now on, said once: picked again, it would be picked for ever.
                why = str(errors[0]) if errors else "still there"
                self.undeletable[oldest.name] = why
                log.error("retention: cannot delete old session %s (%s): skipped", oldest.name, why,
                          extra={"OUTPUT": self.name})
            else:
                self.deleted_sessions.append(oldest.name)
                log.warning("retention: deleted old session %s to keep %d MB free", oldest.name, self.cfg.min_free_mb,
                            extra={"OUTPUT": self.name, "DELETED": oldest.name})
            free = self._free_mb()
        return True

    def _oldest_other_session(self) -> Path | None:
        """Only a session we wrote (its manifest says so), never lost+found or a stranger's directory."""
        others = []
        for d in self.directory.iterdir():
            if d == self.session_dir or d.name in self.undeletable:
                continue
            try:
                if d.is_dir() and not d.is_symlink() and (d / MANIFEST).is_file():
                    others.append((d.stat().st_mtime, d.name, d))
            except OSError:  # unreadable: not ours to judge, nor to delete
                continue
        return min(others)[2] if others else None

    def _write_manifest(self, open_segment: str | None, complete: bool = False) -> None:
        s = self.session
        data = {
            "session": s.name,
            "started": s.started,
            "encoder": s.encoder,
            "video": {"width": s.video.width, "height": s.video.height, "fps": s.video.fps,
                      "bitrate_kbps": s.video.bitrate_kbps, "keyframe_seconds": s.video.keyframe_seconds},
            "audio_tracks": s.track_names,
            "settings": s.settings,
            "segments": self.segments,
            "open_segment": open_segment,
            "complete": complete,
            "stopped": self.dead or None,
        }
        try:
            atomic_write(self.session_dir / MANIFEST, json.dumps(data, indent=2).encode())
        except OSError as e:
            if not self.dead:
                self._fail(e)
