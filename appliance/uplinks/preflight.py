"""Pre-flight: before the show, is each uplink good for the configured stream?

Per uplink, in turn, a dry stream to the configured relay (or straight to the
SRT ingest when nothing is bonded): MPEG-TS null packets, which any ingest
discards, at 1.25 x what the show needs (video at its maximum plus audio), over
a bonding sender with that one uplink. From libsrt's statistics: RTT, loss,
and the upload the link achieved (what went in, as the relay acknowledged it, or
without a relay what went in minus what was still queued or dropped). With the modem's radio figures for the cellular link, a
verdict per link and for the box: go / marginal / no-go, against the configured
bitrate and latency.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from appliance.config import CODEC_LABELS, Config
from appliance.transport.libsrt import LIVE_PAYLOAD

log = logging.getLogger(__name__)

# The bitrate each codec needs for the same picture, against H.264's: H.265 carries it in
# roughly 60 % (BELABOX and the encoder vendors say "half"; x265 against x264 at the fast
# presets a box can run is nearer 60 %). Used to say what a fallback to the other codec
# would need: the fallback streams at the bitrate the links allow, so its picture is
# what suffers, and pre-flight says by how much.
SAME_PICTURE = {"h264": 1.0, "h265": 0.6}
NULL_TS = (b"\x47\x1f\xff\x10" + b"\xff" * 184) * 7  # 7 null packets: 1316 bytes that every demuxer drops
HEADROOM = 1.25


@dataclass
class LinkCheck:
    name: str
    source: str
    verdict: str = "no-go"
    why: str = ""
    rtt_ms: float | None = None
    loss_percent: float | None = None
    upload_kbps: int | None = None
    offered_kbps: int = 0
    radio: dict = field(default_factory=dict)


def needed_kbps(config: Config) -> tuple[int, int]:
    """(what the show needs at its maximum, the least that still carries video), audio included."""
    from appliance.outputs.abr import audio_kbps

    e = config.encoder
    audio = audio_kbps(len(config.audio.tracks), e.audio_bitrate_kbps)
    return e.bitrate_kbps + audio, e.min_bitrate_kbps + audio


def needed_by_codec(config: Config) -> dict[str, int]:
    """What the show needs in each codec its ladder can run, for the configured
    bitrate's picture (the configured codec first)."""
    from appliance.outputs.abr import audio_kbps

    e = config.encoder
    audio = audio_kbps(len(config.audio.tracks), e.audio_bitrate_kbps)
    codecs = dict.fromkeys(r.codec for r in e.rungs())
    return {c: round(e.bitrate_kbps * SAME_PICTURE[c] / SAME_PICTURE[e.codec]) + audio for c in codecs}


def judge(c: LinkCheck, need: int, floor: int, latency_ms: int) -> None:
    if c.upload_kbps is None:
        c.verdict = "no-go"
        return
    problems = []
    if c.upload_kbps < need * 1.1:
        problems.append(f"upload {c.upload_kbps} kb/s for {need} needed")
    if (c.loss_percent or 0) > 5:
        problems.append(f"loss {c.loss_percent:.1f} %")
    if c.rtt_ms is not None and c.rtt_ms > latency_ms / 3:
        problems.append(f"RTT {c.rtt_ms:.0f} ms against a {latency_ms} ms latency")
    sinr = c.radio.get("sinr")
    if sinr is not None and sinr < 0:
        problems.append(f"SINR {sinr} dB")
    c.why = "; ".join(problems) or "fine"
    if not problems:
        c.verdict = "go"
    elif c.upload_kbps >= floor and (c.loss_percent or 0) <= 20:
        c.verdict = "marginal"
    else:
        c.verdict = "no-go"


