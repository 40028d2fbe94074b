"""The fleet against a real Mosquitto (TLS with certificates made here, passwords, the
ACL docs/ gives producers), reached by host name: the box's retained state and
telemetry, `appliance fleet` reading and commanding it, what the ACL forbids, the
last will, and a broker that goes away mid-show."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from conftest import APPLIANCE, ROOT, wait_until
from mqttbroker import Mosquitto

BROKER = "broker.venue.example"
USERS = {"box-a": "pw-a-0123456789", "box-b": "pw-b-0123456789", "producer": "pw-producer-0123", "exporter": "pw-exp-0123"}


@pytest.fixture
def broker(tmp_path, private_hosts):
    private_hosts.set({BROKER: "127.0.0.1"})
    m = Mosquitto(tmp_path / "mqtt", BROKER, USERS).start()
    yield m
    m.stop()


def box_config(broker, box: str, telemetry: float = 1.0, extra: str = "") -> str:
    # As a site file would say it: the box's name is its device name (fleet.box's default).
    return (f'[device]\nname = "{box}"\n[fleet]\nenabled = true\nbroker = "{broker.url}"\nca_file = "{broker.ca}"\n'
            f'username = "{box}"\npassword = "{USERS[box]}"\ntelemetry_seconds = {telemetry}\n' + extra)


def producer_file(tmp_path, broker, user: str = "producer"):
    path = tmp_path / f"{user}.toml"
    path.write_text(f'[fleet]\nbroker = "{broker.url}"\nca_file = "{broker.ca}"\nusername = "{user}"\n'
                    f'password = "{USERS[user]}"\n')
    return path


def fleet(private_hosts, conf, *args, timeout: float = 60):
    return subprocess.run([*private_hosts.prefix, *APPLIANCE, "fleet", *args, "--config", str(conf)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def boxes(private_hosts, conf) -> dict:
    r = fleet(private_hosts, conf, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_box(private_hosts, conf, box: str, timeout: float, what: str, **want):
    """Until `fleet status` shows the box as wanted (online=..., state=...)."""
    seen = {}

    def check():
        nonlocal seen
        seen = boxes(private_hosts, conf).get(box, {})
        return (all(seen.get("online") == v for k, v in want.items() if k == "online")
                and all((seen.get("state") or {}).get("state") == v for k, v in want.items() if k == "state")
                and (seen.get("telemetry") or {}).get("links") is not None)
    try:
        wait_until(check, timeout, interval=0.5, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}: fleet status says {seen}") from None
    return seen


class Raw:
    """A plain MQTT client with one user's credentials, for what the CLI would not do."""

    def __init__(self, broker, user: str):
        from appliance.config import FleetSection

        self.s = FleetSection(broker=f"mqtts://127.0.0.1:{broker.port}", ca_file=broker.ca, username=user,
                              password=USERS[user])

    def client(self):
        import ssl

        from appliance.fleet import connect

        ctx = connect.tls_context(self.s)
        ctx.check_hostname = False  # (by address: this client runs outside the hosts namespace)
        ctx.verify_mode = ssl.CERT_NONE
        return connect.client(self.s, f"raw-{self.s.username}-{time.monotonic_ns()}", ctx)


async def _collect(client, seconds: float) -> list[tuple[str, bytes]]:
    got = []
    try:
        async with asyncio.timeout(seconds):
            async for m in client.messages:
                got.append((str(m.topic), bytes(m.payload)))
    except TimeoutError:
        pass
    return got


async def _acl_probe(broker) -> dict:
    """Box A's credentials try box B's topics; the producer and box B watch."""
    async with Raw(broker, "producer").client() as watcher, Raw(broker, "box-b").client() as b, \
            Raw(broker, "box-a").client() as a:
        await watcher.subscribe("appliance/box-b/#", qos=1)
        await b.subscribe("appliance/box-b/cmd/+", qos=1)
        await a.subscribe("appliance/box-b/cmd/+", qos=1)  # reading box B's commands: refused too
        await a.publish("appliance/box-b/state", b'{"state": "FORGED"}', qos=1, retain=True)
        await a.publish("appliance/box-b/cmd/live", b'{"id": "forged"}', qos=1)
        # Acknowledged (and refused) before these go: what arrives after them came first.
        await b.publish("appliance/box-b/state", b'{"state": "READY"}', qos=1, retain=True)
        await watcher.publish("appliance/box-b/cmd/live", b'{"id": "real"}', qos=1)
        seen_by = await asyncio.gather(_collect(watcher, 2.0), _collect(b, 2.0), _collect(a, 2.0))
    return dict(zip(("watcher", "box-b", "box-a"), seen_by))


