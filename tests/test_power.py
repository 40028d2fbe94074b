"""Power: parsers against the specs' bytes and garbage, sources over pty
simulators, NUT against a real upsd, the policy, and the daemon acting on it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import conditions as C
from appliance.config import Config
from appliance.power import q1, vedirect
from appliance.power.model import PowerState
from appliance.power.monitor import PowerMonitor
from appliance.power.policy import PowerPolicy, Thresholds, assess
from appliance.power.sources import NutUps, Q1Ups, VeDirectMonitor
from appliance.sim.power import BatteryModel, UpsSim, VeDirectSim
from conftest import free_port, wait_until

SPEC_Q1 = b"(208.4 140.0 208.4 034 59.9 2.05 35.0 00110000\r"
SPEC_LIVE = (b"\r\nPID\t0xA381\r\nV\t12860\r\nVS\t13010\r\nI\t-3250\r\nP\t-42\r\nCE\t-15420\r\nSOC\t876\r\nTTG\t1680"
             b"\r\nAlarm\tOFF\r\nRelay\tOFF\r\nAR\t0\r\nBMV\t712 Smart\r\nFW\t0416\r\nMON\t0\r\nChecksum\t\xef")
SPEC_HISTORY = (b"\r\nH1\t-60120\r\nH2\t-15420\r\nH3\t-21000\r\nH4\t37\r\nH5\t0\r\nH6\t-1830770\r\nH7\t11650\r\nH8\t14420"
                b"\r\nH9\t86400\r\nH10\t12\r\nH11\t0\r\nH12\t0\r\nH15\t-5\r\nH16\t13380\r\nH17\t2250\r\nH18\t2780\r\nChecksum\t4")
SPEC_WORKED = b"\r\nPID\t0xA381\r\nV\t12800\r\nI\t-1500\r\nSOC\t955\r\nChecksum\t\xb6"


# --- Q1 parser -------------------------------------------------------------------------------

def test_q1_spec_example():
    s = q1.parse_q1(SPEC_Q1)
    assert (s.input_volts, s.input_fault_volts, s.output_volts) == (208.4, 140.0, 208.4)
    assert (s.load_percent, s.frequency_hz, s.battery_volts, s.temperature_c) == (34, 59.9, 2.05, 35.0)
    assert not s.utility_fail and not s.battery_low and s.bypass_active and s.ups_failed and not s.standby_type
    assert s.dropped_fields == ()


def test_q1_charge_estimate_matches_the_spec_example():
    rating = q1.parse_rating(b"#220.0 000 024.0 50.0\r")
    assert rating.battery_volts == 24.0
    assert q1.battery_packs(2.05, 24.0) == 12
    assert round(q1.charge_percent(2.05, 24.0)) == 73


def test_q1_unknown_fields_drop_only_that_value():
    s = q1.parse_q1(b"(208.4 @@@.@ 208.4 034 59.9 2.05 --.- 10000000\r")
    assert s.input_fault_volts is None and s.temperature_c is None and s.input_volts == 208.4
    assert set(s.dropped_fields) == {"input fault voltage", "temperature"}
    assert s.utility_fail


@pytest.mark.parametrize("bad", [
    SPEC_Q1[:-5] + b"\r",  # short
    b"#" + SPEC_Q1[1:],  # wrong first byte
    SPEC_Q1.replace(b"00110000", b"0011000X"),  # status not 0/1
    SPEC_Q1.replace(b"00110000", b"0011000 "),
    b"", b"\r", b"Q1\r",  # nothing / the command echoed
    SPEC_Q1.replace(b" 034 ", b"x034x"),  # fields not where they belong
])
def test_q1_bad_replies_are_rejected_whole(bad):
    with pytest.raises(q1.Q1Error):
        q1.parse_q1(bad)


def test_q1_identity_and_command_rules():
    ident = q1.parse_identity(b"#" + b"MEGATEC".ljust(15) + b" " + b"PRO-1000".ljust(10) + b" " + b"V1.2".ljust(10) + b"\r")
    assert (ident.company, ident.model, ident.version) == ("MEGATEC", "PRO-1000", "V1.2")
    assert q1.command_accepted(b"S.5R0000\r", b"")
    assert q1.command_accepted(b"T\r", b"(ACK\r") and q1.command_accepted(b"T\r", b"ACK\r")
    assert not q1.command_accepted(b"T\r", b"(NAK\r")
    assert not q1.command_accepted(b"XYZ\r", b"XYZ\r")  # echoed: refused
    assert q1.shutdown_command(0.5) == b"S.5R0000\r"
    assert q1.shutdown_command(3, 3) == b"S03R0003\r"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_q1_fuzz_never_raises_anything_but_q1error(data):
    try:
        s = q1.parse_q1(data)
    except q1.Q1Error:
        return
    assert len(data.rstrip(b"\r")) == q1.Q1_LEN and data[:1] == b"("
    assert s.load_percent is None or s.load_percent >= 0


# --- VE.Direct parser --------------------------------------------------------------------------

def feed_all(parser, data: bytes, chunk: int | None = None):
    if chunk is None:
        return parser.feed(data)
    out = []
    for i in range(0, len(data), chunk):
        out += parser.feed(data[i:i + chunk])
    return out


def test_vedirect_spec_blocks_and_worked_checksum():
    assert sum(SPEC_WORKED) % 256 == 0
    p = vedirect.VeDirectParser()
    blocks = feed_all(p, SPEC_LIVE + SPEC_HISTORY + SPEC_WORKED)
    assert [b.get("SOC") for b in blocks] == ["876", None, "955"]
    assert blocks[1]["H18"] == "2780"
    r = vedirect.interpret({**blocks[0], **blocks[1]})
    assert (r.volts, r.amps, r.charge_percent, r.minutes_to_go, r.model) == (12.86, -3.25, 87.6, 1680, "712 Smart")


@pytest.mark.parametrize("chunk", [1, 2, 7, 64])
def test_vedirect_partial_reads_in_any_split(chunk):
    p = vedirect.VeDirectParser()
    assert len(feed_all(p, SPEC_LIVE + b":154\n" + SPEC_HISTORY, chunk)) == 2


def test_vedirect_bad_checksum_drops_that_block_and_the_next_is_accepted():
    p = vedirect.VeDirectParser()
    bad = SPEC_LIVE[:-1] + b"\x00"
    blocks = feed_all(p, bad + SPEC_HISTORY)
    assert [("H1" in b) for b in blocks] == [True]
    assert p.counters.bad_checksum == 1


def test_vedirect_hex_frame_in_the_middle_of_a_block():
    p = vedirect.VeDirectParser()
    cut = SPEC_LIVE.index(b"\r\nSOC")
    blocks = feed_all(p, SPEC_LIVE[:cut] + b":154\n" + SPEC_LIVE[cut:])
    assert blocks and blocks[0]["SOC"] == "876"
    assert p.counters.hex_frames == 1 and p.counters.bad_hex_frames == 0
    feed_all(p, b":1FF\n")
    assert p.counters.bad_hex_frames == 1


def test_vedirect_checksum_byte_may_be_a_colon():
    fields = [("V", "12800"), ("I", "-1500")]
    import itertools
    printable = [chr(c) for c in range(0x41, 0x7B)]
    values = ("".join(p) for p in itertools.product(printable, repeat=3))
    for extra in values:
        blk = vedirect.block(fields + [("X", extra)])
        if blk[-1:] == b":":
            break
    else:
        pytest.fail("no block with ':' as checksum found")
    assert vedirect.VeDirectParser().feed(blk)[0]["X"] == extra


def test_vedirect_unsynchronised_monitor_sends_dashes():
    p = vedirect.VeDirectParser()
    (b,) = p.feed(vedirect.block([("V", "12800"), ("SOC", "---"), ("TTG", "---"), ("CE", "---")]))
    r = vedirect.interpret(b)
    assert r.charge_percent is None and r.minutes_to_go is None and r.volts == 12.8


def test_vedirect_limits_and_garbage_bound_memory():
    p = vedirect.VeDirectParser()
    feed_all(p, b"\r\nLABELTOOLONG\t1\r\nChecksum\tx")
    feed_all(p, b"\r\nV\t" + b"9" * 100)
    feed_all(p, vedirect.block([(f"F{i}", "1") for i in range(30)]))
    assert p.counters.malformed == 3 and p.counters.blocks == 0
    assert len(p.feed(SPEC_LIVE)) == 1, "and it recovers at the next block"


def test_vedirect_silence_resets_a_half_block():
    p = vedirect.VeDirectParser()
    p.feed(SPEC_LIVE[:30], now=0.0)
    assert p.feed(SPEC_HISTORY, now=1.0)  # 1 s later: a fresh start, not a continuation
    assert p.counters.resets == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([SPEC_LIVE, SPEC_HISTORY, b":154\n", b"\r\n", b"\t"])),
                max_size=12))
def test_vedirect_fuzz_blocks_are_always_valid(pieces):
    p = vedirect.VeDirectParser()
    for block in p.feed(b"".join(pieces)):
        assert len(block) <= vedirect.MAX_FIELDS
        assert all(len(k) <= vedirect.MAX_LABEL and len(v) <= vedirect.MAX_VALUE for k, v in block.items())
    assert len(p.feed(SPEC_LIVE)) <= 1


# --- sources over pty simulators ------------------------------------------------------------------

@pytest.fixture
def ups(tmp_path):
    sim = UpsSim(tmp_path / "ups", BatteryModel())
    src = Q1Ups("ups", sim.path, poll_seconds=0.3, stale_polls=3)
    src.start()
    yield sim, src
    src.stop()
    sim.close()


def test_q1_ups_reads_mains_fail_within_two_polls(ups):
    sim, src = ups
    wait_until(lambda: src.state.on_mains is True, 5, what="first reading")
    assert src.state.detail == "SIMULATED Q1-SIM 1.0" and src.rating.battery_volts == 24.0
    assert src.state.charge_percent == pytest.approx(100, abs=1)
    sim.model.set(on_mains=False)
    t0 = time.monotonic()
    wait_until(lambda: src.state.on_mains is False, 2 * 0.3 + 0.5, what="on battery")
    assert time.monotonic() - t0 <= 2 * 0.3 + 0.5  # 2 poll intervals (plus 2400-baud replies)


@pytest.mark.parametrize("nominal", [None, 24.0])
def test_q1_ups_that_does_not_answer_f_gets_its_charge_from_the_configured_nominal_voltage(tmp_path, nominal):
    sim = UpsSim(tmp_path / "ups", BatteryModel())
    sim.answers_f = False
    src = Q1Ups("ups", sim.path, nominal_volts=nominal, poll_seconds=0.3, stale_polls=3)
    src.start()
    try:
        sim.model.set(on_mains=False, charge=40)
        wait_until(lambda: src.state.on_mains is False and src.state.battery_volts, 5, what="a reading on battery")
        assert src.rating is None, "F went unanswered"
        if nominal is None:
            assert src.state.charge_percent is None  # (its LB flag still makes on-battery critical)
        else:
            assert src.state.charge_percent == pytest.approx(40, abs=3)
    finally:
        src.stop()
        sim.close()


def test_q1_ups_garbage_reply_is_counted_not_fatal(ups):
    sim, src = ups
    wait_until(lambda: src.polls >= 1, 5, what="first reading")
    sim.garbage = b"(garbage\r"
    wait_until(lambda: src.bad_replies >= 1, 3, what="the bad reply counted")
    polls = src.polls
    wait_until(lambda: src.polls > polls, 3, what="polling goes on")
    assert not src.state.stale


def test_q1_ups_unplug_and_replug(ups):
    sim, src = ups
    wait_until(lambda: src.polls >= 1, 5, what="first reading")
    sim.unplug()
    wait_until(lambda: src.state.stale, 5, what="stale after failed polls")
    assert "cannot open" in src.last_error or "I/O error" in src.last_error or "no reply" in src.last_error
    sim.replug()
    wait_until(lambda: not src.state.stale, 10, what="recovered")


def test_q1_refused_and_accepted_commands(ups):
    sim, src = ups
    wait_until(lambda: src.polls >= 1, 5, what="first reading")
    sim.refuse = {b"T\r"}
    assert src.command(b"S.5R0000\r") is True and b"S.5R0000\r" in sim.commands
    assert src.command(b"T\r") is False


@pytest.fixture
def bmv(tmp_path):
    sim = VeDirectSim(tmp_path / "battery", BatteryModel(charge=80), interval=0.2)
    src = VeDirectMonitor("battery", sim.path, poll_seconds=0.3, stale_polls=3)
    src.start()
    yield sim, src
    src.stop()
    sim.close()


def test_vedirect_monitor_reads_and_survives_corruption(bmv):
    sim, src = bmv
    wait_until(lambda: src.state.charge_percent is not None, 5, what="first block")
    assert src.state.charge_percent == pytest.approx(80, abs=1) and src.state.detail == "712 Smart"
    assert "H1" in src.fields, "the history block is merged"
    sim.corrupt_next = True
    wait_until(lambda: src.parser.counters.bad_checksum >= 1, 3, what="the corrupt block dropped")
    wait_until(lambda: src.parser.counters.hex_frames >= 3, 3, what="HEX frames skipped")
    sim.model.set(on_mains=False, discharge_per_second=0.1)
    wait_until(lambda: src.state.on_mains is False and src.state.runtime_from == "device", 3, what="discharging")


def test_vedirect_unplug_and_replug(bmv):
    sim, src = bmv
    wait_until(lambda: src.polls >= 1, 5, what="first block")
    sim.unplug()
    wait_until(lambda: src.state.stale, 6, what="stale")
    sim.replug()
    wait_until(lambda: not src.state.stale, 10, what="recovered")


# --- NUT against a real upsd ---------------------------------------------------------------------

@pytest.fixture
def nut(tmp_path):
    upsd, driver = "/lib/nut/upsd", "/lib/nut/dummy-ups"
    assert os.path.exists(upsd) and os.path.exists(driver), "scripts/test installs nut-server"
    d = tmp_path / "nut"
    (d / "state").mkdir(parents=True)
    (d / "ups.conf").write_text('[dummy]\n  driver = dummy-ups\n  port = dummy.dev\n  desc = "test"\n')
    dev = d / "dummy.dev"
    dev.write_text("ups.status: OL\nbattery.charge: 100\nbattery.runtime: 3600\nbattery.voltage: 27.0\n"
                   "ups.load: 20\ndevice.mfr: Dummy\ndevice.model: Test\n")
    port = free_port()
    (d / "upsd.conf").write_text(f"LISTEN 127.0.0.1 {port}\n")
    (d / "upsd.users").write_text("")
    env = {**os.environ, "NUT_CONFPATH": str(d), "NUT_STATEPATH": str(d / "state"), "NUT_ALTPIDPATH": str(d / "state")}
    user = ["-u", "root"] if os.geteuid() == 0 else []
    procs = [subprocess.Popen([driver, "-a", "dummy", "-D", *user], env=env, cwd=d,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    time.sleep(0.5)
    procs.append(subprocess.Popen([upsd, "-F", *user], env=env, cwd=d, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    yield port, dev
    for p in procs:
        p.terminate()
        p.wait(5)


def test_nut_source_against_upsd_with_dummy_ups(nut):
    port, dev = nut
    src = NutUps("nut", "dummy", "localhost", port, poll_seconds=0.3, stale_polls=3)  # by name, as users write it
    src.start()
    try:
        wait_until(lambda: src.state.on_mains is True, 15, what="OL from upsd")
        assert src.state.charge_percent == 100 and src.state.runtime_seconds == 3600
        assert src.state.detail.startswith("Dummy") and src.state.runtime_from == "device"
        # Swapped in whole: dummy-ups notices a change by the file's mtime, and one that caught it
        # truncated would not read it again within the same second.
        changed = dev.with_suffix(".new")
        changed.write_text(dev.read_text().replace("OL", "OB").replace("battery.charge: 100", "battery.charge: 42"))
        os.replace(changed, dev)
        # The driver hands upsd one variable at a time (ups.status before battery.charge here, and
        # dummy-ups says WAIT while it re-reads), so a poll can see the change half-made; what a
        # user sees is where it settles.
        wait_until(lambda: src.state.on_mains is False and src.state.charge_percent == 42, 15,
                   what="OB and 42 % after the .dev file changed")
        assert src.state.runtime_from == "device" and not src.state.stale
    finally:
        src.stop()


def test_nut_unknown_ups_is_a_clear_error(nut):
    port, _ = nut
    src = NutUps("nut", "nosuchups", "127.0.0.1", port, poll_seconds=0.2, stale_polls=2)
    src.start()
    try:
        wait_until(lambda: src.state.stale, 5, what="stale")
        assert "UNKNOWN-UPS" in src.last_error
    finally:
        src.stop()


def test_a_nut_server_name_that_does_not_resolve_is_said_and_retried_not_fatal():
    src = NutUps("nut", "dummy", "nut.does-not-exist.invalid", 3493, poll_seconds=0.2, stale_polls=2)
    src.start()
    try:
        wait_until(lambda: src.state.stale, 10, what="stale")
        assert "NUT server name does not resolve: nut.does-not-exist.invalid" in src.last_error, src.last_error
        assert src._thread.is_alive(), "retried with backoff, the poller goes on"
    finally:
        src.stop()


# --- the policy -----------------------------------------------------------------------------------

def state(on_mains, charge=None, runtime=None, stale=False, at=0.0):
    """at: when the reading was taken (monotonic)."""
    return PowerState("ups", "ups", on_mains=on_mains, charge_percent=charge, runtime_seconds=runtime, stale=stale,
                      updated=at)


def test_policy_walks_battery_low_critical_and_powers_off_after_the_grace():
    p = PowerPolicy(Thresholds(low_percent=30, critical_percent=10, low_minutes=20, critical_minutes=5, grace_seconds=10))
    t = Thresholds()
    kinds = lambda ds: [(d.kind, d.name, d.active) for d in ds]  # noqa: E731
    assert kinds(p.update(assess([state(True, 100)], t), 0)) == []
    assert kinds(p.update(assess([state(False, 80)], t), 1)) == [("condition", C.ON_BATTERY, True)]
    assert ("shed", "", True) in kinds(p.update(assess([state(False, 25)], t), 2))
    ds = kinds(p.update(assess([state(False, 8)], t), 3))
    assert ("condition", C.BATTERY_CRITICAL, True) in ds and ("countdown", "", True) in ds
    assert kinds(p.update(assess([state(False, 7)], t), 12.9)) == []
    assert ("power_off", "", True) in kinds(p.update(assess([state(False, 7)], t), 13))
    assert kinds(p.update(assess([state(False, 6)], t), 14)) == [], "only once"
    p.update(assess([state(True, 6, at=20)], t), 20)  # still here (the command failed), mains back
    p.update(assess([state(False, 5)], t), 30)
    assert ("power_off", "", True) in kinds(p.update(assess([state(False, 5)], t), 40)), "a new episode"


def test_policy_cancels_when_mains_return_in_time():
    p = PowerPolicy(Thresholds(grace_seconds=10))
    p.update(assess([state(False, 5)], p.thresholds), 0)
    ds = p.update(assess([state(True, 5, at=5)], p.thresholds), 5)
    assert [d.kind for d in ds if d.kind in ("cancel", "power_off")] == ["cancel"]
    assert "mains are back" in next(d.reason for d in ds if d.kind == "cancel")
    assert p.seconds_left(6) is None


def test_policy_runtime_thresholds_and_stale_sources():
    t = Thresholds()
    assert assess([state(False, 90, runtime=4 * 60)], t).critical
    assert assess([state(False, 90, runtime=15 * 60)], t).low
    silent = state(False, 50, stale=True)
    silent.updated = 100.0
    a = assess([silent], t, now=110.0)
    assert not a.critical and a.monitor_lost and a.on_battery, "silent 10 s: not yet"
    a = assess([silent], t, now=100.0 + t.dead_seconds)
    assert a.critical and "silent for 15 s while on battery" in a.reason, "silent on battery for DEADTIME: critical"
    on_mains = state(True, 50, stale=True)
    on_mains.updated = 100.0
    assert not assess([on_mains], t, now=200.0).critical, "silent on mains: only lost"


def test_policy_on_battery_with_the_ups_low_battery_flag_is_critical_at_any_charge():
    lb = state(False, 100)
    lb.alarms = ["battery low"]
    a = assess([lb], Thresholds())
    assert a.critical and "the UPS reports battery low" in a.reason, "OB+LB, as upsmon"
    lb.on_mains = True
    assert not assess([lb], Thresholds()).critical, "OL+LB: charging, nothing to do"


def test_policy_once_begun_only_an_answering_source_on_mains_cancels():
    t = Thresholds(grace_seconds=10, dead_seconds=15)
    p = PowerPolicy(t)
    p.update(assess([state(False, 5)], t, 0), 0)
    silent = state(False, 5, stale=True)  # the UPS stops answering during the countdown
    silent.updated = 1.0
    kinds = [d.kind for d in p.update(assess([silent], t, 5), 5)]
    assert "cancel" not in kinds, "silence is not mains"
    assert "power_off" in [d.kind for d in p.update(assess([silent], t, 10), 10)], "the countdown ran out"
    p = PowerPolicy(t)
    p.update(assess([state(False, 5)], t, 0), 0)
    assert "cancel" not in [d.kind for d in p.update(assess([state(False, 12)], t, 5), 5)], \
        "above critical again under a lighter load: still on battery, the sequence goes on"
    assert "power_off" in [d.kind for d in p.update(assess([state(False, 12)], t, 10), 10)]


def test_policy_a_mains_reading_from_before_the_countdown_does_not_cancel_it():
    """The battery monitor reads the mains failure first; the UPS, polled a moment earlier,
    last said "on mains" and is unplugged before its next poll (not stale yet): that is no
    news of mains coming back."""
    t = Thresholds(grace_seconds=4)
    p = PowerPolicy(t)
    ups, battery = state(True, 100, at=9.5), state(False, 8, at=10)
    assert "countdown" in [d.kind for d in p.update(assess([ups, battery], t, 10), 10)]
    battery.stale = True  # silent too, but not yet for the dead time
    kinds = [d.kind for d in p.update(assess([ups, battery], t, 11), 11)]
    assert "cancel" not in kinds, "an old reading is not mains back"
    assert "power_off" in [d.kind for d in p.update(assess([ups, battery], t, 14), 14)], "the countdown ran out"
    p = PowerPolicy(t)
    p.update(assess([ups, state(False, 8, at=10)], t, 10), 10)
    assert "cancel" in [d.kind for d in p.update(assess([state(True, 100, at=12)], t, 12), 12)], "a fresh one is"


# --- the daemon: finalize before power off; cancel in time --------------------------------------

POWER_CFG = """
[power]
poll_seconds = 0.3
grace_seconds = {grace}
shutdown_command = ["sh", "-c", "cat {rec}/*/session.json > {out}.json; date +%s.%N > {out}.at"]
"""


def live_on_sim_power(daemon_factory, tmp_path, grace: float, extra: str = ""):
    """The daemon live on the pty UPS and battery monitor; its shutdown command records
    the session's manifest and the time it ran (out.json, out.at)."""
    out = tmp_path / "shutdown"
    d = daemon_factory(config_extra=POWER_CFG.format(grace=grace, rec=tmp_path / "box" / "recordings", out=out)
                       + extra).start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    d.wait_state(("LIVE", "DEGRADED"))
    return d, out


