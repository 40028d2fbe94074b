"""How a fleet client reaches the broker, for the box and the producer alike: the URL,
TLS (the broker's CA, a client certificate), the credentials, MQTT v5."""

from __future__ import annotations

import ssl

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


def client(s: FleetSection, identifier: str, tls: ssl.SSLContext | None, will=None, timeout: float = TIMEOUT,
           max_queued: int | None = None):
    import aiomqtt

    b: Broker = parse_broker_url(s.broker)
    return aiomqtt.Client(
        b.host, b.port, identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5,
        username=s.username or None, password=s.password.get_secret_value() or None,
        transport=b.transport, websocket_path=b.path or None, tls_context=tls, will=will,
        timeout=timeout, keepalive=KEEPALIVE, max_queued_outgoing_messages=max_queued)
