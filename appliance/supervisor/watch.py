"""The supervisor's look at every thread's heartbeat (appliance/heartbeat.py), four
times a second: a thread the show needs that is stuck makes the box unhealthy (the
service withholds WATCHDOG=1, so systemd restarts it); any other stuck thread, or the
recorder stuck on the card in the kernel, is a condition."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from appliance import conditions, heartbeat
from appliance.supervisor.state import Kind

log = logging.getLogger("appliance.supervisor.service")  # (the daemon's lines keep their source)

WATCH_EVERY = 0.25  # s between looks at the threads' heartbeats


class ThreadWatch:
    def __init__(self, post: Callable, watchdog_interval: Callable[[], float | None]):
        self.post = post
        self.watchdog_interval = watchdog_interval
        self.show_stuck: str | None = None  # why the show is frozen: the pings are withheld
        self._stuck: dict[int, str] = {}  # heartbeat -> its condition, while stuck

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_EVERY)
            self.look(time.monotonic())

    def look(self, now: float) -> None:
        still, show_stuck = set(), None
        for hb in heartbeat.running():
            since = hb.stuck_for(now)
            if not since:
                continue
            key = id(hb)
            still.add(key)
            # Stuck on the card, in the kernel: a restart would not free it (a process in
            # uninterruptible sleep does not even exit) and would end the stream that works.
            restart = hb.show and not (hb.disk and hb.in_kernel_wait())
            if restart and show_stuck is None:
                show_stuck = f"thread {hb.name} has made no progress within {hb.bound:g} s"  # (stable: logged on change)
            if key in self._stuck:
                continue
            condition = conditions.DISK_NOT_ANSWERING if hb.disk and not restart else conditions.thread_stuck(hb.name)
            self._stuck[key] = condition
            log.error("thread %s has made no progress for %.1f s (bound %g s)%s; it is at:\n%s", hb.name, since,
                      hb.bound, "" if restart else (": the show goes on without it" if not hb.show else
                                                    ": waiting on the disk, the stream goes on"),
                      hb.stack().rstrip(), extra={"THREAD": hb.name})
            self.post(Kind.CONDITION_SET, condition, "watchdog")
        for key in [k for k in self._stuck if k not in still]:
            condition = self._stuck.pop(key)
            log.info("%s: moving again", condition)
            if condition not in self._stuck.values():
                self.post(Kind.CONDITION_CLEARED, condition, "watchdog")
        if show_stuck and not self.watchdog_interval() and show_stuck != self.show_stuck:
            log.error("%s, and no systemd watchdog is set to restart the box", show_stuck)
        self.show_stuck = show_stuck