def test_critical_battery_stops_live_and_finalizes_before_the_shutdown_command(daemon_factory, tmp_path):
    out = tmp_path / "shutdown"
    d = daemon_factory(config_extra=POWER_CFG.format(grace=1, rec=tmp_path / "box" / "recordings", out=out)).start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    d.wait_state(("LIVE", "DEGRADED"))
    time.sleep(1.5)
    t0 = time.time()
    assert d.request("sim", action="mains-fail")["ok"]
    wait_until(lambda: "on battery" in d.request("status")["status"]["conditions"], 2 * 0.3 + 1, what="on battery")
    assert d.request("sim", action="battery", percent=8)["ok"]
    # the shell creates the file before `date` writes into it: wait for the whole line
    wait_until(lambda: out.with_suffix(".at").exists() and out.with_suffix(".at").read_text().endswith("\n"), 15,
               what="the shutdown command")
    ran_at = float(out.with_suffix(".at").read_text())
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["complete"] and manifest["open_segment"] is None, "finalized before the command ran"
    assert ran_at - t0 < 10
    st = d.request("status")["status"]
    assert st["state"] == "READY" and st["live_intent"] is True, "the show resumes when power returns"
    log = d.log()
    order = [log.index(s) for s in ("on battery now", "battery critical (", "stopping live, finalizing",
                                    "recording finalized", "powering off (")]
    assert order == sorted(order), order
    assert d.terminate() == 0


