"""The daemon's status as text: `appliance status` (and `--watch`), the sim console's
lamps, and the one line a minute the journal gets while live. It reads only the
status dict the control socket answers with, so the terminal shows what the phone
page shows, from the same figures."""

from __future__ import annotations

import time


def render(s: dict) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(s["since"]))
    lines = [f"{s['device']}: {s['state']} since {since}  (profile {s['profile']}, up {s['uptime']:.0f} s)"]
    if s["fault"]:
        lines.append(f"  FAULT: {s['fault']}")
    lines += [f"  ! {c}" for c in s["conditions"]]
    lines.append(f"  live intent: {'yes' if s['live_intent'] else 'no'}")
    comps = s["components"]
    media = comps.get("media", {})
    if media.get("state") == "running":
        lines.append(media_summary(media))
        stream = stream_summary(media)
        if stream:
            lines.append(stream)
    uplinks = comps.get("uplinks", {})
    if uplinks.get("state") == "running":
        lines.append(uplinks_summary(uplinks))
    power = comps.get("power", {})
    if power.get("state") == "running":
        lines.append(power_summary(power))
    fleet = comps.get("fleet", {})
    if fleet.get("state") == "running":
        lines.append(f"  fleet: {fleet_summary(fleet)}")
    panel = comps.get("panel", {})
    if panel.get("leds"):
        lines.append(f"  panel: {lamps(panel)}")
    for name, c in comps.items():
        lines.append(f"  {name:<14} {c['state']}" + (f"  ({c['error']})" if c.get("error") else ""))
    return "\n".join(lines)


def lamps(panel: dict) -> str:
    """The panel as text: each LED's label and the pattern it plays."""
    return "  ".join(f"{led.get('label', name)}[{led['pattern']}]" for name, led in panel.get("leds", {}).items())


def media_summary(m: dict) -> str:
    """The media lines: video, encoder, audio, recorder."""
    video = m["video"]
    lines = [f"  video: {video['source']}, {'signal' if video['signal'] else 'NO SIGNAL'}"]
    if m["live"]:
        hw = " (hardware)" if m["encoder_hardware"] else ""
        lines.append(f"  encoder: {m['encoder']}{hw}, {m['fps']} fps, {m['bitrate_kbps']} kb/s "
                     f"(target {m['target_bitrate_kbps']}), {m['frames_dropped']} dropped")
    for name, a in m["audio"].items():
        if not a["device_ok"]:
            level = "device missing"
        else:
            lufs = "" if a["loudness_lufs"] is None else f"  {a['loudness_lufs']:.1f} LUFS"
            level = f"peak {a['peak_dbfs']:.1f} dBFS  rms {a['rms_dbfs']:.1f} dBFS{lufs}"
            level += ("  CLIP" if a["clipping"] else "") + ("  SILENT" if a["silent"] else "")
        lines.append(f"  audio {name}: {level}")
    rec = m["outputs"].get("recorder")
    if rec and rec.get("session"):
        state = "recording" if rec["recording"] else rec.get("stopped", "finalized")
        if rec.get("not_finalized"):
            state = rec["not_finalized"]
        lines.append(f"  recorder: {state}, {rec['segments']} segments, {rec['bytes'] / 1e6:.1f} MB in {rec['directory']}")
    return "\n".join(lines)


def stream_summary(m: dict) -> str:
    """Where the stream goes and how it fares: SRT (bonded or not) and RTMP."""
    lines = []
    srt = m["outputs"].get("srt")
    if srt is not None and m["live"]:
        if srt["connected"]:
            since = time.strftime("%H:%M:%S", time.localtime(srt["connected_since"])) \
                if srt.get("connected_since") else "?"
            head = f"  stream: {srt['url']}, connected since {since}"  # (the url says "bonded, SRTLA")
        else:
            head = f"  stream: {srt['url']}, NOT CONNECTED" + (f" ({srt['last_error']})" if srt.get("last_error") else "")
        lines.append(head)
        abr = srt.get("abr") or {}
        delivered = abr.get("delivered_kbps")
        figures = [f"{m['bitrate_kbps']} kb/s of {m['target_bitrate_kbps']} target"
                   + (f", the links carry {delivered}" if delivered is not None else ""),
                   f"lane {srt['lane']}", f"{srt['frames_dropped']} dropped, {srt['video_shed']} shed"]
        st = srt.get("srt") or {}
        if st.get("rtt_ms") is not None:
            figures.append(f"RTT {st['rtt_ms']:.0f} ms, send buffer {st.get('send_buffer_ms', 0):.0f} ms")
        lines.append("    " + "; ".join(figures))
    rtmp = m["outputs"].get("rtmp")
    if rtmp is not None and m["live"]:
        lines.append(f"  rtmp: {rtmp['url']}, {'connected' if rtmp['connected'] else 'NOT CONNECTED'}, "
                     f"{rtmp['packets_dropped']} dropped")
    return "\n".join(lines)


def signal_bars(radio: dict) -> str:
    """Four bars from the RSRP, the way a phone draws them (>= -80, -90, -100, -110 dBm)."""
    rsrp = radio.get("rsrp")
    if rsrp is None:
        return "[....]"
    n = sum(rsrp >= edge for edge in (-110, -100, -90, -80))
    return "[" + "#" * n + "." * (4 - n) + "]"


def uplinks_summary(u: dict) -> str:
    """One line per uplink: state, RTT, share of the traffic, health, data used, radio."""
    lines = []
    active = u.get("active")
    for name, link in u.get("links", {}).items():
        bits = [link["state"] + (" (standby)" if link.get("standby") else "") + (" (active)" if name == active else "")]
        if link.get("rtt_ms") is not None:
            bits.append(f"RTT {link['rtt_ms']:.0f} ms")
        bits.append(f"{link.get('share_percent', 0):.0f} % of the traffic")
        if link.get("health") is not None:
            bits.append(f"health {link['health']:.2f}")
        used = f"{link['used_mb']:.0f} MB used" + (f" of {link['cap_mb']}" if link.get("cap_mb") is not None else "")
        bits.append(used)
        radio = link.get("radio")
        if radio:
            bits.append(f"{signal_bars(radio)} {radio.get('rat') or 'no cell'}"
                        + (f" RSRP {radio['rsrp']:.0f} dBm" if radio.get("rsrp") is not None else "")
                        + (f" SINR {radio['sinr']:.0f} dB" if radio.get("sinr") is not None else ""))
        lines.append(f"  uplink {name}: " + ", ".join(bits))
    return "\n".join(lines) if lines else "  uplinks: none"


def power_summary(p: dict) -> str:
    lines = []
    for name, src in p["sources"].items():
        if src["stale"]:
            lines.append(f"  power {name}: NOT ANSWERING ({src.get('last_error', '')})")
            continue
        mains = {True: "on mains", False: "ON BATTERY", None: "no reading yet"}[src["on_mains"]]
        bits = [mains]
        if src["charge_percent"] is not None:
            bits.append(f"{src['charge_percent']:.0f} %")
        if src["runtime_seconds"] is not None:
            bits.append(f"{src['runtime_seconds'] / 60:.0f} min left ({src['runtime_from']})")
        lines.append(f"  power {name}: " + ", ".join(bits) + (f"  [{src['detail']}]" if src["detail"] else ""))
    if p.get("shutdown_in_seconds") is not None:
        lines.append(f"  POWERING OFF in {p['shutdown_in_seconds']:.0f} s unless mains return")
    temps = p.get("health", {}).get("temperatures_c") or {}
    if temps:
        lines.append(f"  board: {max(temps.values()):.0f} °C")
    return "\n".join(lines) if lines else "  power: no power monitor configured"


def one_line(s: dict, abr_moves: int | None = None) -> str:
    """The journal's summary of a live minute: bitrate (and how often the adaptive
    bitrate moved it since the last summary), each uplink's share, the recording."""
    comps = s["components"]
    media = comps.get("media", {})
    bits = [s["state"]]
    if media.get("live"):
        bits.append(f"{media.get('bitrate_kbps', 0)} kb/s (target {media.get('target_bitrate_kbps')}), "
                    f"{media.get('fps', 0)} fps")
        srt = media.get("outputs", {}).get("srt")
        if srt is not None:
            bits.append("stream " + ("connected" if srt["connected"] else "NOT CONNECTED")
                        + f", {srt['frames_dropped']} dropped, {srt['video_shed']} shed")
            if abr_moves:
                bits.append(f"the adaptive bitrate moved {abr_moves} times")
        rec = media.get("outputs", {}).get("recorder")
        if rec and rec.get("session"):
            bits.append(f"recording {rec['segments']} segments, {rec['bytes'] / 1e6:.0f} MB")
    links = comps.get("uplinks", {}).get("links", {})
    if links:
        bits.append("uplinks " + ", ".join(f"{n} {lk['state']} {lk.get('share_percent', 0):.0f} %"
                                           for n, lk in links.items()))
    if s["conditions"]:
        bits.append("conditions: " + "; ".join(s["conditions"]))
    return " · ".join(bits)


def fleet_summary(f: dict) -> str:
    if f.get("connected"):
        since = time.strftime("%H:%M:%S", time.localtime(f["connected_since"])) if f.get("connected_since") else "?"
        return (f"{f['box']} on {f['broker']} since {since}, {f['published']['state']} states and "
                f"{f['published']['telemetry']} reports sent, {f['commands']} commands")
    return f"{f['box']}: broker {f['broker']} not reached ({f.get('error') or 'connecting'}); the show goes on"

