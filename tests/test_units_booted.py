"""The units as systemd runs them, hardening and all: a container booted with this
machine's own systemd (systemd-nspawn --volatile=yes: its /usr, an empty /etc on a
tmpfs), the relay as its DynamicUser with the secret from LoadCredential=, the
daemon as its own user under the system-call filter. What `systemd-analyze
security` scores is only worth its figure if the services still work under it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port, wait_until
from test_relay import register

SECRET = b"a-secret-for-the-booted-relay"
# Where the checkout and this venv's packages are in the container (not under /tmp, wherever
# they are here: the container's own /tmp is a fresh tmpfs over them).
SRC, SITE = "/opt/appliance/src", "/opt/appliance/site-packages"
VENV_SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


class Booted:
    """A container running systemd as its PID 1, sharing this machine's network."""

    def __init__(self, tmp: Path):
        assert os.geteuid() == 0, "booting a container needs root (scripts/test runs as root in CI)"
        assert shutil.which("systemd-nspawn"), "scripts/test installs systemd-container"
        self.log = open(tmp / "container.log", "wb")
        # The interpreter this venv was made from (here pyenv's, under /root, which the
        # units' ProtectHome= hides) is mounted at /opt/py, and the container's venv takes
        # its packages and the project from this checkout.
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--volatile=yes", "--directory=/", "--boot", "--console=pipe",
             "--register=no", "--keep-unit", f"--bind-ro={ROOT}:{SRC}", f"--bind-ro={VENV_SITE}:{SITE}",
             f"--bind-ro={sys.base_prefix}:/opt/py"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        self.pid = wait_until(self._init, 60, interval=0.2, what="the container's systemd")
        wait_until(lambda: self.run("systemctl", "is-system-running", check=False).stdout.strip()
                   in ("running", "degraded"), 90, interval=0.5, what="the container booted")
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        self.sh(f"/opt/py/bin/{version} -m venv /opt/appliance/.venv && "
                f"printf '%s\\n%s\\n' {SITE} {SRC} > /opt/appliance/.venv/lib/{version}/site-packages/host.pth && "
                "printf '#!/opt/appliance/.venv/bin/python\\nimport sys\\nfrom appliance.cli import main\\n"
                "sys.exit(main())\\n' > /opt/appliance/.venv/bin/appliance && chmod 755 /opt/appliance/.venv/bin/appliance "
                "&& ldconfig && mkdir -p /etc/appliance /etc/systemd/system")

    def _init(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.proc.returncode}")
        kids = [int(p) for t in Path(f"/proc/{self.proc.pid}/task").iterdir() for p in (t / "children").read_text().split()]
        return next((k for k in kids if Path(f"/proc/{k}/comm").read_text().strip() == "systemd"), None)

    def run(self, *cmd: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "env", "LD_LIBRARY_PATH=/opt/py/lib", *cmd],
                           capture_output=True, text=True, input=input, timeout=120)
        if check and r.returncode:
            raise AssertionError(f"{' '.join(cmd)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def sh(self, script: str, input: str | None = None) -> str:
        return self.run("sh", "-ec", script, input=input).stdout

    def install_unit(self, name: str, text: str) -> None:
        # (the interpreter at /opt/py was built to find its libpython where it was installed)
        text = text.replace("[Service]\n", "[Service]\nEnvironment=LD_LIBRARY_PATH=/opt/py/lib\n", 1)
        self.sh(f"cat > /etc/systemd/system/{name}", input=text)
        self.run("systemctl", "daemon-reload")

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "-u", unit, "--no-pager", "-o", "cat", check=False).stdout

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # nspawn powers the container off
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    b = Booted(tmp_path_factory.mktemp("booted"))
    yield b
    b.close()


def test_the_relay_runs_as_its_dynamic_user_with_its_credential_and_registers_a_sender(booted):
    port = free_port()
    unit = (ROOT / "systemd" / "appliance-relay.service").read_text().replace("--listen 5000", f"--listen {port}")
    booted.install_unit("appliance-relay.service", unit)
    booted.sh("umask 077; cat > /etc/appliance/relay.secret", input=SECRET.decode() + "\n")  # root's alone
    booted.run("systemctl", "start", "appliance-relay")
    wait_until(lambda: "listening on" in booted.journal("appliance-relay"), 30, what="the relay listening")
    assert "shared secret required" in booted.journal("appliance-relay")
    user = booted.run("systemctl", "show", "-p", "User", "--value", "appliance-relay").stdout.strip()
    assert user == "appliance-relay"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    register(type("R", (), {"addr": ("127.0.0.1", port)})(), [s], secret=SECRET)
    s.close()
    wait_until(lambda: "joined a group" in booted.journal("appliance-relay"), 10, what="the relay's log of it")
    booted.run("systemctl", "stop", "appliance-relay")
    booted.sh("rm /etc/appliance/relay.secret")
    booted.run("systemctl", "start", "appliance-relay", check=False)
    wait_until(lambda: booted.run("systemctl", "is-failed", "appliance-relay", check=False).stdout.strip() == "failed",
               30, what="the relay failed without its secret")
    restarts = booted.run("systemctl", "show", "-p", "NRestarts", "--value", "appliance-relay").stdout.strip()
    assert restarts == "0", "a configuration error is not restarted"
    assert "243/CREDENTIALS" in booted.run("systemctl", "status", "appliance-relay", check=False).stdout


def test_the_daemon_runs_as_its_user_under_its_hardening_goes_live_and_records(booted):
    booted.sh("for g in video audio dialout gpio; do getent group $g >/dev/null || groupadd --system $g; done; "
              "id appliance >/dev/null 2>&1 || useradd --system --home-dir /var/lib/appliance --no-create-home "
              "--shell /usr/sbin/nologin --user-group --groups video,audio,dialout,gpio appliance")
    api = free_port()
    booted.sh("cat > /etc/appliance/appliance.toml; chgrp appliance /etc/appliance/appliance.toml; "
              "chmod 0640 /etc/appliance/appliance.toml", input=f"[api]\nport = {api}\n")
    unit = (ROOT / "systemd" / "appliance.service").read_text().replace(
        "appliance run --config", "appliance run --profile sim --config")
    booted.install_unit("appliance.service", unit)
    booted.run("systemctl", "start", "appliance")  # Type=notify: returns once READY=1 came
    cli = ["/opt/appliance/.venv/bin/appliance"]
    conf = ["--profile", "sim", "--config", "/etc/appliance/appliance.toml"]
    assert booted.run(*cli, "live", *conf).returncode == 0
    status = lambda: json.loads(booted.run(*cli, "status", "--json", *conf).stdout)  # noqa: E731
    wait_until(lambda: status()["state"] == "LIVE", 30, what=f"LIVE\n{booted.journal('appliance')}")
    wait_until(lambda: status()["components"]["media"]["outputs"]["recorder"]["bytes"] > 500_000, 30,
               what="the recording growing")
    s = status()
    assert s["components"]["media"]["encoder"] == "libx264", "the encoder probes (children) ran"
    token = booted.sh("stat -c '%a %U %G' /var/lib/appliance/api.token").split()
    assert token == ["640", "appliance", "appliance"], token
    caps = booted.sh(f"grep CapAmb /proc/{s['pid']}/status").split()[1]
    assert int(caps, 16) == 1 << 13, "CAP_NET_RAW, and only it"
    journal = booted.journal("appliance")
    assert "Traceback" not in journal and "Bad system call" not in journal, journal[-3000:]
    booted.run("systemctl", "stop", "appliance")
    assert "stopped cleanly" in booted.journal("appliance")
    time.sleep(0.5)