def test_mains_back_in_time_cancels_the_shutdown(daemon_factory, tmp_path):
    out = tmp_path / "shutdown"
    d = daemon_factory(config_extra=POWER_CFG.format(grace=4, rec=tmp_path / "box" / "recordings", out=out)).start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    d.wait_state(("LIVE", "DEGRADED"))
    d.request("sim", action="mains-fail")
    d.request("sim", action="battery", percent=8)
    wait_until(lambda: "battery critical" in d.request("status")["status"]["conditions"], 5, what="critical")
    d.request("sim", action="mains-restore")
    wait_until(lambda: "shutdown cancelled: mains are back" in d.log(), 5, what="the cancel")
    time.sleep(4.5)
    assert not out.with_suffix(".at").exists(), "the shutdown command never ran"
    assert d.state() in ("LIVE", "DEGRADED")
    assert d.terminate() == 0


def test_low_battery_caps_the_encoder_bitrate(daemon_factory):
    d = daemon_factory(config_extra="[power]\npoll_seconds = 0.3\nshed_bitrate_kbps = 1200\n").start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    d.wait_state(("LIVE", "DEGRADED"))
    d.request("sim", action="mains-fail", discharge_per_second=0.0)
    d.request("sim", action="battery", percent=25, discharge_per_second=0.0)
    media = lambda: d.request("status")["status"]["components"]["media"]  # noqa: E731
    wait_until(lambda: media()["bitrate_cap_kbps"] == 1200 and media()["target_bitrate_kbps"] == 1200, 5,
               what="the cap")
    d.request("sim", action="mains-restore")
    wait_until(lambda: media()["bitrate_cap_kbps"] is None and media()["target_bitrate_kbps"] == 4000, 5,
               what="the cap lifted")
    assert d.terminate() == 0


