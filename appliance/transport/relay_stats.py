"""What the relay shows the producer: per group and per link, what arrives.

`appliance relay --stats ADDR:PORT` serves, from the relay's own counters:

- `/stats`: JSON, per group (its stream id from the SRT handshake, uptime,
  bitrate, packets a second, packets it could not forward) and per link
  (address, packets and bytes a second, totals, seconds since it was last
  heard, the RTT the sender measured where its keepalives carry it);
- `/metrics`: the same for Prometheus;
- `/noalbs/openirl/PUBLISHER` and `/noalbs/belabox`: what NOALBS reads for its
  "OpenIRL" and "Belabox" stream server types (docs/relay-stats.md has the
  mapping). PUBLISHER is the SRT stream id, or `default` for the busiest group
  without one.

Rates are sampled once a second by the relay's cleanup (`sample`), into fields
of the links themselves: the view holds no memory of its own, so it is bounded
as the relay is (groups and links capped).
"""

from __future__ import annotations

import logging
import time

DEFAULT_PUBLISHER = "default"
BUSY_WARN, BUSY_CLEAR, BUSY_FOR = 0.85, 0.5, 5  # of a core; for that many samples (s) in a row

log = logging.getLogger("appliance.transport.relay")


def sample(relay, now: float) -> None:
    """Each link's packets and bytes a second since the last sample; how busy the relay's
    process (one worker) was, said in the journal when one core stops being enough."""
    cpu = time.process_time()
    then, cpu_then, busy_for = relay.busy_sampled
    if then and now > then:
        relay.busy = (cpu - cpu_then) / (now - then)
        busy_for = busy_for + 1 if relay.busy >= BUSY_WARN else 0 if relay.busy < BUSY_CLEAR else busy_for
        if busy_for == BUSY_FOR:
            log.warning("relay: busy %.0f %% of a core for %d s: one core is not enough for these senders; "
                        "run it with --workers N (one for each core)", 100 * relay.busy, BUSY_FOR)
        elif not busy_for and relay.busy_sampled[2] >= BUSY_FOR:
            log.info("relay: busy %.0f %% of a core: one is enough again", 100 * relay.busy)
    relay.busy_sampled = (now, cpu, busy_for)
    for group in list(relay.groups.values()):
        for link in list(group.links.values()):
            then, packets, nbytes = link.sampled
            dt = now - then
            if then and dt > 0:
                link.rate = ((link.packets - packets) / dt, (link.bytes - nbytes) / dt)
            link.sampled = (now, link.packets, link.bytes)


def show_addr(addr) -> str:
    host = addr[0].removeprefix("::ffff:")
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


def view(relay, now: float | None = None) -> dict:
    now = time.monotonic() if now is None else now
    relay.sync_counters()  # (what the C side counted since the last sample)
    groups = []
    for group in list(relay.groups.values()):
        links = [{"address": show_addr(link.addr), "packets_per_s": round(link.rate[0], 1),
                  "bytes_per_s": round(link.rate[1]), "bitrate_kbps": round(link.rate[1] * 8 / 1000),
                  "packets": link.packets, "bytes": link.bytes, "last_seen_s": round(max(0.0, now - link.last), 2),
                  "rtt_ms": link.rtt_ms} for link in list(group.links.values())]
        groups.append({"id": group.gid[128:136].hex(), "stream_id": group.stream_id, "source": group.source,
                       "worker": relay.worker[0],
                       "uptime_s": round(now - group.created, 1),
                       "bitrate_kbps": sum(x["bitrate_kbps"] for x in links),
                       "packets_per_s": round(sum(x["packets_per_s"] for x in links), 1),
                       "bytes": group.bytes_in, "dropped": group.dropped, "links": links})
    return {"relay": {"listen": show_addr(relay.listen), "server": show_addr(relay.server),
                      "workers": relay.worker[1], "workers_answering": 1, **relay.status()}, "groups": groups}


def publishers(v: dict) -> dict[str, dict]:
    """The groups by the name NOALBS asks for: the stream id, else DEFAULT_PUBLISHER
    for the busiest of the groups without one."""
    out: dict[str, dict] = {}
    for g in sorted(v["groups"], key=lambda g: g["bitrate_kbps"]):
        out[g["stream_id"] or DEFAULT_PUBLISHER] = g
    return out


