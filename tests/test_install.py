"""Unit files, udev rules and the install script, checked as the target would."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

UNIT = ROOT / "systemd" / "appliance.service"


def verify_unit(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # ExecStart must point at an executable for verify; on the target it is
    # /opt/appliance/.venv/bin/appliance, here the venv's own.
    exe = Path(sys.executable).with_name("appliance")
    unit = tmp_path / "appliance.service"
    unit.write_text(unit_text.replace("/opt/appliance/.venv/bin/appliance", str(exe)))
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def analyze():
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is missing: scripts/test installs the systemd package"
    return path


def test_systemd_analyze_verify_passes_without_warnings(analyze, tmp_path):
    r = verify_unit(UNIT.read_text(), tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr


def test_verify_would_catch_a_broken_unit(analyze, tmp_path):
    # The check above means something: a misspelt key is reported.
    r = verify_unit(UNIT.read_text().replace("WatchdogSec=", "WatchdogSecs="), tmp_path)
    assert "Unknown key" in r.stderr


def test_unit_has_what_the_appliance_relies_on():
    text = UNIT.read_text()
    unit, service = text.split("[Service]")[0], text.split("[Service]")[1].split("[Install]")[0]
    for key in ("StartLimitIntervalSec", "StartLimitBurst"):
        assert re.search(rf"^{key}=", unit, re.M), f"{key} belongs in [Unit]"
    for line in ("Type=notify", "Restart=on-failure", "User=appliance", "StateDirectory=appliance",
                 "RuntimeDirectory=appliance"):
        assert re.search(rf"^{line}$", service, re.M), line
    assert re.search(r"^WatchdogSec=\d+", service, re.M)
    assert not re.search(r"^PrivateDevices=yes", service, re.M), "PrivateDevices hides ttyUSB, gpiochip, video"


def test_udev_rules_are_well_formed():
    rules = (ROOT / "udev" / "99-appliance.rules").read_text()
    logical = rules.replace("\\\n", " ")
    names = set()
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for item in re.split(r",\s*", line):
            assert re.fullmatch(r'[A-Z_]+(\{[^}]+\})?\s*(==|!=|=|\+=|:=)\s*"[^"]*"', item.strip()), item
        names.update(re.findall(r'SYMLINK\+="([^"]+)"', line))
    assert {"appliance-ups", "appliance-battery", "appliance-modem-at", "appliance-video"} <= names
    # ModemManager keeps off the UPS and battery adapters.
    for line in logical.splitlines():
        if "appliance-ups" in line or "appliance-battery" in line:
            assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in line


def test_install_lays_out_files_under_a_root(tmp_path, analyze):
    r = subprocess.run([str(ROOT / "scripts" / "install"), "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for path in ("etc/systemd/system/appliance.service", "etc/udev/rules.d/99-appliance.rules",
                 "etc/appliance/appliance.toml", "usr/share/appliance/hw_profiles/raspberry-pi-4.toml",
                 "opt/appliance/src/pyproject.toml", "etc/polkit-1/rules.d/50-appliance-poweroff.rules"):
        assert (tmp_path / path).exists(), path
    assert not (tmp_path / "opt/appliance/src/.git").exists()
    # The installed example config is valid as it stands.
    from appliance import config as cfgmod
    cfgmod.load(tmp_path / "etc/appliance/appliance.toml", {}, "profile")
    # A second run never overwrites the site's config.
    (tmp_path / "etc/appliance/appliance.toml").write_text('[device]\nname = "mine"\n')
    subprocess.run([str(ROOT / "scripts" / "install"), "--root", str(tmp_path)], check=True, capture_output=True)
    assert 'name = "mine"' in (tmp_path / "etc/appliance/appliance.toml").read_text()


# --- exposure: systemd-analyze security, as a maintainer would run it -------------------------

def exposure(unit_name: str, tmp_path: Path) -> float:
    exe = Path(sys.executable).with_name("appliance")
    unit = tmp_path / unit_name
    unit.write_text((ROOT / "systemd" / unit_name).read_text().replace("/opt/appliance/.venv/bin/appliance", str(exe)))
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", r.stdout)
    assert m, r.stdout + r.stderr
    print(f"{unit_name}: exposure {m.group(1)}")
    return float(m.group(1))


@pytest.mark.parametrize("unit_name, at_most", [("appliance.service", 3.5), ("appliance-relay.service", 2.5)])
def test_exposure_of_the_units(analyze, tmp_path, unit_name, at_most):
    assert exposure(unit_name, tmp_path) <= at_most


def test_the_relay_unit_reads_its_secret_as_a_credential_and_does_not_restart_on_a_config_error():
    text = (ROOT / "systemd" / "appliance-relay.service").read_text()
    assert re.search(r"^DynamicUser=yes$", text, re.M)
    assert re.search(r"^LoadCredential=relay\.secret:/etc/appliance/relay\.secret$", text, re.M), \
        "a DynamicUser cannot read a file of root's group appliance: systemd hands it over"
    assert re.search(r"^ExecStart=.* --secret-file %d/relay\.secret", text, re.M)
    assert re.search(r"^RestartPreventExitStatus=78 243$", text, re.M)


def _pins(lock: Path) -> dict[str, str]:
    """name -> version of every pin in a pip-compile lock, each with its hashes."""
    pins = {}
    # A pin and its continuation lines (each ending in a backslash but the last) form one entry.
    for entry in re.split(r"(?<!\\)\n", lock.read_text()):
        if m := re.match(r"([A-Za-z0-9_.-]+)==([^\s;]+)", entry):
            assert "--hash=sha256:" in entry, f"{lock.name}: {m.group(1)} has no hash"
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_the_locks_pin_every_dependency_with_hashes_and_agree():
    """A dependency added to pyproject.toml without `scripts/lock` would install nothing
    on a box (scripts/install takes the lock alone), and fail there at import."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower().replace("_", "-")  # noqa: E731
    box, test = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-test.lock")
    assert {name(r) for r in project["dependencies"]} - set(box) == set(), "run scripts/lock"
    assert {name(r) for r in project["optional-dependencies"]["test"]} - set(test) == set(), "run scripts/lock"
    assert {n: v for n, v in box.items() if test.get(n) != v} == {}, "the box runs what the tests ran"
    for installer in ("scripts/install", "scripts/lib/bootstrap.sh"):
        assert "--require-hashes" in (ROOT / installer).read_text(), installer
