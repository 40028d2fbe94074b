"""A serial device simulated on a pty pair.

Our code opens `slave_path` with pyserial exactly as it would /dev/ttyUSB0; the
simulator reads and writes the master side. Platform facts this handles:
the slave is put in raw mode at once (else the line discipline echoes and turns
CR into LF); one slave fd stays open in the harness (else reads on the master
fail with EIO whenever our code closes its port); closing the master is how a
test unplugs the device.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from typing import Callable

Responder = Callable[[bytes], bytes | None]


class PtyDevice:
    """Feeds bytes written by our code to `respond`, writes back what it returns.

    `baud` paces replies like a real line (10 bits a byte), so timing-sensitive
    code sees what it would on a 2400-baud UPS.
    """

    def __init__(self, respond: Responder | None = None, name: str = "pty-device", baud: int | None = None):
        self.respond = respond
        self.baud = baud
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self.master)
        os.set_blocking(self.master, False)  # a write to a reader that stopped reading must not hang us
        self.slave_path = os.ttyname(self._slave)
        self.received = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Send bytes to our code (paced at `baud` if set). While nobody reads, the
        line's buffer fills and the rest waits, until the device is unplugged."""
        with self._lock:
            if self.master < 0:
                return
            step = 1 if self.baud else len(data)
            for i in range(0, len(data), step):
                self._write_all(data[i:i + step])
                if self.baud:
                    time.sleep(10 / self.baud)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                select.select([], [self.master], [], 0.05)

    def _run(self) -> None:
        while not self._stop.is_set():
            fd = self.master
            if fd < 0:
                return
            try:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(fd, 4096)
            except OSError:
                return
            self.received += data
            if self.respond is not None:
                reply = self.respond(data)
                if reply:
                    self.write(reply)

    def unplug(self) -> None:
        """Close the master: our side sees the device vanish."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            if self.master >= 0:
                os.close(self.master)
                self.master = -1

    def close(self) -> None:
        self.unplug()
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
