"""A device polled in its own thread (power sources, the modem): opened with
backoff, polled on a fixed period, closed and reopened when it errors or
vanishes (an unplugged USB adapter: SerialException, EIO, node gone)."""

from __future__ import annotations

import time

from appliance import backoff
from appliance.errors import ApplianceError
from appliance.worker import Worker


class ReplyError(ApplianceError, RuntimeError):
    """A bad or missing reply: the line is there, the answer is not."""


class Polled(Worker):
    """Subclasses give `_open`, `_close`, `_poll` (-> updates or None) and what
    to do with `_good(updates)` and `_failed(why)`."""

    poll_seconds = 2.0
    # A poll is a few exchanges, each with its own reply timeout: longer than that is stuck.
    stuck_after = 30.0

    def _run(self) -> None:
        attempt, opened = 0, False
        while not self._stop.is_set():
            self.heartbeat.beat()
            started = time.monotonic()
            if not opened:
                try:
                    self._open()
                    opened, attempt = True, 0
                except Exception as e:  # SerialException, OSError, socket errors
                    self._failed(f"cannot open: {e}")
                    self._stop.wait(backoff.delay(attempt))
                    attempt += 1
                    continue
            try:
                updates = self._poll()
            except ReplyError as e:
                self._failed(str(e))
            except Exception as e:  # the port went away under us
                self._failed(f"I/O error: {e}")
                self._safe_close()
                opened = False
            else:
                if updates is not None:
                    self._good(updates)
            self._stop.wait(max(0.0, self.poll_seconds - (time.monotonic() - started)))

    def _safe_close(self) -> None:
        try:
            self._close()
        except Exception:
            pass

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def _poll(self) -> dict | None:
        raise NotImplementedError

    def _good(self, updates: dict) -> None:
        raise NotImplementedError

    def _failed(self, why: str) -> None:
        raise NotImplementedError


class SerialPort:
    """Mixin: `self.port` is a pyserial port on `self.port_path` while open."""

    baud = 9600
    port_path = ""
    port = None

    def _open(self) -> None:
        import serial

        port = serial.Serial(self.port_path, self.baud, timeout=0.1, exclusive=True)
        try:
            self._configure_lines(port)
        except OSError:
            pass  # ptys and some adapters have no modem-control lines
        port.reset_input_buffer()
        self.port = port
        self._after_open()

    def _configure_lines(self, port) -> None:
        pass

    def _after_open(self) -> None:
        pass

    def _close(self) -> None:
        if self.port is not None:
            port, self.port = self.port, None
            port.close()