def _weighted_rtt(g: dict) -> float | None:
    known = [(x["rtt_ms"], x["bitrate_kbps"]) for x in g["links"] if x["rtt_ms"] is not None and x["bitrate_kbps"] > 0]
    total = sum(b for _, b in known)
    return sum(r * b for r, b in known) / total if total else None


def noalbs_openirl(v: dict, publisher: str) -> dict:
    """NOALBS's OpenIRL type: {"publisher": {...}} while it streams, {} when it does not."""
    g = publishers(v).get(publisher)
    if g is None:
        return {}
    return {"publisher": {"bitrate": g["bitrate_kbps"], "buffer": 0, "dropped_pkts": g["dropped"],
                          "uptime": int(g["uptime_s"]),
                          "peers": [{"bitrate": x["bitrate_kbps"], "connection_id": x["address"],
                                     "rtt": -1.0 if x["rtt_ms"] is None else x["rtt_ms"]} for x in g["links"]]}}


def noalbs_belabox(v: dict) -> dict:
    """NOALBS's Belabox type: {"publishers": {name: {"bitrate", "rtt", "dropped_pkts"}}}."""
    return {"publishers": {name: {"bitrate": g["bitrate_kbps"], "rtt": round(_weighted_rtt(g) or 0.0, 1),
                                  "dropped_pkts": g["dropped"]} for name, g in publishers(v).items()}}


def metrics(v: dict) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def gauge(name: str, help_: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"appliance_relay_{name}", help_, labels=list(labels))

    groups = gauge("groups", "groups registered")
    groups.add_metric([], len(v["groups"]))
    busy = gauge("busy_ratio", "the share of a core the busiest worker used over the last second")
    busy.add_metric([], v["relay"]["busy"])
    workers = gauge("workers_answering", "the workers whose figures these are")
    workers.add_metric([], v["relay"]["workers_answering"])
    forwarded = CounterMetricFamily("appliance_relay_forwarded_packets", "packets forwarded to the SRT server")
    forwarded.add_metric([], v["relay"]["forwarded"])
    dropped = CounterMetricFamily("appliance_relay_dropped_packets", "datagrams dropped, by why", labels=["reason"])
    for why, n in v["relay"]["dropped"].items():
        dropped.add_metric([why], n)
    g_bitrate = gauge("group_bitrate_bps", "what arrives for the group", "group", "stream_id")
    l_bitrate = gauge("link_bitrate_bps", "what arrives on the link", "group", "stream_id", "link")
    l_pps = gauge("link_packets_per_second", "packets arriving on the link", "group", "stream_id", "link")
    l_seen = gauge("link_last_seen_seconds", "since the link was last heard", "group", "stream_id", "link")
    l_rtt = gauge("link_rtt_seconds", "the link's RTT as its sender measured it", "group", "stream_id", "link")
    for g in v["groups"]:
        labels = [g["id"], g["stream_id"] or ""]
        g_bitrate.add_metric(labels, g["bitrate_kbps"] * 1000)
        for x in g["links"]:
            at = [*labels, x["address"]]
            l_bitrate.add_metric(at, x["bitrate_kbps"] * 1000)
            l_pps.add_metric(at, x["packets_per_s"])
            l_seen.add_metric(at, x["last_seen_s"])
            if x["rtt_ms"] is not None:
                l_rtt.add_metric(at, x["rtt_ms"] / 1000)

    class _Collector:
        def collect(self):
            yield from (groups, busy, workers, forwarded, dropped, g_bitrate, l_bitrate, l_pps, l_seen, l_rtt)

    registry = CollectorRegistry()
    registry.register(_Collector())
    return generate_latest(registry)


async def serve(source, host: str, port: int):
    """The stats' HTTP server on the relay's loop; -> the runner (cleanup() stops it).
    source: async () -> the view (one relay's, or its workers' merged: relay_workers)."""
    import json

    from aiohttp import web
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    def as_json(body: dict) -> web.Response:
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def stats(request):
        return as_json(await source())

    async def prometheus(request):
        return web.Response(body=metrics(await source()), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openirl(request):
        return as_json(noalbs_openirl(await source(), request.match_info["publisher"]))

    async def belabox(request):
        return as_json(noalbs_belabox(await source()))

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/noalbs/openirl/{publisher:.+}", openirl)
    app.router.add_get("/noalbs/belabox", belabox)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
