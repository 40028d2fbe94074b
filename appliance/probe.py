"""`appliance probe`: is each hardware part of the profile there, and if not, why.

Nothing is started: each part is looked at on its own (device node, permission,
a protocol query on serial ports), and the answer says plainly what is missing.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.codecs import CODEC_LABELS
from appliance.config import Config

FOUND, MISSING, SIMULATED, OFF = "found", "not found", "simulated", "not fitted"


@dataclass
class Finding:
    part: str
    device: str
    result: str  # found | not found | simulated | not fitted
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def node_problem(path: str, want_char: bool = True) -> str | None:
    """Why a device node cannot be used, or None if it can."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing device node"
    except PermissionError:
        return "permission denied (cannot even look at it)"
    if want_char and not stat.S_ISCHR(st.st_mode):
        return "not a character device"
    if not os.access(path, os.R_OK | os.W_OK):
        return "permission denied (add the appliance user to the device's group)"
    return None


# --- parts ---------------------------------------------------------------------

def probe_video(cfg: Config) -> list[Finding]:
    v = cfg.video
    if v.source == "testsrc":
        return [Finding("video", "lavfi testsrc2", SIMULATED, f"test pattern {v.width}x{v.height}@{v.fps}")]
    if v.source == "file":
        ok = v.file is not None and Path(v.file).is_file()
        return [Finding("video", str(v.file), FOUND if ok else MISSING, "rehearsal file" if ok else "file not found")]
    problem = node_problem(v.device)
    if problem:
        return [Finding("video", v.device, MISSING, f"{problem}: is the HDMI capture card plugged in?")]
    return [Finding("video", v.device, FOUND, f"V4L2 capture, {v.input_format} {v.width}x{v.height}@{v.fps} wanted")]


def probe_audio(cfg: Config) -> list[Finding]:
    findings = []
    try:
        import sounddevice as sd

        devices = [d for d in sd.query_devices() if d["max_input_channels"] > 0]
    except (OSError, ImportError) as e:
        return [Finding(f"audio {t.name}", t.device, MISSING, f"PortAudio unavailable ({e}): apt install libportaudio2")
                for t in cfg.audio.tracks]
    for t in cfg.audio.tracks:
        need = max(t.channels)
        match = [d for d in devices if t.device == "default" or t.device in d["name"]]
        if not match:
            names = ", ".join(sorted({d["name"] for d in devices})) or "none"
            findings.append(Finding(f"audio {t.name}", t.device, MISSING, f"no input device matching {t.device!r} (inputs: {names})"))
        elif match[0]["max_input_channels"] < need:
            findings.append(Finding(f"audio {t.name}", t.device, MISSING,
                                    f"{match[0]['name']} has {match[0]['max_input_channels']} input channels, track needs channel {need}"))
        else:
            findings.append(Finding(f"audio {t.name}", t.device, FOUND, f"{match[0]['name']}, channels {t.channels}"))
    return findings


def probe_encoders(cfg: Config) -> list[Finding]:
    """Each rung really encodes in a child process (not cached: a probe is asked for)."""
    from appliance.media.encoders import Ladder
    from appliance.media.packets import VideoSettings

    v, e = cfg.video, cfg.encoder
    ladder = Ladder(e.rungs(), VideoSettings(v.width, v.height, v.fps, e.bitrate_kbps, e.bitrate_kbps,
                                             e.keyframe_seconds, codec=e.codec))
    findings = []
    for i, (rung, verdict) in enumerate(zip(ladder.rungs, ladder.probe_all()), 1):
        kind = f"{CODEC_LABELS[rung.codec]}, {'hardware' if rung.hardware else 'software'}"
        findings.append(Finding(f"encoder {i}", rung.encoder, FOUND if verdict.ok else MISSING,
                                f"{kind}: {verdict.reason}"))
    return findings


def probe_panel(cfg: Config) -> list[Finding]:
    p = cfg.panel
    if p.backend == "none":
        return [Finding("panel", "-", OFF, "this board has no panel; use `appliance live` or the phone page")]
    if p.backend == "mock":
        return [Finding("panel", "gpiozero MockFactory", SIMULATED, "mock pins")]
    chips = [p.chip] if p.backend == "gpiod" else sorted(glob.glob("/dev/gpiochip*"))
    if not chips:
        return [Finding("panel", "/dev/gpiochip*", MISSING, f"missing device node: no GPIO chip (backend {p.backend})")]
    problem = node_problem(chips[0])
    if problem:
        return [Finding("panel", chips[0], MISSING, f"{problem} (backend {p.backend})")]
    if p.backend == "gpiod":
        try:
            from appliance.panel.gpiod_factory import open_chip_label

            label = open_chip_label(p.chip)
        except Exception as e:
            return [Finding("panel", p.chip, MISSING, f"cannot open the chip with libgpiod: {e}")]
        return [Finding("panel", p.chip, FOUND, f"libgpiod chip {label}")]
    return [Finding("panel", chips[0], FOUND, f"backend {p.backend}")]


