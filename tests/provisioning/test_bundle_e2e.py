"""The production path with zero hand edits: `fleet cloud init` with options → the controller as
`fleet cloud serve` runs it (settings read back from the written controller.toml, the embedded
broker with its password file and ACL) → `fleet device add --out` → `fleet-agent provision DIR`
→ a real agent connects, reports and installs a deployment."""

from __future__ import annotations

import json
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from edgefleet.cloud.api import create_app
from edgefleet.cloud.broker import MosquittoBroker, free_port
from edgefleet.cloud.cli import app as fleet_app
from edgefleet.cloud.client import ApiClient, load_cli_config
from edgefleet.cloud.demo.orchestrator import UvicornThread
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.tls_setup import embedded_broker
from edgefleet.edge_agent.cli import app as agent_app
from edgefleet.edge_agent.config import load_config
from edgefleet.edge_agent.daemon import Agent

from ..conftest import RunningAgent, wait_until

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

runner = CliRunner()


def test_init_add_provision_run_without_edits(tmp_path: Path, digit_models) -> None:  # type: ignore[no-untyped-def]
    home, bundle = tmp_path / "controller", tmp_path / "bundle"
    http_port, mqtt_port = free_port(), free_port()
    protocol = "5" if MosquittoBroker.available() else "3.1.1"  # amqtt speaks 3.1.1 only
    init = runner.invoke(fleet_app, [
        "cloud", "init", "--data-dir", str(home), "--no-tls", "--http-port", str(http_port),
        "--public-url", f"http://127.0.0.1:{http_port}/", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(mqtt_port),
        "--mqtt-protocol", protocol], env={"EDGEFLEET_HOME": None})
    assert init.exit_code == 0, init.output
    cfg_file = home / "controller.toml"
    assert stat.S_IMODE(cfg_file.stat().st_mode) == 0o600
    written = tomllib.loads(cfg_file.read_text())["controller"]
    assert (written["public_url"], written["mqtt_port"], written["mqtt_protocol"]) == (
        f"http://127.0.0.1:{http_port}", mqtt_port, protocol)
    assert "# database_url" in cfg_file.read_text()  # the other settings are documented, commented out

    settings = load_settings(home, env={})  # what `fleet cloud serve --embedded-broker` does
    broker = embedded_broker(settings, auth_dir=settings.broker_auth_path)
    broker.start()
    controller = Controller(settings)
    if controller.broker_auth is not None:
        controller.broker_auth.set_reload(broker.reload)
    controller.start()
    http = UvicornThread(create_app(controller), settings.http_host, settings.http_port)
    http.start()
    agent_home = Path(tempfile.mkdtemp(prefix="efp"))  # short: the agent's unix socket lives here
    ra = None
    try:
        add = runner.invoke(fleet_app, ["device", "add", "cam-b", "--hw", "cpu-x86_64", "--out", str(bundle),
                                        "--source", "synthetic-digits", "--agent-data-dir", str(agent_home / "data"),
                                        "--data-dir", str(home)])
        assert add.exit_code == 0, add.output
        assert stat.S_IMODE((bundle / "credentials.json").stat().st_mode) == 0o600
        agent_toml = tomllib.loads((bundle / "agent.toml").read_text())
        assert agent_toml["agent"]["controller_url"] == f"http://127.0.0.1:{http_port}"
        assert agent_toml["agent"]["trust_roots"] == "."  # inside the bundle, relative
        assert (agent_toml["mqtt"]["port"], agent_toml["mqtt"]["protocol"]) == (mqtt_port, protocol)
        creds = json.loads((bundle / "credentials.json").read_text())
        assert creds["mqtt_password"] not in (bundle / "agent.toml").read_text()

        moved = shutil.move(str(bundle), str(agent_home / "cam-b-bundle"))  # the bundle travels to the device
        prov = runner.invoke(agent_app, ["provision", moved])
        assert prov.exit_code == 0, prov.output
        installed = agent_home / "data" / "agent.toml"
        assert f"fleet-agent run --config {installed}" in prov.output
        again = runner.invoke(agent_app, ["provision", moved])
        assert again.exit_code == 1 and "--force" in again.output
        shutil.rmtree(moved)  # nothing of the bundle is needed any more

        ra = RunningAgent(Agent(load_config(installed, env={}))).start()
        saved = load_cli_config(home)
        client = ApiClient(saved["url"], saved["token"])
        wait_until(lambda: client.get_device("cam-b")["online"], timeout=30, message="provisioned agent online")
        m = digit_models[0].manifest
        client.push_model(digit_models[0].path, name=m.name, version=m.version,
                          manifest=m.model_dump(mode="json", by_alias=True))
        dep = runner.invoke(fleet_app, ["deploy", "--model", "digits:1.0", "--device", "cam-b", "--data-dir", str(home)])
        assert dep.exit_code == 0, dep.output
        wait_until(lambda: client.get_device("cam-b")["slots"]["control"]["installed"] == "digits:1.0",
                   timeout=60, message="the provisioned agent installs and reports its deployment")
        client.close()
    finally:
        if ra is not None:
            ra.stop()
        http.stop()
        controller.stop()
        broker.stop()
        shutil.rmtree(agent_home, ignore_errors=True)


def test_tls_bundle_carries_the_fleet_ca_and_installs_absolute_paths(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from edgefleet.cloud.cli.device_cmd import write_provisioning
    from edgefleet.edge_agent.provision import install_bundle

    roots = stack.client.request("GET", "/trust/roots")
    roots["fleet_ca_pem"] = "-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n"
    creds = stack.client.enrol_device("cam-t", "cpu-x86_64", {})
    bundle = tmp_path / "bundle"
    endpoints = {"controller_url": "https://fleet.example.org",
                 "mqtt": {"host": "fleet.example.org", "port": 8883, "protocol": "5", "tls": True}}
    write_provisioning(bundle, creds, roots, endpoints=endpoints, agent_data_dir="/var/lib/edgefleet",
                       source_kind="camera", source_uri="rtsp://cam.lan/stream")
    text = (bundle / "agent.toml").read_text()
    assert str(tmp_path) not in text  # nothing of the operator's machine
    raw = tomllib.loads(text)
    assert raw["agent"]["ca_file"] == raw["mqtt"]["ca_file"] == "fleet-ca.pem"
    assert raw["mqtt"]["tls"] is True and raw["source"] == {"kind": "camera", "uri": "rtsp://cam.lan/stream", "fps": 15}

    home = tmp_path / "device"
    done = install_bundle(bundle, data_dir=home, env={})
    cfg = load_config(done.config_path, env={})
    assert done.config_path == home / "agent.toml" and stat.S_IMODE(done.config_path.stat().st_mode) == 0o600
    assert cfg.agent.ca_file == cfg.mqtt.ca_file == home / "fleet-ca.pem" and cfg.mqtt.tls
    assert cfg.agent.trust_roots == home / "roots" and (home / "trust" / "trusted" / "director-root.json").exists()
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.protocol) == ("fleet.example.org", 8883, "5")
    assert creds["token"] not in done.config_path.read_text()
    assert stat.S_IMODE((home / "identity" / "credentials.json").stat().st_mode) == 0o600


def test_device_add_refuses_a_source_it_cannot_use(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = runner.invoke(fleet_app, ["device", "add", "cam-s", "--out", str(tmp_path / "b"), "--source", "webcam",
                                    "--url", stack.url, "--token", stack.token])
    assert out.exit_code == 1 and "--source 'webcam'" in out.output
    assert stack.client.list_devices() == []  # refused before anything was enrolled
