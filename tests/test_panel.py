"""The front panel on gpiozero's MockFactory: gestures, debounce, the table."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from appliance import conditions as C
from appliance.config import PanelSection
from appliance.panel import patterns
from appliance.panel.panel import LedDriver, Panel
from appliance.panel.patterns import Pattern
from appliance.supervisor.state import Kind, Snapshot, State
from conftest import ROOT, run_cli, wait_until

GO, FN = 5, 6
CFG = PanelSection(backend="mock", leds={"status": 17, "live": 27, "audio": 25, "power": 24},
                   buttons={"go": GO, "fn": FN})


class Collector:
    def __init__(self):
        self.events: list[tuple[Kind, str]] = []
        self.lock = threading.Lock()

    def __call__(self, kind, reason="", source=""):
        with self.lock:
            self.events.append((kind, reason))

    def kinds(self):
        with self.lock:
            return [k for k, _ in self.events]


@pytest.fixture
def panel():
    posted = Collector()
    p = Panel(CFG, posted)
    asyncio.run(p.start())
    p.posted = posted
    yield p
    asyncio.run(p.stop())


def at(p: Panel, state: State, conditions=()):
    p.on_state(Snapshot(), Snapshot(state, frozenset(conditions)))


def press(p: Panel, pin: int, seconds: float):
    mock = p.factory.pin(pin)
    mock.drive_low()
    time.sleep(seconds)
    mock.drive_high()


def test_go_press_in_ready_goes_live_at_once(panel):
    at(panel, State.READY)
    mock = panel.factory.pin(GO)
    mock.drive_low()
    assert panel.posted.kinds() == [Kind.GO], "on the press, not the release"
    mock.drive_high()


def test_bouncing_contacts_count_as_one_press(panel):
    at(panel, State.READY)
    mock = panel.factory.pin(GO)
    for _ in range(6):  # a worn switch: 12 edges within ~12 ms
        mock.drive_low()
        time.sleep(0.001)
        mock.drive_high()
        time.sleep(0.001)
    mock.drive_low()
    time.sleep(0.2)
    mock.drive_high()
    time.sleep(0.1)
    assert panel.posted.kinds() == [Kind.GO]
    assert panel.buttons["go"].presses == 1
    assert panel.buttons["go"].ignored_edges >= 10


def test_a_bounce_hiding_the_release_is_not_lost(panel):
    at(panel, State.READY)
    mock = panel.factory.pin(GO)
    mock.drive_low()
    time.sleep(0.01)
    mock.drive_high()  # released inside the debounce window: read again after it
    wait_until(lambda: not panel.buttons["go"].is_pressed, 1, what="the release")


def test_a_short_go_press_while_live_does_not_stop_but_a_hold_does(panel):
    at(panel, State.LIVE)
    press(panel, GO, 0.3)
    time.sleep(2.2)
    assert Kind.STOP not in panel.posted.kinds(), "a knock never stops a show"
    assert Kind.GO not in panel.posted.kinds()
    mock = panel.factory.pin(GO)
    mock.drive_low()
    wait_until(lambda: Kind.STOP in panel.posted.kinds(), 3, what="STOP after the hold")
    mock.drive_high()
    assert panel.posted.kinds() == [Kind.STOP]


def test_holding_go_from_ready_goes_live_and_does_not_stop(panel):
    at(panel, State.READY)
    mock = panel.factory.pin(GO)
    mock.drive_low()
    at(panel, State.LIVE)  # it went live under the finger
    time.sleep(2.3)
    mock.drive_high()
    assert panel.posted.kinds() == [Kind.GO]


def test_fn_short_press_acknowledges_and_a_recurrence_shows_again(panel):
    at(panel, State.READY, {C.audio("program", "silent")})
    assert panel.driver.pattern("audio") is Pattern.SLOW
    press(panel, FN, 0.1)
    wait_until(lambda: panel.driver.pattern("audio") is Pattern.SOLID, 1, what="acknowledged")
    at(panel, State.READY, set())  # cleared ...
    at(panel, State.READY, {C.audio("program", "silent")})  # ... and back
    assert panel.driver.pattern("audio") is Pattern.SLOW


def test_fn_held_5_s_asks_for_a_safe_shutdown(panel):
    at(panel, State.LIVE)
    mock = panel.factory.pin(FN)
    mock.drive_low()
    time.sleep(4.5)
    assert panel.posted.kinds() == []
    wait_until(lambda: Kind.POWER_OFF in panel.posted.kinds(), 1.5, what="POWER_OFF")
    mock.drive_high()


def test_lamp_test_then_the_table(panel):
    # start() lit everything for a second
    assert all(led.value for led in panel.leds.values())
    at(panel, State.READY)
    time.sleep(1.1)
    assert panel.leds["status"].value and not panel.leds["live"].value


def expected_states(pattern: Pattern, periods: int = 2):
    out = [(0.0, 0)]
    prev_duration, prev_state = 0.0, 0
    for _ in range(periods):
        for on, d in patterns.TIMINGS[pattern]:
            if int(on) != prev_state:
                out.append((prev_duration, int(on)))
                prev_duration = 0.0
            prev_state = int(on)
            prev_duration += d
    return out


@pytest.mark.parametrize("pattern", list(Pattern), ids=lambda p: p.name)
def test_every_pattern_drives_the_pin_with_its_timings(pattern):
    factory = MockFactory()
    from gpiozero import LED

    led = LED(17, pin_factory=factory)
    driver = LedDriver({"x": led})
    pin = factory.pin(17)
    pin.clear_states()
    driver.start()
    try:
        driver.set("x", pattern)
        time.sleep(2 * sum(d for _, d in patterns.TIMINGS[pattern]) + 0.05)
    finally:
        driver.stop()
        led.close()
        factory.close()
    expected = expected_states(pattern)
    states = [(round(s.timestamp, 3), int(s.state)) for s in pin.states]
    assert len(states) >= len(expected), (states, expected)
    pin.assert_states_and_times(expected)


def test_every_table_row_is_reachable_and_distinct_on_its_led():
    for led in patterns.LEDS:
        rows = [r for r in patterns.TABLE if r.led == led]
        shown = [r.pattern for r in rows]
        assert len(shown) == len(set(shown)), f"{led}: two meanings share a pattern"
    for row in patterns.TABLE:
        state = row.states[0] if row.states else State.READY
        present = {row.condition.replace("*", "program")} if row.condition else set()
        facts = {row.fact} if row.fact else set()
        assert patterns.choose(state, present, facts=facts)[row.led] == row, row


LINK_PINS = {"link_wired": 22, "link_cell": 23}
LINK_ROWS = [r for r in patterns.TABLE if r.led in LINK_PINS]


LINK_PAIRS = [(w, c) for w in LINK_ROWS if w.led == "link_wired" for c in LINK_ROWS
              if c.led == "link_cell" and c.pattern is w.pattern]


@pytest.mark.parametrize("rows", LINK_PAIRS, ids=lambda rows: rows[0].pattern.name)
def test_every_link_led_row_plays_on_its_pin(rows):
    """Each row of the two link LEDs, "solid while it carries the show" among them, as the pins see
    them: both LEDs' rows of one pattern at once (their conditions and facts name each its own link)."""
    p = Panel(PanelSection(backend="mock", leds=LINK_PINS), Collector())
    asyncio.run(p.start())
    try:
        at(p, State.LIVE)  # nothing known of the links: off
        time.sleep(patterns_lamp_test() + 0.1)
        pins = {row.led: p.factory.pin(LINK_PINS[row.led]) for row in rows}
        assert all(pin.state == 0 for pin in pins.values())
        for pin in pins.values():
            pin.clear_states()
        p.set_facts(frozenset(row.fact for row in rows if row.fact))
        at(p, rows[0].states[0] if rows[0].states else State.LIVE, {row.condition for row in rows if row.condition})
        time.sleep(2 * sum(d for _, d in patterns.TIMINGS[rows[0].pattern]) + 0.05)
        for row in rows:
            assert p.status()["leds"][row.led]["meaning"] == row.meaning
            pins[row.led].assert_states_and_times(expected_states(row.pattern))
    finally:
        asyncio.run(p.stop())


