"""Modem health over AT: the parser against the spec's replies and garbage, and
the client against the pty modem (echo, URCs, errors, reboot, unplug/replug)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sim.modem import Cell, ModemSim
from appliance.uplinks import at
from appliance.uplinks.modem import ModemAt, parse_mmcli, radio_from_mmcli
from conftest import wait_until


def lines(raw: bytes) -> list[str]:
    """A reply as the client splits it: non-empty lines, final result dropped."""
    out = [x.strip() for x in raw.decode().replace("\r", "\n").split("\n") if x.strip()]
    return [x for x in out if at.final_result(x) is None]


# --- the parser, byte for byte against the spec ------------------------------------------------

def test_lte_serving_cell():
    r = at.parse_servingcell(lines(b'\r\n+QENG: "servingcell","NOCONN","LTE","FDD",311,480,334220,221,66536,66,5,5,'
                                   b'D00,-96,-11,-56,14,0,-,29\r\n\r\nOK\r\n'))
    assert (r.rat, r.state, r.cell_id, r.band, r.rsrp, r.rsrq, r.sinr) == ("LTE", "NOCONN", "334220", "B66", -96, -11, 14)


def test_nr5g_sa_serving_cell():
    r = at.parse_servingcell(lines(b'\r\n+QENG: "servingcell","LIMSRV","NR5G-SA","TDD",262,99,000BC614E,0,1,640320,'
                                   b'77,1,-72,-10,29,1,57\r\n\r\nOK\r\n'))
    assert (r.rat, r.state, r.cell_id, r.band, r.rsrp, r.rsrq, r.sinr) == ("NR5G-SA", "LIMSRV", "000BC614E", "n77",
                                                                         -72, -10, 29)


def test_nr5g_nsa_serving_cell_has_sinr_before_rsrq():
    r = at.parse_servingcell(lines(b'\r\n+QENG: "servingcell","NOCONN"\r\n+QENG: "LTE","FDD",222,01,4940206,427,1350,'
                                   b'3,5,5,BFF,-94,-15,-58,9,5,100,-\r\n+QENG: "NR5G-NSA",222,01,920,-96,18,-10,648768,'
                                   b'78,10,1\r\n\r\nOK\r\n'))
    assert (r.rat, r.state, r.band) == ("NR5G-NSA", "NOCONN", "B3+n78")
    assert (r.rsrp, r.sinr, r.rsrq) == (-96, 18, -10), "the NR figures, SINR read before RSRQ"
    assert (r.lte_rsrp, r.lte_sinr) == (-94, 9)


def test_no_space_after_the_colon_and_missing_trailing_fields():
    r = at.parse_servingcell(['+QENG:"servingcell","CONNECT","LTE","FDD",311,480,334220,221,66536,66,5,5,D00,-96,-11'])
    assert (r.rsrp, r.rsrq, r.sinr) == (-96, -11, None)


def test_other_replies():
    assert at.parse_cpin(["+CPIN: READY"]) == "READY"
    assert at.parse_cpin(["+CPIN: SIM PIN"]) == "SIM PIN"
    assert at.parse_cops(['+COPS: 0,0,"Operator",13']) == (True, "Operator", 13)
    assert at.parse_cops(["+COPS: 0"]) == (False, None, None)
    assert at.parse_cgpaddr(['+CGPADDR: 1,"10.45.0.2"']) == "10.45.0.2"
    assert at.parse_cgpaddr(['+CGPADDR: 1,"0.0.0.0"']) is None
    assert at.parse_qtemp(['+QTEMP:"modem-ambient-usr","41"', '+QTEMP:"x","-273"', '+QTEMP:"cpu","47"']) == 47


def test_final_results_and_cme_codes():
    assert at.final_result("OK") == (True, None)
    done, err = at.final_result("+CME ERROR: 10")
    assert done and err.cme == 10 and "no SIM" in str(err)
    assert at.final_result("ERROR")[1].cme is None
    assert at.final_result("+QENG: x") is None
    assert at.is_urc("RDY") and at.is_urc("+QIND: SMS DONE") and not at.is_urc("+QENG: 1")


@pytest.mark.parametrize("reply", [
    [],  # nothing
    ["+QENG: "],  # truncated after the prefix
    ['+QENG: "servingcell","NOCONN","LTE","FDD",311,480,334220,221,66536,66,5,5,D00,-9x6'],  # not a number
    ['+QENG: "servingcell","NOCONN","WIFI"'],  # unknown technology
    ['+QENG: "servingcell,"NOCONN"'],  # broken quoting
    ["\x00\xff garbage"],
])
def test_garbage_is_an_error_that_says_what(reply):
    with pytest.raises(at.AtError):
        at.parse_servingcell(reply)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=4))
def test_no_input_makes_a_parser_raise_anything_but_AtError(reply):
    for parse in (at.parse_servingcell, at.parse_cpin, at.parse_cops, at.parse_cgpaddr, at.parse_qtemp):
        try:
            parse(reply)
        except at.AtError:
            pass


def test_modemmanager_key_values():
    m = parse_mmcli("modem.generic.state : connected\nmodem.generic.access-technologies : lte, 5gnr\n"
                    "modem.generic.sim : /org/freedesktop/ModemManager1/SIM/0\n"
                    "modem.3gpp.operator-name : Sim Mobile\nmodem.3gpp.registration-state : home\n")
    s = parse_mmcli("modem.signal.lte.rsrp : -94.00\nmodem.signal.lte.snr : 9.00\nmodem.signal.5g.rsrp : -96.00\n"
                    "modem.signal.5g.rsrq : -10.00\nmodem.signal.5g.snr : 18.00\nmodem.signal.lte.rsrq : --\n")
    r = radio_from_mmcli(m, s)
    assert (r.rat, r.registered, r.operator, r.rsrp, r.sinr, r.lte_rsrp) == ("NR5G-NSA", True, "Sim Mobile", -96, 18, -94)


# --- the client against the pty modem -----------------------------------------------------------

@pytest.fixture
def modem(tmp_path):
    sim = ModemSim(tmp_path / "ttyModem")
    client = ModemAt("cell", sim.path, poll_seconds=0.2, timeout=0.5)
    client.start()
    yield sim, client
    client.stop()
    sim.close()


@pytest.mark.parametrize("rat", ["LTE", "NR5G-SA", "NR5G-NSA"])
def test_the_client_reads_each_format_from_the_modem(tmp_path, rat):
    sim = ModemSim(tmp_path / "ttyModem", Cell(rat=rat, rsrp=-91, sinr=12))
    client = ModemAt("cell", sim.path, poll_seconds=0.2, timeout=0.5)
    client.start()
    try:
        wait_until(lambda: client.answering, 5, what="the modem answering")
        r = client.radio
        assert (r.rat, r.rsrp, r.sinr, r.sim, r.registered, r.operator) == (rat, -91, 12, "READY", True, "Sim Mobile")
        assert r.temperature_c == 47 and r.address == "10.45.0.2"
        assert sim.commands[:3] == ["AT", "ATE0", "AT+CMEE=1"] and not sim.echo
    finally:
        client.stop()
        sim.close()


def test_urcs_inside_a_reply_and_a_reboot_are_handled(modem):
    sim, client = modem
    wait_until(lambda: client.answering, 5, what="the modem answering")
    sim.urc_inside = "+QIND: SMS DONE"
    sim.urc("+CEREG: 1")
    wait_until(lambda: "+QIND: SMS DONE" in client.urcs and "+CEREG: 1" in client.urcs, 5, what="URCs seen")
    assert client.radio.rsrp == -88, "the reply around the URC still parsed"
    n = len(sim.commands)
    sim.reboot()  # RDY, and echo back on
    wait_until(lambda: client.reboots == 1, 5, what="RDY noticed")
    wait_until(lambda: sim.commands[n:].count("ATE0") >= 1 and not sim.echo, 5, what="initialised again")
    sim.cell.sinr = 3
    wait_until(lambda: client.radio.sinr == 3, 5, what="polling goes on")


def test_errors_timeouts_and_garbage_do_not_stop_it(modem):
    sim, client = modem
    wait_until(lambda: client.answering, 5, what="the modem answering")
    sim.garbage = os.urandom(40).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
    sim.silent = True
    wait_until(lambda: not client.answering, 10, what="silence noticed")
    assert "no reply" in client.last_error
    sim.silent = False
    wait_until(lambda: client.answering, 10, what="answering again")
    sim.sim = "absent"
    wait_until(lambda: client.radio.sim == "absent", 5, what="no SIM reported (+CME ERROR: 10)")
    assert client.radio.registered is False
    sim.sim = "READY"
    wait_until(lambda: client.radio.sim == "READY" and client.radio.rsrp is not None, 5, what="SIM back")


def test_unplug_and_replug(modem):
    sim, client = modem
    wait_until(lambda: client.answering, 5, what="the modem answering")
    sim.unplug()
    wait_until(lambda: not client.answering, 10, what="the unplug noticed")
    sim.cell.cell_id = "5550001"
    sim.replug()
    wait_until(lambda: client.answering and client.radio.cell_id == "5550001", 15, what="recovered after replug")
    assert client.cell_changed_at > 0


def test_a_port_that_never_sends_a_line_end_keeps_the_buffer_bounded(modem):
    from appliance.uplinks.modem import LINE_MAX

    sim, client = modem
    wait_until(lambda: client.answering, 5, what="the modem answering")
    sim.garbage = bytes(range(32, 127)) * 200  # 19 kB of noise without a CR or an LF
    wait_until(lambda: "no line end" in client.last_error, 10, what="the noise named")
    assert len(client._buf) <= LINE_MAX
    wait_until(lambda: client.answering and client.radio.rsrp is not None, 10, what="answering again")
