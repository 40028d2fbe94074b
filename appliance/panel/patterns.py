"""The front panel's one table: appliance state -> what every LED shows.

Pure data and pure functions (no GPIO): the panel driver plays it, the tests
check it, and the README's front-panel card and its picture are generated from
it, so the card cannot drift from the code.

Each LED owns a set of conditions. For every LED the matching row with the
highest priority wins, so overlapping problems never garble a light, and LIVE
stays readable whatever the battery does (the battery has its own LED).
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass

from appliance import conditions as C
from appliance.supervisor.state import LIVE_STATES, State


class Pattern(enum.Enum):
    OFF = "off"
    SOLID = "solid"
    SLOW = "slow blink"
    FAST = "fast blink"
    DOUBLE = "double flash"
    TRIPLE = "triple flash"
    WINK = "wink"  # on, with a short dark blip every second


# One period of each pattern: (LED on?, seconds).
TIMINGS: dict[Pattern, tuple[tuple[bool, float], ...]] = {
    Pattern.OFF: ((False, 1.0),),
    Pattern.SOLID: ((True, 1.0),),
    Pattern.SLOW: ((True, 0.5), (False, 0.5)),
    Pattern.FAST: ((True, 0.1), (False, 0.1)),
    Pattern.DOUBLE: ((True, 0.15), (False, 0.15), (True, 0.15), (False, 0.75)),
    Pattern.TRIPLE: ((True, 0.15), (False, 0.15), (True, 0.15), (False, 0.15), (True, 0.15), (False, 0.45)),
    Pattern.WINK: ((True, 0.85), (False, 0.15)),
}

LEDS = ("status", "live", "audio", "link_wired", "link_cell", "power")
LED_LABELS = {"status": "STATUS", "live": "LIVE", "audio": "AUDIO", "link_wired": "WIRED",
              "link_cell": "5G", "power": "POWER"}



@dataclass(frozen=True)
class Row:
    led: str
    priority: int
    pattern: Pattern
    meaning: str
    action: str
    states: tuple[State, ...] = ()  # any of these states (empty: any state)
    condition: str = ""  # a condition (glob) that must be present ("" = none needed)
    acknowledgeable: bool = True  # FN short press silences it until it recurs
    fact: str = ""  # a fact that must hold ("" = none): what is so, not a problem (C.link_fact)


def _link_rows(led: str, name: str, label: str) -> list[Row]:
    return [
        Row(led, 100, Pattern.FAST, "no uplink at all", "check Ethernet and the modem; the show is still being recorded",
            condition=C.ALL_LINKS_DOWN, acknowledgeable=False),
        Row(led, 90, Pattern.SLOW, f"{label} uplink down", f"check the {label} connection; the other link carries the show",
            condition=C.link_down(name)),
        Row(led, 80, Pattern.DOUBLE, f"{label} uplink on standby (backup, or data cap reached)", "nothing, unless you expected it to carry traffic",
            condition=C.link_standby(name)),
        Row(led, 70, Pattern.WINK, f"{label} uplink carries the show, in poor health (loss, delay, weak signal)",
            "nothing now; the other link takes more; check the cable or the antenna after the show",
            fact=C.link_fact(name, "poor"), acknowledgeable=False),
        Row(led, 60, Pattern.SOLID, f"{label} uplink carries the show (in READY: up, ready to)", "nothing",
            fact=C.link_fact(name, "carrying"), acknowledgeable=False),
        Row(led, 0, Pattern.OFF, f"no {label} uplink (absent or not configured)", "nothing, unless you plugged one in"),
    ]


TABLE: tuple[Row, ...] = (
    # STATUS: is the box working?
    Row("status", 100, Pattern.FAST, "FAULT: the box cannot work", "read `appliance status` or the phone page; power-cycle if it stays",
        states=(State.FAULT,), acknowledgeable=False),
    Row("status", 95, Pattern.SLOW, "starting up, or stopping", "wait", states=(State.BOOTING, State.STOPPING),
        acknowledgeable=False),
    Row("status", 90, Pattern.TRIPLE, "too hot: it may throttle or drop frames", "give it air; move it off the amp rack and out of the sun",
        condition=C.OVERHEATING),
    Row("status", 80, Pattern.DOUBLE, "no video signal (a slate is sent instead)", "check the HDMI cable and that the source outputs video",
        condition=C.NO_VIDEO),
    Row("status", 60, Pattern.WINK, "the hardware encoder failed; the software encoder carries the show", "nothing now; report it after the show",
        condition=C.ENCODER_SOFTWARE),
    Row("status", 0, Pattern.SOLID, "READY: everything needed is working", "press GO to go live"),
    # LIVE: are we on air, and is it being recorded?
    Row("live", 100, Pattern.FAST, "going live", "wait", states=(State.GOING_LIVE,), acknowledgeable=False),
    Row("live", 90, Pattern.DOUBLE, "live, but NOT recording (disk full or failing)", "the stream goes on; free space or replace the card after the show",
        states=LIVE_STATES, condition="recording stopped: *", acknowledgeable=False),
    Row("live", 87, Pattern.TRIPLE, "live; the state card refuses writes (read-only or full): a restart would not resume the show",
        "replace or free the card after the show", states=LIVE_STATES, condition=C.state_unsaved("*")),
    Row("live", 85, Pattern.WINK, "live; the recording disk is nearly full", "old recordings are being deleted; offload them after the show",
        states=LIVE_STATES, condition=C.DISK_LOW),
    Row("live", 80, Pattern.SOLID, "LIVE: streaming and recording", "hold GO for 2 s to stop", states=LIVE_STATES,
        acknowledgeable=False),
    Row("live", 70, Pattern.SLOW, "stopping: finalizing the recording", "wait before pulling the power", states=(State.STOPPING,),
        acknowledgeable=False),
    Row("live", 0, Pattern.OFF, "not live", "press GO to go live"),
    # AUDIO: is the desk's sound coming in cleanly?
    Row("audio", 100, Pattern.DOUBLE, "audio interface missing (silence is sent)", "check the USB audio interface and its cable",
        condition=C.audio("*", "device missing")),
    Row("audio", 90, Pattern.FAST, "audio clipping", "ask FOH to lower the send to the box", condition=C.audio("*", "clipping")),
    Row("audio", 80, Pattern.SLOW, "silence on an audio track", "check the desk's send and the cable", condition=C.audio("*", "silent")),
    Row("audio", 0, Pattern.SOLID, "audio present", "nothing"),
    # Uplinks.
    *_link_rows("link_wired", "wired", "wired"),
    *_link_rows("link_cell", "cell", "5G"),
    # POWER: how long can we go on?
    Row("power", 100, Pattern.FAST, "battery critical: stopping and powering off safely", "plug in mains now",
        condition=C.BATTERY_CRITICAL, acknowledgeable=False),
    Row("power", 90, Pattern.DOUBLE, "battery low", "plug in mains or swap the power bank", condition=C.BATTERY_LOW),
    Row("power", 80, Pattern.SLOW, "on battery", "check the mains lead if you did not expect it", condition=C.ON_BATTERY),
    Row("power", 70, Pattern.TRIPLE, "the UPS or battery monitor is not answering", "check its USB cable",
        condition=C.POWER_MONITOR_LOST),
    Row("power", 0, Pattern.SOLID, "power OK", "nothing"),
)


def _matches(row: Row, state: State, present: frozenset[str], facts: frozenset[str]) -> bool:
    if row.states and state not in row.states:
        return False
    if row.condition and not any(fnmatch.fnmatchcase(c, row.condition) for c in present):
        return False
    if row.fact and row.fact not in facts:
        return False
    return True


def choose(state: State, conditions: frozenset[str] | set[str],
           acknowledged: frozenset[str] | set[str] = frozenset(),
           facts: frozenset[str] | set[str] = frozenset()) -> dict[str, Row]:
    """The winning row for every LED.

    Acknowledged conditions (FN short press) no longer light their warning, but
    a row marked not acknowledgeable always shows. Facts (conditions.link_fact) say what is
    so without being a problem: they never make the state DEGRADED.
    """
    conditions, facts = frozenset(conditions), frozenset(facts)
    unacked = conditions - frozenset(acknowledged)
    out: dict[str, Row] = {}
    for led in LEDS:
        rows = sorted((r for r in TABLE if r.led == led), key=lambda r: -r.priority)
        for row in rows:
            present = conditions if not row.acknowledgeable else unacked
            if _matches(row, state, present, facts):
                out[led] = row
                break
    return out


def level(pattern: Pattern, t: float) -> bool:
    """Whether the LED is lit `t` seconds into the pattern."""
    steps = TIMINGS[pattern]
    period = sum(d for _, d in steps)
    t %= period
    for on, duration in steps:
        if t < duration:
            return on
        t -= duration
    return steps[-1][0]


def until_change(pattern: Pattern, t: float) -> float:
    """Seconds from `t` into the pattern until the LED next changes (a steady pattern:
    one period, so the caller still wakes now and then)."""
    steps = TIMINGS[pattern]
    period = sum(d for _, d in steps)
    if len({on for on, _ in steps}) == 1:
        return period
    t %= period
    edge, lit = 0.0, level(pattern, t)
    for i in range(2 * len(steps)):  # two periods: the next edge may lie in the next one
        on, duration = steps[i % len(steps)]
        edge += duration
        if edge > t and steps[(i + 1) % len(steps)][0] != lit:
            return edge - t
    return period


# --- the front-panel card (README) and its picture ---------------------------------------

def card_markdown() -> str:
    lines = ["| LED | pattern | meaning | what to do |", "|---|---|---|---|"]
    for led in LEDS:
        for row in sorted((r for r in TABLE if r.led == led), key=lambda r: -r.priority):
            lines.append(f"| {LED_LABELS[led]} | {row.pattern.value} | {row.meaning} | {row.action} |")
    return "\n".join(lines) + "\n"


def card_svg() -> str:
    """Every pattern of every LED as a timeline strip (two periods each)."""
    rows = [(led, r) for led in LEDS for r in sorted((x for x in TABLE if x.led == led), key=lambda x: -x.priority)]
    row_h, left, strip_w, seconds = 22, 470, 300, 2.0
    height = 40 + row_h * len(rows)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + strip_w + 20}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="#1b1b1b"/>',
           '<text x="10" y="22" fill="#eee" font-size="14">Front panel: every LED pattern (2 s shown)</text>']
    colours = {"status": "#4caf50", "live": "#f44336", "audio": "#ffc107", "link_wired": "#2196f3",
               "link_cell": "#00bcd4", "power": "#ff9800"}
    y = 40
    for led, row in rows:
        out.append(f'<text x="10" y="{y + 15}" fill="#eee">{LED_LABELS[led]}: {row.pattern.value}</text>')
        out.append(f'<text x="165" y="{y + 15}" fill="#aaa" font-size="10">{_esc(_short(row.meaning))}</text>')
        out.append(f'<rect x="{left}" y="{y + 4}" width="{strip_w}" height="14" fill="#333"/>')
        t = 0.0
        while t < seconds:
            for on, d in TIMINGS[row.pattern]:
                if t >= seconds:
                    break
                w = min(d, seconds - t) / seconds * strip_w
                if on:
                    out.append(f'<rect x="{left + t / seconds * strip_w:.1f}" y="{y + 4}" width="{w:.1f}" '
                               f'height="14" fill="{colours[led]}"/>')
                t += d
        y += row_h
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


CARD_START = "<!-- panel-card:start (generated by `appliance panel-card`; do not edit) -->"
CARD_END = "<!-- panel-card:end -->"


def readme_with_card(readme: str, svg_path: str) -> str:
    """README text with its front-panel card section regenerated."""
    if CARD_START not in readme or CARD_END not in readme:
        raise ValueError("README has no front-panel card markers")
    head, rest = readme.split(CARD_START, 1)
    _, tail = rest.split(CARD_END, 1)
    body = f"\n![The front panel's patterns]({svg_path})\n\n{card_markdown()}"
    return f"{head}{CARD_START}\n{body}{CARD_END}{tail}"


def _short(text: str, limit: int = 52) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
