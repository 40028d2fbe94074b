"""While live, one line a minute in the journal: what `appliance status` would say,
in brief (appliance/statusview.py). Everything else a live show logs is a change of
state or a fault; the steady figures come here, summed up, not line by line."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from appliance.statusview import one_line
from appliance.supervisor.state import LIVE_STATES as _LIVE

log = logging.getLogger(__name__)

EVERY = 60.0
LIVE_STATES = tuple(s.value for s in _LIVE)


class LiveSummary:
    name = "summary"

    def __init__(self, status: Callable[[], dict], every: float = EVERY):
        self.status_of = status
        self.every = every
        self.lines = 0
        self._task: asyncio.Task | None = None
        self._moves: int | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="live-summary")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def status(self) -> dict:
        return {"every_seconds": self.every, "lines": self.lines}

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                s = self.status_of()
                if s["state"] not in LIVE_STATES:
                    self._moves = None
                    continue
                srt = s["components"].get("media", {}).get("outputs", {}).get("srt") or {}
                moves = (srt.get("abr") or {}).get("moves")
                delta = None if moves is None or self._moves is None else moves - self._moves
                self._moves = moves
                log.info("live: %s", one_line(s, delta), extra={"SUMMARY": "1"})
                self.lines += 1
            except Exception:  # a bug in a summary must not end the show
                log.exception("live summary failed")
