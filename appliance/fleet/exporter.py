"""The fleet in Prometheus: one /metrics for every box, labelled by box.

A Prometheus that cannot reach boxes behind carrier NAT scrapes this instead: it
listens to the broker (every box's retained state, presence and telemetry) and
serves what each box last reported, with its age. Bounded: MAX_BOXES at most.
"""

from __future__ import annotations

import asyncio
import logging
import time

from appliance.config import FleetSection
from appliance.fleet import connect
from appliance.fleet.producer import Box, apply
from appliance.fleet.topics import report_filters

log = logging.getLogger(__name__)

MAX_BOXES = 5000


def render(boxes: dict[str, Box], now: float | None = None) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    now = time.time() if now is None else now

    def family(name: str, help_: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"appliance_fleet_{name}", help_, labels=["box", *labels])

    online = family("online", "1 while the box is connected to the broker (0: its last will)")
    state = family("state", "1 for the state the box last reported", "state")
    age = family("report_age_seconds", "seconds since the box's last report")
    conditions = family("conditions", "conditions present on the box")
    bitrate = family("bitrate_bps", "measured video+audio bitrate")
    target = family("target_bitrate_bps", "the encoder's target")
    fps = family("fps", "frames encoded in the last second")
    dropped = family("frames_dropped", "video frames dropped this session")
    recording = family("recording_active", "1 while recording")
    rec_bytes = family("recording_bytes", "bytes recorded this session")
    link_rtt = family("link_rtt_seconds", "the uplink's RTT", "link")
    link_share = family("link_share_ratio", "the uplink's share of the traffic", "link")
    link_health = family("link_health", "the uplink's health, 0..1", "link")
    link_loss = family("link_loss_ratio", "share of the uplink's packets lost", "link")
    audio_peak = family("audio_peak_dbfs", "peak level", "track")
    audio_lufs = family("audio_loudness_lufs", "short-term loudness", "track")
    on_battery = family("power_on_battery", "1 while on battery")
    charge = family("power_charge_percent", "battery charge", "source")
    runtime = family("power_runtime_seconds", "runtime left", "source")
    for name, b in boxes.items():
        t = b.telemetry
        online.add_metric([name], float(bool(b.online)))
        if b.state.get("state"):
            state.add_metric([name, b.state["state"]], 1.0)
            conditions.add_metric([name], float(len(b.state.get("conditions") or [])))
        if b.reported_at is not None:
            age.add_metric([name], max(0.0, now - b.reported_at))
        for fam, key, scale in ((bitrate, "bitrate_kbps", 1000), (target, "target_kbps", 1000), (fps, "fps", 1),
                                (dropped, "frames_dropped", 1)):
            if isinstance(t.get(key), (int, float)):
                fam.add_metric([name], float(t[key]) * scale)
        rec = t.get("recording") or {}
        if rec:
            recording.add_metric([name], float(bool(rec.get("recording"))))
            rec_bytes.add_metric([name], float(rec.get("bytes") or 0))
        for link, l in (t.get("links") or {}).items():
            for fam, key, scale in ((link_rtt, "rtt_ms", 0.001), (link_share, "share_percent", 0.01),
                                    (link_health, "health", 1), (link_loss, "loss_percent", 0.01)):
                if isinstance(l.get(key), (int, float)):
                    fam.add_metric([name, link], float(l[key]) * scale)
        for track, a in (t.get("audio") or {}).items():
            for fam, key in ((audio_peak, "peak_dbfs"), (audio_lufs, "loudness_lufs")):
                if isinstance(a.get(key), (int, float)):
                    fam.add_metric([name, track], float(a[key]))
        p = t.get("power") or {}
        if p:
            on_battery.add_metric([name], float(bool(p.get("on_battery"))))
            for source, src in (p.get("sources") or {}).items():
                for fam, key in ((charge, "charge_percent"), (runtime, "runtime_seconds")):
                    if isinstance(src.get(key), (int, float)):
                        fam.add_metric([name, source], float(src[key]))
    boxes_total = GaugeMetricFamily("appliance_fleet_boxes", "boxes known to the exporter", value=len(boxes))
    families = [boxes_total, online, state, age, conditions, bitrate, target, fps, dropped, recording, rec_bytes,
                link_rtt, link_share, link_health, link_loss, audio_peak, audio_lufs, on_battery, charge, runtime]

    class _Collector:
        def collect(self):
            yield from families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)


class Exporter:
    """The broker listener and the /metrics page, in one asyncio loop."""

    def __init__(self, settings: FleetSection):
        self.settings = settings
        self.boxes: dict[str, Box] = {}
        self.connected = False
        self.error = ""

    async def listen(self) -> None:
        await connect.keep_connected(self.settings, f"appliance-exporter-{id(self):x}", self._listening, self._lost)

    async def _listening(self, client) -> None:
        prefix = self.settings.topic_prefix
        try:
            for topic in report_filters(prefix):
                await client.subscribe(topic, qos=0)
            self.connected = True
            log.info("exporter: listening to %s under %s/", self.settings.broker, prefix)
            async for m in client.messages:
                apply(self.boxes, prefix, str(m.topic), bytes(m.payload or b""), MAX_BOXES)
        finally:
            self.connected = False

    def _lost(self, e: Exception) -> None:
        if str(e) != self.error:
            log.warning("exporter: broker %s: %s (retrying)", self.settings.broker, e)
        self.error = str(e)

    async def serve(self, host: str, port: int) -> None:
        from aiohttp import web
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        async def metrics(request):
            body = render(self.boxes)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        print(f"exporter: http://{host}:{port}/metrics, boxes from {self.settings.broker}", flush=True)
        listening = asyncio.get_running_loop().create_task(self.listen(), name="exporter-listen")
        try:
            await asyncio.Event().wait()
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
            await runner.cleanup()
