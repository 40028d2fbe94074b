"""The supervisor service: one asyncio loop around the pure state machine.

Components start in a fixed order and stop in reverse, in a `finally`. One that
fails to start is reported (status, log, a condition the panel shows) and the
others keep running: degraded, not dead.

Threads (gpiozero callbacks, media, serial readers) never touch the state: they
`post()` events, which the loop applies one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from appliance import __version__
from appliance import conditions
from appliance.conditions import component_failed
from appliance.config import Config
from appliance.paths import runtime_dir, state_dir
from appliance.errors import AlreadyRunning
from appliance.supervisor import commands, poweroff
from appliance.supervisor.control import SOCKET_NAME, ControlServer
from appliance.supervisor.persist import StateStore
from appliance.supervisor.state import Action, Event, Kind, Snapshot, step
from appliance.supervisor.systemd import Notifier
from appliance.supervisor.watch import ThreadWatch

log = logging.getLogger(__name__)

# How long outputs get to finalize (close and fsync the recording) on a stop.
STOP_TIMEOUT = 8.0
SAVE_RETRY = 10.0  # s between attempts to save the live intent after a failed write


class Component(Protocol):
    """Anything the supervisor starts and stops: panel, control socket, power ..."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict: ...


class LivePart(Protocol):
    """Something with a live mode, started on GO and stopped on STOP: the media pipeline,
    whose live mode runs its network outputs (MediaPipeline.outputs)."""

    name: str

    async def start_live(self) -> None: ...

    async def stop_live(self) -> None: ...


@dataclass
class ComponentRecord:
    component: Any
    state: str = "pending"  # pending | running | failed | stopped
    error: str = ""


