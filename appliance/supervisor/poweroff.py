"""The end of the power-off sequence, after the outputs are finalized: the steps
before the command (tell the UPS), the command, and what happens when it fails
(logged, GO works again, tried again while nobody has taken the box back on air).
`service` is the Service."""

from __future__ import annotations

import asyncio
import logging
import time

from appliance import conditions
from appliance.children import child_env
from appliance.supervisor.state import Kind, State

log = logging.getLogger("appliance.supervisor.service")  # (the daemon's lines keep their source)

SHUTDOWN_TRIES = 3  # a failing shutdown command is run this often, power.shutdown_retry_seconds apart


async def power_off(service, reason: str) -> None:
    cmd = list(service.config.power.shutdown_command)
    for hook in service.before_power_off:
        try:
            await hook(reason)
        except Exception:
            log.exception("before-power-off step failed")
    finalized = "recording finalized" if service.last_stop.get("finalized", True) else \
        "recording NOT finalized (" + "; ".join(service.last_stop.get("problems", [])) + ")"
    log.warning("powering off (%s): %s, running %s", reason, finalized, " ".join(cmd), extra={"POWER_OFF": reason})
    service.power_off = {"reason": reason, "command": cmd, "at": time.time(), "attempts": 0}
    failed = await run_shutdown(service, cmd)
    if failed is None:
        return
    # The box is still here: GO works again, and the command is tried again while
    # nobody has taken the box back on air (a dying battery still needs it).
    condition = conditions.shutdown_failed(failed)
    service.post(Kind.POWER_OFF_FAILED, failed, "power")
    service.post(Kind.CONDITION_SET, condition, "power")
    retry = service.config.power.shutdown_retry_seconds
    for _ in range(SHUTDOWN_TRIES - 1):
        await asyncio.sleep(retry)
        if service.snapshot.state not in (State.READY, State.FAULT) or service.snapshot.exiting:
            log.warning("shutdown not tried again: the box is %s", service.snapshot.state.value)
            break
        log.warning("powering off (%s): trying %s again", reason, " ".join(cmd), extra={"POWER_OFF": reason})
        failed = await run_shutdown(service, cmd)
        if failed is None:
            break
    service.post(Kind.CONDITION_CLEARED, condition, "power")


async def run_shutdown(service, cmd: list[str]) -> str | None:
    """One attempt: None once the command ran well, else what went wrong."""
    service.power_off["attempts"] += 1
    try:
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL, env=child_env())
        service.power_off["exit"] = code = await proc.wait()
    except OSError as e:
        service.power_off["error"] = why = f"{cmd[0]}: {e.strerror or e}"
        log.error("shutdown command failed: %s", why)
        return why
    if code != 0:
        service.power_off["error"] = why = f"{cmd[0]} exited with {code}"
        log.error("shutdown command %s", why)
        return why
    service.power_off.pop("error", None)
    return None
