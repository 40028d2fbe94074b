"""Board detection from the device tree (or DMI), with the fallback to the generic profile."""

from __future__ import annotations

import logging

import pytest

from appliance import profiles
from appliance.errors import ProfileError


def fake_board(tmp_path, model: str | None = None, dmi: tuple[str, str] | None = None):
    if model is not None:
        dt = tmp_path / "proc/device-tree"
        dt.mkdir(parents=True)
        (dt / "model").write_bytes(model.encode() + b"\x00")  # the kernel NUL-terminates it
    if dmi is not None:
        d = tmp_path / "sys/class/dmi/id"
        d.mkdir(parents=True)
        (d / "sys_vendor").write_text(dmi[0] + "\n")
        (d / "product_name").write_text(dmi[1] + "\n")
    return tmp_path


@pytest.mark.parametrize("model,expected", [
    ("Raspberry Pi 4 Model B Rev 1.4", "raspberry-pi-4"),
    ("Raspberry Pi Compute Module 4 Rev 1.0", "raspberry-pi-4"),
    ("Raspberry Pi 5 Model B Rev 1.0", "raspberry-pi-5"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "jetson-orin-nx"),
    ("NVIDIA Jetson Orin Nano Developer Kit", "jetson-orin-nano"),
    ("NVIDIA Jetson Nano Developer Kit", "jetson-nano"),
])
def test_device_tree_boards(tmp_path, model, expected):
    name, why = profiles.detect(fake_board(tmp_path, model=model), machine="aarch64")
    assert name == expected
    assert model in why


def test_x86_by_dmi(tmp_path):
    name, why = profiles.detect(fake_board(tmp_path, dmi=("Intel(R) Client Systems", "NUC11TNHi5")), machine="x86_64")
    assert name == "generic-x86"
    assert "NUC11TNHi5" in why


@pytest.mark.parametrize("model", ["NVIDIA Jetson AGX Orin Developer Kit", "Jetson-AGX", "Radxa ROCK 5B"])
def test_an_unknown_board_gets_the_generic_profile_and_is_told_how_to_pick_one(tmp_path, caplog, model):
    root = fake_board(tmp_path, model=model)
    assert profiles.detect(root, machine="aarch64")[0] == "generic"
    with caplog.at_level(logging.WARNING):
        profile = profiles.resolve(None, root)
    assert profile.name == "generic"
    assert f"unrecognised board {model!r}" in caplog.text
    assert "--profile NAME" in caplog.text and "raspberry-pi-5" in caplog.text
    # Nothing fitted on this board: no UPS, battery monitor or modem to fail to open.
    assert profile.data["serial"] == {"ups": "", "battery": "", "modem_at": ""}
    assert profile.data["panel"]["backend"] == "none"
    assert "no capture card" in caplog.text and "no UPS" in caplog.text


def test_the_generic_profile_uses_the_devices_it_finds(tmp_path, caplog):
    root = fake_board(tmp_path, model="NVIDIA Jetson Xavier NX Developer Kit")
    (root / "dev/v4l/by-id").mkdir(parents=True)
    (root / "dev/v4l/by-id/usb-MACROSILICON_USB_Video-video-index0").touch()
    (root / "dev/appliance-ups").touch()
    (root / "proc/asound").mkdir(parents=True)
    (root / "proc/asound/cards").write_text(" 0 [Device ]: USB-Audio - USB Audio Device\n")
    with caplog.at_level(logging.WARNING):
        profile = profiles.resolve(None, root)
    assert profile.data["video"]["device"] == "/dev/v4l/by-id/usb-MACROSILICON_USB_Video-video-index0"
    assert profile.data["serial"]["ups"] == "/dev/appliance-ups" and profile.data["serial"]["battery"] == ""
    assert "USB-Audio" in caplog.text and "UPS /dev/appliance-ups" in caplog.text


def test_nothing_to_detect_gives_the_generic_profile(tmp_path):
    name, why = profiles.detect(tmp_path, machine="riscv64")
    assert name == "generic" and "runs the devices it finds" in why


def test_the_sim_profile_is_never_detected(tmp_path):
    for model in ("sim", "Simulated devices", ""):
        root = tmp_path / (model or "empty")
        fake_board(root, model=model or None)
        assert profiles.detect(root, machine="aarch64")[0] != "sim"


def test_override_wins_over_detection(tmp_path):
    root = fake_board(tmp_path, model="Raspberry Pi 5 Model B Rev 1.0")
    assert profiles.resolve("jetson-nano", root).name == "jetson-nano"


def test_unknown_profile_name_suggests(tmp_path):
    with pytest.raises(ProfileError, match='did you mean "raspberry-pi-4"'):
        profiles.load("raspbery-pi-4")


def test_the_daemon_on_a_board_no_profile_knows_runs_generic_with_no_sim_actions(daemon_factory, tmp_path):
    root = fake_board(tmp_path / "board", model="NVIDIA Jetson AGX Orin Developer Kit")
    d = daemon_factory(profile=None, env={"APPLIANCE_BOARD_ROOT": str(root)}).start()
    d.wait_state(("READY", "DEGRADED"), timeout=20)
    status = d.request("status")["status"]
    assert status["profile"] == "generic"
    log = d.log()
    assert "unrecognised board 'NVIDIA Jetson AGX Orin Developer Kit'" in log and "--profile NAME" in log
    assert "generic profile: no capture card" in log
    answer = d.request("sim", action="stall", seconds=1)
    assert not answer["ok"] and "only with the sim profile" in answer["error"]
    assert not [c for c in status["components"] if c.startswith("sim")], "no simulated devices run"
    assert "panel failed" not in status["conditions"], "no panel fitted is not a fault"
    assert d.terminate() == 0
