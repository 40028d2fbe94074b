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

from appliance.codecs import CODEC_LABELS
from appliance.config import Config
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
HELD_SECONDS = 6.0  # SRT's peer idle timeout (5 s) and a margin: how long an ingest holds a caller gone quiet


@dataclass
class LinkCheck:
    name: str
    source: str
    verdict: str = "no-go"
    why: str = ""
    rtt_ms: float | None = None
    jitter_ms: float | None = None  # how far the RTT rose above its median (the 90th percentile less it)
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


VERDICTS = ("go", "marginal", "no-go")
FRESH_SECONDS = 3 * 3600  # a pre-flight older than this does not choose the PoP


def run(config: Config, links: dict[str, str], seconds: float = 12.0,
        radio_for: Callable[[str], dict] | None = None) -> dict:
    """Blocking (a thread): one dry stream per PoP and uplink, in turn; the whole report,
    its top level for the PoP ranked first (the one GO will use)."""
    pops = config.stream.pops()
    if not config.stream.bond:
        links = {"direct": ""}
    per_link = max(4.0, seconds / max(1, len(links) * len(pops)))
    ranked = sorted((_one_pop(config, pop, links, per_link, radio_for) for pop in pops), key=rank_key)
    best = ranked[0]
    return {**best, "at": time.time(), "codec": config.encoder.codec, "needed_by_codec": needed_by_codec(config),
            "seconds_per_link": per_link, "chosen": best["pop"], "pops": ranked}


def rank_key(p: dict) -> tuple:
    """Best first: the verdict, then the worst RTT of the links that can carry, then their loss."""
    usable = [c for c in p["links"] if c["verdict"] != "no-go"]
    worst_rtt = max((c["rtt_ms"] for c in usable if c["rtt_ms"] is not None), default=float("inf"))
    loss = max((c["loss_percent"] or 0 for c in usable), default=100.0)
    return VERDICTS.index(p["verdict"]), worst_rtt, loss


def is_fresh(report: dict | None, labels: list[str], now: float) -> bool:
    """A pre-flight that still chooses the PoP: recent, and of these PoPs."""
    return bool(report) and now - report.get("at", 0) <= FRESH_SECONDS and report.get("chosen") in labels


def plan(report: dict | None, stream, now: float, probed: dict | None = None) -> dict:
    """What GO streams to: the PoP (its index, and why) and, for latency_ms = "auto", the
    latency with its rule. From the last pre-flight while it is fresh, else from the
    last quick probe (uplinks/quick_probe.py) while it is, else the first PoP and the
    most the latency may be."""
    from appliance.uplinks import quick_probe

    labels = [p.label for p in stream.pops()]
    fresh = is_fresh(report, labels, now)
    quick = not fresh and quick_probe.fresh(probed, labels, now)
    if fresh:
        at = time.strftime("%H:%M", time.localtime(report["at"]))
        index, why = labels.index(report["chosen"]), f"ranked first by the pre-flight at {at}"
    elif quick:
        at = time.strftime("%H:%M", time.localtime(probed["at"]))
        index = labels.index(probed["chosen"])
        why = f"the nearest by a quick probe at {at} (RTT up to {quick_probe.rank_key(probed['pops'][0])[1]:g} ms)"
    else:
        index, why = 0, "the first listed (no fresh pre-flight of these PoPs)"
    out = {"pop": index, "pop_name": labels[index] if labels else "", "why": why}
    if stream.latency_ms == "auto":
        if fresh:
            out["latency_ms"], out["latency_rule"] = report["latency_ms"], report.get("latency_rule", "")
        elif quick:
            from appliance.uplinks.latency import budget

            links = [{"name": n, "verdict": "go", **f} for n, f in probed["pops"][0]["links"].items() if f is not None]
            ms, rule = budget(links, stream.latency_min_ms, stream.latency_max_ms)
            out["latency_ms"], out["latency_rule"] = ms, f"{rule} (a quick probe's RTT; a pre-flight measures more)"
        else:
            out["latency_ms"] = stream.latency_max_ms
            out["latency_rule"] = f"{stream.latency_max_ms} ms: no fresh pre-flight (the maximum, stream.latency_max_ms)"
    return out


