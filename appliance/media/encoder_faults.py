"""An encoder's faults, for every backend alike: the error a rung raises when it fails
or stalls (with what it never answered), and the faults the sim profile injects."""

from __future__ import annotations

import time

from appliance.errors import ApplianceError
from appliance.media.packets import EncodedPacket


class EncoderError(ApplianceError, RuntimeError):
    """The running encoder failed or stalled: switch to the next rung. An encoder that
    works ahead (in a child process) hands over what it still emitted and the frames it
    took but never answered, so that the next rung starts on the first frame lost."""

    def __init__(self, message: str, packets: list | None = None, unanswered: list | None = None):
        super().__init__(message)
        self.packets: list[EncodedPacket] = packets or []
        self.unanswered: list[tuple[int, object]] = unanswered or []  # (pts, frame), oldest first


class SimulatedFaults:
    """The sim profile's (and the tests') encoder faults, for a rung of any backend."""

    _fault: str | None = None
    _hang_seconds = 0.0

    def inject_fault(self, why: str = "simulated encoder failure") -> None:
        """Simulated hardware failure: the next encode fails."""
        self._fault = why

    def inject_hang(self, seconds: float) -> None:
        """Simulated wedged hardware: the next encode call blocks."""
        self._hang_seconds = seconds

    def _simulate(self) -> None:
        if self._fault:
            raise EncoderError(self._fault)
        if self._hang_seconds:
            seconds, self._hang_seconds = self._hang_seconds, 0.0
            time.sleep(seconds)  # as an ioctl to a wedged hardware encoder does: nothing returns
