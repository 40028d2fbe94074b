"""Host names as users write them: names, IPv4 and IPv6 literals, names that do not resolve."""

from __future__ import annotations

import threading
import time

import pytest

from appliance.config import validate
from appliance.errors import ConfigError
from appliance import hostnames
from appliance.transport.bond import Bonder
from appliance.transport.libsrt import SrtCaller
from conftest import free_port, wait_until
from netsim import Ingest, RelayThread


def test_literals_resolve_at_once_without_a_thread():
    before = threading.active_count()
    assert hostnames.resolve("192.0.2.7", 5000) == [("192.0.2.7", 5000)]
    (v6,) = hostnames.resolve("2001:db8::1", 5000)
    assert v6[:2] == ("2001:db8::1", 5000)
    assert threading.active_count() == before


def test_a_name_that_does_not_resolve_says_which_and_why():
    with pytest.raises(hostnames.NameNotResolved) as e:
        hostnames.resolve("relay.does-not-exist.invalid", 5000, role="relay")
    assert str(e.value).startswith("relay name does not resolve: relay.does-not-exist.invalid (")
    assert isinstance(e.value, ConnectionError), "an OSError like every other network failure"


def test_lookups_of_one_name_under_way_are_shared():
    a = hostnames.lookup("localhost", 4000)
    b = hostnames.lookup("localhost", 4000)
    assert a is b or a.done(), "a second lookup joins the first while it runs"
    assert ("127.0.0.1", 4000) in a.wait(5)


@pytest.mark.parametrize("url, host", [("srt://relay.example.net:5000", "relay.example.net"),
                                       ("srt://198.18.0.1:5000?latency=500", "198.18.0.1"),
                                       ("srt://[2001:db8::1]:5000", "2001:db8::1")])
def test_stream_urls_take_names_and_both_families(url, host):
    cfg = validate([("site", {"stream": {"enabled": True, "url": url}})])
    assert hostnames.parse_srt_url(cfg.stream.url)[:2] == (host, 5000)


def test_a_bad_url_names_the_key_it_came_from():
    with pytest.raises(ConfigError, match=r"^--to: 'srt://:5000' is not srt://HOST:PORT"):
        hostnames.parse_srt_url("srt://:5000", "--to")


def test_the_bond_registers_with_a_relay_named_by_a_host_name_and_carries_the_stream(tmp_path):
    """The issue's case: `url = "srt://localhost:5000"` left both uplinks registering for ever."""
    ingest = Ingest(tmp_path, free_port())
    out = ingest.start("&latency=500")
    relay = RelayThread()
    relay.relay.server = ("127.0.0.1", ingest.port)
    bond = Bonder(("localhost", relay.addr[1]), {"wired": "127.0.0.2", "cell": "127.0.0.3"})
    bond.start()
    try:
        wait_until(lambda: all(link.state == "up" for link in bond.links.values()), 10, what="both uplinks up")
        assert bond.status()["relay"] == f"localhost:{relay.addr[1]} (127.0.0.1:{relay.addr[1]})"
        caller = SrtCaller("localhost", bond.local_port, latency_ms=500)
        caller.connect()
        sent = b"".join(bytes([0x47]) + i.to_bytes(4, "big") + bytes(1311) for i in range(200))
        for i in range(200):
            caller.send(sent[i * 1316:(i + 1) * 1316])
            time.sleep(0.003)
        time.sleep(1.5)  # the ingest delivers after its latency
        caller.close()
        assert bond.dropped.get("not from the relay", 0) == 0
    finally:
        bond.stop()
        relay.close()
        ingest.stop()  # it writes its file out as it exits
    assert out.read_bytes() == sent


def test_a_relay_name_that_does_not_resolve_is_the_bonds_stated_problem():
    bond = Bonder(("relay.does-not-exist.invalid", 5000), {"wired": "127.0.0.2"})
    bond.start()
    try:
        wait_until(lambda: bond.name_error is not None, 10, what="the lookup failed")
        assert bond.problem().startswith("relay name does not resolve: relay.does-not-exist.invalid")
        assert not bond.ready() and bond._thread.is_alive()
    finally:
        bond.stop()


def test_an_srt_caller_dials_an_ipv6_literal(tmp_path):
    import shutil
    import subprocess

    from netsim import stop_gracefully

    port = free_port()
    out = tmp_path / "v6.ts"
    with open(out, "wb") as f:
        ingest = subprocess.Popen([shutil.which("srt-live-transmit"), f"srt://[::]:{port}?mode=listener&latency=200",
                                   "file://con"], stdout=f, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        caller = SrtCaller("::1", port, latency_ms=200)
        wait_until(lambda: _connects(caller), 10, what="connected over IPv6")
        assert caller.address[:2] == ("::1", port)
        sent = b"".join(bytes([0x47]) + i.to_bytes(4, "big") + bytes(1311) for i in range(50))
        for i in range(50):
            caller.send(sent[i * 1316:(i + 1) * 1316])
        time.sleep(1.0)
        caller.close()
    finally:
        stop_gracefully(ingest)
    assert out.read_bytes() == sent


def _connects(caller) -> bool:
    try:
        caller.connect()
        return True
    except ConnectionError:
        return False
