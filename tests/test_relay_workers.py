"""`appliance relay --workers N`: the port shared by N processes, each group's links on
the worker that holds the group, the producer's view merged, a worker's end the relay's."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil

from appliance.transport import srtla
from conftest import APPLIANCE, free_port, wait_until
from test_relay import SECRET, client, register

ROOT = Path(__file__).resolve().parent.parent
LINKS = 3
PACKETS = 90  # a sender's, over its links in turn


class Relay:
    """`appliance relay` as a producer runs it: the ingest by name, the secret from systemd."""

    def __init__(self, tmp_path: Path, ingest_port: int, workers: str, new_session: bool = False):
        self.port, self.stats = free_port(), free_port()
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / "relay.secret").write_bytes(SECRET + b"\n")
        self.proc = subprocess.Popen(
            [*APPLIANCE, "relay", "--listen", str(self.port), "--to", f"srt://localhost:{ingest_port}",
             "--workers", workers, "--stats", f"127.0.0.1:{self.stats}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "CREDENTIALS_DIRECTORY": str(creds)}, start_new_session=new_session)
        self.addr = ("127.0.0.1", self.port)
        self.boxes: list[list[socket.socket]] = []  # closed by stop()
        wait_until(self._answers, 20, what="the relay's stats")

    def box(self, hosts: list[str]) -> bytes:
        """A box whose links are on these addresses registers, with the proof: -> its group id."""
        links = [client(host) for host in hosts]
        self.boxes.append(links)
        return register(self, links, secret=SECRET)

    def _answers(self):
        try:
            return self.view()
        except OSError:
            return None

    def view(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats}/stats", timeout=5) as r:
            return json.load(r)

    def stop(self) -> str:
        for links in self.boxes:
            for s in links:
                s.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.communicate(timeout=20)[0]


def test_with_several_workers_every_groups_links_stay_on_the_worker_that_holds_it(tmp_path):
    """Boxes of three uplinks each (three source addresses: the kernel's hash spreads their
    datagrams over the workers) register with a proof, and stream: every link's every
    packet reaches the group's worker, and the ingest gets every box's stream whole."""
    ingest = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # IPv4 only: "localhost" is ::1 first
    ingest.bind(("127.0.0.1", 0))
    ingest.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    ingest.settimeout(0.5)
    relay = Relay(tmp_path, ingest.getsockname()[1], "3")
    boxes = relay.boxes
    try:
        # Boxes until the groups are on two workers at least (the kernel's choice, by address).
        while len(boxes) < 6 or len({g["worker"] for g in relay.view()["groups"]}) < 2:
            assert len(boxes) < 24, "the kernel put every group on one worker: the test proves nothing"
            relay.box([f"127.0.{40 + len(boxes)}.{k + 1}" for k in range(LINKS)])
        for n in range(PACKETS):
            for i, links in enumerate(boxes):
                d = struct.pack(">IIII", n, 0xC0000000, 0, 1) + bytes([i]) + b"\x47" * 1315
                links[n % LINKS].sendto(d, relay.addr)
            time.sleep(0.002)  # (a real box paces too)
        got: dict[int, set[int]] = {}
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < PACKETS * len(boxes) and time.monotonic() < deadline:
            try:
                d = ingest.recv(2048)
            except socket.timeout:
                continue
            if srtla.is_srt_data(d):
                got.setdefault(d[16], set()).add(srtla.srt_seq(d))
        view = relay.view()
    finally:
        out = relay.stop()
        ingest.close()
    assert relay.proc.returncode == 0, out
    assert all(got.get(i) == set(range(PACKETS)) for i in range(len(boxes))), (
        {i: PACKETS - len(got.get(i, ())) for i in range(len(boxes))}, view["relay"]["dropped"])
    assert view["relay"]["workers"] == view["relay"]["workers_answering"] == 3
    assert len(view["groups"]) == len(boxes) and view["relay"]["links"] == LINKS * len(boxes)
    for g in view["groups"]:
        assert [x["packets"] for x in g["links"]] == [PACKETS // LINKS] * LINKS, g
    assert "unregistered" not in view["relay"]["dropped"], view["relay"]["dropped"]
    # The kernel did hand links to other workers than their groups': registered there all the same.
    assert view["relay"]["handed_over"] > 0, view["relay"]
    assert "relay[0]:" in out and "relay[2]:" in out and "3 workers on port" in out, out


def test_a_worker_that_dies_ends_the_relay_with_exit_1_for_systemd_to_start_it_again(tmp_path):
    relay = Relay(tmp_path, 9, "2")
    try:
        workers = psutil.Process(relay.proc.pid).children()
        assert len(workers) == 2
        workers[1].kill()
        relay.proc.wait(timeout=20)
    finally:
        out = relay.stop()
    assert relay.proc.returncode == 1, out
    assert "worker" in out and "ended (exit -9): the relay stops with it" in out, out
    assert not workers[0].is_running() or workers[0].status() == psutil.STATUS_ZOMBIE, "the other one stopped too"


def test_a_second_relay_on_the_port_of_one_with_workers_exits_1_rather_than_share_its_senders(tmp_path):
    """Both would bind with SO_REUSEPORT as the same user: the kernel would let the second
    join the first's sockets and hand it part of the first one's senders."""
    from conftest import run_cli

    first = Relay(tmp_path, 9, "2")
    try:
        r = run_cli("relay", "--listen", str(first.port), "--to", "srt://127.0.0.1:9", "--workers", "2")
    finally:
        out = first.stop()
    assert r.returncode == 1 and "cannot listen" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert first.proc.returncode == 0, out


def test_a_worker_stopped_for_a_while_is_left_out_of_the_stats_then_counted_again_with_fresh_figures(tmp_path):
    """SIGSTOP (a VM's vCPU stolen, a debugger): /stats answers without it within its
    deadline; once it runs again its figures are today's, not its answer to the question
    that timed out."""
    relay = Relay(tmp_path, 9, "2")
    registered = {}
    try:
        while len({g["worker"] for g in relay.view()["groups"]}) < 2:
            assert len(relay.boxes) < 24, "the kernel put every group on one worker"
            gid = relay.box([f"127.0.{90 + len(relay.boxes)}.1"])
            registered[gid[128:136].hex()] = time.monotonic()
        workers = sorted(psutil.Process(relay.proc.pid).children(), key=lambda p: p.pid)  # (forked in order)
        workers[1].send_signal(signal.SIGSTOP)
        try:
            view = relay.view()
            assert view["relay"]["workers_answering"] == 1 and {g["worker"] for g in view["groups"]} == {0}, view
        finally:
            workers[1].send_signal(signal.SIGCONT)
        time.sleep(4)
        view = relay.view()
    finally:
        out = relay.stop()
    assert view["relay"]["workers_answering"] == 2, view
    now = time.monotonic()
    for g in view["groups"]:
        assert abs(g["uptime_s"] - (now - registered[g["id"]])) < 1.5, (g, "a stale answer")
    assert relay.proc.returncode == 0, out


def test_a_stop_for_the_whole_unit_ends_the_relay_with_exit_0(tmp_path):
    """systemd's stop sends SIGTERM to every process of the unit at once, the workers
    among them: a stop, not a worker's failure (which would mark the unit failed)."""
    relay = Relay(tmp_path, 9, "2", new_session=True)
    os.killpg(relay.proc.pid, signal.SIGTERM)
    out = relay.stop()
    assert relay.proc.returncode == 0, out
    assert "ended (exit" not in out, out