def run(config: Config, links: dict[str, str], seconds: float = 12.0,
        radio_for: Callable[[str], dict] | None = None) -> dict:
    """Blocking (a thread): one dry stream per uplink, in turn; the whole report."""
    from appliance.hostnames import parse_srt_url

    s = config.stream
    host, port, query = parse_srt_url(s.url)
    need, floor = needed_kbps(config)
    offered = int(need * HEADROOM)
    if not s.bond:
        links = {"direct": ""}
    per_link = max(4.0, seconds / max(1, len(links)))
    checks = []
    for name, source in links.items():
        c = LinkCheck(name, source, offered_kbps=offered, radio=(radio_for or (lambda n: {}))(name) or {})
        try:
            _measure(c, config, (host, port), query, per_link, offered)
        except Exception as e:  # noqa: BLE001 - a link that cannot be measured is a no-go, with the reason
            c.why = str(e)
            c.upload_kbps = None
        judge(c, need, floor, int(query.get("latency", s.latency_ms)))
        log.info("preflight: %s %s (%s)", name, c.verdict, c.why, extra={"LINK": name})
        checks.append(c)
    total = sum(c.upload_kbps or 0 for c in checks if c.verdict != "no-go")
    overall = ("go" if any(c.verdict == "go" for c in checks) or total >= need * 1.1
               else "marginal" if total >= floor else "no-go")
    return {"at": time.time(), "verdict": overall, "needed_kbps": need, "floor_kbps": floor, "codec": config.encoder.codec,
            "needed_by_codec": needed_by_codec(config), "latency_ms": int(query.get("latency", s.latency_ms)), "seconds_per_link": per_link,
            "links": [asdict(c) for c in checks]}


def _measure(c: LinkCheck, config: Config, relay: tuple[str, int], query: dict, seconds: float, offered: int) -> None:
    from appliance.transport.caller import stream_caller

    s = config.stream
    bonder = None
    target = relay
    try:
        if s.bond:
            from appliance.transport.bond import Bonder

            bonder = Bonder(relay, {c.name: c.source}, s.relay_secret.get_secret_value().encode() or None)
            bonder.start()
            deadline = time.monotonic() + 5
            while not bonder.ready():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"over {c.name}: {bonder.problem()} within 5 s")
                time.sleep(0.05)
            target = ("127.0.0.1", bonder.local_port)
        caller = stream_caller(s, *target, query)
        caller.connect()
        try:
            rate = offered * 1000 / 8 / LIVE_PAYLOAD
            t0, rtts, n = time.monotonic(), [], 0
            while (elapsed := time.monotonic() - t0) < seconds:
                due = int(elapsed * rate) + 1
                while n < due:
                    caller.send(NULL_TS)
                    n += 1
                if n % 50 == 0:
                    rtts.append(caller.stats()["rtt_ms"])
                time.sleep(0.002)
            st = caller.stats()
            duration = time.monotonic() - t0
            if bonder is not None:
                # What the relay acknowledged on this link: the upload that arrived.
                arrived = bonder.links[c.name].acked * LIVE_PAYLOAD if c.name in bonder.links else 0
            else:
                arrived = n * LIVE_PAYLOAD - st["send_buffer_bytes"] - st["packets_dropped"] * LIVE_PAYLOAD
            c.upload_kbps = int(max(0, arrived) * 8 / 1000 / duration)
            c.loss_percent = round(100 * st["packets_lost"] / max(1, st["packets_sent"]), 1)
            rtts.append(st["rtt_ms"])
            c.rtt_ms = round(sorted(rtts)[len(rtts) // 2], 1)
        finally:
            caller.close()
    finally:
        if bonder is not None:
            bonder.stop()


def table(report: dict) -> str:
    rows = [("link", "verdict", "RTT ms", "loss %", "upload kb/s", "radio", "why")]
    for c in report["links"]:
        r = c.get("radio") or {}
        radio = " ".join(f"{k.upper()} {r[k]}" for k in ("rsrp", "sinr") if r.get(k) is not None)
        rows.append((c["name"], c["verdict"], "-" if c["rtt_ms"] is None else f"{c['rtt_ms']:g}",
                     "-" if c["loss_percent"] is None else f"{c['loss_percent']:g}",
                     "-" if c["upload_kbps"] is None else f"{c['upload_kbps']} of {c['offered_kbps']}",
                     (f"{r.get('rat', '')} {radio}".strip() or "-"), c["why"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    codec = f" in {CODEC_LABELS[report['codec']]}" if report.get("codec") in CODEC_LABELS else ""
    others = [f"{kbps} in {CODEC_LABELS[c]}" for c, kbps in report.get("needed_by_codec", {}).items() if c != report.get("codec")]
    if others:
        codec += f"; for the same picture after a fallback: {', '.join(others)}"
    lines.append(f"overall: {report['verdict'].upper()} (the show needs {report['needed_kbps']} kb/s{codec}, at least "
                 f"{report['floor_kbps']} for any video, SRT latency {report['latency_ms']} ms)")
    return "\n".join(lines)
