"""The relay's view for the producer: /stats, /metrics and NOALBS's formats, with
figures checked against what the senders sent; the stream id read from a real
libsrt handshake; NOALBS's formats read by a reader written to NOALBS's field
names (src/stream_servers/openirl.rs and belabox.rs: required fields and types)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from appliance.transport import relay_stats, srtla
from appliance.transport.relay import Relay
from conftest import APPLIANCE, ROOT, free_port, wait_until
from netsim import Ingest, RelayThread, stop_gracefully
from test_relay import client, register, srt_data


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


# --- NOALBS's readers, by its field names -------------------------------------------------------

@dataclass
class OpenIrlPeer:  # openirl.rs Peer: bitrate u32, rtt f64 (both required)
    bitrate: int
    rtt: float


@dataclass
class OpenIrlStat:  # openirl.rs Stat: bitrate u32, buffer u32, dropped_pkts u64, uptime u64; rtt, latency optional
    bitrate: int
    buffer: int
    dropped_pkts: int
    uptime: int
    peers: list
    rtt: float | None = None


def read_openirl(body: bytes) -> OpenIrlStat | None:
    """As NOALBS does: no "publisher" key is offline; a missing or mistyped field fails to parse."""
    data = json.loads(body)
    p = data.get("publisher")
    if p is None:
        return None
    for name, kind in (("bitrate", int), ("buffer", int), ("dropped_pkts", int), ("uptime", int)):
        assert isinstance(p[name], kind) and p[name] >= 0, (name, p)
    peers = [OpenIrlPeer(int(x["bitrate"]), float(x["rtt"])) for x in p.get("peers", [])]
    return OpenIrlStat(p["bitrate"], p["buffer"], p["dropped_pkts"], p["uptime"], peers, p.get("rtt"))


def openirl_rtt(stat: OpenIrlStat) -> float | None:
    """NOALBS's Stat::rtt(): the bitrate-weighted mean of the peers with a valid RTT."""
    if stat.rtt is not None:
        return stat.rtt
    valid = [(p.rtt, p.bitrate) for p in stat.peers if p.bitrate > 0 and p.rtt >= 0]
    total = sum(b for _, b in valid)
    return sum(r * b for r, b in valid) / total if total else None


def read_belabox(body: bytes, publisher: str) -> dict | None:
    """belabox.rs Stat: bitrate i64, rtt f64, dropped_pkts i32, under publishers[publisher]."""
    p = json.loads(body)["publishers"].get(publisher)
    if p is None:
        return None
    assert isinstance(p["bitrate"], int) and isinstance(p["rtt"], (int, float)) and isinstance(p["dropped_pkts"], int)
    return p


# --- the tests ----------------------------------------------------------------------------------

def test_per_link_stats_json_and_metrics_are_within_10_percent_of_what_each_link_sent():
    r = RelayThread()
    port = free_port()
    async def view():
        return relay_stats.view(r.relay)
    runner = asyncio.run_coroutine_threadsafe(relay_stats.serve(view, "127.0.0.1", port), r.loop).result(5)
    a, b = client("127.0.0.2"), client("127.0.0.3")
    stop = threading.Event()
    sent = {a: [0, 0], b: [0, 0]}
    threads, drain = [], threading.Thread()
    try:
        register(r, [a, b])
        rates = {a: 200, b: 100}  # packets a second, 1332 bytes each
        def sink():
            while not stop.is_set():
                try:
                    r.server.recvfrom(2000)
                except OSError:  # (a timeout: nothing in 0.5 s)
                    pass
        drain = threading.Thread(target=sink, daemon=True)

        def pace(s, rate, rtt):
            seq, t0 = 0, time.monotonic()
            while not stop.is_set():
                due = int((time.monotonic() - t0) * rate)
                while seq < due:
                    d = srt_data(seq)
                    s.sendto(d, r.addr)
                    sent[s][0] += 1
                    sent[s][1] += len(d)
                    seq += 1
                if seq % 20 == 0:
                    s.sendto(srtla.keepalive(int(time.monotonic() * 1000), rtt), r.addr)
                time.sleep(0.002)
        threads = [threading.Thread(target=pace, args=(a, 200, 0.0125), daemon=True),
                   threading.Thread(target=pace, args=(b, 100, 0.040), daemon=True)]
        r.server.settimeout(0.5)
        for t in (drain, *threads):
            t.start()
        time.sleep(3.5)  # three samples at least
        stats = json.loads(get(f"http://127.0.0.1:{port}/stats"))
        metrics = get(f"http://127.0.0.1:{port}/metrics").decode()
    finally:
        stop.set()
        for t in (*threads, drain):
            if t.ident is not None:  # (started)
                t.join(5)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), r.loop).result(5)
        a.close()
        b.close()
        r.close()
    (group,) = stats["groups"]
    links = {x["address"].split(":")[0]: x for x in group["links"]}
    for s, ip, rtt in ((a, "127.0.0.2", 12.5), (b, "127.0.0.3", 40.0)):
        x = links[ip]
        assert abs(x["packets_per_s"] - rates[s]) <= 0.1 * rates[s], x
        assert abs(x["bytes_per_s"] - rates[s] * 1332) <= 0.1 * rates[s] * 1332, x
        assert x["packets"] <= sent[s][0] and x["packets"] >= 0.9 * sent[s][0] - rates[s], (x, sent[s])
        assert x["rtt_ms"] == rtt and x["last_seen_s"] < 1.0, x
    assert abs(group["bitrate_kbps"] - 300 * 1332 * 8 / 1000) <= 0.1 * 300 * 1332 * 8 / 1000, group
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    per_link = {s.labels["link"].split(":")[0]: s.value for s in families["appliance_relay_link_bitrate_bps"].samples}
    assert abs(per_link["127.0.0.2"] - 200 * 1332 * 8) <= 0.1 * 200 * 1332 * 8, per_link
    rtts = {s.labels["link"].split(":")[0]: s.value for s in families["appliance_relay_link_rtt_seconds"].samples}
    assert rtts == {"127.0.0.2": 0.0125, "127.0.0.3": 0.04}
    assert families["appliance_relay_groups"].samples[0].value == 1


