"""SRTLA: the wire format, and the relay against clients speaking the protocol."""

from __future__ import annotations

import os
import socket
import struct
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.transport import srtla
from conftest import ROOT, wait_until
from netsim import RelayThread

SECRET = b"0123456789abcdef-shared"


# --- wire format ---------------------------------------------------------------------------------

def srt_data(seq: int, payload: bytes = b"\x47" * 1316) -> bytes:
    return struct.pack(">IIII", seq & 0x7FFFFFFF, 0xC0000000, 0, 1) + payload


def test_types_and_lengths():
    assert srtla.kind(srt_data(5)) == 0 and srtla.srt_seq(srt_data(5)) == 5
    assert srtla.kind(b"\x90\x00") == srtla.KEEPALIVE and srtla.kind(b"\x90") is None
    ident = os.urandom(256)
    assert srtla.reg_id(srtla.reg(srtla.REG1, ident), srtla.REG1) == ident
    assert srtla.reg_id(srtla.reg(srtla.REG1, ident)[:-1], srtla.REG1) is None, "exactly 258 bytes"
    ack = srtla.srtla_ack(list(range(10)))
    assert len(ack) == 44 and ack[:4] == b"\x91\x00\x00\x00" and srtla.parse_srtla_ack(ack) == list(range(10))
    assert srtla.keepalive_timestamp(srtla.keepalive(123456789)) == 123456789
    assert srtla.keepalive(None) == b"\x90\x00"


def test_srt_ack_and_nak_lists():
    ack = struct.pack(">HHIII", srtla.SRT_ACK, 0, 1, 2, 3) + struct.pack(">I", 4242)
    assert srtla.srt_ack_number(ack) == 4242
    nak = struct.pack(">HHIII", srtla.SRT_NAK, 0, 0, 0, 0) + struct.pack(">IIII", 10, 0x80000014, 25, 30)
    assert srtla.srt_nak_ranges(nak) == [(10, 10), (20, 25), (30, 30)]
    torn = struct.pack(">HHIII", srtla.SRT_NAK, 0, 0, 0, 0) + struct.pack(">I", 0x80000014)
    assert srtla.srt_nak_ranges(torn) == []


def test_a_proof_inside_the_standard_id_answers_one_challenge_under_one_secret():
    ident, challenge = srtla.sender_id(), os.urandom(srtla.CHALLENGE_LEN)
    proven = srtla.prove(srtla.REG1, ident, challenge, SECRET)
    assert len(proven) == 256 and proven[:32] == ident[:32] and proven[80:] == ident[80:]
    assert srtla.proof_challenge(srtla.REG1, proven, SECRET) == challenge
    assert srtla.proof_challenge(srtla.REG2, proven, SECRET) is None, "a REG1's proof is no REG2's"
    assert srtla.proof_challenge(srtla.REG1, proven, b"another-secret-entirely") is None
    assert srtla.proof_challenge(srtla.REG1, ident, SECRET) is None
    tampered = proven[:200] + bytes([proven[200] ^ 1]) + proven[201:]
    assert srtla.proof_challenge(srtla.REG1, tampered, SECRET) is None, "the far half is covered too"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_never_raise_on_foreign_bytes(d):
    srtla.kind(d)
    srtla.srt_seq(d)
    srtla.reg_id(d, srtla.REG1)
    srtla.keepalive_timestamp(d)
    srtla.keepalive_rtt_ms(d)
    srtla.parse_srtla_ack(d)
    srtla.srt_ack_number(d)
    for a, b in srtla.srt_nak_ranges(d):
        assert 0 <= a and 0 <= b


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 40))
def test_the_stream_id_parser_never_raises_even_on_a_handshake_shaped_datagram(tail, words):
    """A conclusion handshake's header, then anything: extensions claiming any length."""
    head = struct.pack(">HHIII", 0x8000, 0, 0, 0, 0) + struct.pack(">IHHIIIII", 5, 0, 0, 0, 1500, 8192, 0xFFFFFFFF, 0)
    d = head + bytes(20) + struct.pack(">HH", 5, words) + tail
    sid = srtla.srt_stream_id(d)
    assert sid is None or isinstance(sid, str)
    assert srtla.srt_stream_id(head + bytes(20) + struct.pack(">HH", 5, 1) + b"1dit") == "tid1", "word by word, swapped"


