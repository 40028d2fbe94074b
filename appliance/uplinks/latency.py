"""The latency budget: the lowest SRT latency the measured links allow, with margin
for losing one (stream.latency_ms = "auto").

SRT's latency is how long the receiver holds each packet for a lost one to be sent
again. While every link is up a loss costs one retransmission: a round trip. When a
link dies mid-show, its packets in flight are lost until the bond notices (the dead
time, 4 x its RTT between 150 and 300 ms: transport/bond_link.py) and sends them
again over another link, which takes that link's round trip. So:

    latency = 4 x RTT + jitter + dead-link notice + re-send

with RTT and jitter the worst bonded link's (pre-flight's median RTT, and how far
its 90th percentile rose above it), the notice as the bond computes it for that
RTT, and the re-send one more such RTT; rounded up to 10 ms, between
stream.latency_min_ms and stream.latency_max_ms. Without a fresh pre-flight there
is nothing to measure from: the maximum.
"""

from __future__ import annotations

import math

from appliance.transport.bond_link import DEAD_MAX, DEAD_MIN


def budget(links: list[dict], low_ms: int, high_ms: int) -> tuple[int, str]:
    """(latency ms, the rule with its figures) from pre-flight's links of one PoP."""
    usable = [c for c in links if c.get("verdict") != "no-go" and c.get("rtt_ms") is not None]
    if not usable:
        return high_ms, f"{high_ms} ms: no link measured (the maximum, stream.latency_max_ms)"
    worst = max(usable, key=lambda c: c["rtt_ms"] + (c.get("jitter_ms") or 0))
    rtt, jitter = worst["rtt_ms"], worst.get("jitter_ms") or 0.0
    notice = 1000 * min(DEAD_MAX, max(DEAD_MIN, 4 * rtt / 1000))
    raw = 4 * rtt + jitter + notice + rtt
    chosen = min(high_ms, max(low_ms, int(math.ceil(raw / 10) * 10)))
    bound = " (the minimum)" if chosen == low_ms and raw < low_ms else " (the maximum)" if chosen < raw else ""
    return chosen, (f"{chosen} ms{bound}: 4 x {rtt:g} ms RTT + {jitter:g} ms jitter + {notice:.0f} ms dead-link notice "
                    f"+ {rtt:g} ms re-send, on {worst['name']}")
