"""Reading recordings back as a viewer would: decode with PyAV and measure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from appliance.media.annexb import IDR, PPS, SPS, nal_types


@dataclass
class Decoded:
    video_pts: list[int] = field(default_factory=list)  # in 1/90000 (MPEG-TS's clock)
    video_luma: list[float] = field(default_factory=list)  # mean Y of each frame
    audio: dict[int, list[tuple[float, int]]] = field(default_factory=dict)  # stream -> [(start s, samples)]
    audio_sumsq: dict[int, float] = field(default_factory=dict)
    audio_count: dict[int, int] = field(default_factory=dict)

    def audio_rms_dbfs(self, stream: int) -> float:
        return 10 * np.log10(self.audio_sumsq[stream] / self.audio_count[stream] + 1e-20)
    first_video_nals: list[list[int]] = field(default_factory=list)  # per file
    decode_errors: int = 0  # packets a viewer could not decode (joining mid-GOP)


def decode_files(files: list[Path], luma: bool = False) -> Decoded:
    out = Decoded()
    for path in files:
        with av.open(str(path)) as c:
            first = None
            for packet in c.demux():
                if packet.stream.type == "video" and packet.size and first is None:
                    first = (bool(packet.is_keyframe), nal_types(bytes(packet)))
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    out.decode_errors += 1
                    continue
                for frame in frames:
                    if frame.pts is None:
                        out.decode_errors += 1
                        continue
                    if packet.stream.type == "video":
                        out.video_pts.append(round(frame.pts * frame.time_base * 90000))
                        if luma:
                            out.video_luma.append(float(frame.to_ndarray(format="gray").mean()))
                    elif packet.stream.type == "audio":
                        idx = packet.stream.index
                        out.audio.setdefault(idx, []).append((float(frame.pts * frame.time_base), frame.samples))
                        data = frame.to_ndarray().astype(np.float64)
                        out.audio_sumsq[idx] = out.audio_sumsq.get(idx, 0.0) + float(np.sum(data * data))
                        out.audio_count[idx] = out.audio_count.get(idx, 0) + data.size
            out.first_video_nals.append(first[1] if first and first[0] else [])
    return out


def segments(session_dir: Path, include_open: bool = False) -> list[Path]:
    files = sorted(session_dir.glob("seg-*.ts"))
    if include_open:
        files += sorted(session_dir.glob("seg-*.ts.part"))
    return files


def only_session(recordings: Path) -> Path:
    sessions = [d for d in recordings.iterdir() if d.is_dir()]
    assert len(sessions) == 1, sessions
    return sessions[0]


def manifest(session_dir: Path) -> dict:
    return json.loads((session_dir / "session.json").read_text())


def starts_with_parameter_sets(nals: list[int]) -> bool:
    return {SPS, PPS, IDR} <= set(nals) and nals.index(SPS) < nals.index(IDR) and nals.index(PPS) < nals.index(IDR)


def largest_gap(pts: list[int]) -> int:
    s = sorted(pts)
    return max((b - a for a, b in zip(s, s[1:])), default=0)


def ts_continuity_errors(path: Path) -> int:
    """MPEG-TS continuity-counter breaks, as a broadcast analyser (TR 101 290 1.4) counts them:
    per PID, a packet carrying payload must have the previous counter + 1 (one repeat allowed)."""
    data = Path(path).read_bytes()
    start = data.find(b"\x47")
    last: dict[int, int] = {}
    errors = 0
    for i in range(start, len(data) - 187, 188):
        if data[i] != 0x47:
            errors += 1
            continue
        pid = ((data[i + 1] & 0x1F) << 8) | data[i + 2]
        afc, cc = (data[i + 3] >> 4) & 0x3, data[i + 3] & 0xF
        if pid == 0x1FFF or not afc & 0x1:
            continue  # null packets and adaptation-only packets do not count
        discontinuity = afc & 0x2 and data[i + 4] > 0 and data[i + 5] & 0x80
        if pid in last and not discontinuity and cc not in ((last[pid] + 1) & 0xF, last[pid]):
            errors += 1
        last[pid] = cc
    return errors


def frame_duration(pts: list[int]) -> int:
    s = sorted(pts)
    steps = [b - a for a, b in zip(s, s[1:])]
    return max(set(steps), key=steps.count)


def missing_frames(pts: list[int]) -> int:
    """Frames absent between the first and the last one received."""
    s = sorted(set(pts))
    step = frame_duration(s)
    return sum(round((b - a) / step) - 1 for a, b in zip(s, s[1:]) if b - a > step * 1.5)