# --- the relay ----------------------------------------------------------------------------------------

@pytest.fixture(params=["c", "python"])
def relay(request):
    """Both ways of forwarding: the C hot path (relay_fastpath) and Python's (--no-fast-path)."""
    r = RelayThread(fast=request.param == "c")
    assert (r.relay.pump is not None) == (request.param == "c"), "the C hot path is built (scripts/test builds it)"
    yield r
    r.close()


def client(ip: str = "127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    s.settimeout(2)
    return s


def register(relay, links, secret=None, sent: list | None = None):
    """As a sender does (specs/srtla.md; with a secret, docs/relay-auth.md). sent, if
    given, collects the registration datagrams as a listener on the path would see them."""
    sent = [] if sent is None else sent

    def send(s, d):
        sent.append(d)
        s.sendto(d, relay.addr)

    ident = srtla.sender_id()
    send(links[0], srtla.reg(srtla.REG2, ident))
    ngp = links[0].recv(300)
    assert srtla.kind(ngp) == srtla.REG_NGP, "unknown group"
    if secret:
        ident = srtla.prove(srtla.REG1, ident, srtla.challenge_of(ngp), secret)
    else:
        assert ngp == srtla.short(srtla.REG_NGP), "a relay without a secret answers as srtla_rec"
    send(links[0], srtla.reg(srtla.REG1, ident))
    reply = links[0].recv(300)
    gid = srtla.reg_id(reply, srtla.REG2)
    assert gid is not None and gid[:128] == ident[:128], "the group id keeps our half"
    for s in links:
        send(s, srtla.reg(srtla.REG2, gid))
        answer = s.recv(300)
        if secret:
            assert srtla.kind(answer) == srtla.REG_NAK, "prove this address"
            send(s, srtla.reg(srtla.REG2, srtla.prove(srtla.REG2, gid, srtla.challenge_of(answer), secret)))
            answer = s.recv(300)
        assert answer == srtla.short(srtla.REG3)
    return gid


def test_registration_forwarding_acks_and_the_return_path(relay):
    a, b = client(), client()
    register(relay, [a, b])
    # data over both links reaches the server as one peer
    for seq in range(20):
        (a if seq % 2 else b).sendto(srt_data(seq), relay.addr)
    got, peers = [], set()
    for _ in range(20):
        d, peer = relay.server.recvfrom(2000)
        got.append(srtla.srt_seq(d))
        peers.add(peer)
    assert sorted(got) == list(range(20)) and len(peers) == 1
    # an SRTLA ACK after every 10 data packets on a link
    assert srtla.parse_srtla_ack(a.recv(100)) == list(range(1, 20, 2))
    assert srtla.parse_srtla_ack(b.recv(100)) == list(range(0, 20, 2))
    server_peer = peers.pop()
    # SRT ACK from the server: every link; anything else: the link that delivered last
    ack = struct.pack(">HHIII", srtla.SRT_ACK, 0, 1, 2, 3) + struct.pack(">I", 20)
    relay.server.sendto(ack, server_peer)
    assert a.recv(100) == ack and b.recv(100) == ack
    a.sendto(srt_data(20), relay.addr)
    relay.server.recvfrom(2000)
    nak = struct.pack(">HHIII", srtla.SRT_NAK, 0, 0, 0, 0) + struct.pack(">I", 7)
    relay.server.sendto(nak, server_peer)
    assert a.recv(100) == nak
    b.settimeout(0.3)
    with pytest.raises(socket.timeout):
        b.recv(100)
    # keepalives are echoed whole (our timestamp comes back)
    a.sendto(srtla.keepalive(987654321), relay.addr)
    assert srtla.keepalive_timestamp(a.recv(100)) == 987654321
    # the caller's SRT control (an ACKACK for the ACK) reaches the server whole, and what the
    # server says next goes back on the link that carried it
    ackack = struct.pack(">HHIII", 0x8006, 0, 1, 2, 3)
    b.sendto(ackack, relay.addr)
    assert relay.server.recvfrom(2000) == (ackack, server_peer)
    relay.server.sendto(nak, server_peer)
    b.settimeout(2)
    assert b.recv(100) == nak
    a.close()
    b.close()


def test_unregistered_short_and_malformed_datagrams_are_dropped_and_counted(relay):
    stranger = client()
    junk = [b"", b"\x01", srt_data(1), b"\x92\x00" + b"x" * 10, b"\x92\x01" + b"y" * 300, b"\x91\x00" + bytes(42),
            b"\x92\x02", b"\xff\xff" + os.urandom(30)] + [os.urandom(n) for n in (3, 17, 100, 1500)]
    for d in junk:
        stranger.sendto(d, relay.addr)
    wait_until(lambda: sum(relay.relay.dropped.values()) >= len(junk) - 1, 3, what="drops counted")
    assert relay.relay.dropped["unregistered"] >= 1 and relay.relay.dropped["bad REG1 length"] == 1
    assert relay.relay.status()["groups"] == 0
    # and it still works for a real sender
    a = client()
    register(relay, [a])
    stranger.close()
    a.close()


def test_the_shared_secret_keeps_strangers_out():
    r = RelayThread(secret=SECRET)
    try:
        stranger, ours = client(), client()
        stranger.sendto(srtla.reg(srtla.REG1, srtla.sender_id()), r.addr)
        assert stranger.recv(300) == srtla.short(srtla.REG_ERR)
        register(r, [ours], secret=SECRET)
        assert r.relay.dropped["REG1 without a valid proof"] == 1
        stranger.close()
        ours.close()
    finally:
        r.close()


@pytest.fixture
def secret_relay():
    r = RelayThread(secret=SECRET)
    yield r
    r.close()


def test_a_captured_reg1_replayed_from_250_other_addresses_creates_no_group(secret_relay):
    r = secret_relay
    ours, sniffed = client(), []
    register(r, [ours], secret=SECRET, sent=sniffed)
    reg1 = next(d for d in sniffed if srtla.kind(d) == srtla.REG1)
    strangers = [client(f"127.0.1.{i}") for i in range(1, 251)]
    try:
        for s in strangers:  # one at a time: 250 at once overflow a socket's default buffer
            s.sendto(reg1, r.addr)
            assert s.recv(300) == srtla.short(srtla.REG_ERR)
        assert r.relay.status()["groups"] == 1, "only ours"
        assert r.relay.dropped["REG1 with a proof for another address"] == 250
        ours.sendto(reg1, r.addr)  # and from where it came, it is spent
        assert ours.recv(300) == srtla.short(srtla.REG_ERR)
    finally:
        for s in strangers + [ours]:
            s.close()


def test_a_stale_or_replayed_proof_is_refused_and_counted(secret_relay):
    r = secret_relay
    s = client()
    try:
        old = r.relay._challenge(s.getsockname(), int(time.monotonic()) - 20)  # as if captured 20 s ago
        s.sendto(srtla.reg(srtla.REG1, srtla.prove(srtla.REG1, srtla.sender_id(), old, SECRET)), r.addr)
        assert s.recv(300) == srtla.short(srtla.REG_ERR)
        assert r.relay.dropped["REG1 with a stale proof"] == 1
        s.sendto(srtla.reg(srtla.REG2, srtla.sender_id()), r.addr)
        fresh = srtla.challenge_of(s.recv(300))
        proven = srtla.reg(srtla.REG1, srtla.prove(srtla.REG1, srtla.sender_id(), fresh, SECRET))
        s.sendto(proven, r.addr)
        gid = srtla.reg_id(s.recv(300), srtla.REG2)
        r.call(r.relay._drop_group, r.relay.groups[r.relay._key(gid)])
        s.sendto(proven, r.addr)  # the same datagram again, the group gone: still spent
        assert s.recv(300) == srtla.short(srtla.REG_ERR)
        assert r.relay.dropped["REG1 with a replayed proof"] == 1
        assert r.relay.status()["groups"] == 0
    finally:
        s.close()


def test_a_sniffed_reg2_from_a_strangers_address_gets_no_reg3_and_no_return_traffic(secret_relay):
    r = secret_relay
    a, b, sniffed = client(), client(), []
    gid = register(r, [a, b], secret=SECRET, sent=sniffed)
    stranger = client("127.0.2.1")
    try:
        for d in [d for d in sniffed if srtla.kind(d) == srtla.REG2] + [srtla.reg(srtla.REG2, gid)]:
            stranger.sendto(d, r.addr)
            answer = stranger.recv(300)
            assert srtla.kind(answer) in (srtla.REG_NAK, srtla.REG_NGP), f"no REG3: {answer[:2].hex()}"
        assert r.relay.status()["links"] == 2, "it never joined"
        # What it sends goes nowhere, and moves nothing: the return path stays with our links.
        stranger.sendto(srt_data(1, b"x"), r.addr)
        a.sendto(srt_data(2), r.addr)
        d, server_peer = r.server.recvfrom(2000)
        assert srtla.srt_seq(d) == 2, "only our packet reached the server"
        stranger.sendto(struct.pack(">HHIII", 0x8000, 0, 0, 0, 0), r.addr)  # 16 bytes, as in the issue
        nak = struct.pack(">HHIII", srtla.SRT_NAK, 0, 0, 0, 0) + struct.pack(">I", 7)
        r.server.sendto(nak, server_peer)
        assert a.recv(100) == nak
        stranger.settimeout(0.5)
        with pytest.raises(socket.timeout):
            stranger.recv(100)
        assert r.relay.dropped["unregistered"] >= 2
    finally:
        for s in (a, b, stranger):
            s.close()


@pytest.mark.parametrize("secret", [None, SECRET], ids=["open relay", "relay with a secret"])
def test_a_registration_flood_from_one_address_does_not_keep_a_sender_out(secret):
    """One address floods REG1/REG2 for the whole test; a sender elsewhere registers as
    senders do, trying again while its datagrams drown in the relay's full socket buffer."""
    import threading

    r = RelayThread(secret=secret)
    flooder = client("127.0.3.1")
    flooding = threading.Event()
    sent = [0]

    def flood():
        while not flooding.is_set():
            flooder.sendto(srtla.reg(srtla.REG1 if sent[0] % 2 else srtla.REG2, srtla.sender_id()), r.addr)
            sent[0] += 1
            if sent[0] % 200 == 0:
                time.sleep(0.001)  # (yield the GIL now and then: the relay's loop shares this process)
    flooder_thread = threading.Thread(target=flood, name="test-flooder")
    flooder_thread.start()
    ours = [client("127.0.3.2"), client("127.0.3.3")]
    try:
        wait_until(lambda: sent[0] > 2000, 10, what="the flood under way")

        def registers():
            for s in ours:  # what a REG3 lost in the flood leaves behind is read away
                s.settimeout(0.05)
                while True:
                    try:
                        s.recv(300)
                    except socket.timeout:
                        break
                s.settimeout(1)
            try:
                register(r, ours, secret=secret)
                return True
            except (socket.timeout, AssertionError):
                return False
        wait_until(registers, 30, interval=0.5, what="our sender registered through the flood")
        st = r.relay.status()
        assert st["groups"] <= 1 + 16, "one source makes at most 16 groups"
        assert r.relay.dropped["registrations over the per-source rate"] >= 100, r.relay.dropped
    finally:
        flooding.set()
        flooder_thread.join()
        for s in ours + [flooder]:
            s.close()
        r.close()


def test_groups_that_register_and_carry_no_data_are_reaped_within_seconds(relay):
    idle, busy = client(), client()
    register(relay, [idle])
    register(relay, [busy])
    wait_until(lambda: all(g.sock for g in list(relay.relay.groups.values())), 5, what="the server sides open")
    busy.sendto(srt_data(1), relay.addr)
    relay.server.recvfrom(2000)
    relay.call(relay.relay.cleanup, time.monotonic() + 6)
    assert relay.relay.status()["groups"] == 1, "the idle one went, the one carrying data stayed"
    assert relay.relay.dropped["groups that never carried data"] == 1
    idle.close()
    busy.close()


def test_a_group_kept_registered_by_keepalives_alone_stays_and_one_that_only_registered_goes(relay):
    """A box READY with its bond kept warm sends keepalives and no data until GO."""
    warm, idle = client(), client()
    register(relay, [warm])
    register(relay, [idle])
    until = time.monotonic() + 7  # past IDLE_GROUP (5 s), with the relay's own cleanup running every second
    while time.monotonic() < until:
        warm.sendto(srtla.keepalive(1), relay.addr)
        warm.recv(100)
        time.sleep(0.5)
    assert relay.relay.status()["groups"] == 1, "the warm one stayed, the one that only registered went"
    warm.sendto(srt_data(1), relay.addr)
    assert srtla.srt_seq(relay.server.recvfrom(2000)[0]) == 1, "and it carries the show at GO, unregistered never"
    warm.close()
    idle.close()


def test_a_flood_of_registrations_does_not_grow_memory():
    r = RelayThread(max_groups=20)
    socks = [client(f"127.0.4.{i}") for i in range(1, 61)]
    try:
        tracemalloc.start()
        for rnd in range(4):
            for s in socks:
                s.sendto(srtla.reg(srtla.REG1, os.urandom(256)), r.addr)
            time.sleep(0.2)
            if rnd == 0:
                before = tracemalloc.get_traced_memory()[0]
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert r.relay.status()["groups"] == 20, "capped"
        assert r.relay.dropped["REG1 over the group limit"] >= 40
        assert after - before < 200_000, (before, after)
        # and the empty groups age out, freeing room for real senders
        r.call(r.relay.cleanup, time.monotonic() + 11)
        assert r.relay.status()["groups"] == 0
    finally:
        for s in socks:
            s.close()
        r.close()


def test_link_limit_and_silent_links_are_removed():
    r = RelayThread(max_links=2)
    try:
        links = [client(), client()]
        gid = register(r, links)
        third = client()
        third.sendto(srtla.reg(srtla.REG2, gid), r.addr)
        assert third.recv(100) == srtla.short(srtla.REG_ERR)
        r.call(r.relay.cleanup, time.monotonic() + 11)
        assert r.relay.status()["links"] == 0
        for s in links + [third]:
            s.close()
    finally:
        r.close()


def test_relay_unit_verifies():
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    assert shutil.which("systemd-analyze")
    unit = (ROOT / "systemd" / "appliance-relay.service").read_text()
    exe = Path(sys.executable).with_name("appliance")
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"relay-{os.getpid()}.service"
    tmp.write_text(unit.replace("/opt/appliance/.venv/bin/appliance", str(exe)))
    try:
        r = subprocess.run(["systemd-analyze", "verify", str(tmp)], capture_output=True, text=True)
    finally:
        tmp.unlink()
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_appliance_relay_serves_ipv4_and_ipv6_with_its_systemd_credential_and_stops_cleanly(tmp_path):
    """As its unit runs it: the secret from LoadCredential= ($CREDENTIALS_DIRECTORY), listening on
    every address; senders register over IPv4 and over IPv6."""
    import signal
    import subprocess

    from conftest import APPLIANCE, free_port

    port = free_port()
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "relay.secret").write_bytes(SECRET + b"\n")
    proc = subprocess.Popen([*APPLIANCE, "relay", "--listen", str(port), "--to", "srt://localhost:9"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "CREDENTIALS_DIRECTORY": str(creds)})
    try:
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        v6.bind(("::1", 0))
        v6.settimeout(2)
        for s, host in ((client(), "127.0.0.1"), (v6, "::1")):
            target = type("R", (), {"addr": (host, port)})()

            def registers():
                try:
                    register(target, [s], secret=SECRET)
                    return True
                except (socket.timeout, ConnectionRefusedError):
                    return False
            wait_until(registers, 10, what=f"the relay answering on {host}")
            s.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0, out
    assert "shared secret required" in out and SECRET.decode() not in out
    assert "new group from 127.0.0.1:" in out and "new group from [::1]:" in out, out


