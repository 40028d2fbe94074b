"""The sim profile's serial devices: a Q1 UPS and a VE.Direct battery monitor on one
simulated battery, and a 5G modem, each a pty speaking the real protocol, and the
sim actions that play with them.

Built at the composition root (app.py), which hands the device monitors the ptys'
paths in place of the udev names: device code never imports sim/."""

from __future__ import annotations

from pathlib import Path

from appliance.sim.modem import ModemSim
from appliance.sim.power import BatteryModel, UpsSim, VeDirectSim

PARTS = ("ups", "battery", "modem_at")  # the serial section's keys whose value may be "sim"
POWER_ACTIONS = ("mains-fail", "mains-restore", "battery", "power-unplug", "power-replug")
MODEM_ACTIONS = ("modem", "modem-unplug", "modem-replug", "modem-reboot")


class SimSerial:
    name = "sim-serial"

    def __init__(self, directory: Path, parts: set[str]):
        self.dir = Path(directory)
        self.model = BatteryModel()
        self.devices: dict = {}
        self.paths = {part: str(self.dir / part) for part in PARTS if part in parts}

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        make = {"ups": lambda p: UpsSim(p, self.model), "battery": lambda p: VeDirectSim(p, self.model),
                "modem_at": ModemSim}
        for part, path in self.paths.items():
            self.devices[part] = make[part](Path(path))

    async def stop(self) -> None:
        for device in self.devices.values():
            device.close()
        self.devices.clear()

    def status(self) -> dict:
        return {"devices": {part: path for part, path in self.paths.items() if part in self.devices}}

    # --- sim actions ---------------------------------------------------------------------------

    def power_action(self, req: dict) -> None:
        if not ({"ups", "battery"} & set(self.devices)):
            raise RuntimeError("no simulated power devices (serial ports are not 'sim')")
        model, action = self.model, req["action"]
        if action == "mains-fail":
            model.set(on_mains=False, discharge_per_second=req.get("discharge_per_second"))
        elif action == "mains-restore":
            model.set(on_mains=True)
        elif action == "battery":
            model.set(charge=float(req["percent"]) if "percent" in req else None,
                      discharge_per_second=req.get("discharge_per_second"),
                      ups_low=bool(req["ups_low"]) if "ups_low" in req else None)
        elif action in ("power-unplug", "power-replug"):
            device = req.get("device", "ups")
            if device not in ("ups", "battery") or device not in self.devices:
                have = ", ".join(p for p in self.devices if p in ("ups", "battery"))
                raise ValueError(f"no simulated {device!r} (have: {have})")
            (self.devices[device].unplug if action == "power-unplug" else self.devices[device].replug)()
        else:
            raise ValueError(f"unknown power action {action!r}")

    def modem_action(self, req: dict) -> None:
        sim = self.devices.get("modem_at")
        if sim is None:
            raise ValueError("no simulated modem (serial.modem_at = \"sim\")")
        action = req["action"]
        if action == "modem-unplug":
            sim.unplug()
        elif action == "modem-replug":
            sim.replug()
        elif action == "modem-reboot":
            sim.reboot()
        elif action == "modem":
            for key in ("sinr", "rsrp", "rsrq"):
                if key in req:
                    setattr(sim.cell, key, int(req[key]))
            for key in ("rat", "cell_id", "state"):
                if key in req:
                    setattr(sim.cell, key, str(req[key]))
            if "sim" in req:
                sim.sim = str(req["sim"])
