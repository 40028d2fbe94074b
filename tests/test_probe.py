"""`appliance probe`: says plainly what is there and what is missing, and why."""

from __future__ import annotations

import json

from appliance import probe
from appliance.config import Config
from appliance.sim.pty import PtyDevice
from conftest import run_cli

Q1_REPLY = b"(208.4 140.0 208.4 034 59.9 2.05 35.0 00110000\r"


def lines_about(text: str, what: str) -> list[str]:
    return [line for line in text.splitlines() if what in line]


def test_pi4_profile_on_a_machine_without_its_hardware():
    r = run_cli("probe", "--profile", "raspberry-pi-4")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("profile raspberry-pi-4")
    (video,) = lines_about(out, "/dev/appliance-video")
    assert "not found" in video and "missing device node" in video and "capture card" in video
    (hw,) = lines_about(out, "h264_v4l2m2m")
    assert "not found" in hw and "/dev/video11 is missing" in hw
    (sw,) = lines_about(out, "libx264")
    assert "found" in sw and "not found" not in sw
    for node in ("/dev/appliance-ups", "/dev/appliance-battery", "/dev/appliance-modem-at"):
        (line,) = lines_about(out, node)
        assert "not found" in line and "missing device node" in line
    assert "parts usable" in out


def test_probe_json_lists_every_part():
    r = run_cli("probe", "--profile", "raspberry-pi-4", "--json")
    data = json.loads(r.stdout)
    parts = {p["part"] for p in data["parts"]}
    assert {"video", "encoder 1", "encoder 2", "panel", "UPS", "battery monitor", "modem AT port"} <= parts
    assert all(p["result"] in ("found", "not found", "simulated", "not fitted") for p in data["parts"])


def test_sim_profile_reports_simulated_parts():
    r = run_cli("probe", "--profile", "sim", "--json")
    parts = {p["part"]: p for p in json.loads(r.stdout)["parts"]}
    assert parts["video"]["result"] == "simulated"
    assert parts["panel"]["result"] == "simulated"
    assert parts["UPS"]["result"] == "simulated"


def test_serial_ports_answering_the_right_protocol():
    def ups(data):
        return Q1_REPLY if data.endswith(b"Q1\r") else None

    def modem(data):
        return b"\r\nOK\r\n" if data.endswith(b"AT\r") else None

    with PtyDevice(ups, baud=2400) as u, PtyDevice(modem) as m:
        f = probe.probe_serial_port("ups", u.slave_path)
        assert f.result == "found" and "Megatec Q1 UPS answered" in f.detail
        f = probe.probe_serial_port("modem_at", m.slave_path)
        assert f.result == "found" and "OK" in f.detail


def test_serial_ports_wrong_protocol_and_silence():
    def echo(data):
        return data  # what a Megatec UPS does with a command it does not know

    with PtyDevice(echo) as e, PtyDevice(None) as silent:
        f = probe.probe_serial_port("ups", e.slave_path)
        assert f.result == "not found" and "wrong protocol" in f.detail
        f = probe.probe_serial_port("ups", silent.slave_path)
        assert f.result == "not found" and "no reply" in f.detail


def test_battery_monitor_is_recognised_by_its_text_blocks():
    block = b"\r\nPID\t0xA381\r\nV\t12800\r\nI\t-1500\r\nSOC\t955\r\nChecksum\t\xb6"
    with PtyDevice(None) as dev:
        import threading
        stop = threading.Event()

        def talk():
            while not stop.wait(0.2):
                dev.write(block)
        t = threading.Thread(target=talk, name="vedirect-talker")
        t.start()
        try:
            f = probe.probe_serial_port("battery", dev.slave_path)
        finally:
            stop.set()
            t.join()
    assert f.result == "found" and "0xA381" in f.detail


def test_unplugged_port_is_a_missing_node(tmp_path):
    f = probe.probe_serial_port("ups", str(tmp_path / "ttyUSB9"))
    assert f.result == "not found" and f.detail == "missing device node"


def test_file_source_and_no_panel(tmp_path):
    cfg = Config.model_validate({"video": {"source": "file", "file": str(tmp_path / "rehearsal.ts")},
                                 "panel": {"backend": "none"}})
    (video,) = probe.probe_video(cfg)
    assert video.result == "not found" and "file not found" in video.detail
    (panel,) = probe.probe_panel(cfg)
    assert panel.result == "not fitted"


def test_jetson_profile_on_a_machine_without_nvenc_says_what_is_missing():
    r = run_cli("probe", "--profile", "jetson-orin-nx")
    assert r.returncode == 0, r.stderr
    (h265,) = lines_about(r.stdout, "nvv4l2h265enc")
    assert "not found" in h265 and "H.265, hardware" in h265, h265
    assert "GStreamer element nvvidconv is missing" in h265 and "nvidia-l4t-gstreamer (JetPack)" in h265, h265
    assert "/dev/v4l2-nvenc is missing" in h265, h265
    (h264,) = lines_about(r.stdout, "nvv4l2h264enc")
    assert "not found" in h264 and "H.264, hardware" in h264, h264
    (sw,) = lines_about(r.stdout, "libx264")
    assert "found" in sw and "not found" not in sw and "H.264, software" in sw, sw