def _one_pop(config: Config, pop, links: dict[str, str], per_link: float, radio_for) -> dict:
    from appliance.configshow import redact_url
    from appliance.hostnames import parse_srt_url

    s = config.stream.at(pop)
    host, port, query = parse_srt_url(s.url)
    need, floor = needed_kbps(config)
    offered = int(need * HEADROOM)
    auto = s.latency_ms == "auto" and "latency" not in query
    if auto:  # the dry streams at the most it may be; the links then say what it can be
        s = s.model_copy(update={"latency_ms": s.latency_max_ms})
    checks = []
    for name, source in links.items():
        c = LinkCheck(name, source, offered_kbps=offered, radio=(radio_for or (lambda n: {}))(name) or {})
        try:
            _measure(c, config, s, (host, port), query, per_link, offered)
        except Exception as e:  # noqa: BLE001 - a link that cannot be measured is a no-go, with the reason
            c.why = str(e)
            c.upload_kbps = None
        checks.append(c)
    latency, rule = int(query.get("latency", s.latency_ms)), "as configured"
    if auto:
        from appliance.uplinks.latency import budget

        measured = [{**asdict(c), "verdict": "go" if c.upload_kbps is not None else "no-go"} for c in checks]
        latency, rule = budget(measured, s.latency_min_ms, s.latency_max_ms)
    for c in checks:
        judge(c, need, floor, latency)
        log.info("preflight: %s via %s %s (%s)", pop.label, c.name, c.verdict, c.why, extra={"LINK": c.name})
    total = sum(c.upload_kbps or 0 for c in checks if c.verdict != "no-go")
    overall = ("go" if any(c.verdict == "go" for c in checks) or total >= need * 1.1
               else "marginal" if total >= floor else "no-go")
    return {"pop": pop.label, "url": redact_url(pop.url), "verdict": overall, "needed_kbps": need, "floor_kbps": floor,
            "latency_ms": latency, "latency_rule": rule, "links": [asdict(c) for c in checks]}


def _measure(c: LinkCheck, config: Config, s, relay: tuple[str, int], query: dict, seconds: float,
             offered: int) -> None:
    from appliance.transport.caller import stream_caller

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
        caller = _connect(c.name, stream_caller(s, *target, query))
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
            rtts.sort()
            c.rtt_ms = round(rtts[len(rtts) // 2], 1)
            c.jitter_ms = round(rtts[int(len(rtts) * 0.9)] - c.rtt_ms, 1)
        finally:
            caller.close()
    finally:
        if bonder is not None:
            bonder.stop()


def _connect(link: str, caller):
    """Dial, and dial again while the ingest may still hold the last link's dry stream:
    its SHUTDOWN is one packet that nothing acknowledges, and when a lossy link loses it,
    an ingest that takes one caller at a time (srt-live-transmit, a stream id that is
    taken) keeps the old connection until its idle timeout and does not answer the next."""
    deadline = time.monotonic() + HELD_SECONDS
    while True:
        try:
            caller.connect()
            return caller
        except ConnectionError as e:
            if "timed out" not in str(e) or time.monotonic() > deadline:
                raise
            log.info("preflight: via %s: %s: again, the ingest may still hold the last dry stream", link, e,
                     extra={"LINK": link})


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
    if len(report.get("pops", ())) > 1:
        ranked = [f"{i}. {p['pop']} ({p['verdict']}" + (f", RTT up to {rank_key(p)[1]:g} ms" if rank_key(p)[1] != float("inf")
                                                        else "") + ")" for i, p in enumerate(report["pops"], 1)]
        lines.insert(0, f"PoPs, best first: {'  '.join(ranked)}; the links below are {report['chosen']}'s")
    auto = f"; auto: {report['latency_rule']}" if report.get("latency_rule", "as configured") != "as configured" else ""
    lines.append(f"overall: {report['verdict'].upper()} (the show needs {report['needed_kbps']} kb/s{codec}, at least "
                 f"{report['floor_kbps']} for any video, SRT latency {report['latency_ms']} ms{auto})")
    return "\n".join(lines)
