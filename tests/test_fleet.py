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

from conftest import APPLIANCE, ROOT, run_cli, wait_until
from mqttbroker import Mosquitto

BROKER = "broker.venue.example"
USERS = {"box-a": "pw-a-0123456789", "box-b": "pw-b-0123456789", "producer": "pw-producer-0123", "exporter": "pw-exp-0123",
         **{f"fleet-{i:02d}": f"pw-fleet-{i:02d}-0123" for i in range(50)}}


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

        self.s = FleetSection(broker=broker.local_url, ca_file=broker.ca, username=user, password=USERS[user])

    def client(self):
        from appliance.fleet import connect

        return connect.client(self.s, f"raw-{self.s.username}-{time.monotonic_ns()}", connect.tls_context(self.s))


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


async def _retained_command_meets_a_box_starting(broker, start) -> list[dict]:
    """A command left retained on the broker, and a box that (re)starts: what it answers."""
    async with Raw(broker, "producer").client() as p:
        await p.subscribe("appliance/box-a/reply/kept", qos=1)
        await p.publish("appliance/box-a/cmd/live", b'{"id": "kept"}', qos=1, retain=True)
        start()
        replies = []
        async with asyncio.timeout(30):
            async for m in p.messages:
                replies.append(json.loads(m.payload))
                break
        await p.publish("appliance/box-a/cmd/live", b"", qos=1, retain=True)  # (the broker forgets it)
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
    shown = run_cli("status", "--socket", str(d.socket)).stdout
    assert f"fleet: box-a on {broker.url} since" in shown, shown

    # Pre-flight and usage reset reach the box's own handlers (this box streams nowhere: it says so).
    pre = fleet(private_hosts, producer, "preflight", "box-a", "--seconds", "4")
    assert pre.returncode == 1 and "pre-flight needs [stream] enabled" in pre.stderr, pre
    reset = fleet(private_hosts, producer, "usage-reset", "box-a", "--json")
    assert reset.returncode == 0 and "reset_mb" in json.loads(reset.stdout), reset
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

    # A command someone left retained would run at every reconnect: a box (re)starting refuses it.
    replies = asyncio.run(_retained_command_meets_a_box_starting(broker, d.start))
    assert replies and not replies[0]["ok"] and "a retained command is refused" in replies[0]["error"], replies
    d.wait_state("READY", timeout=30)
    time.sleep(1)
    assert d.state() == "READY", "and it did not go live"


def test_a_broker_gone_for_30_s_mid_show_touches_nothing_and_the_box_comes_back_by_itself(
        daemon_factory, broker, private_hosts, tmp_path, notify_socket):
    producer = producer_file(tmp_path, broker)
    # systemd's watchdog at 4 s: a ping later than that would have had the box killed.
    env = {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "4000000"}
    small = '[video]\nwidth = 320\nheight = 180\nfps = 15\n'
    d = daemon_factory("box-a", config_extra=box_config(broker, "box-a", extra=small), prefix=private_hosts.prefix,
                       env=env).start()
    d.wait_state("READY", timeout=30)
    assert d.request("live")["ok"]
    d.wait_state("LIVE", timeout=10)
    wait_box(private_hosts, producer, "box-a", 20, "box-a reporting LIVE", online=True, state="LIVE")
    before = d.component("media")
    recorded = d.output("recorder")["bytes"]

    broker.stop()
    outage_from = time.monotonic()
    wait_until(lambda: not d.component("fleet")["connected"], 20, what="the box noticing the broker gone")
    time.sleep(max(0.0, 30 - (time.monotonic() - outage_from)))
    during = d.component("media")
    broker.start()  # (empty: nothing retained survives it; the box must say it all again)
    outage_to = time.monotonic()

    back = wait_box(private_hosts, producer, "box-a", 20, "box-a back by itself", online=True, state="LIVE")
    assert back["telemetry"]["bitrate_kbps"], back
    after = d.component("media")
    assert after["frames_dropped"] == before["frames_dropped"], (before["frames_dropped"], after["frames_dropped"])
    # 15 fps throughout: the frames encoded over the outage are its seconds' worth (a stall would show here).
    assert during["frames_encoded"] - before["frames_encoded"] >= 15 * 28, (before, during)
    assert d.output("recorder")["bytes"] > recorded and d.output("recorder")["recording"]
    pings = [t for t, _ in notify_socket.lines("WATCHDOG=1") if outage_from - 4 <= t <= outage_to]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert pings and max(gaps) < 4.0, gaps
    fleet_status = d.component("fleet")
    assert fleet_status["connected"] and fleet_status["connects"] >= 2, fleet_status
    assert d.log().count("fleet: broker") == 1, "the outage is logged once, not once a retry"


