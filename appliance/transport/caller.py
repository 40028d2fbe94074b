"""The SRT caller for the configured stream: one builder, for the show and for
pre-flight alike, so both dial with the same latency, stream id and passphrase."""

from __future__ import annotations

from appliance.config import StreamSection
from appliance.transport.libsrt import SrtCaller


def stream_caller(stream: StreamSection, host: str, port: int, query: dict[str, str]) -> SrtCaller:
    """To the ingest, or to the bond's local port. What the URL's query gives (latency,
    streamid) wins over the config's keys, as SRT tools read a URL."""
    return SrtCaller(host, port, latency_ms=int(query.get("latency", stream.latency_ms)), role="ingest",
                     stream_id=query.get("streamid", stream.stream_id.get_secret_value()),
                     passphrase=stream.passphrase.get_secret_value())
