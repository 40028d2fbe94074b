"""The names of the conditions components report to the supervisor.

One vocabulary, so the reporters (media, recorder, power, uplinks) and the
readers (the panel table, the API) cannot drift apart. A condition is a
problem that is present now; it is cleared by reporting it again as inactive.
"""

from __future__ import annotations

NO_VIDEO = "no video signal"
ENCODER_SOFTWARE = "encoder fell back to software"
ENCODER_CODEC_CHANGED = "H.265 encoder failed: streaming H.264"
OVERHEATING = "overheating"

DISK_FULL = "recording stopped: disk full"
RECORDER_FAILED = "recording stopped: write error"
DISK_LOW = "recording disk nearly full"
RECORDER_BEHIND = "recording disk too slow: packets dropped"
DISK_NOT_ANSWERING = "recording stalled: the disk does not answer"

ON_BATTERY = "on battery"
BATTERY_LOW = "battery low"
BATTERY_CRITICAL = "battery critical"
POWER_MONITOR_LOST = "power monitor not answering"

ALL_LINKS_DOWN = "all uplinks down"
VOICE_LANE = "stream: voice lane (links too slow for video)"
SRT_NOT_CONNECTED = "stream: not connected to the SRT ingest"
RTMP_NOT_CONNECTED = "stream: not connected to the RTMP server"


def audio(track: str, what: str) -> str:
    """what: "silent", "clipping" or "device missing"."""
    return f"audio {track}: {what}"


def link_down(link: str) -> str:
    return f"uplink {link} down"


def link_standby(link: str) -> str:
    return f"uplink {link} standby"


class Latch:
    """A condition reported when it begins and when it ends, however often its cause
    repeats meanwhile (an output retrying a connection every second)."""

    def __init__(self, report, condition: str):
        self.report, self.condition = report, condition
        self.active = False

    def set(self, active: bool) -> bool:
        """Report it if that changes it; True when it did."""
        if active == self.active:
            return False
        self.active = active
        self.report(self.condition, active)
        return True


class Current:
    """At most one condition of a kind at a time, whose words change with its cause
    ("relay name does not resolve: HOST"): the old one cleared, the new one set."""

    def __init__(self, report):
        self.report, self.condition = report, None

    def set(self, condition: str | None) -> None:
        if condition != self.condition:
            if self.condition is not None:
                self.report(self.condition, False)
            if condition is not None:
                self.report(condition, True)
            self.condition = condition


def link_fact(role: str, what: str) -> str:
    """Not a condition but a fact the panel shows (it never makes the state DEGRADED):
    what the uplinks of a role ("wired", "cell") are doing. "carrying": in READY up and
    ready, while live carrying part of the show; "poor": carrying, in poor health."""
    return f"link {role}: {what}"


def unresolved(role: str, host: str) -> str:
    """A host name the box dials gives no address: role is "relay", "ingest", ..."""
    return f"{role} name does not resolve: {host}"


def state_unsaved(why: str) -> str:
    """The state directory refuses writes (read-only card, full disk): the live intent is not kept."""
    return f"cannot save state: {why}"


def shutdown_failed(why: str) -> str:
    """The shutdown command did not power the box off; it is tried again while not live."""
    return f"shutdown failed: {why}"


def thread_stuck(name: str) -> str:
    """A long-running thread has made no progress within its bound (see appliance/heartbeat.py)."""
    return f"thread {name} stuck"


def component_failed(name: str) -> str:
    return f"{name} failed"
