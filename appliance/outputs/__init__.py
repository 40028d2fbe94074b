"""Outputs fed by the one encoder set: the recorder, network outputs.

An output never blocks or raises into the media thread: `packet()` only queues;
an output that breaks marks itself dead and reports, and the others go on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from appliance.media.encoders import VideoSettings


@dataclass
class Session:
    """What every output needs to know about the live session it serves."""

    name: str
    started: float  # wall clock
    video: VideoSettings
    track_names: list[str]
    audio_extradata: list[bytes]
    encoder: str
    settings: dict = field(default_factory=dict)


# An output's report to the supervisor: (condition, active).
Report = Callable[[str, bool], None]