async def _bad_commands(broker) -> list[dict]:
    """What a producer's mistakes get back: a reply that says what and where."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    replies = []
    async with Raw(broker, "producer").client() as p:
        for n, (topic, payload) in enumerate((("appliance/box-a/cmd/live", b"not json"),
                                              ("appliance/box-a/cmd/reboot", b'{"id": "r1"}'),
                                              ("appliance/box-a/cmd/live", b'{"id": "has spaces"}'))):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = f"appliance/box-a/reply/bad{n}"
            await p.subscribe(props.ResponseTopic, qos=1)
            await p.publish(topic, payload, qos=1, properties=props)
            async with asyncio.timeout(10):
                async for m in p.messages:
                    replies.append(json.loads(m.payload))
                    break
    return replies


def test_a_box_reports_to_the_fleet_obeys_it_by_its_rules_and_reaches_no_other_box(daemon_factory, broker,
                                                                                    private_hosts, tmp_path):
    producer = producer_file(tmp_path, broker)
    d = daemon_factory("box-a", config_extra=box_config(broker, "box-a"), prefix=private_hosts.prefix).start()
    d.wait_state("READY", timeout=30)
    seen = wait_box(private_hosts, producer, "box-a", 20, "box-a reporting READY", online=True, state="READY")
    assert seen["state"]["profile"] == "sim" and seen["state"]["version"], seen
    table = fleet(private_hosts, producer, "status").stdout
    assert "box-a" in table and "READY" in table, table

    refused = fleet(private_hosts, producer, "stop", "box-a")
    assert refused.returncode == 1 and 'needs "confirm": true' in refused.stderr, refused
    went = fleet(private_hosts, producer, "live", "box-a")
    assert went.returncode == 0 and "LIVE" in went.stdout, (went.stdout, went.stderr)
    d.wait_state("LIVE", timeout=10)
    live = wait_box(private_hosts, producer, "box-a", 15, "box-a reporting LIVE", online=True, state="LIVE")
    wait_until(lambda: (boxes(private_hosts, producer)["box-a"]["telemetry"].get("bitrate_kbps") or 0) > 0, 15,
               interval=0.5, what="box-a's telemetry with its bitrate")
    assert live["telemetry"]["recording"] is not None
    stopped = fleet(private_hosts, producer, "stop", "box-a", "--confirm", "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["state"] in ("STOPPING", "READY"), stopped
    d.wait_state("READY", timeout=20)
    assert "fleet: command stop" in d.log()

    bad = asyncio.run(_bad_commands(broker))
    assert [r["ok"] for r in bad] == [False] * 3, bad
    assert "appliance/box-a/cmd/live: not JSON" in bad[0]["error"], bad
    assert "unknown command 'reboot' (known: live, stop, preflight, usage-reset)" in bad[1]["error"], bad
    assert '"id" must be 1 to 64 letters' in bad[2]["error"], bad
    assert d.state() == "READY", "mistakes change nothing"

    seen = asyncio.run(_acl_probe(broker))
    assert seen["watcher"] == [("appliance/box-b/state", b'{"state": "READY"}'),
                               ("appliance/box-b/cmd/live", b'{"id": "real"}')], "box A's state for B never arrives"
    assert seen["box-b"] == [("appliance/box-b/cmd/live", b'{"id": "real"}')], "box A's command for B never arrives"
    assert seen["box-a"] == [], "box A cannot read box B's commands"
    assert d.state() == "READY", "and box A itself took none of it"

    d.kill()  # SIGKILL: no goodbye; the broker publishes its will
    wait_box(private_hosts, producer, "box-a", 20, "box-a shown offline by its last will", online=False, state="READY")
    assert "(offline)" in fleet(private_hosts, producer, "status").stdout
