"""Simulated FOH audio: a private PulseAudio with sine sources, seen by ALSA.

Each simulated input is a null sink with module-sine playing into it (440 Hz
for the desk, 1 kHz for the ambient mic, both at -6 dBFS); its monitor is a
real-time-paced capture source, which the ALSA pulse plugin exposes as an ALSA
PCM that sounddevice opens like a USB interface. (module-sine-source would be
simpler, but it renders in 2-second bursts: no real card behaves like that.)
Suspending an input is a device unplug (no more samples); resuming, a replug.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import shutil
import subprocess
import time
from pathlib import Path

from appliance.children import child_env
from appliance.errors import ComponentError

log = logging.getLogger(__name__)

# source name -> frequency (Hz): the desk's program feed and the ambient mic.
SOURCES = {"foh": 440, "amb": 1000}


class PulseSim:
    name = "sim-audio"

    def __init__(self, directory: Path, sources: dict[str, int] | None = None):
        self.dir = Path(directory)
        self.sources = dict(sources or SOURCES)
        self.proc: subprocess.Popen | None = None
        self.server = self.dir / "pulse" / "native"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PULSE_SERVER": f"unix:{self.server}",
            "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{self.dir / 'asound.conf'}",
        }

    async def start(self) -> None:
        import asyncio

        # Spawned from the loop's thread: PR_SET_PDEATHSIG fires when the
        # spawning *thread* ends, and an executor thread may end early.
        self._spawn()
        await asyncio.to_thread(self._wait_ready)

    def _spawn(self) -> None:
        exe = shutil.which("pulseaudio")
        if not exe or not Path("/usr/share/alsa/alsa.conf").exists():
            raise ComponentError("simulated audio needs PulseAudio and the ALSA pulse plugin: "
                                 "apt-get install pulseaudio pulseaudio-utils libasound2-plugins")
        xdg = self.dir / "xdg"
        xdg.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.dir / "pulse").mkdir(exist_ok=True, mode=0o700)
        env = child_env({"XDG_RUNTIME_DIR": str(xdg), "PULSE_RUNTIME_PATH": str(self.dir / "pulse"),
                         "PULSE_STATE_PATH": str(self.dir / "state"), "HOME": str(self.dir)})
        args = [exe, "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "--log-target=stderr",
                "--log-level=error", "-L", f"module-native-protocol-unix socket={self.server}",
                "-L", "module-null-sink sink_name=null"]
        for name, freq in self.sources.items():
            args += ["-L", self._sink_args(name), "-L", self._sine_args(name, freq), "-L", self._pacer_args(name)]
        self._kill_stale()
        with open(self.dir / "pulseaudio.log", "ab") as errors:
            self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=errors, preexec_fn=_die_with_parent)
        (self.dir / "pulseaudio.pid").write_text(str(self.proc.pid))

    def _kill_stale(self) -> None:
        """A PulseAudio left by a daemon that was killed -9 would answer in ours' place."""
        try:
            pid = int((self.dir / "pulseaudio.pid").read_text())
            if "pulseaudio" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, 15)
                for _ in range(50):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.02)
        except (OSError, ValueError):
            pass

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._kill()
                raise ComponentError(f"PulseAudio did not start (see {self.dir / 'pulseaudio.log'})")
            time.sleep(0.05)
        (self.dir / "asound.conf").write_text(
            "".join(f'pcm.{name} {{ type pulse; device "{name}.monitor" }}\n' for name in self.sources))
        # PortAudio reads the ALSA configuration when sounddevice is imported,
        # which happens later, in the audio capture thread.
        os.environ.update(self.env)
        log.info("sim audio: PulseAudio with sine sources %s", ", ".join(f"{n} ({f} Hz)" for n, f in self.sources.items()))

    def _answers(self) -> bool:
        return self.pactl("info", check=False).returncode == 0

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=child_env({"PULSE_SERVER": f"unix:{self.server}"}),
                              capture_output=True, text=True, check=check, timeout=10)

    @staticmethod
    def _sink_args(name: str) -> str:
        return f"module-null-sink sink_name={name} rate=48000 channels=2"

    @staticmethod
    def _sine_args(name: str, freq: int) -> str:
        return f"module-sine sink={name} frequency={freq}"

    @staticmethod
    def _pacer_args(name: str) -> str:
        # A null sink idles in 2-second blocks until someone records from it
        # with a low latency, so a freshly opened stream would wait up to 2 s
        # for its first samples. A 20 ms loopback keeps it ticking like a card.
        return f"module-loopback source={name}.monitor sink=null latency_msec=20 source_dont_move=true"

    def unplug(self, source: str) -> None:
        """The input stops delivering samples, as a pulled USB interface does.

        (Unloading its modules would not do: PulseAudio moves the recording
        stream to another source, which no real card does.)
        """
        self.pactl("suspend-sink", source, "1")

    def replug(self, source: str) -> None:
        self.pactl("suspend-sink", source, "0")

    async def stop(self) -> None:
        self._kill()

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def status(self) -> dict:
        return {"server": str(self.server), "sources": self.sources, "running": bool(self.proc and self.proc.poll() is None)}


def _die_with_parent() -> None:
    """In the child before exec: take PulseAudio down with the daemon, even on kill -9."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
