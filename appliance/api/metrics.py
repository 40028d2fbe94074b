"""Prometheus exposition, built at scrape time from the status (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from appliance.supervisor.state import State


def _links() -> list[tuple[str, bool, int, int]]:
    """(interface, up, bytes sent, bytes received) of every non-loopback interface."""
    import psutil

    stats, counters = psutil.net_if_stats(), psutil.net_io_counters(pernic=True)
    return [(name, st.isup, counters[name].bytes_sent, counters[name].bytes_recv)
            for name, st in sorted(stats.items()) if name != "lo" and name in counters]


class _StatusCollector:
    def __init__(self, status: dict):
        self.s = status

    def collect(self):
        s = self.s
        state = GaugeMetricFamily("appliance_state", "1 for the state the appliance is in", labels=["state"])
        for st in State:
            state.add_metric([st.value], 1.0 if s["state"] == st.value else 0.0)
        yield state
        cond = GaugeMetricFamily("appliance_condition", "1 for each condition present", labels=["condition"])
        for c in s["conditions"]:
            cond.add_metric([c], 1.0)
        yield cond
        yield GaugeMetricFamily("appliance_uptime_seconds", "seconds since the daemon started", value=s["uptime"])

        comps = s["components"]
        media = comps.get("media", {})
        if media.get("state") == "running":
            for name, help_, key in (("frames_encoded", "video frames encoded", "frames_encoded"),
                                     ("frames_dropped", "video frames dropped (too slow)", "frames_dropped"),
                                     ("slate_frames", "slate frames sent for a lost source", "slate_frames")):
                yield CounterMetricFamily(f"appliance_video_{name}", help_, value=media[key])
            yield GaugeMetricFamily("appliance_video_bitrate_bps", "measured video+audio bitrate", value=media["bitrate_kbps"] * 1000)
            yield GaugeMetricFamily("appliance_video_target_bitrate_bps", "encoder target", value=media["target_bitrate_kbps"] * 1000)
            yield GaugeMetricFamily("appliance_video_fps", "frames encoded in the last second", value=media["fps"])
            yield GaugeMetricFamily("appliance_video_signal", "1 if the capture source delivers", value=float(media["video"]["signal"]))
            levels = {k: GaugeMetricFamily(f"appliance_audio_{k}", h, labels=["track"]) for k, h in (
                ("peak_dbfs", "peak level, dBFS"), ("rms_dbfs", "RMS level, dBFS"),
                ("loudness_lufs", "short-term loudness, LUFS"), ("device_ok", "1 if the audio device delivers"))}
            clips = CounterMetricFamily("appliance_audio_clips", "blocks that clipped", labels=["track"])
            for track, a in media["audio"].items():
                for k, g in levels.items():
                    v = a[k]
                    if v is not None:
                        g.add_metric([track], float(v))
                clips.add_metric([track], a["clips"])
            yield from levels.values()
            yield clips
            rec = media["outputs"].get("recorder")
            if rec:
                yield GaugeMetricFamily("appliance_recording_bytes", "bytes recorded this session", value=rec["bytes"])
                yield GaugeMetricFamily("appliance_recording_segments", "closed segments this session", value=rec["segments"])
                yield GaugeMetricFamily("appliance_recording_active", "1 while recording", value=float(bool(rec["recording"])))
        power = comps.get("power", {})
        if power.get("state") == "running":
            gauges = {k: GaugeMetricFamily(f"appliance_power_{k}", h, labels=["source"]) for k, h in (
                ("on_battery", "1 when running on battery"), ("charge_percent", "battery charge, %"),
                ("runtime_seconds", "runtime left, s"), ("battery_volts", "battery voltage"),
                ("load_percent", "UPS load, %"), ("stale", "1 when the source stopped answering"),
                ("data_age_seconds", "age of the last good reading"))}
            for name, src in power["sources"].items():
                values = {"on_battery": None if src["on_mains"] is None else float(not src["on_mains"]),
                          "charge_percent": src["charge_percent"], "runtime_seconds": src["runtime_seconds"],
                          "battery_volts": src["battery_volts"], "load_percent": src["load_percent"],
                          "stale": float(src["stale"]), "data_age_seconds": src["age_seconds"]}
                for k, v in values.items():
                    if v is not None:
                        gauges[k].add_metric([name], float(v))
            yield from gauges.values()
        up = GaugeMetricFamily("appliance_link_up", "1 if the uplink interface is up", labels=["link"])
        sent = CounterMetricFamily("appliance_link_sent_bytes", "bytes sent on the uplink", labels=["link"])
        recv = CounterMetricFamily("appliance_link_received_bytes", "bytes received on the uplink", labels=["link"])
        for name, is_up, tx, rx in _links():
            up.add_metric([name], float(is_up))
            sent.add_metric([name], tx)
            recv.add_metric([name], rx)
        yield up
        yield sent
        yield recv
        uplinks = comps.get("uplinks", {})
        if uplinks.get("state") == "running":
            g = {k: GaugeMetricFamily(f"appliance_uplink_{k}", h, labels=["link"]) for k, h in (
                ("health", "health score 0..1 (RTT, loss, radio): the link's share of traffic"),
                ("rtt_seconds", "RTT measured by the bonding sender"), ("loss_ratio", "share of packets NAKed, last 5 s"),
                ("used_bytes", "data sent, kept across restarts (for data caps)"),
                ("standby", "1 when on standby (failover backup, or data cap reached)"),
                ("rsrp_dbm", "cellular RSRP"), ("sinr_db", "cellular SINR"))}
            for name, l in uplinks["links"].items():
                radio = l.get("radio", {})
                for k, v in (("health", l.get("health")), ("rtt_seconds", None if l["rtt_ms"] is None else l["rtt_ms"] / 1000),
                             ("loss_ratio", l["loss_percent"] / 100), ("used_bytes", l["used_mb"] * 1e6),
                             ("standby", float(l["standby"])), ("rsrp_dbm", radio.get("rsrp")),
                             ("sinr_db", radio.get("sinr"))):
                    if v is not None:
                        g[k].add_metric([name], float(v))
            yield from g.values()
        srt = media.get("outputs", {}).get("srt", {}) if media.get("state") == "running" else {}
        if "abr" in srt:
            yield GaugeMetricFamily("appliance_stream_abr_bitrate_bps", "the adaptive bitrate's video target",
                                    value=srt["abr"]["bitrate_kbps"] * 1000)
            yield GaugeMetricFamily("appliance_stream_voice_lane", "1 while only audio and a slate go out",
                                    value=float(srt["lane"] == "voice"))


def render_metrics(status: dict) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status))
    return generate_latest(registry), CONTENT_TYPE_LATEST
