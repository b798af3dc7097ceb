"""The single-host nightly job: systemd units that systemd itself accepts."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY

UNITS = DEPLOY / "systemd"
CASCADE_BIN = "/opt/cascade/venv/bin/cascade"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    return path


def test_systemd_verifies_the_units(tmp_path: Path) -> None:
    # verify also checks that ExecStart's program exists: stand in a stub for the installed CLI.
    stub = tmp_path / "cascade"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for name in ("cascade-distill.service", "cascade-distill.timer"):
        (tmp_path / name).write_text((UNITS / name).read_text().replace(CASCADE_BIN, str(stub)))
    result = subprocess.run(
        [
            systemd_analyze(),
            "verify",
            str(tmp_path / "cascade-distill.timer"),
            str(tmp_path / "cascade-distill.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "cascade-distill" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nType=oneshot\nExecStart=relative/path\n")
    result = subprocess.run([systemd_analyze(), "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 or result.stderr.strip()


def test_timer_runs_the_job_nightly_and_catches_up() -> None:
    timer = unit("cascade-distill.timer")["Timer"]
    assert timer["Unit"] == "cascade-distill.service"
    assert timer["Persistent"] == "true"
    result = subprocess.run(
        [systemd_analyze(), "calendar", "--iterations=2", timer["OnCalendar"]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "02:30:00 UTC" in result.stdout


def test_service_runs_one_bounded_cycle_as_an_unprivileged_user() -> None:
    service = unit("cascade-distill.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == f"{CASCADE_BIN} distill run --config /etc/cascade/cascade.yaml"
    assert service["User"] not in ("root", "0")
    assert service["EnvironmentFile"] == "/etc/cascade/cascade.env"
    assert service["TimeoutStartSec"] == "6h"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    env = dict(line.split("=", 1) for line in (UNITS / "cascade.env.example").read_text().splitlines() if "=" in line)
    for key in ("CASCADE_DISTILL__REGISTRY_DIR", "CASCADE_DISTILL__WORK_DIR"):  # what the job writes
        assert any(env[key].startswith(path) for path in service["ReadWritePaths"].split()), key
