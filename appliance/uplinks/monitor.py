"""The uplinks component: link states, health, policy, data usage.

Twice a second it gathers what is known about each uplink (the interface from
psutil, also handed to the bonding sender so that uplinks join and leave live;
RTT / NAKs / bytes from the bonding sender while streaming; the radio from the
modem source), asks the pure policy for weights and the standby set,
hands them to the bonding sender, and reports conditions for the panel (link
down, standby, all down). Data usage is counted per link and kept across
restarts in the state directory, so a data cap holds over a month of shows.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from appliance import conditions as C
from appliance.config import Config
from appliance.configshow import redact_url
from appliance.fsutil import atomic_write
from appliance.uplinks.policy import (Decision, FailoverMemory, HealthBands, LinkView, LossMeter, PolicyConfig, decide,
                                      health)

if TYPE_CHECKING:
    from appliance.outputs.srt import SrtOutput

log = logging.getLogger(__name__)

TICK = 0.5
RADIO_FRESH = 15.0
SAVE_EVERY = 10.0
SHARE_WINDOW = 3.0  # s of traffic a link's share is taken over
CARRIES_FROM = 0.01  # a link with at least this share of the traffic carries the show


class UplinkMonitor:
    name = "uplinks"

    def __init__(self, config: Config, report: Callable[[str, bool], None], srt_output: SrtOutput | None = None,
                 state_dir: Path | None = None, post_event: Callable | None = None):
        self.config = config
        self.report = report
        self.srt = srt_output
        if srt_output is not None:
            srt_output.link_policy = lambda: (self.decision.weights, self.decision.standby) if self.decision else None
        self.usage_path = state_dir / "usage.json" if state_dir else None
        self.preflight_path = state_dir / "preflight.json" if state_dir else None
        self.last_preflight: dict | None = None
        self.last_probe: dict | None = None  # uplinks/quick_probe.py: the PoPs' RTT, without a pre-flight
        self._probe: asyncio.Task | None = None
        self._preflight_running = False
        self.modem = None
        self.memory = FailoverMemory()
        self.policy = PolicyConfig(config.links.policy, config.links.primary, config.links.hold_seconds)
        self.caps = {n: mb * 1_000_000 for n, mb in config.links.caps_mb.items()}
        self.usage: dict[str, int] = {}
        self.decision: Decision | None = None
        self.views: dict[str, LinkView] = {}
        self.scores: dict[str, dict] = {}
        self._last_bytes: dict[str, int] = {}
        self._bonder_id = None
        self._base_rtt: dict[str, float] = {}
        self._loss = LossMeter()
        self._active_conditions: set[str] = set()
        self._health_bands = HealthBands()
        self._saved_at = 0.0
        self._save_due = False  # the loop saves the data usage (in a thread) after this tick
        self._save_failing = False
        self._streaming_since: float | None = None
        self._task: asyncio.Task | None = None
        self._sent: list[tuple[float, dict[str, int]]] = []  # (time, bytes each link sent that tick), SHARE_WINDOW
        self.shares: dict[str, float] = {}  # each link's part of the traffic, 0..1
        self.on_facts: Callable[[frozenset[str]], None] = lambda facts: None
        # The stream's bond kept registered while not live (outputs/srt_route.py): the
        # composition root says when it is wanted, the loop applies it off the loop.
        self.warm_bond, self._warm_applied = False, False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._load_usage()
        # The last pre-flight still chooses the PoP after a restart (while it is fresh).
        self.last_preflight = await asyncio.to_thread(self._saved_preflight)
        m = self.config.modem
        if m.source == "at" and self.config.serial.modem_at:
            from appliance.uplinks.modem import ModemAt

            self.modem = ModemAt("modem", self.config.serial.modem_at, m.poll_seconds)
        elif m.source == "modemmanager":
            from appliance.uplinks.modem import ModemManagerSource

            self.modem = ModemManagerSource("modem", m.modemmanager_id, m.poll_seconds)
        if self.modem is not None:
            self.modem.start()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="uplink-policy")
        log.info("uplinks: policy %s%s, modem %s", self.policy.mode,
                 f" (primary {self.policy.primary})" if self.policy.mode == "failover" else "",
                 f"{m.source} for {m.interface or '?'}" if self.modem else "none")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._probe is not None:  # (its thread finishes within quick_probe.SECONDS)
            await asyncio.gather(self._probe, return_exceptions=True)
        if self.modem is not None:
            await asyncio.to_thread(self.modem.stop)
        if self.srt is not None:
            await asyncio.to_thread(self.srt.keep_warm, False)
        await asyncio.to_thread(self._save_usage)

    def status(self) -> dict:
        d = self.decision
        links = {}
        for name, v in self.views.items():
            links[name] = {"present": v.present, "state": v.state or ("idle" if v.present else "absent"),
                           "rtt_ms": v.rtt_ms, "loss_percent": round(v.loss * 100, 2),
                           "used_mb": round(self.usage.get(name, 0) / 1e6, 1),
                           "cap_mb": None if v.cap_bytes is None else v.cap_bytes // 1_000_000,
                           **self.scores.get(name, {}),
                           "standby": bool(d and name in d.standby),
                           "share_percent": round(self.shares.get(name, 0.0) * 100, 1),
                           **({"radio": v.radio.as_dict()} if v.radio is not None else {})}
        return {"policy": self.policy.mode, **({"active": d.active} if d and d.active else {}), "links": links,
                **({"modem": self.modem.status()} if self.modem is not None else {})}

    # --- the loop ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                present = await asyncio.to_thread(self._present)
                self.tick(time.monotonic(), present)
                if self.srt is not None and self.warm_bond != self._warm_applied:
                    self._warm_applied = self.warm_bond
                    await asyncio.to_thread(self.srt.keep_warm, self.warm_bond)
                if (self._probe is None or self._probe.done()) and self._probe_due(time.time()):
                    self._probe = asyncio.get_running_loop().create_task(self._quick_probe(present), name="quick-probe")
                if self._save_due:
                    self._save_due = False
                    await asyncio.to_thread(self._save_usage)  # an fsync: never on the loop
            except Exception:
                log.exception("uplink policy tick failed")
            await asyncio.sleep(TICK)

    def _present(self) -> dict[str, str]:
        from appliance.transport.interfaces import resolve_uplinks

        return resolve_uplinks(self.config.stream.uplinks)

    def tick(self, now: float, present: dict[str, str]) -> None:
        bond = self.srt.live_bond() if self.srt is not None else None  # while streaming over a bond
        if self.srt is not None:
            self.srt.set_uplinks(present)  # the one place the interfaces are watched (the warm bond follows too)
        # The links as the bond sees them, warm (READY) or live: the policy decides on them
        # before GO, so that GO's first packets already obey it (a backup on standby).
        seen = self.srt.bonder if self.srt is not None else None
        links = seen.link_stats() if seen is not None else {}
        if seen is not self._bonder_id:
            self._bonder_id, self._last_bytes, self._loss = seen, {}, LossMeter()
        views, delta = {}, {}
        # A named uplink that is missing altogether (the modem re-enumerating) is down, not absent from view.
        configured = {e.partition("@")[0] for e in self.config.stream.uplinks if e != "auto"}
        for name in sorted(set(present) | set(links) | configured):
            b = links.get(name)
            v = LinkView(name, present=name in present, state=b.state if b else None,
                         rtt_ms=b.rtt_ms if b else None,
                         cap_bytes=self.caps.get(name))
            if v.rtt_ms is not None:
                # The best RTT creeps up 1 %/s, so a route that got slower is not held
                # against the link for ever (belacoder's rtt_min does the same).
                self._base_rtt[name] = min(self._base_rtt.get(name, v.rtt_ms) * 1.005, v.rtt_ms)
                v.base_rtt_ms = self._base_rtt[name]
            if b is not None:
                v.loss = self._loss.update(name, now, b.naks, b.packets)
                sent = b.bytes
                delta[name] = max(0, sent - self._last_bytes.get(name, 0))
                self.usage[name] = self.usage.get(name, 0) + delta[name]
                self._last_bytes[name] = sent
            v.used_bytes = self.usage.get(name, 0)
            if self.modem is not None and name == self.config.modem.interface and self.modem.answering:
                v.radio = self.modem.radio
                if self.modem.cell_changed_at:
                    v.since_cell_change = now - self.modem.cell_changed_at
            views[name] = v
        self.views = views
        self.decision = d = decide(list(views.values()), self.policy, self.memory, now)
        for name, v in views.items():
            h = health(v)
            self.scores[name] = {"health": h.score, "why": h.reasons}
            self._log_health(name, h, now)
        for event in d.events:
            log.warning("uplinks: %s", event, extra={"EVENT": "failover"})
        for name in d.standby:
            if name in self.caps and views[name].used_bytes >= self.caps[name] and f"cap:{name}" not in self._active_conditions:
                self._active_conditions.add(f"cap:{name}")
                log.warning("uplinks: %s reached its data cap (%d MB): on standby", name, self.caps[name] // 1_000_000,
                            extra={"EVENT": "data_cap", "LINK": name})
        if seen is not None:
            seen.set_policy(d.weights, d.standby)
        if bond is None:
            self._streaming_since = None
        elif self._streaming_since is None:
            self._streaming_since = now
        # Links register in the first second of a stream: judge them after that.
        self._conditions(views, d, streaming=bond is not None and now - self._streaming_since > 3.0)
        self._share(now, delta, streaming=bond is not None)
        self._tell_facts(views, streaming=bond is not None)
        if now - self._saved_at >= SAVE_EVERY:
            self._saved_at = now
            self._save_due = True

    def _log_health(self, name: str, h, now: float) -> None:
        band = self._health_bands.update(name, h.score, now)
        if band is not None:
            (log.info if band == "good" else log.warning)(
                "uplinks: %s health %s (%.2f)%s", name, band, h.score, f": {', '.join(h.reasons)}" if h.reasons else "",
                extra={"LINK": name})

    def _share(self, now: float, delta: dict[str, int], streaming: bool) -> None:
        """Each link's part of the bytes sent over the last SHARE_WINDOW seconds."""
        if not streaming:
            self._sent, self.shares = [], {}
            return
        self._sent = [(t, d) for t, d in self._sent if now - t < SHARE_WINDOW] + [(now, delta)]
        totals: dict[str, int] = {}
        for _, d in self._sent:
            for name, n in d.items():
                totals[name] = totals.get(name, 0) + n
        whole = sum(totals.values())
        self.shares = {name: n / whole for name, n in totals.items()} if whole else {}

    def _tell_facts(self, views: dict[str, LinkView], streaming: bool) -> None:
        """The panel's link LEDs: which roles carry the show (READY: which are up and ready).
        Told every tick; the panel redraws only when they change."""
        facts = set()
        for name, v in views.items():
            role = self._role(name)
            if not streaming:
                if v.present:
                    facts.add(C.link_fact(role, "carrying"))
            elif v.state == "up" and self.shares.get(name, 0.0) >= CARRIES_FROM:
                poor = self._health_bands.band.get(name) == "poor"
                facts.add(C.link_fact(role, "poor" if poor else "carrying"))
        self.on_facts(frozenset(facts))

    def _role(self, name: str) -> str:
        return "cell" if name == self.config.modem.interface else "wired"

    def _conditions(self, views: dict[str, LinkView], d: Decision, streaming: bool) -> None:
        wanted: set[str] = set()
        if streaming:
            for name, v in views.items():
                if not v.present or v.state == "dead":
                    wanted.add(C.link_down(self._role(name)))
                elif name in d.standby and v.cap_bytes is not None and v.used_bytes >= v.cap_bytes:
                    # A planned failover backup is not a problem; a link that stopped at its cap is.
                    wanted.add(C.link_standby(self._role(name)))
            if views and not any(v.state == "up" for v in views.values()):
                wanted.add(C.ALL_LINKS_DOWN)
        current = {c for c in self._active_conditions if not c.startswith("cap:")}
        for c in wanted - current:
            self.report(c, True)
        for c in current - wanted:
            self.report(c, False)
        self._active_conditions = wanted | {c for c in self._active_conditions if c.startswith("cap:")}

    # --- data usage, kept across restarts ----------------------------------------------------

    def _load_usage(self) -> None:
        if self.usage_path is None or not self.usage_path.exists():
            return
        try:
            data = json.loads(self.usage_path.read_text())
            self.usage = {str(k): int(v) for k, v in data.get("bytes", {}).items()}
        except (OSError, ValueError, AttributeError, TypeError) as e:
            log.warning("uplinks: %s unreadable (%s): data usage starts from zero", self.usage_path, e)

    def _save_usage(self) -> None:
        """Blocking (a thread): logged when it starts failing and when it works again."""
        if self.usage_path is None:
            return
        try:
            self.usage_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.usage_path, json.dumps({"bytes": dict(self.usage)}).encode())
        except OSError as e:
            if not self._save_failing:
                log.warning("uplinks: cannot save data usage to %s: %s", self.usage_path, e)
            self._save_failing = True
            return
        if self._save_failing:
            log.info("uplinks: data usage saved again to %s", self.usage_path)
        self._save_failing = False

    def reset_usage(self, link: str | None = None) -> None:
        """(The caller saves: async_reset_usage, in a thread.)"""
        for name in list(self.usage) if link is None else [link]:
            self.usage[name] = 0
        self._active_conditions = {c for c in self._active_conditions
                                   if not (c.startswith("cap:") and (link is None or c == f"cap:{link}"))}

    async def async_reset_usage(self, req: dict) -> dict:
        """The control command: a new billing period on a metered SIM. A link that
        stopped at its cap carries traffic again at the next tick."""
        link = req.get("link")
        known = sorted(set(self.usage) | set(self.caps) | set(self.views))
        if link is not None and not isinstance(link, str):
            return {"ok": False, "error": f"link must be an uplink's name, not {link!r}"}
        if link is not None and link not in known:
            hint = difflib.get_close_matches(link, known, n=1)
            return {"ok": False, "error": f"no uplink {link!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                    + f" (known: {', '.join(known) or 'none'})"}
        was = {name: round(self.usage.get(name, 0) / 1e6, 1) for name in ([link] if link else known)}
        self.reset_usage(link)
        await asyncio.to_thread(self._save_usage)
        log.warning("uplinks: data usage reset: %s", ", ".join(f"{n} (was {mb} MB)" for n, mb in was.items()) or "none",
                    extra={"EVENT": "usage_reset"})
        return {"ok": True, "reset_mb": was}

    # --- pre-flight ----------------------------------------------------------------------------

    async def async_preflight(self, req: dict, busy: Callable[[], str | None]) -> dict:
        """The control command: refused while a show is on (it would compete with it)."""
        from appliance.uplinks import preflight

        why = busy()
        if why:
            return {"ok": False, "error": f"pre-flight runs before the show: {why}"}
        if not self.config.stream.enabled:
            return {"ok": False, "error": "pre-flight needs [stream] enabled with a url (the relay or ingest to test against)"}
        try:
            seconds = float(req.get("seconds", 12))
        except (TypeError, ValueError):
            return {"ok": False, "error": "preflight: seconds must be a number"}
        if not 4 <= seconds <= 60:
            return {"ok": False, "error": "preflight: seconds must be between 4 and 60"}
        if self._preflight_running:
            return {"ok": False, "error": "a pre-flight is already running"}
        self._preflight_running = True
        try:
            links = await asyncio.to_thread(self._present)
            log.info("preflight: %s against %s, %.0f s", ", ".join(links) or "no uplinks",
                     ", ".join(redact_url(p.url) for p in self.config.stream.pops()), seconds)
            report = await asyncio.to_thread(preflight.run, self.config, links, seconds, self._radio_of)
        finally:
            self._preflight_running = False
        self.last_preflight = report
        if self.preflight_path is not None:
            try:
                await asyncio.to_thread(atomic_write, self.preflight_path, json.dumps(report, indent=1).encode())
            except OSError as e:
                log.warning("preflight: cannot save to %s: %s", self.preflight_path, e)
        log.info("preflight: %s", report["verdict"], extra={"EVENT": "preflight", "VERDICT": report["verdict"]})
        if self.srt is not None and self._warm_applied:
            await asyncio.to_thread(self.srt.keep_warm, True)  # to the PoP it chose
        return {"ok": True, "preflight": report}

    def _radio_of(self, name: str) -> dict:
        """The modem's figures for pre-flight: its last answer, if it came in the last
        RADIO_FRESH seconds (a poll or two lost while the dry streams load the box)."""
        m = self.modem
        if m is not None and name == self.config.modem.interface and m.updated \
                and (m.answering or time.monotonic() - m.updated < RADIO_FRESH):
            return m.radio.as_dict()
        return {}

    def _saved_preflight(self) -> dict | None:
        if self.preflight_path is None or not self.preflight_path.exists():
            return None
        try:
            p = json.loads(self.preflight_path.read_text())
        except (OSError, ValueError):
            return None
        return p if isinstance(p, dict) else None

    def stream_plan(self) -> dict:
        """Which PoP GO streams to and why, and an "auto" latency (the SRT output asks, at GO)."""
        from appliance.uplinks.preflight import plan

        return plan(self.last_preflight, self.config.stream, time.time(), self.last_probe)

    def _probe_due(self, now: float) -> bool:
        """READY (the bond kept warm, not live), bonded to more than one PoP, no fresh
        pre-flight, and no probe in the last quick_probe.EVERY seconds."""
        from appliance.uplinks import preflight, quick_probe

        s = self.config.stream
        if self.srt is None or not s.bond or len(self.srt.pops) < 2 or not self._warm_applied:
            return False
        if self.srt.live_bond() is not None or self._preflight_running:
            return False
        if preflight.is_fresh(self.last_preflight, [p.label for p in self.srt.pops], now):
            return False
        return self.last_probe is None or now - self.last_probe["at"] >= quick_probe.EVERY

    async def _quick_probe(self, present: dict[str, str]) -> None:
        from appliance.uplinks import quick_probe

        try:
            result = await asyncio.to_thread(quick_probe.probe, self.config, present)
        except Exception:  # noqa: BLE001 - a bug of ours: no choice this time; the next probe tries again
            log.exception("uplinks: the quick probe failed")
            self.last_probe = {"at": time.time(), "chosen": "", "pops": []}
            return
        self.last_probe = result
        figures = ", ".join(f"{p['pop']} " + ("/".join("-" if f is None else f"{f['rtt_ms']:g}" for f in p["links"].values())
                                              or "-") + " ms" for p in result["pops"])
        log.info("uplinks: quick probe of the PoPs (RTT per uplink): %s: %s is the nearest", figures, result["chosen"],
                 extra={"EVENT": "quick_probe"})
        await asyncio.to_thread(self.srt.keep_warm, self._warm_applied)  # to the PoP it chose

    def session_record(self) -> dict:
        """For the session manifest: the last pre-flight, if it was today's, and the stream's
        plan (its PoP, an "auto" latency and their reasons), as GO takes them."""
        p = self.last_preflight or self._saved_preflight()
        out = {"stream_plan": self.stream_plan()} if self.config.stream.enabled else {}
        if p and time.time() - p.get("at", 0) < 12 * 3600:
            out["preflight"] = p
        return out