def test_a_bonded_libsrt_stream_by_its_stream_id_in_noalbs_formats(tmp_path):
    """`appliance relay --stats` between our bonding sender (its RTT in its keepalives) with
    libsrt's caller and srt-live-transmit; NOALBS's readers find it by its stream id."""
    from appliance.transport.bond import Bonder
    from appliance.transport.libsrt import SrtCaller

    ingest = Ingest(tmp_path, free_port())
    ingest.start()
    port, stats = free_port(), free_port()
    relay = subprocess.Popen([*APPLIANCE, "relay", "--listen", str(port), "--bind", "127.0.0.1", "--to",
                              f"srt://127.0.0.1:{ingest.port}", "--stats", f"127.0.0.1:{stats}"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    bond = Bonder(("127.0.0.1", port), {"wired": "127.0.0.2", "cell": "127.0.0.3"})
    base = f"http://127.0.0.1:{stats}"
    try:
        wait_until(lambda: _answers(base + "/stats"), 10, what="the stats server")
        assert read_openirl(get(base + "/noalbs/openirl/publish/live/feed1")) is None, "offline before it streams"
        bond.start()
        wait_until(bond.ready, 10, what="the bond registered")
        caller = SrtCaller("127.0.0.1", bond.local_port, latency_ms=200, stream_id="publish/live/feed1")
        caller.connect()
        rate, t0, n = 2_000_000 / 8 / 1316, time.monotonic(), 0  # 2 Mb/s of TS
        while time.monotonic() - t0 < 4:
            while n < int((time.monotonic() - t0) * rate):
                caller.send(b"\x47" + bytes(1315))
                n += 1
            time.sleep(0.002)
        stat = read_openirl(get(base + "/noalbs/openirl/publish/live/feed1"))
        bela = read_belabox(get(base + "/noalbs/belabox"), "publish/live/feed1")
        view = json.loads(get(base + "/stats"))
        sent = {name: link.bytes_sent for name, link in bond.links.items()}
        caller.close()
    finally:
        bond.stop()
        stop_gracefully(relay)
        ingest.stop()
    (group,) = view["groups"]
    assert group["stream_id"] == "publish/live/feed1", group
    # 2 Mb/s of payload, and SRT's 16-byte headers, acks aside: NOALBS's bitrate is kb/s
    assert abs(stat.bitrate - 2024) <= 0.1 * 2024, stat
    assert len(stat.peers) == 2 and sum(p.bitrate for p in stat.peers) == stat.bitrate, stat
    rtt = openirl_rtt(stat)
    assert rtt is not None and 0 <= rtt < 50, f"the sender's RTT on loopback: {stat}"
    assert bela["bitrate"] == stat.bitrate and bela["dropped_pkts"] == 0, bela
    by_ip = {x["address"].split(":")[0]: x for x in group["links"]}
    for name, ip in (("wired", "127.0.0.2"), ("cell", "127.0.0.3")):
        got = by_ip[ip]["bytes"]
        assert abs(got - sent[name]) <= 0.1 * max(sent[name], 1) + 2000, (name, got, sent[name])


def _answers(url: str) -> bool:
    try:
        get(url)
        return True
    except OSError:
        return False


def test_the_docs_examples_parse_and_have_the_shape_the_relay_serves():
    import re

    text = (ROOT / "docs" / "relay-stats.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"^```json\n(.*?)^```", text, re.S | re.M)]
    example, noalbs = blocks
    r = RelayThread()
    link = client()
    try:
        register(r, [link])
        real = relay_stats.view(r.relay)
    finally:
        link.close()
        r.close()
    assert example.keys() == real.keys() and example["relay"].keys() == real["relay"].keys()
    assert example["groups"][0].keys() == real["groups"][0].keys()
    assert example["groups"][0]["links"][0].keys() == real["groups"][0]["links"][0].keys()
    assert noalbs["streamServer"]["type"] == "OpenIRL"
    assert re.fullmatch(r"http://[^/]+:\d+/noalbs/openirl/.+", noalbs["streamServer"]["statsUrl"])


def test_a_relay_busy_for_5_s_says_one_core_is_not_enough_once_and_when_it_is_again(caplog):
    """Its process's CPU time against the clock the samples are given: a second of the
    relay's work burnt for each sampled second, whatever else the machine runs."""
    relay = Relay(("127.0.0.1", 0), ("127.0.0.1", 9))
    now = 100.0
    relay_stats.sample(relay, now)
    with caplog.at_level(logging.INFO, logger="appliance.transport.relay"):
        for _ in range(8):
            spent = time.process_time() + 0.1
            while time.process_time() < spent:
                pass
            now += 0.1
            relay_stats.sample(relay, now)
        assert relay.status()["busy"] >= 0.85
        said = [r.getMessage() for r in caplog.records]
        assert sum("one core is not enough for these senders" in m for m in said) == 1, said
        now += 10.0
        relay_stats.sample(relay, now)
    assert relay.status()["busy"] < 0.5
    assert "one is enough again" in caplog.records[-1].getMessage(), caplog.records[-1].getMessage()