@dataclass
class Service:
    config: Config
    profile_name: str
    sim: bool = False
    # Extra components (added by later capabilities) in their start order.
    components: list = field(default_factory=list)
    live_parts: list[LivePart] = field(default_factory=list)  # in their start order

    def __post_init__(self):
        self.snapshot = Snapshot()
        self.since = time.time()
        self.started = time.monotonic()
        self.notifier = Notifier()
        self.store = StateStore(state_dir(self.config))
        self.control_path = runtime_dir(self.config) / SOCKET_NAME
        self.records: dict[str, ComponentRecord] = {}
        self.listeners: list[Callable[[Snapshot, Snapshot], None]] = []
        # Run after the outputs are finalized, before the shutdown command (e.g. tell the UPS).
        self.before_power_off: list[Callable[[str], Awaitable[None]]] = []
        # Simulated device faults, registered by the sim components (sim profile only).
        self.sim_actions: dict[str, Callable[[dict], object]] = {}
        # Commands a component adds (preflight): name -> async handler(request) -> answer.
        self.commands: dict[str, Callable[[dict], Awaitable[dict]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Event] | None = None
        self._busy_since: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self._outputs_task: asyncio.Task | None = None
        self._failed_outputs: list[str] = []
        self._unsaved: str | None = None  # the condition while the live intent cannot be saved
        self._unsaved_intent: bool | None = None
        self._last_ignored: tuple[Event, str] | None = None
        self._threads = ThreadWatch(self.post, self.notifier.watchdog_interval)
        self.power_off: dict | None = None
        self.last_stop: dict = {}  # what the last stop of the outputs did: finalized, or why not
        self._exit: asyncio.Event | None = None

    # --- events ---------------------------------------------------------------

    def post(self, kind: Kind, reason: str = "", source: str = "") -> None:
        """Queue an event; safe from any thread."""
        event = Event(kind, reason, source)
        loop = self._loop
        if loop is None or loop.is_closed():
            log.warning("event %s from %s dropped: the service is not running", kind.value, source or "?")
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._queue.put_nowait(event)
        else:
            loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def _dispatch(self) -> None:
        while True:
            event = await self._queue.get()
            self._busy_since = time.monotonic()
            try:
                await self._apply(event)
            except Exception:
                log.exception("handling event %s failed", event.kind.value)
            finally:
                self._busy_since = None

    async def _apply(self, event: Event) -> None:
        before = self.snapshot
        result = step(before, event)
        after = result.snapshot
        who = f" from {event.source}" if event.source else ""
        if result.ignored:
            # A condition reported that was already so changes nothing (every GO clears the
            # recorder's last-session conditions): DEBUG. A GO or STOP refused is for the tech.
            quiet = event.kind in (Kind.CONDITION_SET, Kind.CONDITION_CLEARED)
            (log.debug if quiet else log.info)("%s%s ignored: %s", event.kind.value, who, result.ignored)
            self._last_ignored = (event, result.ignored)
        self.snapshot = after
        if after.state is not before.state:
            self.since = time.time()
            log.info(
                "state %s -> %s (%s%s%s)", before.state.value, after.state.value, event.kind.value,
                f": {event.reason}" if event.reason else "", who,
                extra={"STATE": after.state.value, "PREVIOUS_STATE": before.state.value, "EVENT": event.kind.value},
            )
        elif after.conditions != before.conditions:
            added, cleared = after.conditions - before.conditions, before.conditions - after.conditions
            for c in sorted(added):
                log.warning("condition: %s", c, extra={"CONDITION": c})
            for c in sorted(cleared):
                log.info("condition cleared: %s", c, extra={"CONDITION": c})
        for action in result.actions:
            await self._do(action)
        if after != before:
            self.notifier.send(f"STATUS={self.summary()}")
            for listener in list(self.listeners):
                try:
                    listener(before, after)
                except Exception:
                    log.exception("state listener %r failed", listener)

    async def _do(self, action: Action) -> None:
        if action is Action.REMEMBER_LIVE:
            await self._save_intent(True)
        elif action is Action.FORGET_LIVE:
            await self._save_intent(False)
        elif action is Action.START_OUTPUTS:
            self._run_outputs(self._start_outputs())
        elif action is Action.STOP_OUTPUTS:
            self._run_outputs(self._stop_outputs())
        elif action is Action.POWER_OFF:
            # Chained after any start/stop of the outputs: the recording is
            # finalized before the command runs, whatever state we were in.
            self._run_outputs(self._power_off(self.snapshot.power_off))

    async def _save_intent(self, live: bool) -> None:
        """The live intent on disk. A card remounted read-only, a full disk: the show goes
        on (a condition says so) and the write is tried again until it succeeds; an action
        that raised here would leave the next ones (START_OUTPUTS) undone."""
        try:
            await asyncio.to_thread(self.store.save, live_intent=live)
        except OSError as e:
            self._unsaved_intent = live
            if self._unsaved is None:
                self._unsaved = conditions.state_unsaved(e.strerror or str(e))
                log.error("%s (%s): the show goes on; trying again every %g s", self._unsaved, self.store.path,
                          SAVE_RETRY)
                self.post(Kind.CONDITION_SET, self._unsaved, "state")
                self._spawn(self._retry_save(), "state-save")
            return
        self._unsaved_intent = None

    async def _retry_save(self) -> None:
        while self._unsaved_intent is not None:
            await asyncio.sleep(SAVE_RETRY)
            if self._unsaved_intent is None:
                break
            try:
                await asyncio.to_thread(self.store.save, live_intent=self._unsaved_intent)
                self._unsaved_intent = None
            except OSError:
                continue
        log.info("state saved again in %s", self.store.path)
        self.post(Kind.CONDITION_CLEARED, self._unsaved, "state")
        self._unsaved = None

    def _run_outputs(self, coro: Awaitable) -> None:
        # Starting and stopping outputs can take seconds (an encoder probe, an
        # fsync): never inside the dispatcher, which must stay responsive. They
        # run one after another so a stop always follows the start it undoes.
        previous = self._outputs_task

        async def chained():
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await coro

        self._outputs_task = self._spawn(chained(), "outputs")

    async def _start_outputs(self) -> None:
        started, failed = [], []
        for out in self.live_parts:
            try:
                await out.start_live()
                started.append(out.name)
            except Exception as e:
                log.error("output %s failed to start: %s", out.name, e, extra={"OUTPUT": out.name})
                failed.append(f"{out.name}: {e}")
        if self.live_parts and not started:
            self.post(Kind.OUTPUTS_FAILED, "; ".join(failed), "outputs")
            return
        self._failed_outputs = [component_failed(f"output {f.split(':')[0]}") for f in failed]
        for condition in self._failed_outputs:
            self.post(Kind.CONDITION_SET, condition, "outputs")
        self.post(Kind.OUTPUTS_STARTED, ", ".join(started), "outputs")

    async def _stop_outputs(self) -> None:
        # A failed output is this session's problem: the next GO tries it afresh.
        for condition in self._failed_outputs:
            self.post(Kind.CONDITION_CLEARED, condition, "outputs")
        self._failed_outputs = []
        problems = []
        for out in reversed(self.live_parts):
            try:
                await asyncio.wait_for(out.stop_live(), STOP_TIMEOUT)
            except Exception as e:
                why = f"not stopped within {STOP_TIMEOUT:g} s" if isinstance(e, asyncio.TimeoutError) else str(e)
                problems.append(f"{out.name}: {why}")
                log.error("output %s did not stop cleanly: %s: the recording may not be finalized", out.name, why,
                          extra={"OUTPUT": out.name})
        # Said as it is: never a clean stop that was not made.
        self.last_stop = {"at": time.time(), "finalized": not problems, **({"problems": problems} if problems else {})}
        self.post(Kind.OUTPUTS_STOPPED, "; ".join(problems), "outputs")

    async def _power_off(self, reason: str) -> None:
        await poweroff.power_off(self, reason)

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- status ---------------------------------------------------------------

    def summary(self) -> str:
        s = self.snapshot
        parts = [s.state.value]
        if s.fault:
            parts.append(f"fault: {s.fault}")
        if s.conditions:
            parts.append("; ".join(sorted(s.conditions)))
        return " · ".join(parts)

    def status(self) -> dict:
        s = self.snapshot
        return {
            "state": s.state.value,
            "since": self.since,
            "summary": self.summary(),
            "conditions": sorted(s.conditions),
            "fault": s.fault,
            "live_intent": self.store.live_intent,
            "power_off": self.power_off or ({"reason": s.power_off, "pending": True} if s.power_off else None),
            **({"last_stop": self.last_stop} if self.last_stop else {}),
            "device": self.config.device.name,
            "profile": self.profile_name,
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self.started, 1),
            # Which threads are alive: a fault that ended one shows here (a sender gone for the show).
            "threads": sorted(t.name for t in threading.enumerate()),
            "components": {
                name: {"state": r.state, **({"error": r.error} if r.error else {}), **_safe_status(r.component)}
                for name, r in self.records.items()
            },
        }

    # --- control commands -------------------------------------------------------

    async def handle_command(self, req: dict) -> dict:
        """A control socket or API request (see supervisor/commands.py)."""
        return await commands.handle(self, req)

    async def _settle(self) -> None:
        for _ in range(50):
            if self._queue.empty() and self._busy_since is None:
                return
            await asyncio.sleep(0.01)

    # --- watchdog -------------------------------------------------------------------

    def unhealthy(self) -> str | None:
        """Why the box must be restarted, or None: the loop runs (we are in it), no event
        has been stuck in handling, and every thread the show needs makes progress."""
        busy = self._busy_since
        interval = self.notifier.watchdog_interval() or 5.0
        if busy is not None and time.monotonic() - busy >= interval:
            return "event handling is stuck"
        return self._threads.show_stuck

    async def _watchdog(self, interval: float) -> None:
        was = None
        while True:
            await asyncio.sleep(interval)
            why = self.unhealthy()
            if why is None:
                self.notifier.send("WATCHDOG=1")
            if why != was:
                if why is None:
                    log.info("watchdog: healthy again")
                else:
                    log.error("watchdog: %s: withholding WATCHDOG=1 (systemd restarts the box, which goes live "
                              "again by itself if it was)", why)
                was = why

    # --- lifecycle ------------------------------------------------------------------

    def request_exit(self) -> None:
        if self._exit is not None and not self._exit.is_set():
            self.notifier.send("STOPPING=1")
            log.info("stop requested: stopping live outputs and components")
            self.post(Kind.SHUTDOWN, source="signal")
            self._exit.set()

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._exit = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.request_exit)
        await asyncio.to_thread(self.store.load)
        if self.store.live_intent:
            log.info("live intent found in %s: will go live again once ready", self.store.path)
        dispatcher = self._spawn(self._dispatch(), "dispatch")
        self._spawn(self._threads.watch(), "thread-watch")
        interval = self.notifier.watchdog_interval()
        if interval:
            self._spawn(self._watchdog(interval), "watchdog")
            log.info("watchdog: pinging every %.1f s", interval)

        # The control socket first: it is also the guard against a second daemon.
        control = ControlServer(self.control_path, self.handle_command)
        components = [control, *self.components]
        started: list = []
        try:
            for comp in components:
                rec = self.records[comp.name] = ComponentRecord(comp)
                try:
                    await comp.start()
                except AlreadyRunning as e:
                    log.error("%s", e)
                    return 1
                except Exception as e:
                    rec.state, rec.error = "failed", str(e) or type(e).__name__
                    log.error("component %s failed to start: %s", comp.name, rec.error, extra={"COMPONENT": comp.name})
                    self.post(Kind.CONDITION_SET, component_failed(comp.name), "supervisor")
                    continue
                rec.state = "running"
                started.append(comp)
            self.post(Kind.BOOTED, source="supervisor")
            if self.store.live_intent:
                self.post(Kind.GO, source="resume")
            await self._settle()
            self.notifier.send("READY=1", f"STATUS={self.summary()}")
            log.info("ready in %.2f s (profile %s)", time.monotonic() - self.started, self.profile_name)
            await self._exit.wait()
            await self._settle()
            if self._outputs_task is not None:
                await asyncio.gather(self._outputs_task, return_exceptions=True)
            await self._settle()
        finally:
            for comp in reversed(started):
                try:
                    await asyncio.wait_for(comp.stop(), STOP_TIMEOUT)
                    self.records[comp.name].state = "stopped"
                except Exception as e:
                    log.error("component %s did not stop cleanly: %s", comp.name, e)
            dispatcher.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.remove_signal_handler(sig)
        log.info("stopped cleanly")
        return 0


_status_errors_logged: set[str] = set()


def _safe_status(component) -> dict:
    try:
        return component.status() or {}
    except Exception as e:
        # A bug of ours, in a part polled several times a second: its traceback once, in the journal.
        what = f"{type(component).__name__}: {type(e).__name__}: {e}"
        if what not in _status_errors_logged and len(_status_errors_logged) < 100:
            _status_errors_logged.add(what)
            log.exception("status of %s failed", type(component).__name__)
        return {"status_error": str(e)}