@pytest.mark.parametrize("args, code, says", [
    (["--to", "srt://ingest.example.net"], 78, "--to: 'srt://ingest.example.net' is not srt://HOST:PORT"),
    (["--to", "srt://127.0.0.1:9", "--secret-file", "/nonexistent/relay.secret"], 78, "No such file"),
    (["--to", "srt://127.0.0.1:9", "--workers", "0"], 78, "--workers 0: not a number from 1 to 64, nor auto"),
    (["--to", "srt://127.0.0.1:9", "--workers", "many"], 78, "--workers many: not a number from 1 to 64, nor auto"),
])
def test_appliance_relay_exits_78_only_for_configuration_errors(args, code, says):
    from conftest import run_cli

    r = run_cli("relay", "--listen", "5000", *args)
    assert r.returncode == code and says in r.stderr, (r.returncode, r.stderr)


def test_appliance_relay_on_a_port_in_use_exits_1_to_be_restarted():
    from conftest import free_port, run_cli

    held = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    held.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    held.bind(("::", free_port()))
    try:
        r = run_cli("relay", "--listen", str(held.getsockname()[1]), "--to", "srt://127.0.0.1:9")
    finally:
        held.close()
    assert r.returncode == 1 and "cannot listen" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_appliance_relay_refuses_a_weak_secret(tmp_path):
    from conftest import run_cli

    (tmp_path / "weak").write_text("short")
    r = run_cli("relay", "--listen", "5000", "--to", "srt://127.0.0.1:9", "--secret-file", str(tmp_path / "weak"))
    assert r.returncode == 78 and "at least 16 bytes" in r.stderr


