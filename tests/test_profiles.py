"""Board detection from the device tree (or DMI), with the fallback to sim."""

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


def test_unknown_board_falls_back_to_sim_and_says_so(tmp_path, caplog):
    root = fake_board(tmp_path, model="Radxa ROCK 5B")
    assert profiles.detect(root, machine="aarch64")[0] == "sim"
    with caplog.at_level(logging.WARNING):
        profile = profiles.resolve(None, root)
    assert profile.name == "sim"
    assert "unrecognised board 'Radxa ROCK 5B'" in caplog.text
    assert "falling back to sim" in caplog.text


def test_nothing_to_detect_falls_back_to_sim(tmp_path):
    name, why = profiles.detect(tmp_path, machine="riscv64")
    assert name == "sim" and "falling back" in why


def test_override_wins_over_detection(tmp_path):
    root = fake_board(tmp_path, model="Raspberry Pi 5 Model B Rev 1.0")
    assert profiles.resolve("jetson-nano", root).name == "jetson-nano"


def test_unknown_profile_name_suggests(tmp_path):
    with pytest.raises(ProfileError, match='did you mean "raspberry-pi-4"'):
        profiles.load("raspbery-pi-4")
