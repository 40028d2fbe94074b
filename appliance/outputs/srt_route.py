"""Where the SRT output streams to: the PoP, its latency and secrets, and the bond
to it, kept registered while the box is READY so that GO goes live at once.

A bond takes a registration round trip per uplink, and the first packets wait
for it: about a second at GO when the bond was made at GO. The warm bond is the
same Bonder, made when the box becomes READY (keepalives only: about 10 small
datagrams a second per uplink) and taken over by GO when it is aimed at the PoP
the plan chooses; otherwise GO makes a new one. STOP hands it back, warm. Not
wanted (BOOTING, FAULT, the daemon exiting or powering off): it stops.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Callable

from appliance import hostnames
from appliance.hostnames import parse_srt_url
from appliance.transport.bond import Bonder
from appliance.transport.interfaces import resolve_uplinks

log = logging.getLogger(__name__)


class SrtRoute:
    """A mixin of SrtOutput's: the attributes it reads are SrtOutput's."""

    def _init_route(self) -> None:
        self.bonder: Bonder | None = None  # while it streams over a bond, or keeps it warm (uplinks/ reads its links)
        self._last_uplinks: dict[str, str] = {}
        self._warm = False  # the bond is wanted while not live
        self._route_lock = threading.Lock()  # keep_warm (the uplinks' thread) against start and stop (the media's)
        # The link policy's last (weights, standby), from the uplinks component: a new bond
        # obeys it from its first packet, not from the policy's next tick (a backup on standby).
        self.link_policy: Callable[[], tuple[dict, set] | None] = lambda: None
        self._aim(0)

    def where(self) -> str:
        pop = f" (PoP {self.pop.label})" if len(self.pops) > 1 else ""
        return f"srt://{hostnames.display((self.host, self.port))}" + pop + (" (bonded, SRTLA)" if self.cfg.bond else "")

    def live_bond(self) -> Bonder | None:
        """The bond while it carries a show (not while it is only kept warm)."""
        return self.bonder if self._accepting else None

    def keep_warm(self, wanted: bool) -> None:
        """Any thread but the loop's (it may join the old bond's thread): while READY the
        bond stays registered with the PoP GO would take, and follows a new plan."""
        if not self.cfg.bond:
            return
        with self._route_lock:
            self._warm = wanted
            self._rewarm()

    def _rewarm(self) -> None:
        """(Under the route lock.) Not live: the bond to the planned PoP, or none."""
        if self._accepting:
            return  # live: the show's bond is the show's
        plan = self.plan()
        index = self._planned(plan)
        if self.bonder is not None and (not self._warm or index != self.pop_index):
            self.bonder.stop()
            self.bonder = None
        if self._warm and self.bonder is None:
            self._aim(index, plan.get("latency_ms"))
            self._bond(resolve_uplinks(self.cfg.uplinks))
            log.info("stream: the bond to %s registers while READY: GO goes live at once", self.where(),
                     extra={"OUTPUT": self.name, "POP": self.pop.label})

    def _planned(self, plan: dict) -> int:
        return plan["pop"] if 0 <= plan["pop"] < len(self.pops) else 0

    def _take_route(self, plan: dict) -> None:
        """At GO (under the route lock): the planned PoP, through the warm bond if it is aimed there."""
        index = self._planned(plan)
        if self.bonder is not None and index != self.pop_index:
            self.bonder.stop()
            self.bonder = None
        self._aim(index, plan.get("latency_ms"))
        if self.cfg.bond and self.bonder is None:
            self._bond(resolve_uplinks(self.cfg.uplinks))

    def _leave_route(self) -> None:
        """At STOP (under the route lock): the bond goes back to warm (to the planned PoP,
        should the show have moved to another), or stops."""
        self.caller = None  # it pointed at the bond's port
        if self.cfg.bond:
            self._rewarm()
        elif self.bonder is not None:
            self.bonder.stop()
            self.bonder = None

    def _bond(self, uplinks: dict[str, str] | None = None) -> None:
        """A bond to the PoP aimed at, over these uplinks (None: those it follows now)."""
        if uplinks is not None:
            self._last_uplinks = uplinks
        secret = self.stream.relay_secret.get_secret_value().encode() or None
        self.bonder = Bonder((self.host, self.port), self._last_uplinks, secret)
        if (policy := self.link_policy()) is not None:
            self.bonder.set_policy(*policy)
        self.bonder.start()
        self.watch.aimed(self.pop_index, time.monotonic())

    def move_to(self, name: str) -> None:
        """The operator's command: stream through this PoP from now on (any thread)."""
        if self.live_bond() is None:
            raise ValueError("the stream is not live, or not bonded: GO takes the pre-flight's choice")
        self.watch.ask(name)

    def _next_pop(self, why: str, index: int) -> None:
        """To another PoP: a new bond and SRT connection; the video resumes on a keyframe."""
        old = self.pop.label
        self.bonder.stop()
        if self.caller is not None:
            self.caller.close()
            self.caller = None
        if self.connected:
            self.reconnects += 1
        self.connected = False
        self._aim(index, self.latency_ms)
        self._bond()
        self.watch.moves += 1
        log.warning("stream: leaving PoP %s (%s): streaming through %s", old, why, self.pop.label,
                    extra={"OUTPUT": self.name, "POP": self.pop.label, "EVENT": "pop_moved"})

    def _aim(self, index: int, latency_ms: int | None = None) -> None:
        """At the PoP to stream to: its address, its secrets, its latency ("auto": as planned)."""
        self.pop_index, self.pop = index, self.pops[index]
        self.stream = self.cfg.at(self.pop)
        if self.stream.latency_ms == "auto":
            self.stream = self.stream.model_copy(update={"latency_ms": latency_ms or self.stream.latency_max_ms})
        self.host, self.port, self.query = parse_srt_url(self.stream.url)
        self.latency_ms = int(self.query.get("latency", self.stream.latency_ms))
        if self.follow.limits is not None:  # (the ABR judges its buffer against the latency)
            self.follow.limits = replace(self.follow.limits, latency_ms=self.latency_ms)

    def set_uplinks(self, present: dict[str, str]) -> None:
        """Interfaces come and go (a modem re-attaching): the bond follows, live or warm.
        The uplinks component, which watches the interfaces, calls this (any thread)."""
        bonder = self.bonder
        if bonder is None:
            return
        if present != self._last_uplinks:
            log.info("stream: uplinks changed: %s", ", ".join(f"{n} {a}" for n, a in present.items()) or "none")
            self._last_uplinks = present
            bonder.set_uplinks(present)
