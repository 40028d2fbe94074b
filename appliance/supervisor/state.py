"""The appliance's state machine: pure, no I/O, so it can be tested exhaustively.

`step(snapshot, event)` returns the next snapshot and the actions the service
must carry out. The service does the I/O; this module only decides.

    BOOTING -> READY -> GOING_LIVE -> LIVE <-> DEGRADED -> STOPPING -> READY
    any of them -> FAULT on a fault; FAULT -> READY when it clears.

Conditions (a link down, no audio, on battery ...) are kept as a set of reasons
in every state: while live, any reason makes the state DEGRADED; in READY they
are shown on the panel but do not change the state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class State(enum.Enum):
    BOOTING = "BOOTING"
    READY = "READY"
    GOING_LIVE = "GOING_LIVE"
    LIVE = "LIVE"
    DEGRADED = "DEGRADED"
    STOPPING = "STOPPING"
    FAULT = "FAULT"


# On air (DEGRADED is live with conditions), and with the outputs running (going live too).
LIVE_STATES = (State.LIVE, State.DEGRADED)
OUTPUTS_RUNNING = (State.GOING_LIVE, *LIVE_STATES)


class Kind(enum.Enum):
    BOOTED = "booted"  # every component has been started (or reported failed)
    GO = "go"  # a request to go live (button, API, control socket, resume)
    STOP = "stop"  # a request to stop (button hold, API, control socket)
    OUTPUTS_STARTED = "outputs_started"  # the live outputs are running
    OUTPUTS_STOPPED = "outputs_stopped"  # the live outputs are finalized
    OUTPUTS_FAILED = "outputs_failed"  # no live output could run at all
    CONDITION_SET = "condition_set"  # a condition appeared (reason), in any state
    CONDITION_CLEARED = "condition_cleared"  # a condition cleared (reason)
    POWER_CRITICAL = "power_critical"  # battery critical: stop, finalize, power off (intent kept)
    POWER_OFF = "power_off"  # a deliberate safe shutdown (FN held): stop, finalize, power off
    POWER_OFF_FAILED = "power_off_failed"  # the shutdown command failed (reason): GO works again
    FAULT = "fault"  # the appliance cannot work (reason)
    FAULT_CLEARED = "fault_cleared"
    SHUTDOWN = "shutdown"  # the daemon is terminating (SIGTERM, Ctrl-C)


class Action(enum.Enum):
    START_OUTPUTS = "start_outputs"
    STOP_OUTPUTS = "stop_outputs"
    REMEMBER_LIVE = "remember_live"  # persist the live intent
    FORGET_LIVE = "forget_live"  # persist that the tech stopped the show
    POWER_OFF = "power_off"  # run the shutdown command (outputs are finalized by now)


@dataclass(frozen=True)
class Event:
    kind: Kind
    reason: str = ""
    source: str = ""


@dataclass(frozen=True)
class Snapshot:
    state: State = State.BOOTING
    conditions: frozenset[str] = field(default_factory=frozenset)
    fault: str = ""
    # Once the daemon is terminating nothing may start outputs again.
    exiting: bool = False
    # Why the box will power off once the outputs are finalized ("" = it won't).
    power_off: str = ""

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class Result:
    snapshot: Snapshot
    actions: tuple[Action, ...] = ()
    # Why nothing happened, when nothing did: the service logs it for the tech.
    ignored: str = ""


def _live_state(conditions: frozenset[str]) -> State:
    return State.DEGRADED if conditions else State.LIVE


def step(snap: Snapshot, event: Event) -> Result:
    s, k = snap.state, event.kind

    def go(state: State, *actions: Action, **changes) -> Result:
        return Result(replace(snap, state=state, **changes), tuple(actions))

    def ignore(why: str) -> Result:
        return Result(snap, (), why)

    # Conditions are tracked in every state; only live states change with them.
    if k in (Kind.CONDITION_SET, Kind.CONDITION_CLEARED):
        if k is Kind.CONDITION_SET:
            conditions = snap.conditions | {event.reason}
        else:
            conditions = snap.conditions - {event.reason}
        if conditions == snap.conditions:
            return ignore(f"condition {event.reason!r} already {'set' if k is Kind.CONDITION_SET else 'clear'}")
        state = _live_state(conditions) if snap.live else s
        return Result(replace(snap, state=state, conditions=conditions))

    if k is Kind.POWER_OFF_FAILED:
        # The box is still here: left where GO works (the service retries the command
        # while it is not live), not ignoring every press as "shutting down".
        if not snap.power_off:
            return ignore("not powering off")
        return Result(replace(snap, power_off=""))

    if k is Kind.SHUTDOWN:
        if snap.exiting:
            return ignore("already shutting down")
        # The live intent stays as it is: a reboot or restart is not the tech
        # stopping the show, so the box resumes by itself when it comes back.
        if s in OUTPUTS_RUNNING:
            return go(State.STOPPING, Action.STOP_OUTPUTS, exiting=True)
        return go(State.STOPPING if s is State.STOPPING else s, exiting=True)

    if k in (Kind.POWER_OFF, Kind.POWER_CRITICAL):
        # Deliberate (FN held) forgets the live intent; a dying battery keeps
        # it, so the show resumes by itself when power comes back.
        why = event.reason or k.value
        forget = (Action.FORGET_LIVE,) if k is Kind.POWER_OFF else ()
        if snap.power_off:
            return ignore(f"already powering off ({snap.power_off})")
        if s in OUTPUTS_RUNNING:
            return go(State.STOPPING, *forget, Action.STOP_OUTPUTS, power_off=why)
        if s is State.STOPPING:
            # Outputs are already being finalized: power off when they are.
            return go(State.STOPPING, *forget, power_off=why)
        return go(s, *forget, Action.POWER_OFF, power_off=why)

    if k is Kind.FAULT:
        if s in OUTPUTS_RUNNING:
            return go(State.FAULT, Action.STOP_OUTPUTS, fault=event.reason)
        return go(State.FAULT, fault=event.reason)

    if s is State.BOOTING:
        if k is Kind.BOOTED:
            return go(State.READY)
        if k is Kind.FAULT_CLEARED:
            return ignore("no fault to clear")
        return ignore("still booting")

    if s is State.READY:
        if k is Kind.GO:
            if snap.exiting or snap.power_off:
                return ignore("shutting down")
            return go(State.GOING_LIVE, Action.REMEMBER_LIVE, Action.START_OUTPUTS)
        if k is Kind.STOP:
            return ignore("not live")
        return ignore(f"{k.value} has no effect in READY")

    if s is State.GOING_LIVE:
        if k is Kind.OUTPUTS_STARTED:
            return go(_live_state(snap.conditions))
        if k is Kind.OUTPUTS_FAILED:
            return go(State.FAULT, Action.STOP_OUTPUTS, fault=event.reason or "no output could start")
        if k is Kind.STOP:
            return go(State.STOPPING, Action.FORGET_LIVE, Action.STOP_OUTPUTS)
        return ignore(f"{k.value} has no effect while going live")

    if s in LIVE_STATES:
        if k is Kind.STOP:
            return go(State.STOPPING, Action.FORGET_LIVE, Action.STOP_OUTPUTS)
        if k is Kind.OUTPUTS_FAILED:
            return go(State.FAULT, Action.STOP_OUTPUTS, fault=event.reason or "every output failed")
        return ignore(f"{k.value} has no effect while live")

    if s is State.STOPPING:
        if k is Kind.OUTPUTS_STOPPED:
            if snap.power_off:
                return go(State.READY, Action.POWER_OFF)
            return go(State.READY)
        if k is Kind.STOP:
            # A STOP while stopping after a power-critical or shutdown: the tech
            # wants the show over, so it must not resume by itself.
            return Result(snap, (Action.FORGET_LIVE,))
        return ignore(f"{k.value} has no effect while stopping")

    # FAULT
    if k is Kind.OUTPUTS_STOPPED and snap.power_off:
        # A fault while the outputs were being finalized for a power-off: the power-off stands.
        return Result(snap, (Action.POWER_OFF,))
    if k is Kind.FAULT_CLEARED:
        return go(State.READY, fault="")
    if k is Kind.GO:
        if snap.exiting or snap.power_off:
            return ignore("shutting down")
        # The tech asked again: try again, the fault may have been transient.
        return go(State.GOING_LIVE, Action.REMEMBER_LIVE, Action.START_OUTPUTS, fault="")
    if k is Kind.STOP:
        return Result(snap, (Action.FORGET_LIVE,))
    return ignore(f"{k.value} has no effect in FAULT")
