"""One backoff policy for everything that retries a device or a connection (a capture
card, an audio interface, a serial port, the SRT ingest, the RTMP server): 0.5 s,
then doubling, never more than 5 s apart, so that what comes back in the middle of a
show is in use again within five seconds."""

from __future__ import annotations

STEPS = (0.5, 1.0, 2.0, 4.0, 5.0)
LONGEST = STEPS[-1]


def delay(attempt: int) -> float:
    """Seconds to wait before try number `attempt` + 1 (0: the first retry)."""
    return STEPS[min(max(attempt, 0), len(STEPS) - 1)]


def jittered(attempt: int) -> float:
    """delay() spread over half to one and a half times: many clients that lost the same
    server (a fleet and its broker) come back spread out, not all in the same instant."""
    import random

    return delay(attempt) * random.uniform(0.5, 1.5)
