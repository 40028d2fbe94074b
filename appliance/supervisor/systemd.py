"""systemd integration: sd_notify (readiness, status, watchdog) and journald logs.

python-systemd provides notify() and JournalHandler but no watchdog helper: the
interval and the PID check come from the environment, as sd_watchdog_enabled(3)
describes. (What a child process may inherit is appliance/children.py's.)
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)


def under_systemd() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))


class Notifier:
    """sd_notify that never raises: a dead notify socket must not kill the show."""

    def __init__(self):
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notify = None
        self._failed = False
        if self.enabled:
            try:
                from systemd import daemon
            except ImportError:
                log.warning("NOTIFY_SOCKET is set but python-systemd is missing: no readiness or watchdog")
                self.enabled = False
            else:
                self._notify = daemon.notify

    def send(self, *lines: str) -> bool:
        if not self.enabled:
            return False
        try:
            ok = self._notify("\n".join(lines))
        except OSError as e:
            ok = False
            if not self._failed:
                log.error("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), e)
        else:
            if self._failed and ok:
                log.info("sd_notify works again")
        self._failed = not ok
        return ok

    @staticmethod
    def watchdog_interval() -> float | None:
        """Seconds between WATCHDOG=1 pings (half the timeout), or None if off."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec:
            return None
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None
        try:
            value = int(usec)
        except ValueError:
            log.error("WATCHDOG_USEC=%r is not a number: watchdog pings disabled", usec)
            return None
        return value / 2e6 if value > 0 else None


class FieldsFormatter(logging.Formatter):
    """Plain-text logs that still show the structured (UPPER_CASE) fields."""

    _std = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record):
        text = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k.isupper() and k not in self._std}
        if fields:
            text += "  " + " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
        return text


def setup_logging(level: str = "info") -> None:
    """journald (with structured fields) under systemd, plain stderr otherwise."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler | None = None
    if under_systemd():
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="appliance")
            handler.setFormatter(logging.Formatter("%(message)s"))
        except ImportError:
            handler = None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(levelname)s %(name)s: %(message)s" if under_systemd() else "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
        handler.setFormatter(FieldsFormatter(fmt, "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level.upper())
