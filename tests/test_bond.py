"""The bonding sender end to end on loopback: libsrt caller -> bond (two uplinks
from 127.0.0.2 and 127.0.0.3) -> an impairable UDP path per uplink -> relay ->
srt-live-transmit. What arrives must be byte-identical, whatever the links do."""

from __future__ import annotations

import time

import pytest

from appliance.transport import srtla
from appliance.transport.bond import Bonder
from appliance.transport.libsrt import SrtCaller
from conftest import free_port, wait_until
from netsim import Impairer, Ingest, RelayThread

A, B = "127.0.0.2", "127.0.0.3"
CHUNKS_PER_SECOND = 380  # 4 Mb/s of 1316-byte messages


SECRET = b"a-relay-secret-of-some-length"


@pytest.fixture
def bench(tmp_path, request):
    """The secret, where a test asks for one (indirect parametrize): (the relay's, the bond's)."""
    relay_secret, bond_secret = getattr(request, "param", (None, None))
    ingest = Ingest(tmp_path, free_port())
    out = ingest.start("&latency=500")
    relay = RelayThread(secret=relay_secret)
    relay.relay.server = ("127.0.0.1", ingest.port)
    path = Impairer(relay.addr)
    bond = Bonder(path.addr, {"wired": A, "cell": B}, secret=bond_secret)
    bond.start()
    try:
        yield bond, path, relay, ingest, out
    finally:
        bond.stop()
        path.close()
        relay.close()
        ingest.stop()


def chunk(i: int) -> bytes:
    return bytes([0x47]) + i.to_bytes(4, "big") + bytes([i % 251]) * 1311


def stream(caller, seconds: float, start: int = 0, during=None) -> int:
    t0 = time.monotonic()
    n = int(seconds * CHUNKS_PER_SECOND)
    for i in range(n):
        caller.send(chunk(start + i))
        if during:
            during(time.monotonic() - t0)
        delay = t0 + (i + 1) / CHUNKS_PER_SECOND - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return start + n


def connect(bond) -> SrtCaller:
    wait_until(lambda: all(l.state == "up" for l in bond.links.values()), 10, what="both uplinks up")
    c = SrtCaller("127.0.0.1", bond.local_port, latency_ms=500)
    c.connect()
    return c


def finish(caller, bench, total):
    bond, path, relay, ingest, out = bench
    wait_until(lambda: caller.stats()["send_buffer_packets"] == 0, 10, what="all acknowledged")
    time.sleep(0.8)  # the ingest delivers after its latency
    caller.close()
    ingest.stop()
    return out.read_bytes() == b"".join(chunk(i) for i in range(total))


def test_both_uplinks_carry_the_stream_byte_identical(bench):
    bond = bench[0]
    c = connect(bond)
    total = stream(c, 3)
    assert all(l.sent > 100 for l in bond.links.values()), {n: l.sent for n, l in bond.links.items()}
    s = c.stats()
    carried = sum(l.sent for l in bond.links.values())
    # SRT's control packets ride along: the relay sends each ACK on every link (as srtla_rec
    # does), the caller gets both copies and answers each with an ACKACK: two per ACK. At 3 s
    # of 380 packets a second that was 1710 for 1140 in 3 runs of 4 (1140 + 2 x 284 ACKs),
    # over the 1.5x this used to allow. Every packet on both links would be 1140 more.
    assert s["packets_sent"] <= carried <= s["packets_sent"] + 2 * s["acks_received"] + 100, (
        "each packet goes out on one uplink, not on all", carried, str(s), bond.status())
    assert finish(c, bench, total), "the ingest got exactly what was sent"


@pytest.mark.parametrize("bench", [(SECRET, SECRET)], indirect=True, ids=["relay and bond with a secret"])
def test_with_the_relays_secret_every_link_proves_itself_and_the_stream_is_byte_identical(bench):
    bond, relay = bench[0], bench[2]
    c = connect(bond)
    total = stream(c, 2)
    assert relay.relay.status()["links"] == 2
    assert not any("replayed" in k or "stale" in k or "another address" in k for k in relay.relay.dropped), \
        relay.relay.dropped
    assert finish(c, bench, total), "the ingest got exactly what was sent"


@pytest.mark.parametrize("bench", [(SECRET, b"not-the-relay-secret-at-all"), (SECRET, None)], indirect=True,
                         ids=["a wrong secret", "no secret"])