# Serial protocol checks: (baud, bytes to send, how to judge the reply). The
# UPS and battery-monitor replies go through the same parsers the daemon uses.
def _judge_q1(reply: bytes) -> tuple[bool, str]:
    from appliance.power import q1

    if reply.strip() == b"Q1":
        return False, "wrong protocol: the device echoed Q1 (it refuses the command: not a Q1 UPS?)"
    try:
        q1.parse_q1(reply)
    except q1.Q1Error as e:
        return False, f"wrong protocol: {e}"
    return True, "Megatec Q1 UPS answered: " + reply.decode("ascii", "replace").strip()


def _judge_vedirect(reply: bytes) -> tuple[bool, str]:
    from appliance.power import vedirect

    blocks = vedirect.VeDirectParser().feed(reply)
    if not blocks:
        return False, f"wrong protocol: no valid VE.Direct text block ({reply[:40]!r})"
    pid = next((b["PID"] for b in blocks if "PID" in b), "?")
    return True, f"VE.Direct text blocks (PID {pid})"


def _judge_at(reply: bytes) -> tuple[bool, str]:
    if b"OK" in reply:
        return True, "modem answered AT with OK"
    if b"ERROR" in reply:
        return True, "modem answered AT with ERROR (port is an AT port, but unhappy)"
    return False, f"wrong protocol: no OK to AT ({reply[:40]!r}); is this the modem's AT interface?"


SERIAL_PARTS = {
    "ups": ("UPS", 2400, b"Q1\r", _judge_q1, 1.5),
    "battery": ("battery monitor", 19200, None, _judge_vedirect, 2.5),
    "modem_at": ("modem AT port", 115200, b"AT\r", _judge_at, 1.5),
}


def probe_serial_port(part: str, path: str) -> Finding:
    label, baud, query, judge, wait = SERIAL_PARTS[part]
    if path == "sim":
        return Finding(label, "pty simulator", SIMULATED, "started with the daemon")
    if not path:
        return Finding(label, "-", OFF, "not configured")
    problem = node_problem(path)
    if problem:
        return Finding(label, path, MISSING, problem)
    import serial

    try:
        port = serial.Serial(path, baud, timeout=0.1, exclusive=True)
    except serial.SerialException as e:
        busy = getattr(e, "errno", None) in (errno.EBUSY, errno.EAGAIN) or "lock" in str(e).lower()
        why = "busy: another program (ModemManager? the daemon?) holds it" if busy else str(e)
        return Finding(label, path, MISSING, why)
    try:
        port.reset_input_buffer()
        if query:
            port.write(query)
        reply = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            reply += port.read(256)
            if query and reply.endswith((b"\r", b"\n")) and len(reply) > len(query):
                break
    except (OSError, serial.SerialException) as e:
        return Finding(label, path, MISSING, f"I/O error: {e}")
    finally:
        port.close()
    if not reply:
        return Finding(label, path, MISSING, f"no reply within {wait:g} s (wrong port, cable or baud?)")
    ok, detail = judge(reply)
    return Finding(label, path, FOUND if ok else MISSING, detail)


def probe_thermal(cfg: Config) -> list[Finding]:
    findings = []
    for sensor in cfg.thermal.sensors:
        try:
            value = int(Path(sensor).read_text().strip()) / 1000
            findings.append(Finding("thermal", sensor, FOUND, f"{value:.1f} °C"))
        except FileNotFoundError:
            findings.append(Finding("thermal", sensor, MISSING, "no such sensor on this board"))
        except (OSError, ValueError) as e:
            findings.append(Finding("thermal", sensor, MISSING, f"unreadable: {e}"))
    if cfg.thermal.throttled:
        path = cfg.thermal.throttled
        if Path(path).exists():
            findings.append(Finding("throttling", path, FOUND, f"flags {Path(path).read_text().strip()}"))
        else:
            findings.append(Finding("throttling", path, MISSING, "firmware throttling flags not exposed"))
    return findings


def run(cfg: Config) -> list[Finding]:
    findings = probe_video(cfg) + probe_audio(cfg) + probe_encoders(cfg) + probe_panel(cfg)
    for part in SERIAL_PARTS:
        findings.append(probe_serial_port(part, getattr(cfg.serial, part)))
    return findings + probe_thermal(cfg)


def table(findings: list[Finding]) -> str:
    rows = [("PART", "DEVICE", "RESULT", "DETAIL")] + [(f.part, f.device, f.result, f.detail) for f in findings]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths)) + "  " + r[3] for r in rows
    )
