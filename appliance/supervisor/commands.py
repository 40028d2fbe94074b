"""The control socket's commands (and the API's, which goes through them): status,
live and stop (answered with their effect), the sim profile's device actions, and the
commands components add (pre-flight, usage reset). `service` is the Service."""

from __future__ import annotations

import asyncio
import logging
import time

from appliance.supervisor.state import Kind

log = logging.getLogger("appliance.supervisor.service")  # (the daemon's lines keep their source)


async def handle(service, req: dict) -> dict:
    """Answer one request: {\"ok\": ...}."""
    cmd = req["cmd"]
    if cmd == "status":
        return {"ok": True, "status": service.status()}
    if cmd in ("live", "stop"):
        service._last_ignored = None
        service.post(Kind.GO if cmd == "live" else Kind.STOP, source=str(req.get("source", "control")))
        # Let the event be applied so the answer shows its effect.
        await service._settle()
        ignored = service._last_ignored
        if ignored is not None and ignored[0].kind is Kind.GO and ignored[1] in ("still booting", "shutting down"):
            # Not "ok" and then dropped: the tech is told to press again once READY.
            return {"ok": False, "state": service.snapshot.state.value,
                    "error": f"GO refused: {ignored[1]} (press it again once READY)"}
        return {"ok": True, "state": service.snapshot.state.value}
    if cmd == "sim":
        return await sim(service, req)
    if cmd in service.commands:
        return await service.commands[cmd](req)
    known = ", ".join(["status", "live", "stop", *sorted(service.commands), *(["sim"] if service.sim else [])])
    return {"ok": False, "error": f"unknown command {cmd!r} (known: {known})"}


async def sim(service, req: dict) -> dict:
    if not service.sim:
        return {"ok": False, "error": "sim commands exist only with the sim profile"}
    action = req.get("action")
    if action in service.sim_actions:
        log.warning("sim: %s %s", action, {k: v for k, v in req.items() if k not in ("cmd", "action")})
        try:
            await asyncio.to_thread(service.sim_actions[action], req)
        except (ValueError, RuntimeError) as e:
            return {"ok": False, "error": str(e)}
        return {"ok": True}
    if action == "stall":
        # Simulates a component hanging the loop (the watchdog must notice).
        seconds = float(req.get("seconds", 1))
        if not 0 < seconds <= 120:
            return {"ok": False, "error": "sim stall: seconds must be in (0, 120]"}
        log.warning("sim: stalling the main loop for %.1f s", seconds)
        time.sleep(seconds)
        return {"ok": True}
    known = ", ".join(["stall", *sorted(service.sim_actions)])
    return {"ok": False, "error": f"unknown sim action {action!r} (known: {known})"}
