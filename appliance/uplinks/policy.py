"""Link health and the link policies, pure: no I/O, no clock of their own.

health(): a score in 0..1 per uplink from what the transport measured (RTT
against the link's own best, NAKed share) and, for the cellular link, from
the radio. The radio terms fall BEFORE packets are lost: a SINR or RSRP sliding
towards the edge of coverage, or a handover in the last seconds, lowers the
score while the transport still looks clean. The bonding sender multiplies its
per-link choice score by it, so a worsening link gets a smaller share.

LossMeter: the lost share behind the health score, steady under steady loss
even on a link that carries little.

decide(): the policy in force.
- bond: every usable link carries traffic, in proportion to its score;
- failover: the primary carries everything, the backup stays registered with
  keepalives only and takes over the moment the transport declares the primary
  dead; traffic returns once the primary has been healthy for hold_seconds;
- data caps: a metered link that reached its cap goes on standby (with an event).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from appliance.uplinks.at import Radio

CELL_CHANGE_PENALTY_S = 5.0
MIN_WEIGHT = 0.05


@dataclass
class LinkView:
    name: str
    present: bool = True  # the interface is up with an address
    state: str | None = None  # the transport's: registering | probation | up | dead (None: not streaming)
    rtt_ms: float | None = None
    base_rtt_ms: float | None = None  # the lowest RTT seen on this link
    loss: float = 0.0  # share of its packets NAKed recently
    radio: Radio | None = None  # cellular links only
    since_cell_change: float | None = None  # seconds
    used_bytes: int = 0
    cap_bytes: int | None = None


@dataclass
class Health:
    score: float
    reasons: list[str] = field(default_factory=list)


def _ramp(value: float, bad: float, good: float, floor: float) -> float:
    """1 at or above good, floor at or below bad, linear between."""
    if value >= good:
        return 1.0
    if value <= bad:
        return floor
    return floor + (1 - floor) * (value - bad) / (good - bad)


def health(link: LinkView) -> Health:
    score, why = 1.0, []
    if not link.present:
        return Health(0.0, ["interface down"])
    if link.state == "dead":
        return Health(0.0, ["no replies"])
    if link.rtt_ms is not None and link.base_rtt_ms:
        f = _ramp(-(link.rtt_ms / max(link.base_rtt_ms, 5.0)), -6.0, -2.0, 0.3)  # RTT 2x its best is fine, 6x is not
        if f < 1:
            score *= f
            why.append(f"RTT {link.rtt_ms:.0f} ms (best {link.base_rtt_ms:.0f})")
    if link.loss > 0.005:
        f = _ramp(-link.loss, -0.10, -0.005, 0.2)
        score *= f
        why.append(f"loss {link.loss * 100:.1f} %")
    r = link.radio
    if r is not None:
        if r.sim not in (None, "READY") or r.registered is False:
            return Health(0.0, [f"modem: SIM {r.sim}" if r.sim not in (None, "READY") else "modem: not registered"])
        if r.sinr is not None:
            f = _ramp(r.sinr, 0.0, 13.0, 0.15)  # field bands: >= 13 dB good, < 0 dB poor
            if f < 1:
                score *= f
                why.append(f"SINR {r.sinr:g} dB")
        if r.rsrp is not None:
            f = _ramp(r.rsrp, -110.0, -90.0, 0.3)  # >= -90 dBm good, < -100 poor, -110 edge of coverage
            if f < 1:
                score *= f
                why.append(f"RSRP {r.rsrp:g} dBm")
        if link.since_cell_change is not None and link.since_cell_change < CELL_CHANGE_PENALTY_S:
            score *= 0.5
            why.append("cell change")
    return Health(round(score, 3), why)


class LossMeter:
    """The share of each link's packets lost, from the bonder's running counts. The
    figure spans at least WINDOW seconds and PACKETS packets (at most WINDOW_MAX
    seconds): a lossy link gets a small share, and 5 % loss counted over the 30
    packets it then carries in a few seconds reads anywhere from 0 to 15 %.
    A link starved of traffic (its window shrunk by the losses, or on standby) keeps
    its last figure for WINDOW_MAX: carrying nothing is no proof the loss went away.
    After that the figure is forgotten, so a link on standby can be trusted again."""

    WINDOW = 5.0
    PACKETS = 500
    WINDOW_MAX = 30.0
    MIN_PACKETS = 100  # fewer in WINDOW_MAX: too few to judge

    def __init__(self):
        self._hist: dict[str, deque[tuple[float, int, int]]] = {}
        self._judged: dict[str, tuple[float, float]] = {}  # name -> (when, figure)

    def update(self, name: str, now: float, naks: int, packets: int) -> float:
        hist = self._hist.setdefault(name, deque())
        if hist and packets < hist[-1][2]:
            hist.clear()  # the bonder counts this link afresh (it left and came back)
            self._judged.pop(name, None)
        hist.append((now, naks, packets))
        while now - hist[0][0] > self.WINDOW_MAX:
            hist.popleft()
        for t0, n0, p0 in reversed(hist):
            if now - t0 >= self.WINDOW and packets - p0 >= self.PACKETS:
                break
        if packets - p0 >= self.MIN_PACKETS:
            self._judged[name] = (now, (naks - n0) / (packets - p0))
        when, figure = self._judged.get(name, (now, 0.0))
        return figure if now - when <= self.WINDOW_MAX else 0.0


BANDS = (("good", 0.8), ("fair", 0.4), ("poor", 0.0))
BAND_MARGIN = 0.05  # a score must clear a band's edge by this much to change band
BAND_HOLD_S = 5.0  # and stay in the new band this long: a log line per change, not per wobble


def _band(score: float) -> str:
    return next(name for name, low in BANDS if score >= low)


class HealthBands:
    """The band (good / fair / poor) each link is reported in. A loss figure taken
    over a few seconds wobbles across an edge under steady random loss; the band
    moves only when the score is clear of the edge and stays there."""

    def __init__(self):
        self.band: dict[str, str] = {}
        self._pending: dict[str, tuple[str, float]] = {}

    def update(self, name: str, score: float, now: float) -> str | None:
        """The new band if the link has just changed band, else None."""
        was = self.band.get(name, "good")
        order = [b for b, _ in BANDS]
        raw = _band(score)
        if raw == was:
            self._pending.pop(name, None)
            return None
        better = order.index(raw) < order.index(was)
        clear = _band(score - BAND_MARGIN if better else min(1.0, score + BAND_MARGIN))
        if clear == was:
            self._pending.pop(name, None)
            return None
        pending = self._pending.get(name)
        if pending is None or pending[0] != clear:
            self._pending[name] = (clear, now)
            return None
        if now - pending[1] < BAND_HOLD_S:
            return None
        del self._pending[name]
        self.band[name] = clear
        return clear


@dataclass
class PolicyConfig:
    mode: str = "bond"  # bond | failover
    primary: str = ""
    hold_seconds: float = 30.0


@dataclass
class FailoverMemory:
    active: str = ""
    healthy_since: dict[str, float] = field(default_factory=dict)


@dataclass
class Decision:
    weights: dict[str, float]
    standby: set[str]
    events: list[str]
    active: str = ""


def decide(links: list[LinkView], cfg: PolicyConfig, memory: FailoverMemory, now: float) -> Decision:
    """Weights and standby set for the bonding sender; events name what changed and why."""
    events: list[str] = []
    scores = {l.name: health(l) for l in links}
    weights = {n: max(MIN_WEIGHT, h.score) for n, h in scores.items()}
    standby: set[str] = set()
    capped = {l.name for l in links if l.cap_bytes is not None and l.used_bytes >= l.cap_bytes}
    standby |= capped
    usable = [l for l in links if l.present and l.state != "dead" and l.name not in capped]

    for l in links:
        good = l.present and l.state == "up" and scores[l.name].score >= 0.5
        if good:
            memory.healthy_since.setdefault(l.name, now)
        else:
            memory.healthy_since.pop(l.name, None)

    if cfg.mode == "failover" and links:
        names = [l.name for l in links]
        primary = cfg.primary if cfg.primary in names else names[0]
        backups = [n for n in names if n != primary and n not in capped]
        previous = memory.active or primary
        primary_ok = primary not in capped and any(l.name == primary for l in usable)
        primary_stable = now - memory.healthy_since.get(primary, now) >= cfg.hold_seconds
        if previous == primary:
            active = primary if primary_ok or not backups else backups[0]
        else:
            active = primary if primary_ok and primary_stable else previous
            if active not in [l.name for l in usable] and primary_ok:
                active = primary
        if active != previous:
            why = (f"{primary} healthy for {cfg.hold_seconds:g} s" if active == primary
                   else f"{primary} {'reached its data cap' if primary in capped else 'is down'}")
            events.append(f"failover: traffic moves {previous} -> {active} ({why})")
        memory.active = active
        standby |= {n for n in names if n != active}
        return Decision(weights, standby, events, active)
    return Decision(weights, standby, events)
