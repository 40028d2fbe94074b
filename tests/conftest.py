"""Shared harnesses: the real daemon in a subprocess, a notify socket, leak checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.supervisor import control

ROOT = Path(__file__).resolve().parent.parent
APPLIANCE = [sys.executable, "-m", "appliance"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# scripts/test runs two workers (pytest-xdist, --dist loadgroup). Each file is a group of
# its own, run in order by one worker; the files that encode or stream the most share one
# group, so that no two of them compete for the two cores (a 720p demo beside two software
# H.265 encoders lost seconds of video to a starved sender).
HEAVY = {"test_netbench.py", "test_media.py", "test_gst_encoder.py", "test_demo.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group("heavy" if item.path.name in HEAVY else item.path.name))


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Every test must leave no thread of its own running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"threads leaked by the test: {[t.name for t in leaked]}"


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="test-notify-socket", daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            for line in data.decode().splitlines():
                self.messages.append((now, line))

    def lines(self, prefix: str = "") -> list[tuple[float, str]]:
        return [(t, m) for t, m in list(self.messages) if m.startswith(prefix)]

    def wait_for(self, line: str, timeout: float) -> float:
        return wait_until(lambda: next((t for t, m in self.lines() if m == line), None), timeout, what=line)

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


class Daemon:
    """`appliance run` as systemd would run it, in its own directory."""

    def __init__(self, workdir: Path, profile: str = "sim", env: dict | None = None, args=(), config_extra: str = "",
                 prefix: list[str] | None = None):
        self.prefix = list(prefix or [])
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "appliance.toml"
        self.api_port = free_port()
        api = "" if "[api]" in config_extra else f"[api]\nport = {self.api_port}\n"
        # A small picture unless the test sets one: the suite runs two daemons at once on two
        # cores (scripts/test's workers), and two at the sim profile's 720p30 starve each
        # other's media threads. The profile's own size runs in the demo and the benches.
        video = "" if "[video]" in config_extra else "[video]\nwidth = 640\nheight = 360\n"
        self.config.write_text(
            f'[paths]\nstate_dir = "{self.dir / "state"}"\nruntime_dir = "{self.dir / "run"}"\n'
            f'recordings = "{self.dir / "recordings"}"\n' + api + config_extra + "\n" + video
        )
        self.socket = self.dir / "run" / control.SOCKET_NAME
        self.profile = profile
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "JOURNAL_STREAM"):
            if env is None or var not in env:
                self.env.pop(var, None)
        self.args = list(args)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "daemon.log"
        self.started_at = 0.0

    def start(self) -> "Daemon":
        self._log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [*self.prefix, *APPLIANCE, "run", *(["--profile", self.profile] if self.profile else []), "--config", str(self.config), *self.args],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.dir,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, cmd: str, **args) -> dict:
        return control.request(self.socket, cmd, **args)

    def component(self, name: str) -> dict:
        return self.request("status")["status"]["components"][name]

    def output(self, name: str) -> dict:
        """One of the media pipeline's outputs (recorder, srt, rtmp), as status shows it."""
        return self.component("media")["outputs"][name]

    def state(self) -> str | None:
        try:
            return self.request("status")["status"]["state"]
        except (OSError, ValueError):
            return None

    def wait_state(self, state: str | tuple[str, ...], timeout: float = 10.0) -> None:
        states = (state,) if isinstance(state, str) else state

        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            return self.state() in states
        try:
            wait_until(check, timeout, interval=0.05, what=f"state {state}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- daemon log ---\n{self.log()}") from None

    def terminate(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture
def ingest(tmp_path):
    from netsim import Ingest

    i = Ingest(tmp_path, free_port())
    yield i
    i.stop()


class PrivateHosts:
    """A /etc/hosts of the daemon's own: `prefix` runs it in a mount namespace where this
    file is bind-mounted over /etc/hosts (glibc reads it at every lookup), and `set()`
    rewrites it in place, so a name can stop resolving and resolve again under it."""

    def __init__(self, path: Path):
        self.path = path
        self.set({})
        self.prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       f'mount --bind "{path}" /etc/hosts && exec "$@"', "with-own-hosts"]

    def set(self, names: dict[str, str]) -> None:
        lines = ["127.0.0.1 localhost", "::1 localhost"] + [f"{a} {n}" for n, a in names.items()]
        with open(self.path, "w") as f:  # in place: the bind mount holds this inode
            f.write("\n".join(lines) + "\n")


@pytest.fixture
def private_hosts(tmp_path):
    assert os.geteuid() == 0, "a mount namespace needs root (scripts/test runs as root in CI)"
    return PrivateHosts(tmp_path / "hosts")


@pytest.fixture
def daemon_factory(tmp_path):
    made: list[Daemon] = []

    def make(name: str = "box", **kwargs) -> Daemon:
        d = Daemon(tmp_path / name, **kwargs)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def run_cli(*args, timeout: float = 60, env: dict | None = None, input: str | None = None):
    return subprocess.run([*APPLIANCE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, input=input, cwd=ROOT)


def read_json(path: Path):
    return json.loads(Path(path).read_text())
