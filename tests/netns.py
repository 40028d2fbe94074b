"""The network bench: real namespaces, veth uplinks, tbf and nftables (as root).

    [appliance ns] up0 198.18.1.1 ==veth== dn0 198.18.1.2 [relay ns] vi0 198.18.3.1 ==veth== vo0 198.18.3.2 [ingest ns]
                   up1 198.18.2.1 ==veth== dn1 198.18.2.2   relay address 198.18.0.1 (on lo)

Policy routing in the appliance namespace sends whatever leaves from an
uplink's address out of that uplink (as on a box with a modem and a wired
port), so the relay sees one peer per uplink. Each uplink has a tbf rate limit
on the way out; nftables rules black-hole a link or drop a share of its
packets, in both directions, on the way in at each end (this kernel has no netem).
The relay and the ingest are named as users name them: relay.bench.test and
ingest.bench.test resolve through hosts files that `ip netns exec` bind-mounts
over /etc/hosts for whatever runs in the appliance's and the relay's namespace
(/etc/netns/NAME/hosts), with a resolv.conf whose server does not exist, so a
name missing from them fails at once, as a box with no DNS would.
set_hosts() rewrites them in place (the bind mount holds the inode): a name can
stop resolving and resolve again under a running daemon.
Everything is created under names unique to this process and removed by close().
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import APPLIANCE
from netsim import stop_gracefully

RELAY_ADDR = "198.18.0.1"
INGEST_ADDR = "198.18.3.2"
RELAY_NAME = "relay.bench.test"
INGEST_NAME = "ingest.bench.test"
NO_DNS = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"  # nothing listens there: fails at once
UPLINKS = {"up0": ("198.18.1.1", "198.18.1.2"), "up1": ("198.18.2.1", "198.18.2.2")}


def apply_nft(rules: dict[str, str], prefix: list[str] = ()) -> None:
    """Replace the bench's nftables table in one namespace: a rule per interface on
    the way in, atomically. Dropping on input (never output) keeps it a black hole:
    the sender's sendto() succeeds, as it does when a modem's upstream dies."""
    body = "\n    ".join(f'iifname "{dev}" {rule}' for dev, rule in rules.items())
    script = ("table inet bench {}\nflush table inet bench\ntable inet bench {\n"
              "  chain in { type filter hook input priority 0; policy accept;\n    " + body + "\n  }\n}\n")
    p = subprocess.run([*prefix, "nft", "-f", "-"], input=script, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"nft: {p.stderr.strip()}\n{script}")


def peer_of(uplink: str) -> str:
    return "dn" + uplink[2:]


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p


class NetBench:
    def __init__(self, rate_mbit: float = 20):
        assert os.geteuid() == 0, "the network bench needs root (scripts/test runs as root in CI)"
        for tool in ("ip", "tc", "nft", "srt-live-transmit"):
            assert shutil.which(tool), f"{tool} missing: scripts/test installs iproute2, nftables, srt-tools"
        tag = f"{os.getpid() % 100000}"
        self.app, self.relay_ns, self.ingest_ns = f"bapp{tag}", f"brly{tag}", f"bing{tag}"
        self.procs: list[subprocess.Popen] = []
        self.rules: dict[str, str] = {}  # uplink -> nft rule body ("" = clean)
        self.rates: dict[str, float] = {}
        try:
            self._build(rate_mbit)
        except Exception:
            self.close()
            raise

    # --- topology -----------------------------------------------------------------------------

    def ns(self, name: str, *cmd: str, check: bool = True):
        return _run("ip", "netns", "exec", name, *cmd, check=check)

    def etc(self, ns: str) -> Path:
        return Path("/etc/netns") / ns

    def set_hosts(self, ns: str, names: dict[str, str]) -> None:
        """What the names resolve to in that namespace from now on ({} : nothing resolves)."""
        lines = ["127.0.0.1 localhost", "::1 localhost"] + [f"{addr} {name}" for name, addr in names.items()]
        with open(self.etc(ns) / "hosts", "w") as f:  # in place: the bind mount holds this inode
            f.write("\n".join(lines) + "\n")

    def _build(self, rate_mbit: float) -> None:
        for n in (self.app, self.relay_ns, self.ingest_ns):
            _run("ip", "netns", "del", n, check=False)  # a leftover of a killed run with our pid
            _run("ip", "netns", "add", n)
            shutil.rmtree(self.etc(n), ignore_errors=True)
            self.etc(n).mkdir(parents=True)
            (self.etc(n) / "resolv.conf").write_text(NO_DNS)
            self.set_hosts(n, {})
            self.ns(n, "ip", "link", "set", "lo", "up")
            self.ns(n, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
        self.ns(self.relay_ns, "ip", "addr", "add", f"{RELAY_ADDR}/32", "dev", "lo")
        self.ns(self.relay_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # The relay's address lives on lo, not on the links: it is reached through a route, as
        # across the internet. (Answering ARP for it on every link would let a socket bound to an
        # uplink whose route is gone still reach it "on-link", which no real network allows.)
        self.ns(self.relay_ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
        for i, (up, (mine, peer)) in enumerate(UPLINKS.items()):
            down = f"dn{i}"
            _run("ip", "link", "add", up, "netns", self.app, "type", "veth", "peer", "name", down, "netns", self.relay_ns)
            self.ns(self.app, "ip", "addr", "add", f"{mine}/24", "dev", up)
            self.ns(self.relay_ns, "ip", "addr", "add", f"{peer}/24", "dev", down)
            self.ns(self.app, "ip", "link", "set", up, "up")
            self.ns(self.relay_ns, "ip", "link", "set", down, "up")
            table = str(101 + i)
            self.ns(self.app, "ip", "rule", "add", "from", mine, "lookup", table)
            self.ns(self.app, "ip", "route", "add", "default", "via", peer, "dev", up, "table", table)
            self.set_rate(up, rate_mbit)
        self.ns(self.app, "ip", "route", "add", "default", "via", UPLINKS["up0"][1])
        _run("ip", "link", "add", "vi0", "netns", self.relay_ns, "type", "veth", "peer", "name", "vo0",
             "netns", self.ingest_ns)
        self.ns(self.relay_ns, "ip", "addr", "add", "198.18.3.1/24", "dev", "vi0")
        self.ns(self.ingest_ns, "ip", "addr", "add", f"{INGEST_ADDR}/24", "dev", "vo0")
        self.ns(self.relay_ns, "ip", "link", "set", "vi0", "up")
        self.ns(self.ingest_ns, "ip", "link", "set", "vo0", "up")
        self.ns(self.ingest_ns, "ip", "route", "add", "default", "via", "198.18.3.1")
        self.set_hosts(self.app, {RELAY_NAME: RELAY_ADDR})
        self.set_hosts(self.relay_ns, {INGEST_NAME: INGEST_ADDR})
        self._apply_rules()

    # --- impairments --------------------------------------------------------------------------

    def set_rate(self, uplink: str, mbit: float) -> None:
        """tbf on the uplink's way out: a link that carries at most this much, with
        a 300 ms queue in front (a cellular modem's buffer is that deep or deeper)."""
        verb = "change" if uplink in self.rates else "add"
        burst = max(16, int(mbit * 1000 / 8 / 10))  # ~10 ms worth, in kB
        self.ns(self.app, "tc", "qdisc", verb, "dev", uplink, "root", "tbf", "rate", f"{mbit}mbit",
                "burst", f"{burst}kb", "latency", "300ms")
        self.rates[uplink] = mbit

    def blackhole(self, uplink: str) -> None:
        self.rules[uplink] = "drop"
        self._apply_rules()

    def loss(self, uplink: str, percent: int) -> None:
        self.rules[uplink] = f"numgen random mod 100 < {int(percent)} drop"
        self._apply_rules()

    def lose_shutdowns(self, uplink: str) -> None:
        """SRT's SHUTDOWN lost on the link (control type 5: its header's first 16 bits,
        after UDP's 8 bytes, are 0x8005), as a lossy modem loses one packet that nothing
        acknowledges: the ingest holds the caller until its idle timeout."""
        self.rules[uplink] = "@th,64,16 0x8005 drop"
        self._apply_rules()

    def clear(self, uplink: str) -> None:
        self.rules.pop(uplink, None)
        self._apply_rules()

    def _apply_rules(self) -> None:
        # both directions: towards the relay at the relay's end, back at ours
        apply_nft({peer_of(up): r for up, r in self.rules.items()}, ["ip", "netns", "exec", self.relay_ns])
        apply_nft(self.rules, ["ip", "netns", "exec", self.app])

    def link(self, uplink: str, up: bool) -> None:
        self.ns(self.app, "ip", "link", "set", uplink, "up" if up else "down")
        if up:  # the policy route went with the link
            i = list(UPLINKS).index(uplink)
            self.ns(self.app, "ip", "route", "replace", "default", "via", UPLINKS[uplink][1], "dev", uplink,
                    "table", str(101 + i))

    # --- the far end: relay and ingest --------------------------------------------------------

    def start_ingest(self, out: Path, port: int, latency_ms: int = 500) -> subprocess.Popen:
        f = open(out, "wb")
        p = subprocess.Popen(["ip", "netns", "exec", self.ingest_ns, shutil.which("srt-live-transmit"),
                              f"srt://:{port}?mode=listener&latency={latency_ms}", "file://con"],
                             stdout=f, stderr=subprocess.DEVNULL)
        f.close()
        self.procs.append(p)
        self.ingest = p
        return p

    def stop_ingest(self) -> None:
        """srt-live-transmit buffers its output: it is complete once it has exited."""
        stop_gracefully(self.ingest)

    def start_relay(self, port: int, ingest_port: int, log: Path, secret_file: Path | None = None) -> subprocess.Popen:
        cmd = ["ip", "netns", "exec", self.relay_ns, *APPLIANCE, "relay", "--listen", str(port), "--bind", RELAY_ADDR,
               "--to", f"srt://{INGEST_NAME}:{ingest_port}"]
        if secret_file:
            cmd += ["--secret-file", str(secret_file)]
        with open(log, "ab") as f:
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.append(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # listening once its socket shows up in the namespace
            if f":{port} " in self.ns(self.relay_ns, "ss", "-uln").stdout:
                return p
            assert p.poll() is None, f"relay exited: {Path(log).read_text()}"
            time.sleep(0.05)
        raise AssertionError("relay never listened")

    def start_pop(self, ns: str, addr: str, port: int, ingest_url: str, one_way_s: float, log: Path,
                  secret_file: Path) -> None:
        """An edge PoP in namespace ns: `appliance relay` on 127.0.0.1:port+1 to ingest_url,
        reached at addr:port through a delay forwarder (one_way_s each way)."""
        with open(log, "ab") as f:
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, *APPLIANCE, "relay", "--listen", str(port + 1), "--bind", "127.0.0.1",
                 "--to", ingest_url, "--secret-file", str(secret_file)], stdout=f, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        fwd = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).parent / "delay_forwarder.py"),
                                addr, str(port), str(port + 1), str(one_way_s * 1000)], stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
        self.procs.append(fwd)
        assert fwd.stdout.readline().strip() == b"ready", "the delay forwarder did not start"
        deadline = time.monotonic() + 10
        while f"127.0.0.1:{port + 1} " not in self.ns(ns, "ss", "-uln").stdout:
            assert time.monotonic() < deadline, f"the PoP's relay never listened: {Path(log).read_text()}"
            time.sleep(0.05)

    def compare(self, script: str, variants: tuple[str, ...], args: list[str], workdir: Path,
                latency_ms: int = 500) -> dict[str, tuple[dict, Path]]:
        """For the benchmarks: one relay; for each variant a fresh ingest and
        `python SCRIPT --inner VARIANT ARGS...` in the appliance namespace, whose
        last stdout line is its JSON result. -> {variant: (result, received TS)}."""
        import json

        self.start_relay(5000, 5001, workdir / "relay.log")
        results = {}
        for variant in variants:
            out = workdir / f"{variant}.ts"
            self.start_ingest(out, 5001, latency_ms)
            time.sleep(0.3)
            p = subprocess.run(["ip", "netns", "exec", self.app, sys.executable, script, "--inner", variant, *args],
                               capture_output=True, text=True, cwd=Path(script).resolve().parent.parent)
            self.stop_ingest()
            if p.returncode:
                raise SystemExit(f"{variant} failed:\n{p.stderr}")
            results[variant] = (json.loads(p.stdout.strip().splitlines()[-1]), out)
        return results

    def close(self) -> None:
        for p in reversed(self.procs):
            stop_gracefully(p)
        for n in (self.app, self.relay_ns, self.ingest_ns):
            _run("ip", "netns", "del", n, check=False)
            shutil.rmtree(self.etc(n), ignore_errors=True)
