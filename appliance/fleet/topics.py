"""The fleet's topics and messages, pure (no network): what a box publishes, what a
command looks like, and what is wrong with one that is not.

<prefix>/<box>/state        retained JSON, on every change of state or conditions
<prefix>/<box>/telemetry    QoS 0 JSON, every fleet.telemetry_seconds
<prefix>/<box>/online       retained "online"; the broker publishes the will "offline"
<prefix>/<box>/cmd/<name>   {"id": ..., ...}: live, stop (with "confirm": true), preflight, usage-reset
<prefix>/<box>/reply/<id>   the answer, unless the command named an MQTT v5 response topic
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from appliance.errors import ApplianceError

COMMANDS = ("live", "stop", "preflight", "usage-reset")
REPORTS = ("state", "telemetry", "online")  # what every box publishes under <prefix>/<box>/
ONLINE, OFFLINE = b"online", b"offline"
REQUEST_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_COMMAND_BYTES = 4096


class CommandError(ApplianceError, ValueError):
    """A command message the box cannot take: the reply says what and where."""


@dataclass(frozen=True)
class Topics:
    prefix: str
    box: str

    def of(self, leaf: str) -> str:
        return f"{self.prefix}/{self.box}/{leaf}"

    @property
    def state(self) -> str:
        return self.of("state")

    @property
    def telemetry(self) -> str:
        return self.of("telemetry")

    @property
    def online(self) -> str:
        return self.of("online")

    @property
    def commands(self) -> str:
        return self.of("cmd/+")

    def command(self, name: str) -> str:
        return self.of(f"cmd/{name}")

    def reply(self, request_id: str) -> str:
        return self.of(f"reply/{request_id}")


def report_filters(prefix: str) -> list[str]:
    """The subscriptions that hear every box's reports."""
    return [f"{prefix}/+/{leaf}" for leaf in REPORTS]


def box_of(prefix: str, topic: str) -> tuple[str, str] | None:
    """(box, the rest) of a topic under `prefix`, or None."""
    head = prefix + "/"
    if not topic.startswith(head):
        return None
    box, _, rest = topic[len(head):].partition("/")
    return (box, rest) if box and rest else None


@dataclass(frozen=True)
class Command:
    name: str
    id: str
    args: dict = field(default_factory=dict)

    def request(self) -> dict:
        """The control command the box's own handler takes (its rules apply)."""
        return {**self.args, "cmd": self.name, "source": "fleet"}


def parse_command(topics: Topics, topic: str, payload: bytes) -> Command:
    """A command message, checked; CommandError says what is wrong with which topic."""
    name = topic.rsplit("/", 1)[-1]
    if topic != topics.command(name) or name not in COMMANDS:
        raise CommandError(f"{topic}: unknown command {name!r} (known: {', '.join(COMMANDS)})")
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(f"{topic}: {len(payload)} bytes, more than a command's {MAX_COMMAND_BYTES}")
    try:
        body = json.loads(payload.decode("utf-8")) if payload.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CommandError(f"{topic}: not JSON ({e})") from None
    if not isinstance(body, dict):
        raise CommandError(f"{topic}: a command is a JSON object, not {type(body).__name__}")
    request_id = body.pop("id", None)
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
        raise CommandError(f"{topic}: \"id\" must be 1 to 64 letters, digits, '.', '_' or '-', not {request_id!r}")
    body.pop("cmd", None), body.pop("source", None)  # the box says which command and from where
    if name == "stop" and body.get("confirm") is not True:
        raise CommandError(f"{topic}: a stop needs \"confirm\": true (as the button needs a hold)")
    return Command(name, request_id, body)


# --- what a box publishes --------------------------------------------------------------

def state_payload(status: dict) -> dict:
    return {"state": status["state"], "conditions": status["conditions"], "since": status["since"],
            "fault": status["fault"], "live_intent": status["live_intent"],
            "power_off": bool(status.get("power_off")), "version": status["version"],
            "profile": status["profile"], "at": round(time.time(), 3)}


def telemetry_payload(status: dict) -> dict:
    """The figures a producer watches, from the box's status: compact, no history."""
    comps = status["components"]
    media = comps.get("media", {})
    running = media.get("state") == "running"
    out: dict = {"state": status["state"], "at": round(time.time(), 3)}
    if running:
        srt = media.get("outputs", {}).get("srt") or {}
        rec = media.get("outputs", {}).get("recorder") or {}
        out.update({
            "bitrate_kbps": media.get("bitrate_kbps"), "target_kbps": media.get("target_bitrate_kbps"),
            "fps": media.get("fps"), "encoder": media.get("encoder"), "frames_dropped": media.get("frames_dropped"),
            "stream": {"connected": srt.get("connected"), "lane": srt.get("lane")} if srt else None,
            "audio": {name: {k: a.get(k) for k in ("peak_dbfs", "rms_dbfs", "loudness_lufs", "clipping", "silent")}
                      for name, a in media.get("audio", {}).items()},
            "recording": {"recording": rec.get("recording"), "bytes": rec.get("bytes"),
                          "segments": rec.get("segments")} if rec else None,
        })
    uplinks = comps.get("uplinks", {})
    radio = uplinks.get("modem") or {}
    out["links"] = {name: {"state": l.get("state"), "rtt_ms": l.get("rtt_ms"), "share_percent": l.get("share_percent"),
                           "health": l.get("health"), "loss_percent": l.get("loss_percent"),
                           "radio": l.get("radio") or None}
                    for name, l in uplinks.get("links", {}).items()}
    if radio:
        out["radio"] = {k: radio.get(k) for k in ("rat", "rsrp", "sinr", "operator")}
    power = comps.get("power", {})
    if power.get("state") == "running":
        out["power"] = {"on_battery": power.get("on_battery"), "low": power.get("low"),
                        "sources": {name: {k: src.get(k) for k in ("on_mains", "charge_percent", "runtime_seconds", "stale")}
                                    for name, src in power.get("sources", {}).items()}}
    return out
