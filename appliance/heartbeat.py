"""Heartbeats: every long-running thread shows that it makes progress.

A thread opens its heartbeat with `beating(...)` around its main loop and calls
`beat()` each time round (a frame, a poll, a wait that timed out). The
supervisor's watch (supervisor/watch.py) reads them all: a thread the show
needs that has not beaten within its bound stops the systemd watchdog pings, so
the box is restarted and goes live again through its live intent; any other
stuck thread is a condition. A heartbeat lives exactly as long as its thread's
loop: a thread that has ended cleanly is not stuck.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()
_beating: dict[int, "Heartbeat"] = {}
_local = threading.local()


class Heartbeat:
    """One thread's progress. `show`: the show stops while it is stuck (media, the
    stream's sender, the recorder); otherwise a stuck thread is only reported.
    `disk`: the thread waits on the card; stuck inside the kernel, a restart would
    not free it (a process in uninterruptible sleep does not even exit) and would
    end the stream that still works, so that is reported, not restarted."""

    def __init__(self, name: str, bound: float, show: bool = False, disk: bool = False):
        self.name = name
        self.bound = float(bound)
        self.show = show
        self.disk = disk
        self.at = time.monotonic()
        self._allowed_until = 0.0
        self._hang_until = 0.0
        self.ident = threading.get_ident()
        self.native_id = threading.get_native_id()

    def beat(self) -> None:
        if self._hang_until:
            self._hang()
        self.at = time.monotonic()

    @contextmanager
    def allow(self, seconds: float) -> Iterator[None]:
        """A wait the thread makes on purpose and bounds itself (finalizing a recording,
        opening an encoder): not stuck for that long."""
        self._allowed_until = time.monotonic() + seconds
        try:
            yield
        finally:
            self._allowed_until = 0.0
            self.beat()

    def stuck_for(self, now: float) -> float:
        """Seconds past its bound without a beat (0: it is making progress)."""
        since = now - self.at
        if since <= self.bound or now < self._allowed_until:
            return 0.0
        return since

    def stack(self) -> str:
        frame = sys._current_frames().get(self.ident)
        return "".join(traceback.format_stack(frame)) if frame is not None else "(the thread is gone)\n"

    def in_kernel_wait(self) -> bool:
        """The thread sleeps uninterruptibly in the kernel (state D: a card that does not answer)."""
        try:
            with open(f"/proc/self/task/{self.native_id}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False
        return stat[stat.rfind(b")") + 2:][:1] == b"D"

    # --- simulated faults (the sim profile's "hang" action) ----------------------------

    def hang(self, seconds: float) -> None:
        """Block this thread inside its next beat for `seconds`, as a wedged call would."""
        self._hang_until = time.monotonic() + seconds

    def _hang(self) -> None:
        until, self._hang_until = self._hang_until, 0.0
        time.sleep(max(0.0, until - time.monotonic()))


def _name_os_thread(name: str) -> None:
    """The kernel's name for the thread too (15 bytes), so that `top -H`, `ps -L` and
    /proc/PID/task/*/comm say which of ours takes the CPU (Python names only its own).
    Never the main thread's: that name is the process's own, in ps and in the journal."""
    if threading.current_thread() is threading.main_thread():
        return
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write(name[:15])
    except OSError:
        pass


@contextmanager
def beating(name: str, bound: float, show: bool = False, disk: bool = False) -> Iterator[Heartbeat]:
    """The calling thread's heartbeat, registered while the block runs."""
    hb = Heartbeat(name, bound, show, disk)
    _name_os_thread(name)
    previous = getattr(_local, "current", None)
    with _lock:
        _beating[id(hb)] = hb
    _local.current = hb
    try:
        yield hb
    finally:
        _local.current = previous
        with _lock:
            _beating.pop(id(hb), None)


def current() -> Heartbeat | None:
    """The heartbeat of the calling thread, if it has one (for a bounded wait deep in a call)."""
    return getattr(_local, "current", None)


@contextmanager
def allowing(seconds: float) -> Iterator[None]:
    """`Heartbeat.allow` for the calling thread's heartbeat, if any."""
    hb = current()
    if hb is None:
        yield
        return
    with hb.allow(seconds):
        yield


def running() -> list[Heartbeat]:
    with _lock:
        return list(_beating.values())