def test_ups_is_told_to_cut_its_output_before_power_off(tmp_path):
    sim = UpsSim(tmp_path / "ups", BatteryModel())
    cfg = Config.model_validate({"serial": {"ups": sim.path}, "power": {"poll_seconds": 0.3, "ups_off_delay_minutes": 0.5,
                                                                        "board_battery": "no"}})
    posted = []
    mon = PowerMonitor(cfg, lambda *a: posted.append(a), lambda c, a: None)

    async def run():
        await mon.start()
        try:
            await asyncio.to_thread(wait_until, lambda: mon.sources[0].polls >= 1, 5, 0.05, "a poll")
            await mon.before_power_off("test")
        finally:
            await mon.stop()
    asyncio.run(run())
    sim.close()
    assert b"S.5R0000\r" in sim.commands



def _shutdown_ran(out):
    at = out.with_suffix(".at")
    return at.exists() and at.read_text().endswith("\n")  # the shell makes the file before `date` writes


def test_on_battery_with_the_ups_low_flag_at_a_healthy_voltage_shuts_down_finalized(daemon_factory, tmp_path):
    """Q1 status with utility fail and battery low set, the battery reading 90 %: upsmon shuts down on OB+LB, and so do we."""
    d, out = live_on_sim_power(daemon_factory, tmp_path, grace=1)
    time.sleep(1.0)
    t0 = time.time()
    assert d.request("sim", action="mains-fail")["ok"]
    assert d.request("sim", action="battery", percent=90, ups_low=True)["ok"]
    wait_until(lambda: _shutdown_ran(out), 20, what="the shutdown command")
    print(f"OB+LB -> shutdown command: {float(out.with_suffix('.at').read_text()) - t0:.2f} s")
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["complete"] and manifest["open_segment"] is None, "finalized before the command ran"
    assert "the UPS reports battery low" in d.log()
    assert d.terminate() == 0


