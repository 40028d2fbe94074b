"""Composition: which components the daemon runs, in which order.

Start order (stop is the reverse): control socket (the service adds it first),
simulated devices (sim profile: the serial ptys, then PulseAudio), panel, power,
uplinks (modem, link policy), media (sources, meters, encoder probes), the API,
the fleet client (when [fleet] is on), the live summary, the sim console. The media pipeline is also the live output;
the recorder and the network outputs hang off it. This is the one place that
wires sim/ in.
"""

from __future__ import annotations

from appliance.config import Config
from appliance.paths import recordings_dir, runtime_dir, state_dir
from appliance.supervisor.service import Service
from appliance.supervisor.state import Kind


def build(config: Config, profile_name: str, sim_go_after: float | None = None, console: bool = False) -> Service:
    from appliance.media.pipeline import MediaPipeline
    from appliance.outputs.recorder import Recorder
    from appliance.panel.panel import Panel

    sim = profile_name == "sim"
    run_dir = runtime_dir(config)
    sim_serial = None
    if sim:
        from appliance.sim.serial import PARTS, SimSerial

        # The serial ports named "sim" become ptys speaking the real protocols: the monitors
        # get their paths as they would get udev names.
        wanted = {part for part in PARTS if getattr(config.serial, part) == "sim"}
        if wanted:
            sim_serial = SimSerial(run_dir / "sim-serial", wanted)
            config = config.model_copy(update={"serial": config.serial.model_copy(update=sim_serial.paths)})
    service = Service(config, profile_name, sim=sim)
    if sim_serial is not None:
        service.components.append(sim_serial)  # (first: the ptys exist before the monitors open them)

    def report(condition: str, active: bool, source: str = "media") -> None:
        service.post(Kind.CONDITION_SET if active else Kind.CONDITION_CLEARED, condition, source)

    def fault(why: str) -> None:
        service.post(Kind.FAULT, why, "media")

    if sim:
        from appliance.sim.audio import PulseSim

        pulse = PulseSim(run_dir / "sim-audio")
        service.components.append(pulse)
        service.sim_actions["audio-unplug"] = lambda req: pulse.unplug(req.get("source", "foh"))
        service.sim_actions["audio-replug"] = lambda req: pulse.replug(req.get("source", "foh"))

    panel = Panel(config.panel, service.post)
    service.listeners.append(panel.on_state)
    service.components.append(panel)

    from appliance.power.monitor import PowerMonitor

    outputs = []
    srt = None
    if config.recording.enabled:
        outputs.append(Recorder(config.recording, recordings_dir(config), lambda c, a: report(c, a, "recorder")))
    if config.stream.enabled:
        from appliance.outputs.srt import SrtOutput

        from appliance.outputs.abr import AbrLimits, audio_kbps

        e = config.encoder
        latency = config.stream.latency_max_ms if config.stream.latency_ms == "auto" else config.stream.latency_ms
        srt = SrtOutput(config.stream, lambda c, a: report(c, a, "srt"),
                        AbrLimits(e.min_bitrate_kbps, e.bitrate_kbps, latency,
                                  audio_kbps(len(config.audio.tracks), e.audio_bitrate_kbps)),
                        set_bitrate=lambda kbps: media.set_bitrate(kbps),
                        plan=lambda: uplinks.stream_plan())  # (the last pre-flight's choice, at GO)
        outputs.append(srt)
    if config.rtmp.enabled:
        from appliance.outputs.rtmp import RtmpOutput

        outputs.append(RtmpOutput(config.rtmp, lambda c, a: report(c, a, "rtmp")))
    media = MediaPipeline(config, report, run_dir, outputs=outputs, fault=fault)
    power = PowerMonitor(config, service.post, lambda c, a: report(c, a, "power"), media.set_bitrate_cap,
                         recordings=recordings_dir(config))
    service.components.append(power)
    from appliance.uplinks.monitor import UplinkMonitor

    uplinks = UplinkMonitor(config, lambda c, a: report(c, a, "uplinks"), srt, state_dir=state_dir(config))
    uplinks.on_facts = panel.set_facts  # the link LEDs: which uplinks carry the show

    def warm_bond(before, after) -> None:  # from READY on, until a fault, the exit or a power-off
        uplinks.warm_bond = after.state.value not in ("BOOTING", "FAULT") and not after.exiting and not after.power_off

    service.listeners.append(warm_bond)
    service.components.append(uplinks)
    service.components.append(media)
    media.session_extras = uplinks.session_record

    def busy() -> str | None:
        state = service.snapshot.state.value
        return None if state == "READY" else f"the box is {state}"

    service.commands["preflight"] = lambda req: uplinks.async_preflight(req, busy)
    service.commands["usage-reset"] = uplinks.async_reset_usage
    if srt is not None:
        async def pop(req: dict) -> dict:
            try:
                srt.move_to(str(req.get("name", "")))
            except ValueError as e:
                return {"ok": False, "error": str(e)}
            return {"ok": True}

        service.commands["pop"] = pop  # the operator's PoP, mid-show
    service.live_parts.append(media)
    service.before_power_off.append(power.before_power_off)
    from appliance.api.http import ApiServer

    service.components.append(ApiServer(config, service, media))
    if config.fleet.enabled:
        from appliance.fleet.client import FleetClient

        fleet = FleetClient(config.fleet, config.device.name, service.status, service.handle_command)
        service.listeners.append(fleet.on_state)
        service.components.append(fleet)
    from appliance.summary import LiveSummary

    service.components.append(LiveSummary(service.status, config.log.summary_seconds))
    if sim_serial is not None:
        from appliance.sim.serial import MODEM_ACTIONS, POWER_ACTIONS

        for action in POWER_ACTIONS:
            service.sim_actions[action] = sim_serial.power_action
        for action in MODEM_ACTIONS:
            service.sim_actions[action] = sim_serial.modem_action
    if sim:
        service.sim_actions["video-unplug"] = lambda req: media.video.unplug()
        service.sim_actions["video-replug"] = lambda req: media.video.replug()
        service.sim_actions["encoder-fail"] = lambda req: media.inject_encoder_fault()
        service.sim_actions["encoder-hang"] = lambda req: media.inject_encoder_hang(_seconds(req, "encoder-hang"))
        service.sim_actions["hang"] = _hang

    if sim:
        from appliance.sim.console import SimConsole

        sim_console = SimConsole(service, panel, sim_go_after)
        # Presses over the control socket drive the same mock pins as the keys.
        service.sim_actions["press"] = lambda req: _press(sim_console, req)
        if sim_go_after is not None or console:
            service.components.append(sim_console)
    return service


