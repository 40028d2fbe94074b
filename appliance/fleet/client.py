"""The box's fleet client: its state (retained, on every change), its telemetry (every
fleet.telemetry_seconds), its presence (retained "online", the will "offline"), and
the producer's commands, answered.

One asyncio task. The broker is never waited on by anything else: the show does not
know this client exists. While the broker is away nothing is queued (what is
published is read from the box when it goes out: the latest state, never a backlog);
the client reconnects with a jittered backoff, and once back it publishes what is
true now. A command goes through the box's own handler, as a press of the button or
the control socket would, so the box's rules apply (no GO while powering off, a stop
needs "confirm": true as the button needs a hold).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Awaitable, Callable

from appliance.config import FleetSection
from appliance.configshow import redact_url
from appliance.fleet import connect
from appliance.fleet.topics import (OFFLINE, ONLINE, REQUEST_ID, CommandError, Topics, parse_command, state_payload,
                                    telemetry_payload)

log = logging.getLogger(__name__)

MAX_COMMANDS = 4  # answered at once (a pre-flight takes its seconds); beyond: "busy"
MAX_QUEUED = 32  # paho's outgoing queue: a broker that does not read cannot grow it further


class FleetClient:
    name = "fleet"

    def __init__(self, settings: FleetSection, box: str, status: Callable[[], dict],
                 handle: Callable[[dict], Awaitable[dict]]):
        self.settings = settings
        self.topics = Topics(settings.topic_prefix, settings.box or box)
        self.status_of = status
        self.handle = handle
        self.connected = False
        self.connected_since: float | None = None
        self.connects = 0
        self.error = ""
        self.published = {"state": 0, "telemetry": 0, "replies": 0}
        self.dropped = 0
        self.commands = 0
        self.refused = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._client = None
        self._answering: set[asyncio.Task] = set()
        self._refusing: set[asyncio.Task] = set()  # (held: a task nobody holds may be collected unfinished)

    # --- the component -----------------------------------------------------------------

    async def start(self) -> None:
        from appliance.hostnames import parse_broker_url

        broker = parse_broker_url(self.settings.broker)
        if not broker.tls and not broker.loopback:
            log.warning("fleet: INSECURE: %s is not encrypted (fleet.insecure = true): the broker password and "
                        "every command cross the network in clear, and anyone on the path can command this box",
                        redact_url(self.settings.broker), extra={"FLEET": "insecure"})
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fleet")

    async def stop(self) -> None:
        client = self._client
        if client is not None and self.connected:
            try:  # a clean goodbye: "offline" now, not the will a keepalive later
                await client.publish(self.topics.online, OFFLINE, qos=1, retain=True, timeout=2)
            except Exception:  # noqa: BLE001 - the broker may be gone too; the will covers it
                pass
        for task in [*self._answering, *([self._task] if self._task else [])]:
            task.cancel()
        await asyncio.gather(*self._answering, *([self._task] if self._task else []), return_exceptions=True)
        self._task = None

    def on_state(self, before, after) -> None:
        if (before.state, before.conditions, before.fault) != (after.state, after.conditions, after.fault):
            self._changed.set()

    def status(self) -> dict:
        return {"broker": redact_url(self.settings.broker), "box": self.topics.box, "connected": self.connected,
                "connected_since": self.connected_since, "connects": self.connects, "published": dict(self.published),
                "dropped": self.dropped, "commands": self.commands, "refused": self.refused,
                **({"error": self.error} if self.error else {})}

    # --- the connection ------------------------------------------------------------------

    async def _run(self) -> None:
        import aiomqtt

        will = aiomqtt.Will(self.topics.online, OFFLINE, qos=1, retain=True)
        await connect.keep_connected(self.settings, f"appliance-{self.topics.box}", self._connected, self._lost,
                                     will=will, max_queued=MAX_QUEUED)

    async def _connected(self, client) -> None:
        self._client = client
        try:
            await self._serve(client)
        finally:
            self._client = None
            self.connected = False

    async def _serve(self, client) -> None:
        await client.publish(self.topics.online, ONLINE, qos=1, retain=True)
        await client.subscribe(self.topics.commands, qos=1)
        self.connected, self.connected_since = True, time.time()
        self.connects += 1
        if self.error or self.connects == 1:
            log.info("fleet: connected to %s as %s", redact_url(self.settings.broker), self.topics.box,
                     extra={"FLEET": "connected"})
        self.error = ""
        publishing = asyncio.get_running_loop().create_task(self._publish(client), name="fleet-publish")
        try:
            async for message in client.messages:
                self._answer(client, message)
        finally:
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)

    def _lost(self, e: Exception) -> None:
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if not self.error:  # once when the broker goes (the retries' reasons are in the status)
            log.warning("fleet: broker %s: %s (the show goes on; retrying)", redact_url(self.settings.broker), why,
                        extra={"FLEET": "lost"})
        self.error = why

    async def _publish(self, client) -> None:
        every = self.settings.telemetry_seconds
        next_telemetry = 0.0
        self._changed.set()  # the state, as it is now, first
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, next_telemetry - time.monotonic()))
            except asyncio.TimeoutError:
                pass
            changed = self._changed.is_set()
            self._changed.clear()  # (before the status is read: a change after it is sent next time)
            status = self.status_of()
            if changed:
                await self._send(client, "state", self.topics.state, state_payload(status), qos=1, retain=True)
            if time.monotonic() >= next_telemetry:
                next_telemetry = time.monotonic() + every
                # Retained too: `fleet status` shows every box at once, and the last figures of one gone quiet.
                await self._send(client, "telemetry", self.topics.telemetry, telemetry_payload(status), qos=0,
                                 retain=True)

    async def _send(self, client, kind: str, topic: str, payload: dict, **kw) -> None:
        import aiomqtt

        try:
            await client.publish(topic, json.dumps(payload, separators=(",", ":")), **kw)
            self.published[kind] += 1
        except aiomqtt.MqttCodeError as e:  # the outgoing queue is full: a broker that does not read
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 1000 == 0:
                log.warning("fleet: %s not sent (%s); %d dropped so far", kind, e, self.dropped)

    # --- commands ------------------------------------------------------------------------

    def _answer(self, client, message) -> None:
        if len(self._answering) >= MAX_COMMANDS:
            self._refuse(client, message, f"busy: {MAX_COMMANDS} commands are being answered")
            return
        task = asyncio.get_running_loop().create_task(self._command(client, message), name="fleet-command")
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    def _refuse(self, client, message, why: str) -> None:
        self.refused += 1
        log.warning("fleet: command refused: %s", why, extra={"FLEET": "refused"})
        task = asyncio.get_running_loop().create_task(self._reply(client, message, _request_id(message.payload),
                                                                  {"ok": False, "error": why}))
        self._refusing.add(task)
        task.add_done_callback(self._refusing.discard)

    async def _command(self, client, message) -> None:
        topic = str(message.topic)
        try:
            if message.retain:  # kept by the broker, it would run again at every reconnect
                raise CommandError(f"{topic}: a retained command is refused (publish commands without retain)")
            command = parse_command(self.topics, topic, bytes(message.payload or b""))
        except CommandError as e:
            self.refused += 1
            log.warning("fleet: command refused: %s", e, extra={"FLEET": "refused"})
            await self._reply(client, message, _request_id(message.payload), {"ok": False, "error": str(e)})
            return
        self.commands += 1
        log.info("fleet: command %s (%s)", command.name, command.id, extra={"FLEET": "command"})
        try:
            answer = await self.handle(command.request())
        except Exception as e:  # noqa: BLE001 - a bug answering must not end the client
            log.exception("fleet: command %s failed", command.name)
            answer = {"ok": False, "error": f"the box failed answering: {e}"}
        await self._reply(client, message, command.id, answer)

    async def _reply(self, client, message, request_id: str | None, answer: dict) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        asked = getattr(message.properties, "ResponseTopic", None) if message.properties else None
        # A response topic outside the box's own tree is not followed: the ACL would refuse
        # it anyway, and a box must not be made to publish where it was told to.
        topic = asked if asked and asked.startswith(self.topics.of("")) else (
            self.topics.reply(request_id) if request_id else None)
        if topic is None:
            return
        props = Properties(PacketTypes.PUBLISH)
        correlation = getattr(message.properties, "CorrelationData", None) if message.properties else None
        if correlation:
            props.CorrelationData = correlation
        try:
            await client.publish(topic, json.dumps({"id": request_id, **answer}, default=str), qos=1,
                                 properties=props)
            self.published["replies"] += 1
        except Exception as e:  # noqa: BLE001 - the connection went: the producer times out and says so
            log.warning("fleet: reply to %s not sent: %s", request_id, e)


def _request_id(payload) -> str | None:
    try:
        rid = json.loads(bytes(payload or b"")).get("id")
    except Exception:  # noqa: BLE001 - an unreadable command has no id to answer to
        return None
    return rid if isinstance(rid, str) and REQUEST_ID.match(rid) else None