def test_a_ups_that_falls_silent_during_the_countdown_still_shuts_the_box_down(daemon_factory, tmp_path):
    """On battery near empty, the countdown starts, then neither the UPS nor the battery
    monitor answers: that is a battery about to die, never "mains are back"."""
    d, out = live_on_sim_power(daemon_factory, tmp_path, grace=4)
    d.request("sim", action="mains-fail")
    d.request("sim", action="battery", percent=8)
    wait_until(lambda: "battery critical" in d.request("status")["status"]["conditions"], 10, what="critical")
    t0 = time.time()
    for device in ("ups", "battery"):
        assert d.request("sim", action="power-unplug", device=device)["ok"]
    wait_until(lambda: "power monitor not answering" in d.request("status")["status"]["conditions"], 10,
               what="both sources silent")
    wait_until(lambda: _shutdown_ran(out), 20, what="the shutdown command all the same")
    print(f"sources silent -> shutdown command: {float(out.with_suffix('.at').read_text()) - t0:.2f} s")
    assert "shutdown cancelled" not in d.log()
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["complete"], "finalized before the command ran"
    assert d.terminate() == 0


def test_a_ups_silent_while_on_battery_becomes_critical_after_the_dead_time(daemon_factory, tmp_path):
    d, out = live_on_sim_power(daemon_factory, tmp_path, grace=1, extra="dead_seconds = 3\n")
    d.request("sim", action="mains-fail")  # on battery, 100 %: nothing to do yet
    wait_until(lambda: "on battery" in d.request("status")["status"]["conditions"], 10, what="on battery")
    t0 = time.time()
    for device in ("ups", "battery"):
        d.request("sim", action="power-unplug", device=device)
    wait_until(lambda: _shutdown_ran(out), 30, what="the shutdown command after the dead time")
    took = float(out.with_suffix(".at").read_text()) - t0
    print(f"silent on battery -> shutdown command: {took:.2f} s (stale after 5 polls, dead time 3 s, grace 1 s)")
    assert took >= 3, "not before the dead time"
    assert "silent for" in d.log() and "while on battery" in d.log()
    assert d.terminate() == 0