def _seconds(req: dict, action: str) -> float:
    try:
        seconds = float(req.get("seconds", 5))
    except (TypeError, ValueError):
        raise ValueError(f"sim {action}: seconds must be a number, not {req.get('seconds')!r}") from None
    if not 0 < seconds <= 600:
        raise ValueError(f"sim {action}: seconds must be in (0, 600]")
    return seconds


def _hang(req: dict) -> None:
    """A thread blocks at its next heartbeat, as one wedged in a call would (a serial read, a lock)."""
    from appliance import heartbeat

    seconds = _seconds(req, "hang")
    name = req.get("thread")
    beating = heartbeat.running()
    chosen = [hb for hb in beating if hb.name == name]
    if not chosen:
        known = ", ".join(sorted({hb.name for hb in beating}))
        raise ValueError(f"sim hang: no running thread {name!r} (running: {known})")
    for hb in chosen:
        hb.hang(seconds)


def _press(console, req: dict) -> None:
    import asyncio

    button = req.get("button", "go")
    if button not in ("go", "fn"):
        raise ValueError(f"sim press: unknown button {button!r} (go, fn)")
    seconds = float(req.get("seconds", 0.15))
    if not 0 < seconds <= 30:
        raise ValueError("sim press: seconds must be in (0, 30]")
    asyncio.run(console.press(button, seconds))
