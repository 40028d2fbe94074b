"""The producer's side: read what every box last reported, and command one box.

Retained messages make a reading immediate: every box's state, presence and last
telemetry arrive as soon as the subscription is made, online or not; a reading
ends when the broker has gone quiet for a moment.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field

from appliance.config import FleetSection
from appliance.errors import ApplianceError
from appliance.fleet import connect
from appliance.fleet.topics import ONLINE, REPORTS, Topics, box_of, report_filters

QUIET = 0.3  # the retained messages have all come when none came for this long


class FleetError(ApplianceError, ConnectionError):
    """The broker cannot be reached, or a box did not answer."""


@dataclass
class Box:
    name: str
    online: bool | None = None
    state: dict = field(default_factory=dict)
    telemetry: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def reported_at(self) -> float | None:
        times = [t for t in (self.state.get("at"), self.telemetry.get("at")) if isinstance(t, (int, float))]
        return max(times) if times else None

    def take(self, leaf: str, payload: bytes) -> None:
        if leaf == "online":
            self.online = payload == ONLINE
            return
        try:
            value = json.loads(payload)
            if not isinstance(value, dict):
                raise ValueError(f"a JSON object, not {type(value).__name__}")
        except ValueError as e:  # a box of another version, or something else on its topic
            self.errors.append(f"{leaf}: unreadable ({e})")
            return
        setattr(self, leaf, value)


def apply(boxes: dict[str, Box], prefix: str, topic: str, payload: bytes, limit: int = 10000) -> None:
    """One message into the fleet's picture (bounded: `limit` boxes at most)."""
    where = box_of(prefix, topic)
    if where is None or where[1] not in REPORTS:
        return
    name, leaf = where
    if name not in boxes and len(boxes) >= limit:
        return
    boxes.setdefault(name, Box(name)).take(leaf, payload)


def _identifier() -> str:
    return f"appliance-fleet-{secrets.token_hex(4)}"


async def read(s: FleetSection, seconds: float = 5.0) -> dict[str, Box]:
    """Every box under the prefix, as last reported."""
    import aiomqtt

    boxes: dict[str, Box] = {}
    tls = await asyncio.to_thread(connect.tls_context, s)
    try:
        async with connect.client(s, _identifier(), tls) as client:
            for topic in report_filters(s.topic_prefix):
                await client.subscribe(topic, qos=1)
            deadline = time.monotonic() + seconds
            messages = aiter(client.messages)
            while time.monotonic() < deadline:
                try:
                    m = await asyncio.wait_for(anext(messages), QUIET)
                except asyncio.TimeoutError:
                    break
                apply(boxes, s.topic_prefix, str(m.topic), bytes(m.payload or b""))
    except aiomqtt.MqttError as e:
        raise FleetError(f"broker {s.broker}: {e}") from None
    return boxes


async def command(s: FleetSection, box: str, name: str, timeout: float, **args) -> dict:
    """Send one command to one box and wait for its answer."""
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    topics = Topics(s.topic_prefix, box)
    request_id = secrets.token_hex(6)
    reply = topics.reply(request_id)
    tls = await asyncio.to_thread(connect.tls_context, s)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic, props.CorrelationData = reply, request_id.encode()
    try:
        async with connect.client(s, _identifier(), tls) as client:
            await client.subscribe(reply, qos=1)
            await client.publish(topics.command(name), json.dumps({"id": request_id, **args}), qos=1,
                                 properties=props)
            try:
                async with asyncio.timeout(timeout):
                    async for m in client.messages:
                        if str(m.topic) == reply:
                            return json.loads(bytes(m.payload or b"{}"))
            except TimeoutError:
                pass
    except aiomqtt.MqttError as e:
        raise FleetError(f"broker {s.broker}: {e}") from None
    raise FleetError(f"{box}: no answer to {name} within {timeout:g} s (offline, or not allowed to answer: "
                     "`appliance fleet status` shows when it last reported)")


def table(boxes: dict[str, Box], now: float | None = None) -> str:
    """One line a box: state, bitrate, links, power, age of its last report."""
    now = time.time() if now is None else now
    rows = [("box", "state", "bitrate", "links", "power", "last report")]
    for name in sorted(boxes):
        b = boxes[name]
        t = b.telemetry
        state = b.state.get("state", "?") + (" (offline)" if b.online is False else "")
        bitrate = f"{t['bitrate_kbps']} kb/s" if t.get("bitrate_kbps") is not None and b.online else "-"
        links = " ".join(f"{ln}:{l.get('state') or '?'}" + (f"/{l['rtt_ms']:.0f}ms" if l.get("rtt_ms") is not None else "")
                         for ln, l in sorted((t.get("links") or {}).items())) or "-"
        p = t.get("power") or {}
        charges = [src.get("charge_percent") for src in (p.get("sources") or {}).values()
                   if src.get("charge_percent") is not None]
        power = ("battery" if p.get("on_battery") else "mains" if p else "-") + (f" {min(charges):.0f}%" if charges else "")
        at = b.reported_at
        age = "never" if at is None else f"{max(0.0, now - at):.0f} s ago"
        rows.append((name, state, bitrate, links, power, age))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