def test_fifty_boxes_reporting_every_second_all_show_in_fleet_status_and_the_exporter(broker, private_hosts,
                                                                                       tmp_path):
    import urllib.request

    from conftest import free_port
    from fleet_load import Clients

    fifty = {b: p for b, p in USERS.items() if b.startswith("fleet-")}
    clients = Clients(broker.local_url, broker.ca, fifty, every=1.0).start()
    exporter = None
    try:
        wait_until(lambda: clients.connected == 50, 30, interval=0.2, what="50 clients connected")
        listed = {}

        def all_listed():
            nonlocal listed
            listed = boxes(private_hosts, producer_file(tmp_path, broker))
            return sum(1 for b in fifty if listed.get(b, {}).get("online") and listed[b]["telemetry"]) == 50
        wait_until(all_listed, 30, interval=0.5, what="fleet status listing all 50")
        table = fleet(private_hosts, producer_file(tmp_path, broker), "status").stdout
        assert all(f"fleet-{i:02d}  LIVE" in table for i in range(50)), table
        assert "4100 kb/s" in table and "cell:up/48ms" in table, table
        # The same fleet through the broker's secure WebSockets listener (docs/fleet-mosquitto.conf).
        ws = fleet(private_hosts, producer_file(tmp_path, broker), "status", "--json", "--broker",
                   f"wss://{BROKER}:{broker.ws_port}/mqtt")
        assert ws.returncode == 0 and len(json.loads(ws.stdout)) >= 50, (ws.stderr, ws.stdout[:500])

        port = free_port()
        exporter = subprocess.Popen([*private_hosts.prefix, *APPLIANCE, "fleet", "exporter", "--listen",
                                     f"127.0.0.1:{port}", "--config", str(producer_file(tmp_path, broker, "exporter"))],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        text = ""

        def served():
            nonlocal text
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                return False
            return text.count("appliance_fleet_bitrate_bps{") == 50
        wait_until(served, 30, interval=0.5, what="the exporter serving all 50")
        assert 'appliance_fleet_online{box="fleet-07"} 1.0' in text
        assert 'appliance_fleet_link_rtt_seconds{box="fleet-07",link="cell"} 0.048' in text
        assert 'appliance_fleet_state{box="fleet-49",state="LIVE"} 1.0' in text
        assert "appliance_fleet_boxes 50.0" in text
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(10)
        clients.stop()


def test_the_grafana_dashboard_asks_only_for_what_the_exporter_serves():
    import re

    from appliance.fleet.exporter import render
    from appliance.fleet.producer import Box
    from appliance.fleet.topics import state_payload, telemetry_payload
    from fleet_load import live_status

    status = live_status("hall-a")
    served = render({"hall-a": Box("hall-a", True, state_payload(status), telemetry_payload(status))}).decode()
    names = set(re.findall(r"^(appliance_fleet_\w+)", served, re.M))
    dashboard = json.loads((ROOT / "docs" / "grafana-fleet.json").read_text())
    asked = {n for p in dashboard["panels"] for t in p["targets"] for n in re.findall(r"appliance_fleet_\w+", t["expr"])}
    asked |= set(re.findall(r"appliance_fleet_\w+", json.dumps(dashboard["templating"])))
    assert asked and asked <= names, asked - names
    documented = set(re.findall(r"`(appliance_fleet_\w+)", (ROOT / "docs" / "fleet.md").read_text()))
    assert documented == names, (documented ^ names)


def test_what_the_fleet_reads_is_bounded_and_a_box_of_another_kind_is_named_not_fatal():
    from appliance.fleet.producer import Box, apply, table

    boxes: dict = {}
    apply(boxes, "appliance", "appliance/hall-a/state", b'{"state": "LIVE", "at": 100.0}')
    apply(boxes, "appliance", "appliance/hall-a/online", b"offline")
    apply(boxes, "appliance", "appliance/hall-b/telemetry", b"[1, 2]")
    apply(boxes, "appliance", "appliance/hall-c/cmd/live", b"{}")  # not a report: ignored
    apply(boxes, "appliance", "elsewhere/hall-d/state", b"{}")
    for i in range(10):
        apply(boxes, "appliance", f"appliance/x{i}/online", b"online", limit=3)
    assert sorted(boxes) == ["hall-a", "hall-b", "x0"], "3 at most, the first ones kept"
    assert boxes["hall-b"].errors == ["telemetry: unreadable (a JSON object, not list)"]
    shown = table({"hall-a": boxes["hall-a"], "new": Box("new")}, now=130.0)
    assert "hall-a  LIVE (offline)" in shown and "30 s ago" in shown and "never" in shown, shown
