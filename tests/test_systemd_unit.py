"""The systemd unit: the hardening a reviewer expects, each line explained, and a unit systemd
itself accepts (`systemd-analyze verify`, where systemd is installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "fbm-bridge.service"

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


def service_section() -> list[str]:
    lines = UNIT.read_text(encoding="utf-8").splitlines()
    start = lines.index("[Service]")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("["))
    return lines[start + 1:end]


@pytest.mark.parametrize("key, value", HARDENING.items())
def test_the_service_is_hardened_and_each_setting_is_explained(key: str, value: str):
    lines = service_section()
    [index] = [i for i, line in enumerate(lines) if line.split("=", 1)[0] == key]
    assert lines[index] == f"{key}={value}"
    above = lines[:index]
    # A comment explains it: on the line above, or above a group of settings it belongs to.
    assert any(line.startswith("#") for line in above[-3:]), f"{key} has no comment above it"


def test_a_blocked_system_call_fails_with_an_error_instead_of_killing_the_service():
    assert "SystemCallErrorNumber=EPERM" in service_section()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path):
    # verify also checks that ExecStart's program exists: point it at this Python.
    text = UNIT.read_text(encoding="utf-8").replace(
        "/opt/fbm-bridge/.venv/bin/fbm-bridge", str(Path(sys.executable).resolve()))
    unit = tmp_path / UNIT.name
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    # An unknown or misspelt key is only a warning (exit 0): any line naming the unit fails.
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if UNIT.name in line]
    assert done.returncode == 0 and complaints == [], done.stdout + done.stderr
