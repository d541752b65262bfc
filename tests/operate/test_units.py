"""systemd units written by `fleet cloud install-service` / `fleet-agent install-service`.

The rendered files are checked by systemd itself where it is installed: ``systemd-analyze
verify`` (syntax, every directive known, ExecStart executable) and ``systemd-analyze security
--offline`` (the sandbox's exposure score). systemctl is never run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_app
from edgefleet.edge_agent.cli import app as agent_app
from edgefleet.service_units import UnitError, find_executable, render_agent, render_controller

SANDBOX = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
           "CapabilityBoundingSet=\n", "Restart=on-failure", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6")
BIN = Path(sys.executable).parent


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def _verify(unit: Path) -> None:
    proc = subprocess.run([_analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert unit.name not in proc.stderr, proc.stderr  # no warning about our file ("Unknown key …", bad values)


def _exposure(unit: Path) -> float:
    proc = subprocess.run([_analyze(), "security", "--offline=yes", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    return float(m.group(1))


def test_controller_unit_written_by_the_cli_is_sandboxed_and_verifies(tmp_path: Path) -> None:
    res = CliRunner().invoke(fleet_app, ["cloud", "install-service", "--dest", str(tmp_path), "--user", "fleetctl",
                                         "--data-dir", "/var/lib/edgefleet-ctl"])
    assert res.exit_code == 0, res.output
    unit = tmp_path / "edgefleet-controller.service"
    text = unit.read_text()
    assert f"wrote {unit}" in res.output
    assert "systemctl daemon-reload && systemctl enable --now edgefleet-controller.service" in res.output
    assert "useradd --system" in res.output and "cloud init --data-dir /var/lib/edgefleet-ctl" in res.output
    for line in SANDBOX:
        assert line in text
    assert "User=fleetctl\nGroup=fleetctl" in text
    assert "StateDirectory=edgefleet-ctl\n" in text and "ReadWritePaths=/var/lib/edgefleet-ctl\n" in text
    assert f"ExecStart={BIN / 'fleet'} cloud serve --data-dir /var/lib/edgefleet-ctl\n" in text
    assert "PrivateDevices=yes" in text and "DeviceAllow" not in text  # the controller needs no device
    assert (unit.stat().st_mode & 0o777) == 0o644
    _verify(unit)
    assert _exposure(unit) < 2.5


def test_agent_unit_reaches_cameras_and_gpu_only_and_verifies(tmp_path: Path) -> None:
    res = CliRunner().invoke(agent_app, ["install-service", "--dest", str(tmp_path), "--config", "/etc/edgefleet/agent.toml"])
    assert res.exit_code == 0, res.output
    unit = tmp_path / "edgefleet-agent.service"
    text = unit.read_text()
    assert "systemctl daemon-reload && systemctl enable --now edgefleet-agent.service" in res.output
    assert "chown root:edgefleet /etc/edgefleet/agent.toml && chmod 0640" in res.output
    for line in SANDBOX:
        assert line in text
    assert f"ExecStart={BIN / 'fleet-agent'} run --config /etc/edgefleet/agent.toml\n" in text
    assert "Environment=EDGEFLEET_AGENT_AGENT_DATA_DIR=/var/lib/edgefleet\n" in text  # the unit's data dir wins
    assert "DevicePolicy=closed" in text and "DeviceAllow=char-video4linux rw" in text
    assert "DeviceAllow=char-nvidia* rw" in text and "SupplementaryGroups=video" in text
    assert "PrivateDevices" not in text
    _verify(unit)
    assert _exposure(unit) < 3.0


def test_agent_without_devices_and_dynamic_user(tmp_path: Path) -> None:
    u = render_agent(config=Path("/etc/edgefleet/agent.toml"), data_dir=Path("/var/lib/edgefleet"), dynamic_user=True,
                     executable=find_executable("fleet-agent"), devices=False, groups=[])
    assert "DynamicUser=yes" in u.text and "\nUser=" not in u.text and "PrivateDevices=yes" in u.text
    assert "DeviceAllow" not in u.text and "SupplementaryGroups" not in u.text
    path = tmp_path / u.name
    path.write_text(u.text)
    _verify(path)


def test_dry_run_prints_the_unit_and_writes_nothing(tmp_path: Path) -> None:
    res = CliRunner().invoke(fleet_app, ["cloud", "install-service", "--dry-run", "--dest", str(tmp_path), "--embedded-broker"])
    assert res.exit_code == 0, res.output
    assert "[Service]" in res.output and "cloud serve --data-dir /var/lib/edgefleet --embedded-broker" in res.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"user": "root"}, "dedicated system account"),
    ({"user": "ops\nExecStartPre=/bin/sh"}, "dedicated system account"),
    ({"data_dir": Path("relative/dir")}, "absolute path"),
    ({"data_dir": Path("/var/lib/edge fleet")}, "no spaces"),
    ({"data_dir": Path("/var/lib/$HOME")}, "no spaces"),
    ({"data_dir": Path("/srv/edgefleet"), "dynamic_user": True}, "under /var/lib"),
])
def test_unsafe_values_never_reach_a_unit(kwargs: dict, message: str) -> None:
    args = {"data_dir": Path("/var/lib/edgefleet"), "executable": find_executable("fleet"), **kwargs}
    with pytest.raises(UnitError, match=message):
        render_controller(**args)


def test_bad_values_from_the_cli_are_clear_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(agent_app, ["install-service", "--dest", str(tmp_path), "--user", "root"])
    assert res.exit_code == 2 and "dedicated system account" in res.output
    res = CliRunner().invoke(fleet_app, ["cloud", "install-service", "--dest", str(tmp_path), "--exec", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "pass --exec PATH" in res.output
    assert list(tmp_path.iterdir()) == []


def test_data_dir_outside_var_lib_and_a_venv_under_home_are_warned_about() -> None:
    u = render_controller(data_dir=Path("/srv/edgefleet"), executable=find_executable("fleet"))
    assert "\nStateDirectory=" not in u.text and "ReadWritePaths=/srv/edgefleet\n" in u.text
    assert any("outside /var/lib" in w for w in u.warnings)
    u = render_controller(data_dir=Path("/var/lib/edgefleet"), executable=Path("/home/ops/venv/bin/fleet"))
    assert any("ProtectHome=yes hides" in w for w in u.warnings)
