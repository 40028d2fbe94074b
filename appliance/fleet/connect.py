"""How a fleet client reaches the broker, for the box and the producer alike: the URL,
TLS (the broker's CA, a client certificate), the credentials, MQTT v5."""

from __future__ import annotations

import asyncio
import ssl
from typing import Awaitable, Callable

from appliance import backoff
from appliance.config import FleetSection
from appliance.hostnames import Broker, parse_broker_url

TIMEOUT = 10.0  # for a publish or a subscribe to be acknowledged; the connect has its own
KEEPALIVE = 15  # the broker publishes a box's will this long (x 1.5) after it went silent


def tls_context(s: FleetSection) -> ssl.SSLContext | None:
    """Blocking (reads the certificate files): run it in a thread. None for plain MQTT."""
    if not parse_broker_url(s.broker).tls:
        return None
    ctx = ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
    if s.cert_file is not None and s.key_file is not None:
        ctx.load_cert_chain(str(s.cert_file), str(s.key_file))
    return ctx


async def keep_connected(s: FleetSection, identifier: str, serve: Callable[[object], Awaitable[None]],
                         lost: Callable[[Exception], None], will=None, max_queued: int | None = None) -> None:
    """Connect, and `serve(client)` while connected; after a failure or an end, again after
    a jittered backoff (a fleet that lost its broker comes back spread out). `lost` hears
    why. Until cancelled."""
    attempt = 0
    while True:
        try:
            tls = await asyncio.to_thread(tls_context, s)  # (it reads the certificate files)
            async with client(s, identifier, tls, will=will, max_queued=max_queued) as c:
                attempt = 0
                await serve(c)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - MqttError, OSError, ssl errors: all mean "try again"
            lost(e)
        await asyncio.sleep(backoff.jittered(attempt))
        attempt += 1


def client(s: FleetSection, identifier: str, tls: ssl.SSLContext | None, will=None, timeout: float = TIMEOUT,
           max_queued: int | None = None):
    import aiomqtt

    b: Broker = parse_broker_url(s.broker)
    return aiomqtt.Client(
        b.host, b.port, identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5,
        username=s.username or None, password=s.password.get_secret_value() or None,
        transport=b.transport, websocket_path=b.path or None, tls_context=tls, will=will,
        timeout=timeout, keepalive=KEEPALIVE, max_queued_outgoing_messages=max_queued)
