"""A real Mosquitto for the fleet tests, configured from the files docs/ gives a
producer (fleet-mosquitto.conf and fleet-acl, paths and ports moved into the test's
directory), with a CA and a broker certificate made here by openssl for the broker's
host name, and a password for each user."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificates(directory: Path, host: str) -> None:
    """ca.crt, broker.crt and broker.key for `host` (in its subjectAltName, as TLS checks)."""
    directory.mkdir(parents=True, exist_ok=True)
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=directory)  # noqa: E731
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=test fleet CA", "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={host}",
        "-keyout", "broker.key", "-out", "broker.csr")
    # And localhost: the tests' own clients, outside the daemon's hosts file, check it by that name.
    (directory / "san.ext").write_text(f"subjectAltName=DNS:{host},DNS:localhost\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "broker.crt")


class Mosquitto:
    def __init__(self, directory: Path, host: str, users: dict[str, str]):
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        assert Path(self.exe).exists(), "scripts/test installs mosquitto"
        self.dir, self.host = directory, host
        self.dir.mkdir(parents=True, exist_ok=True)
        make_certificates(self.dir / "certs", host)
        self.ca = self.dir / "certs" / "ca.crt"
        self.port, self.ws_port = free_port(), free_port()
        passwd = self.dir / "appliance.passwd"
        passwd.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
        subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
        shutil.copy(DOCS / "fleet-acl", self.dir / "appliance.acl")
        conf = (DOCS / "fleet-mosquitto.conf").read_text().replace("/etc/mosquitto/", f"{self.dir}/")
        conf = conf.replace("listener 8883", f"listener {self.port} 127.0.0.1")
        conf = conf.replace("listener 8443", f"listener {self.ws_port} 127.0.0.1")
        # Root keeps root (Mosquitto would drop to its own user, who cannot read the test's files).
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(conf + "persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
                             "log_type notice\nuser root\n")
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    @property
    def local_url(self) -> str:
        return f"mqtts://localhost:{self.port}"

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mosquitto did not start:\n{self.log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        from netsim import stop_gracefully

        if self.proc is not None:
            stop_gracefully(self.proc)
        self.proc = None
