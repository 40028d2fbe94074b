"""The pure state machine: the whole table, every state x every event."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.supervisor.state import Action, Event, Kind, Snapshot, State, step

S, K, A = State, Kind, Action
IGNORED = "ignored"
REM, FORGET, START, STOP, OFF = A.REMEMBER_LIVE, A.FORGET_LIVE, A.START_OUTPUTS, A.STOP_OUTPUTS, A.POWER_OFF

# The DEGRADED state is only ever reached with a condition set: "x" here.
# CONDITION_SET events carry condition "y", CONDITION_CLEARED events clear "x".
# Each cell: (next state, actions) or IGNORED (nothing changes, a reason is given).
TABLE = {
    S.BOOTING: {
        K.BOOTED: (S.READY, ()), K.GO: IGNORED, K.STOP: IGNORED, K.OUTPUTS_STARTED: IGNORED,
        K.OUTPUTS_STOPPED: IGNORED, K.OUTPUTS_FAILED: IGNORED, K.CONDITION_SET: (S.BOOTING, ()),
        K.CONDITION_CLEARED: IGNORED, K.POWER_CRITICAL: (S.BOOTING, (OFF,)), K.POWER_OFF: (S.BOOTING, (FORGET, OFF)), K.FAULT: (S.FAULT, ()),
        K.FAULT_CLEARED: IGNORED, K.SHUTDOWN: (S.BOOTING, ()), K.POWER_OFF_FAILED: IGNORED,
    },
    S.READY: {
        K.BOOTED: IGNORED, K.GO: (S.GOING_LIVE, (REM, START)), K.STOP: IGNORED,
        K.OUTPUTS_STARTED: IGNORED, K.OUTPUTS_STOPPED: IGNORED, K.OUTPUTS_FAILED: IGNORED,
        K.CONDITION_SET: (S.READY, ()), K.CONDITION_CLEARED: IGNORED, K.POWER_CRITICAL: (S.READY, (OFF,)), K.POWER_OFF: (S.READY, (FORGET, OFF)),
        K.FAULT: (S.FAULT, ()), K.FAULT_CLEARED: IGNORED, K.SHUTDOWN: (S.READY, ()), K.POWER_OFF_FAILED: IGNORED,
    },
    S.GOING_LIVE: {
        K.BOOTED: IGNORED, K.GO: IGNORED, K.STOP: (S.STOPPING, (FORGET, STOP)),
        K.OUTPUTS_STARTED: (S.LIVE, ()), K.OUTPUTS_STOPPED: IGNORED, K.OUTPUTS_FAILED: (S.FAULT, (STOP,)),
        K.CONDITION_SET: (S.GOING_LIVE, ()), K.CONDITION_CLEARED: IGNORED, K.POWER_CRITICAL: (S.STOPPING, (STOP,)), K.POWER_OFF: (S.STOPPING, (FORGET, STOP)),
        K.FAULT: (S.FAULT, (STOP,)), K.FAULT_CLEARED: IGNORED, K.SHUTDOWN: (S.STOPPING, (STOP,)), K.POWER_OFF_FAILED: IGNORED,
    },
    S.LIVE: {
        K.BOOTED: IGNORED, K.GO: IGNORED, K.STOP: (S.STOPPING, (FORGET, STOP)),
        K.OUTPUTS_STARTED: IGNORED, K.OUTPUTS_STOPPED: IGNORED, K.OUTPUTS_FAILED: (S.FAULT, (STOP,)),
        K.CONDITION_SET: (S.DEGRADED, ()), K.CONDITION_CLEARED: IGNORED, K.POWER_CRITICAL: (S.STOPPING, (STOP,)), K.POWER_OFF: (S.STOPPING, (FORGET, STOP)),
        K.FAULT: (S.FAULT, (STOP,)), K.FAULT_CLEARED: IGNORED, K.SHUTDOWN: (S.STOPPING, (STOP,)), K.POWER_OFF_FAILED: IGNORED,
    },
    S.DEGRADED: {
        K.BOOTED: IGNORED, K.GO: IGNORED, K.STOP: (S.STOPPING, (FORGET, STOP)),
        K.OUTPUTS_STARTED: IGNORED, K.OUTPUTS_STOPPED: IGNORED, K.OUTPUTS_FAILED: (S.FAULT, (STOP,)),
        K.CONDITION_SET: (S.DEGRADED, ()), K.CONDITION_CLEARED: (S.LIVE, ()), K.POWER_CRITICAL: (S.STOPPING, (STOP,)), K.POWER_OFF: (S.STOPPING, (FORGET, STOP)),
        K.FAULT: (S.FAULT, (STOP,)), K.FAULT_CLEARED: IGNORED, K.SHUTDOWN: (S.STOPPING, (STOP,)), K.POWER_OFF_FAILED: IGNORED,
    },
    S.STOPPING: {
        K.BOOTED: IGNORED, K.GO: IGNORED, K.STOP: (S.STOPPING, (FORGET,)),
        K.OUTPUTS_STARTED: IGNORED, K.OUTPUTS_STOPPED: (S.READY, ()), K.OUTPUTS_FAILED: IGNORED,
        K.CONDITION_SET: (S.STOPPING, ()), K.CONDITION_CLEARED: IGNORED, K.POWER_CRITICAL: (S.STOPPING, ()), K.POWER_OFF: (S.STOPPING, (FORGET,)),
        K.FAULT: (S.FAULT, ()), K.FAULT_CLEARED: IGNORED, K.SHUTDOWN: (S.STOPPING, ()), K.POWER_OFF_FAILED: IGNORED,
    },
    S.FAULT: {
        K.BOOTED: IGNORED, K.GO: (S.GOING_LIVE, (REM, START)), K.STOP: (S.FAULT, (FORGET,)),
        K.OUTPUTS_STARTED: IGNORED, K.OUTPUTS_STOPPED: IGNORED, K.OUTPUTS_FAILED: IGNORED,
        K.CONDITION_SET: (S.FAULT, ()), K.CONDITION_CLEARED: IGNORED, K.POWER_CRITICAL: (S.FAULT, (OFF,)), K.POWER_OFF: (S.FAULT, (FORGET, OFF)),
        K.FAULT: (S.FAULT, ()), K.FAULT_CLEARED: (S.READY, ()), K.SHUTDOWN: (S.FAULT, ()), K.POWER_OFF_FAILED: IGNORED,
    },
}


def base(state: State) -> Snapshot:
    return Snapshot(state, frozenset({"x"}) if state is S.DEGRADED else frozenset(),
                    fault="disk gone" if state is S.FAULT else "")


def event(kind: Kind) -> Event:
    reason = {K.CONDITION_SET: "y", K.CONDITION_CLEARED: "x", K.FAULT: "encoder died"}.get(kind, "")
    return Event(kind, reason, "test")


def test_table_covers_every_state_and_event():
    assert set(TABLE) == set(State)
    for state, row in TABLE.items():
        assert set(row) == set(Kind), state


@pytest.mark.parametrize("state,kind", [(s, k) for s in State for k in Kind], ids=lambda v: v.name)
def test_transition(state, kind):
    before = base(state)
    result = step(before, event(kind))
    expected = TABLE[state][kind]
    if expected == IGNORED:
        assert result.snapshot == before
        assert result.actions == ()
        assert result.ignored, "an ignored event must say why (the tech sees it in the log)"
    else:
        next_state, actions = expected
        assert result.snapshot.state is next_state
        assert result.actions == actions
        assert not result.ignored


def test_conditions_are_tracked_in_every_state():
    for state in State:
        snap = step(base(state), Event(K.CONDITION_SET, "y")).snapshot
        assert "y" in snap.conditions
        assert step(snap, Event(K.CONDITION_CLEARED, "y")).snapshot.conditions == base(state).conditions


def test_going_live_with_a_condition_lands_in_degraded():
    snap = Snapshot(S.GOING_LIVE, frozenset({"ambient audio silent"}))
    assert step(snap, Event(K.OUTPUTS_STARTED)).snapshot.state is S.DEGRADED


def test_degraded_stays_until_the_last_condition_clears():
    snap = Snapshot(S.DEGRADED, frozenset({"a", "b"}))
    snap = step(snap, Event(K.CONDITION_CLEARED, "a")).snapshot
    assert snap.state is S.DEGRADED
    assert step(snap, Event(K.CONDITION_CLEARED, "b")).snapshot.state is S.LIVE


def test_nothing_goes_live_once_shutting_down():
    for state in (S.READY, S.FAULT):
        snap = step(base(state), Event(K.SHUTDOWN)).snapshot
        assert snap.exiting
        result = step(snap, Event(K.GO))
        assert result.actions == () and result.ignored == "shutting down"


def test_shutdown_keeps_the_live_intent():
    # A restart is not the tech ending the show: no FORGET_LIVE.
    for state in (S.GOING_LIVE, S.LIVE, S.DEGRADED):
        assert FORGET not in step(base(state), Event(K.SHUTDOWN)).actions


def test_fault_records_and_clears_its_reason():
    snap = step(base(S.LIVE), Event(K.FAULT, "encoder died")).snapshot
    assert snap.fault == "encoder died"
    assert step(snap, Event(K.FAULT_CLEARED)).snapshot.fault == ""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(Kind)), st.sampled_from(["a", "b", ""])), max_size=40))
def test_random_sequences_keep_the_invariants(events):
    snap = Snapshot()
    outputs_running = False
    for kind, reason in events:
        result = step(snap, Event(kind, reason))
        new = result.snapshot
        if START in result.actions:
            assert not snap.exiting and REM in result.actions
            assert not outputs_running
            outputs_running = True
        if STOP in result.actions:
            assert outputs_running, "STOP_OUTPUTS only undoes a START_OUTPUTS"
            outputs_running = False
        if OFF in result.actions:
            assert not outputs_running, "power off only once the outputs are finalized"
            assert new.power_off
        # Outputs run exactly in the live-ish states.
        assert outputs_running == (new.state in (S.GOING_LIVE, S.LIVE, S.DEGRADED))
        if new.state in (S.LIVE, S.DEGRADED):
            assert (new.state is S.DEGRADED) == bool(new.conditions)
        assert not (snap.exiting and not new.exiting)
        snap = new


def test_power_off_waits_for_the_outputs_to_be_finalized():
    snap = base(S.LIVE)
    r = step(snap, Event(K.POWER_CRITICAL, "battery 4 %"))
    assert r.snapshot.state is S.STOPPING and r.actions == (STOP,) and OFF not in r.actions
    assert FORGET not in r.actions, "a dying battery keeps the live intent: resume when power is back"
    r = step(r.snapshot, Event(K.OUTPUTS_STOPPED))
    assert r.snapshot.state is S.READY and r.actions == (OFF,)
    assert step(r.snapshot, Event(K.GO)).ignored == "shutting down"
    assert step(r.snapshot, Event(K.POWER_OFF)).ignored.startswith("already powering off")


def test_a_failed_power_off_leaves_the_box_where_go_works():
    snap = step(step(base(S.LIVE), Event(K.POWER_CRITICAL, "battery 4 %")).snapshot, Event(K.OUTPUTS_STOPPED)).snapshot
    assert snap.power_off and step(snap, Event(K.GO)).ignored == "shutting down"
    r = step(snap, Event(K.POWER_OFF_FAILED, "systemctl poweroff exited with 1"))
    assert r.snapshot.state is S.READY and not r.snapshot.power_off and r.actions == ()
    r = step(r.snapshot, Event(K.GO))
    assert r.snapshot.state is S.GOING_LIVE and r.actions == (REM, START)


def test_a_fault_while_finalizing_for_a_power_off_does_not_lose_it():
    snap = step(base(S.LIVE), Event(K.POWER_CRITICAL, "battery 4 %")).snapshot
    r = step(snap, Event(K.FAULT, "encoder died"))
    assert r.snapshot.state is S.FAULT and r.snapshot.power_off, "the power-off stands"
    r = step(r.snapshot, Event(K.OUTPUTS_STOPPED))
    assert r.actions == (OFF,), "once the outputs are finalized, the command runs"
    assert step(r.snapshot, Event(K.GO)).ignored == "shutting down"