def patterns_lamp_test() -> float:
    from appliance.panel.panel import LAMP_TEST

    return LAMP_TEST


def test_a_link_carrying_the_show_is_solid_and_one_not_in_use_is_off():
    carrying = patterns.choose(State.LIVE, set(), facts={C.link_fact("wired", "carrying")})
    assert carrying["link_wired"].pattern is Pattern.SOLID and carrying["link_cell"].pattern is Pattern.OFF
    # Down outranks what the bond said a moment ago; poor health shows while it carries.
    assert patterns.choose(State.LIVE, {C.link_down("cell")}, facts={C.link_fact("cell", "carrying")}
                           )["link_cell"].pattern is Pattern.SLOW
    assert patterns.choose(State.LIVE, set(), facts={C.link_fact("cell", "poor"), C.link_fact("cell", "carrying")}
                           )["link_cell"].pattern is Pattern.WINK


def test_live_stays_readable_whatever_the_battery_does():
    for power in (C.ON_BATTERY, C.BATTERY_LOW):
        chosen = patterns.choose(State.LIVE, {power})
        assert chosen["live"].pattern is Pattern.SOLID
        assert chosen["power"].pattern is not Pattern.SOLID


def test_priorities_when_conditions_overlap():
    chosen = patterns.choose(State.DEGRADED, {C.NO_VIDEO, C.OVERHEATING, C.DISK_FULL, C.audio("a", "clipping"),
                                              C.audio("b", "device missing")})
    assert chosen["status"].pattern is Pattern.TRIPLE  # overheating outranks no video
    assert chosen["live"].pattern is Pattern.DOUBLE  # live but not recording
    assert chosen["audio"].pattern is Pattern.DOUBLE  # a missing device outranks clipping
    assert patterns.choose(State.FAULT, {C.NO_VIDEO})["status"].pattern is Pattern.FAST