def test_a_bond_without_the_relays_secret_never_registers_and_says_so(bench):
    bond, relay = bench[0], bench[2]
    wait_until(lambda: sum(relay.relay.dropped.values()) >= 2, 5, what="the relay refusing")
    time.sleep(1.0)
    assert not bond.ready() and relay.relay.status()["groups"] == 0
    assert "no uplink registered with the relay" in bond.problem()
    assert relay.relay.dropped["REG1 without a valid proof"] >= 1, relay.relay.dropped
    assert bond.dropped["registration refused"] >= 1, bond.dropped


@pytest.mark.parametrize("bench", [(None, SECRET)], indirect=True, ids=["open relay"])
def test_a_bond_with_a_secret_still_streams_through_a_relay_that_asks_for_none(bench):
    """srtla_rec has no secret: a box configured with one must still stream to it."""
    bond = bench[0]
    c = connect(bond)
    total = stream(c, 1)
    assert finish(c, bench, total)


def test_a_black_holed_uplink_is_noticed_within_300_ms_and_nothing_is_lost(bench):
    bond, path = bench[0], bench[1]
    c = connect(bond)
    cut = {"done": False}

    def impair(t):
        if t > 1.0 and not cut["done"]:
            cut["done"] = True
            path.blackholed.add(A)
        if t > 3.0 and A in path.blackholed:
            path.blackholed.discard(A)

    total = stream(c, 5, during=impair)
    wired = bond.links["wired"]
    assert wired.notice_ms, "the cut was noticed"
    assert wired.notice_ms[0] <= 300, wired.notice_ms
    wait_until(lambda: wired.state == "up", 10, what="the returning uplink proves itself")
    before = wired.sent
    total = stream(c, 2, start=total)
    assert wired.sent - before > 0.2 * 2 * CHUNKS_PER_SECOND, "and then carries its share again"
    assert finish(c, bench, total), "zero loss across the cut"


def test_when_every_uplink_goes_quiet_the_last_one_is_kept_and_nothing_is_lost(bench):
    """Both paths stop draining for 0.4 s and then deliver what they held (the queues
    behind a sudden fall in capacity look like this): one link is declared dead, the
    last is kept, and no packet is turned away."""
    bond, path = bench[0], bench[1]
    c = connect(bond)

    def impair(t):
        if 1.0 < t < 1.4:
            path.held.update((A, B))
        elif t >= 1.4:
            path.held.difference_update((A, B))

    total = stream(c, 4, during=impair)
    states = {n: (l.state, bool(l.notice_ms)) for n, l in bond.links.items()}
    assert sum(noticed for _, noticed in states.values()) == 1, f"one declared dead, the last kept: {states}"
    assert bond.dropped["no live uplink"] == 0, dict(bond.dropped)
    wait_until(lambda: all(l.state == "up" for l in bond.links.values()), 10, what="both uplinks back")
    assert finish(c, bench, total), "zero loss across the stall"


def test_a_restarted_relay_that_forgot_the_group_is_registered_with_again(bench):
    """The relay restarts: it answers "no such group", and the bond starts over with
    REG1 and a new group on every link (a stale "no such group" must not do this: above)."""
    bond, path = bench[0], bench[1]
    wait_until(lambda: all(link.state == "up" for link in bond.links.values()), 10, what="both uplinks up")
    first = bond.group
    fresh = RelayThread()
    try:
        path.upstream = fresh.addr  # the old one's state is gone with it
        wait_until(lambda: bond.group not in (None, first) and all(l.state == "up" for l in bond.links.values()),
                   15, what="a new group, every link up in it")
        assert len(fresh.relay.groups) == 1 and len(next(iter(fresh.relay.groups.values())).links) == 2
    finally:
        fresh.close()


MALFORMED = {
    "short": [b"", b"\x90"],
    "bad keepalive": [b"\x90\x00" + bytes(3), b"\x90\x00" + b"\xff" * 8],
    "bad REG2 length": [b"\x92\x01" + bytes(5)],
    "REG2 for another sender": [b"\x92\x01" + bytes(256)],
    "bad SRTLA ACK length": [b"\x91\x00" + bytes(3), b"\x91\x00" + bytes(60)],
    "unknown SRTLA type": [b"\x9f\xff" + bytes(20), b"\x93\x00"],
    "short SRT packet": [b"\x80\x02\x00", b"\x00\x00\x00\x01"],
}


