"""The systemd unit: the hardening a reviewer expects, each line explained, and a unit systemd
itself accepts (`systemd-analyze verify`, where systemd is installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "fbm-bridge.service"
INSTANCE_UNIT = UNIT.with_name("fbm-bridge@.service")  # one instance per seller-and-warehouse config
UNITS = [UNIT, INSTANCE_UNIT]

HARDENING = {
    "PrivateDevices": "true",
    "ProtectKernelModules": "true",
    "ProtectKernelLogs": "true",
    "ProtectClock": "true",
    "ProtectHostname": "true",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictNamespaces": "true",
    "RestrictRealtime": "true",
    "RestrictSUIDSGID": "true",
    "LockPersonality": "true",
    "SystemCallFilter": "@system-service",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    # Already there before, and still needed.
    "ProtectSystem": "strict",
    "NoNewPrivileges": "true",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
}


def service_section(unit: Path = UNIT) -> list[str]:
    return section(unit, "[Service]")


def section(unit: Path, name: str) -> list[str]:
    lines = unit.read_text(encoding="utf-8").splitlines()
    start = lines.index(name)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("["))
    return lines[start + 1:end]


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
@pytest.mark.parametrize("key, value", HARDENING.items())
def test_the_service_is_hardened_and_each_setting_is_explained(unit: Path, key: str, value: str):
    lines = service_section(unit)
    [index] = [i for i, line in enumerate(lines) if line.split("=", 1)[0] == key]
    assert lines[index] == f"{key}={value}"
    above = lines[:index]
    # A comment explains it: on the line above, or above a group of settings it belongs to.
    assert any(line.startswith("#") for line in above[-3:]), f"{key} has no comment above it"


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_a_blocked_system_call_fails_with_an_error_instead_of_killing_the_service(unit: Path):
    assert "SystemCallErrorNumber=EPERM" in service_section(unit)


INSTANCE_CHOICES = {
    # %i names the config and the state folder: one instance per seller-and-warehouse config.
    "ExecStart": "/opt/fbm-bridge/.venv/bin/fbm-bridge --config /etc/fbm-bridge/%i.toml run",
    "StateDirectory": "fbm-bridge/%i",
    "User": "fbm-bridge",
    "Type": "notify",
    "NotifyAccess": "main",
    "WatchdogSec": "10min",
    "Restart": "on-failure",
    "RestartPreventExitStatus": "2",
    "TimeoutStopSec": "120",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "LoadCredential": "BRIDGE_LWA_CLIENT_ID:/etc/fbm-bridge/credentials/%i/BRIDGE_LWA_CLIENT_ID",
}


@pytest.mark.parametrize("key, value", INSTANCE_CHOICES.items())
def test_the_instance_unit_makes_each_choice_and_explains_it(key: str, value: str):
    lines = service_section(INSTANCE_UNIT)
    index = lines.index(f"{key}={value}")
    assert any(line.startswith("#") for line in lines[:index][-3:]), f"{key} has no comment above it"


def test_the_instance_unit_limits_restarts_and_loads_every_secret_from_its_own_folder():
    unit = section(INSTANCE_UNIT, "[Unit]")
    assert "StartLimitIntervalSec=600" in unit and "StartLimitBurst=5" in unit
    credentials = [line for line in service_section(INSTANCE_UNIT) if line.startswith("LoadCredential=")]
    assert [line.split("=", 1)[1].split(":")[0] for line in credentials] == [
        "BRIDGE_LWA_CLIENT_ID", "BRIDGE_LWA_CLIENT_SECRET", "BRIDGE_LWA_REFRESH_TOKEN", "BRIDGE_STATE_KEY"]
    assert all(f":/etc/fbm-bridge/credentials/%i/{line.split('=', 1)[1].split(':')[0]}" in line for line in credentials)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit, name", [(UNIT, UNIT.name), (INSTANCE_UNIT, "fbm-bridge@acme.service")],
                         ids=["fbm-bridge.service", "fbm-bridge@acme.service"])
def test_systemd_accepts_the_unit(tmp_path: Path, unit: Path, name: str):
    # verify also checks that ExecStart's program exists: point it at this Python. A template
    # is verified through an instance of it (systemd finds the template beside it).
    text = unit.read_text(encoding="utf-8").replace(
        "/opt/fbm-bridge/.venv/bin/fbm-bridge", str(Path(sys.executable).resolve()))
    (tmp_path / unit.name).write_text(text, encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                          timeout=60)
    # An unknown or misspelt key is only a warning (exit 0): any line naming the unit fails.
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr
