"""The quick probe: which PoP is nearest, when no fresh pre-flight says so.

While the box is READY with more than one PoP and no fresh pre-flight, the
uplinks component registers a bond with every PoP over every uplink at once,
keepalives only (no dry stream: nothing reaches any ingest), for up to
SECONDS, and reads each link's RTT from the keepalive echoes. The PoP whose
worst answering link has the lowest RTT is chosen (one that answers on more
uplinks first). It is done again every EVERY seconds while READY, and a
pre-flight, which measures much more, wins while it is fresh. Blocking: a
thread, never the loop.
"""

from __future__ import annotations

import time

from appliance.config import Config

SECONDS = 3.0
SAMPLES = 5  # echoes per link: enough for a median at 10 keepalives a second
EVERY = 600.0


def probe(config: Config, links: dict[str, str]) -> dict:
    """{"at", "chosen", "pops": [{"pop", "links": {name: RTT ms or None}}], best first}."""
    from appliance.hostnames import parse_srt_url
    from appliance.transport.bond import Bonder

    bonds = []
    for pop in config.stream.pops():
        s = config.stream.at(pop)
        host, port, _ = parse_srt_url(s.url)
        bond = Bonder((host, port), links, s.relay_secret.get_secret_value().encode() or None)
        bond.start()
        bonds.append((pop.label, bond))
    try:
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline and not all(
                b.links and all(len(link.rtts) >= SAMPLES for link in list(b.links.values())) for _, b in bonds):
            time.sleep(0.05)
        pops = []
        for label, b in bonds:
            measured = {name: sorted(link.rtts) for name, link in list(b.links.items()) if link.rtts}
            pops.append({"pop": label, "links": {n: _figures(measured.get(n)) for n in links}})
    finally:
        for _, b in bonds:
            b.stop()
    pops.sort(key=rank_key)
    return {"at": time.time(), "chosen": pops[0]["pop"] if pops else "", "pops": pops}


def _figures(rtts: list[float] | None) -> dict | None:
    """A link's RTT (the median of its echoes) and jitter (the 90th percentile less it), in ms."""
    if not rtts:
        return None
    median = rtts[len(rtts) // 2]
    return {"rtt_ms": round(median * 1000, 1), "jitter_ms": round((rtts[int(len(rtts) * 0.9)] - median) * 1000, 1)}


def rank_key(p: dict) -> tuple:
    answering = [f["rtt_ms"] for f in p["links"].values() if f is not None]
    return -len(answering), max(answering, default=float("inf"))


def fresh(result: dict | None, labels: list[str], now: float) -> bool:
    """It still chooses: recent, of these PoPs, and the chosen one answered."""
    return (bool(result) and now - result["at"] <= EVERY * 1.5 and result["chosen"] in labels
            and any(f is not None for f in result["pops"][0]["links"].values()))