def test_malformed_datagrams_at_the_sender_are_dropped_and_counted(bench):
    import os
    import socket as so

    bond, path = bench[0], bench[1]
    wait_until(lambda: all(link.state == "up" for link in bond.links.values()), 10, what="both uplinks up")
    stranger = so.socket(so.AF_INET, so.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    try:
        for link in bond.links.values():
            for d in (b"", b"\x90", os.urandom(40), b"\x92\x01" + bytes(5), b"\x91\x00" + bytes(3)):
                stranger.sendto(d, link.sock.getsockname())
            # and the same kinds of garbage from the relay's own address and port
            for kind, datagrams in MALFORMED.items():
                for d in datagrams:
                    path.sock.sendto(d, link.sock.getsockname())
            # "no such group", while the other link is carrying the group: stale, not a restart
            path.sock.sendto(srtla.short(srtla.REG_NGP), link.sock.getsockname())
        wait_until(lambda: bond.dropped["not from the relay"] >= 10, 3, what="drops counted")
        wait_until(lambda: bond.dropped["stale REG_NGP"] >= 2, 3, what="stale REG_NGPs counted")
        assert bond.status()["registered"], "the working group is kept"
        for kind, datagrams in MALFORMED.items():
            wait_until(lambda: bond.dropped[kind] >= 2 * len(datagrams), 3, what=f"{kind} counted")
        assert all(l.state == "up" for l in bond.links.values()), "nothing malformed takes a link down"
        c = connect(bond)
        total = stream(c, 1)
        assert finish(c, bench, total), "and the stream still flows byte-identical"
    finally:
        stranger.close()


def test_stopped_and_started_again_at_once_the_ingest_takes_the_new_caller(bench):
    """As a stream stops, SRT's SHUTDOWN goes out before the bond does. Lost, the ingest
    (srt-live-transmit takes one caller) holds the old connection for its idle timeout
    and refuses the next one meanwhile: stop and go live again, or pre-flight's next link.
    The race is narrow: on a loaded machine 2 rounds in 60 failed before the fix."""
    path = bench[1]
    for i in range(20):
        bond = Bonder(path.addr, {"wired": A})
        bond.start()
        try:
            # (probation wants steady RTTs: in a loaded process that can take seconds)
            wait_until(bond.ready, 15, what="the uplink registered")
            c = SrtCaller("127.0.0.1", bond.local_port, latency_ms=500)
            try:
                c.connect()
            except Exception as e:  # noqa: BLE001 - SRT's connect timeout (3 s): the old caller still held
                pytest.fail(f"round {i}: the ingest refused the new caller: {e}")
            # Not closed at once: srt-live-transmit exits ("ConfigurePost: Connection was
            # broken") when a caller leaves within moments of being accepted.
            stream(c, 0.3)
            c.close()
        finally:
            bond.stop()


def test_the_flight_table_follows_a_packet_across_links_and_counts_its_loss_once():
    from appliance.transport.flight import FlightTable

    table = FlightTable(keep=4)
    a, b = table.carried_by("a"), table.carried_by("b")
    table.sent(0x7FFFFFFE, "a", b"p1", 1.0)
    table.sent(0x7FFFFFFF, "a", b"p2", 1.1)
    table.sent(0, "a", b"p3", 1.2)  # the 31-bit sequence wraps
    assert a == {0x7FFFFFFE, 0x7FFFFFFF, 0}
    table.sent(0x7FFFFFFF, "b", b"p2", 1.5)  # a retransmission on the other link
    assert a == {0x7FFFFFFE, 0} and b == {0x7FFFFFFF}
    assert table.sent_on(0x7FFFFFFF) == ("b", 1.5)
    assert table.lost(0x7FFFFFFF) == ("b", True)
    assert table.lost(0x7FFFFFFF) == ("b", False), "SRT's periodic NAK of the same loss"
    assert table.arrived("a", 0) and not table.arrived("a", 0)
    table.acked_below(1)  # across the wrap
    assert len(table) == 0 and not a and not b
    assert table.lost(0x7FFFFFFE) is None
    for seq in range(1, 6):
        table.sent(seq, "a", bytes([seq]), 2.0)
    assert len(table) == 4 and a == {2, 3, 4, 5}, "the oldest age out, from the link's set too"
    assert table.take("a") == [b"\x02", b"\x03", b"\x04", b"\x05"] and not a