class RelayToName:
    """`appliance relay --to srt://HOST:PORT` in its own /etc/hosts (private_hosts), one
    registered link, and an IPv4 ingest socket: .arrives(seq) sends a data packet and
    says whether it reached the ingest; .close() -> the relay's output."""

    def __init__(self, private_hosts, host: str):
        import subprocess

        from conftest import APPLIANCE, free_port

        self.ingest = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.ingest.bind(("127.0.0.1", 0))
        self.ingest.settimeout(0.2)
        port = free_port()
        self.proc = subprocess.Popen([*private_hosts.prefix, *APPLIANCE, "relay", "--listen", str(port), "--bind",
                                      "127.0.0.1", "--to", f"srt://{host}:{self.ingest.getsockname()[1]}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.link = client()
        self.target = type("R", (), {"addr": ("127.0.0.1", port)})()

        def registers():
            try:
                register(self.target, [self.link])
                return True
            except (socket.timeout, ConnectionRefusedError):
                return False
        try:
            wait_until(registers, 10, what="the relay answering")
        except BaseException:
            self.close()
            raise

    def arrives(self, seq: int) -> bool:
        self.link.sendto(srt_data(seq), self.target.addr)  # (SRT's caller repeats its handshake likewise)
        try:
            return srtla.srt_seq(self.ingest.recv(2000)) is not None
        except socket.timeout:
            return False

    def close(self) -> str:
        self.link.close()
        self.ingest.close()
        self.proc.terminate()
        return self.proc.communicate(timeout=10)[0]


def test_an_ingest_name_that_resolves_late_is_retried_and_said_once(private_hosts):
    """`--to srt://ingest.bench.test:PORT` while that name does not resolve yet: the group's
    packets reach the ingest once it does, with no new registration."""
    r = RelayToName(private_hosts, "ingest.bench.test")
    try:
        for seq in range(10):
            assert not r.arrives(seq), "nowhere to go yet"
        private_hosts.set({"ingest.bench.test": "127.0.0.1"})
        wait_until(lambda: r.arrives(100), 10, interval=0.05, what="the packets reaching the ingest once it resolves")
    finally:
        out = r.close()
    assert out.count("cannot reach the SRT server") == 1, out
    assert "is reachable again" in out, out


def test_an_ingest_name_whose_first_address_refuses_is_reached_at_the_next(private_hosts):
    """`--to srt://localhost:PORT` where localhost is ::1 first (glibc's order, with
    both in /etc/hosts) and the ingest listens on IPv4 only, as srt-live-transmit's
    `srt://:PORT` does: the port refuses at ::1, and the relay goes on to 127.0.0.1."""
    r = RelayToName(private_hosts, "localhost")
    try:
        wait_until(lambda: r.arrives(7), 10, interval=0.05, what="the packets reaching the ingest at 127.0.0.1")
    finally:
        out = r.close()
    assert "refuses at [::1]:" in out and ": trying 127.0.0.1:" in out, out