def test_faults_cannot_be_acknowledged():
    chosen = patterns.choose(State.LIVE, {C.BATTERY_CRITICAL, C.ON_BATTERY}, acknowledged={C.BATTERY_CRITICAL, C.ON_BATTERY})
    assert chosen["power"].pattern is Pattern.FAST


def test_readme_card_and_picture_are_generated_from_the_table():
    readme = (ROOT / "README.md").read_text()
    assert patterns.readme_with_card(readme, "docs/panel.svg") == readme, \
        "README's front-panel card is stale: run `appliance panel-card --readme README.md --svg docs/panel.svg`"
    assert (ROOT / "docs" / "panel.svg").read_text() == patterns.card_svg()
    for row in patterns.TABLE:
        assert row.meaning in readme


def test_gpiod_factory_names_a_missing_chip():
    from appliance.panel.gpiod_factory import GpiodFactory

    with pytest.raises(FileNotFoundError, match="/dev/gpiochip9"):
        GpiodFactory("/dev/gpiochip9")


def test_probe_says_whether_the_jetson_chip_opens():
    r = run_cli("probe", "--profile", "jetson-orin-nano", "--json")
    panel = next(p for p in json.loads(r.stdout)["parts"] if p["part"] == "panel")
    assert panel["device"] == "/dev/gpiochip0"
    assert panel["result"] == "not found" and "missing device node" in panel["detail"]


# --- with the daemon: the whole path from the button to the recording --------------------------

def test_go_press_to_first_packet_under_1_5_s(daemon_factory):
    d = daemon_factory().start()
    d.wait_state("READY", timeout=20)
    assert d.request("sim", action="press", button="go", seconds=0.1)["ok"]
    d.wait_state(("LIVE", "DEGRADED"))
    st = d.request("status")["status"]["components"]
    wait_until(lambda: d.request("status")["status"]["components"]["media"]["first_packet_at"], 3, what="a packet")
    st = d.request("status")["status"]["components"]
    pressed = st["panel"]["buttons"]["go"]["last_press_at"]
    first = st["media"]["first_packet_at"]
    assert 0 <= first - pressed <= 1.5, first - pressed
    # a 0.3 s press while live does not stop; a 2 s hold does
    assert d.request("sim", action="press", button="go", seconds=0.3)["ok"]
    time.sleep(2.5)
    assert d.state() in ("LIVE", "DEGRADED")
    assert d.request("sim", action="press", button="go", seconds=2.3, timeout=10)["ok"]
    d.wait_state("READY")
    assert d.terminate() == 0


def test_fn_hold_finalizes_the_recording_before_the_shutdown_command(daemon_factory, tmp_path):
    marker = tmp_path / "shutdown"
    d = daemon_factory(config_extra=f"""
[power]
shutdown_command = ["sh", "-c", "cat {tmp_path}/box/recordings/*/session.json > {marker}.json; ls {tmp_path}/box/recordings/* > {marker}.files"]
""").start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    d.wait_state(("LIVE", "DEGRADED"))
    time.sleep(2)
    assert d.request("sim", action="press", button="fn", seconds=5.5, timeout=15)["ok"]
    wait_until(lambda: marker.with_suffix(".files").exists(), 10, what="the shutdown command")
    manifest = json.loads(marker.with_suffix(".json").read_text())
    assert manifest["complete"] is True and manifest["open_segment"] is None
    files = marker.with_suffix(".files").read_text().split()
    assert not [f for f in files if f.endswith(".part")], files
    assert d.state() == "READY"
    st = d.request("status")["status"]
    assert st["power_off"]["reason"] == "FN button held 5 s" and st["power_off"]["exit"] == 0
    assert st["live_intent"] is False, "a deliberate shutdown is the end of the show"
    log = d.log()
    assert log.index("recording finalized") < log.index("powering off")
    assert d.terminate() == 0


@pytest.mark.parametrize("pattern", list(Pattern), ids=lambda p: p.name)
def test_the_led_thread_wakes_at_each_edge_and_not_before(pattern):
    """until_change (the LED thread's sleep) lands on the pattern's next edge exactly."""
    for i in range(400):
        t = i * 0.0173
        wait = patterns.until_change(pattern, t)
        lit = patterns.level(pattern, t)
        assert 0 <= wait <= 1.0
        assert all(patterns.level(pattern, t + wait * k / 10) == lit for k in range(10)), (t, wait)
        if len({on for on, _ in patterns.TIMINGS[pattern]}) == 2:
            assert patterns.level(pattern, t + wait + 1e-6) != lit, (t, wait)
