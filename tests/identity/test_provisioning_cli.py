"""An operator's path, by the CLIs: `fleet device add --out`, `fleet-agent provision --credentials`,
a real agent that runs from those files alone, `fleet device rotate-credentials --now`,
`fleet device revoke`, `fleet token create --expires`."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_app
from edgefleet.edge_agent.cli import app as agent_app
from edgefleet.edge_agent.config import load_config

from ..conftest import RunningAgent, push, wait_until

runner = CliRunner()


def _fleet(stack, *args: str):  # type: ignore[no-untyped-def]
    result = runner.invoke(fleet_app, [*args, "--url", stack.url, "--token", stack.token])
    assert result.exit_code == 0, result.output
    return result


def test_device_add_out_then_provision_then_run(stack, broker, digit_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "prov"
    _fleet(stack, "device", "add", "cam-p", "--hw", "cpu-x86_64", "--out", str(out),
           "--mqtt-host", broker.host, "--mqtt-port", str(broker.port))
    files = {p.name for p in out.iterdir()}
    assert {"agent.toml", "credentials.json", "director-root.json", "image-root.json"} <= files
    assert stat.S_IMODE((out / "credentials.json").stat().st_mode) == 0o600
    toml = (out / "agent.toml").read_text()
    creds = json.loads((out / "credentials.json").read_text())
    assert creds["token"] not in toml and creds["mqtt_password"] not in toml  # secrets live only in credentials.json

    data_dir = tmp_path / "device-data"
    env = {"EDGEFLEET_AGENT_AGENT_DATA_DIR": str(data_dir)}
    result = runner.invoke(agent_app, ["provision", "--config", str(out / "agent.toml"),
                                       "--director-root", str(out / "director-root.json"),
                                       "--image-root", str(out / "image-root.json"),
                                       "--credentials", str(out / "credentials.json")], env=env)
    assert result.exit_code == 0, result.output
    stored = data_dir / "identity" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    again = runner.invoke(agent_app, ["provision", "--config", str(out / "agent.toml"),
                                      "--credentials", str(out / "credentials.json")], env=env)
    assert again.exit_code == 1 and "--force" in again.output  # never silently replaced

    from edgefleet.edge_agent.daemon import Agent

    cfg = load_config(out / "agent.toml", env={**env, "EDGEFLEET_AGENT_SOURCE_KIND": "synthetic-digits",
                                               "EDGEFLEET_AGENT_AGENT_HEALTH_WINDOW_S": "1",
                                               "EDGEFLEET_AGENT_OUTPUT_SOCKET": ""})
    assert cfg.agent.token == "" and cfg.mqtt.password is None  # nothing secret in the file …
    ra = RunningAgent(Agent(cfg)).start()  # … the agent finds its credentials in its data dir
    try:
        push(stack, digit_models[0])
        _fleet(stack, "deploy", "--model", "digits:1.0", "--device", "cam-p")
        wait_until(lambda: stack.client.get_device("cam-p")["slots"]["control"]["installed"] == "digits:1.0",
                   timeout=60, message="provisioned agent installs its model")
    finally:
        ra.stop()

    _fleet(stack, "device", "rotate-credentials", "cam-p", "--now", "--out", str(tmp_path / "prov2"))
    fresh = json.loads((tmp_path / "prov2" / "credentials.json").read_text())
    assert fresh["token"] != creds["token"]
    _fleet(stack, "device", "revoke", "cam-p", "--yes")
    assert stack.client.get_device("cam-p")["revoked_at"]


def test_token_create_with_expiry(stack) -> None:  # type: ignore[no-untyped-def]
    result = _fleet(stack, "token", "create", "--role", "viewer", "--name", "ci", "--expires", "12h")
    assert "expires" in result.output
    bad = runner.invoke(fleet_app, ["token", "create", "--role", "viewer", "--name", "x", "--expires", "soon",
                                    "--url", stack.url, "--token", stack.token])
    assert bad.exit_code != 0 and "--expires" in bad.output
    listing = _fleet(stack, "token", "ls", "--json")
    rows = json.loads(listing.output)
    assert any(r["name"] == "ci" and r["expires_at"] for r in rows)
