"""Processes the daemon starts (the RTMP pusher, the encoder probes, mmcli, the
shutdown command): what they inherit from it, and what they do not."""

from __future__ import annotations

import os
import shutil

_OURS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def child_env(extra: dict | None = None) -> dict:
    """The environment for a process we start: without systemd's notify and
    watchdog variables, which are the daemon's alone (a child that speaks
    sd_notify, PulseAudio for one, would otherwise announce READY=1 for us)."""
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    env.update(extra or {})
    return env


def child_argv(argv: list[str]) -> list[str]:
    """The command line for a child that needs no capability (the RTMP pusher, the
    encoder probes, mmcli): where the daemon holds ambient capabilities (its unit's
    CAP_NET_RAW, for SO_BINDTODEVICE), setpriv clears them before the exec, so the
    child starts with none."""
    if _ambient_capabilities() and shutil.which("setpriv"):
        return ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--", *argv]
    return list(argv)


def _ambient_capabilities() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapAmb:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0