FLAKY_SHUTDOWN = """
[power]
poll_seconds = 0.3
grace_seconds = 1
shutdown_retry_seconds = {retry}
shutdown_command = ["sh", "-c", "n=$(cat {out}.n 2>/dev/null || echo 0); echo $((n+1)) > {out}.n; [ $n -ge 1 ] && date +%s.%N > {out}.at"]
"""


def _critical(d):
    d.request("sim", action="mains-fail")
    d.request("sim", action="battery", percent=8)


def test_a_failing_shutdown_command_is_retried_and_powers_off_the_second_time(daemon_factory, tmp_path):
    out = tmp_path / "shutdown"
    d = daemon_factory(config_extra=FLAKY_SHUTDOWN.format(retry=1, out=out)).start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    d.wait_state(("LIVE", "DEGRADED"))
    _critical(d)
    wait_until(lambda: "shutdown command sh exited with 1" in d.log(), 20, what="the first attempt failing")
    wait_until(lambda: _shutdown_ran(out), 10, what="the second attempt")
    assert out.with_suffix(".n").read_text().strip() == "2"
    # (the script has written its file; the daemon learns of its exit a moment later)
    wait_until(lambda: d.request("status")["status"]["power_off"].get("exit") == 0, 10, what="the exit seen")
    st = d.request("status")["status"]
    assert st["power_off"]["attempts"] == 2 and "error" not in st["power_off"], st["power_off"]
    assert d.terminate() == 0


def test_after_a_failed_shutdown_command_go_works_and_no_retry_cuts_the_show(daemon_factory, tmp_path):
    out = tmp_path / "shutdown"
    d = daemon_factory(config_extra=FLAKY_SHUTDOWN.format(retry=3, out=out)).start()
    d.wait_state("READY", timeout=20)
    d.request("live")
    d.wait_state(("LIVE", "DEGRADED"))
    _critical(d)
    wait_until(lambda: any(c.startswith("shutdown failed: sh exited with 1")
                           for c in d.request("status")["status"]["conditions"]), 20, what="the failure shown")
    d.request("sim", action="mains-restore")  # the tech plugs the box into another socket ...
    answer = d.request("live")  # ... and takes it back on air
    assert answer["ok"], answer
    d.wait_state(("LIVE", "DEGRADED"), timeout=10)
    time.sleep(4)
    assert not _shutdown_ran(out), "the retry never ran while live"
    assert "shutdown not tried again: the box is" in d.log()
    assert d.state() in ("LIVE", "DEGRADED")
    assert d.terminate() == 0
