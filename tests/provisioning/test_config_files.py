"""controller.toml and agent.toml refuse what they do not know (naming key, file and the closest
known key), name the expected type of a wrong value, and the CLI says where it looked for the controller."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_app
from edgefleet.cloud.errors import ConfigError as CloudConfigError
from edgefleet.cloud.settings import load_settings, resolve_data_dir
from edgefleet.edge_agent.cli import app as agent_app
from edgefleet.edge_agent.config import load_config
from edgefleet.edge_agent.errors import ConfigError as AgentConfigError

runner = CliRunner()


class _Flat(str):
    """Output with whitespace ignored: rich wraps long lines, even inside a path."""

    def __contains__(self, fragment: object) -> bool:
        return "".join(str(fragment).split()) in "".join(self.split())


def _flat(text: str) -> _Flat:
    return _Flat(text)


def test_unknown_controller_key_stops_serve_naming_key_file_and_suggestion(tmp_path: Path) -> None:
    (tmp_path / "controller.toml").write_text('[controller]\nmqtt_protocl = "5"\n')
    out = runner.invoke(fleet_app, ["cloud", "serve", "--data-dir", str(tmp_path)])
    assert out.exit_code == 1
    assert (f"{tmp_path / 'controller.toml'}: [controller]: unknown key 'mqtt_protocl'; "
            "did you mean 'mqtt_protocol'?") in _flat(out.output)


def test_unknown_controller_table_and_wrong_type_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "controller.toml"
    cfg.write_text("[controler]\nhttp_port = 1\n")
    with pytest.raises(CloudConfigError, match="unknown table 'controler'; did you mean 'controller'"):
        load_settings(tmp_path, env={})
    cfg.write_text('[controller]\nhttp_port = "eighty"\n')
    with pytest.raises(CloudConfigError) as exc:
        load_settings(tmp_path, env={})
    assert str(cfg) in str(exc.value) and "http_port" in str(exc.value) and "expected an integer" in str(exc.value)


def test_unknown_agent_key_stops_the_agent_naming_key_file_and_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\ndevice_id = "cam-1"\n\n[mqtt]\nhots = "broker"\n')
    out = runner.invoke(agent_app, ["run", "--config", str(cfg)])
    assert out.exit_code == 2
    assert f"{cfg}: unknown key in [mqtt]: 'hots'; did you mean 'host'?" in _flat(out.output)
    cfg.write_text('[agent]\ndevice_id = "cam-1"\n\n[mqtt]\nport = "1883x"\n')
    with pytest.raises(AgentConfigError) as exc:
        load_config(cfg, env={})
    assert str(cfg) in str(exc.value) and "mqtt.port" in str(exc.value) and "expected an integer" in str(exc.value)
    with pytest.raises(AgentConfigError, match="unknown key in \\[agent\\]: 'data_dri'; did you mean 'data_dir'"):
        load_config(None, env={"EDGEFLEET_AGENT_AGENT_DEVICE_ID": "cam-1", "EDGEFLEET_AGENT_AGENT_DATA_DRI": "/x"})


def test_relative_paths_in_agent_toml_are_relative_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "agent.toml").write_text('[agent]\ndevice_id = "cam-1"\ntrust_roots = "."\n\n[mqtt]\nca_file = "ca.pem"\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_config(bundle / "agent.toml", env={})
    assert cfg.agent.trust_roots == bundle and cfg.mqtt.ca_file == bundle / "ca.pem" and cfg.mqtt.tls


def test_cli_finds_the_controller_in_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEFLEET_HOME", raising=False)
    (tmp_path / "controller.toml").write_text("[controller]\nhttp_port = 8099\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir() == tmp_path.resolve()
    assert load_settings().http_port == 8099
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path / "elsewhere"))  # the variable wins over the directory
    assert resolve_data_dir() == (tmp_path / "elsewhere").resolve()
    assert resolve_data_dir(tmp_path / "given") == (tmp_path / "given").resolve()  # and --data-dir over both


def test_cli_says_what_is_missing_and_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEFLEET_URL", raising=False)
    monkeypatch.delenv("EDGEFLEET_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(fleet_app, ["device", "ls"], env={"EDGEFLEET_HOME": None, "HOME": str(tmp_path / "home")})
    text = _flat(out.output)
    assert out.exit_code == 1
    assert f"{tmp_path / 'controller.toml'} (current directory): not there" in text
    assert f"{tmp_path / 'home' / '.edgefleet' / 'cli.toml'} (default): not there" in text
    assert "--data-dir" in text and "EDGEFLEET_HOME" in text and "fleet cloud init" in text

    ctl = tmp_path / "ctl"
    ctl.mkdir()
    (ctl / "controller.toml").write_text("[controller]\n")  # a controller.toml but no CLI config
    out = runner.invoke(fleet_app, ["device", "add", "cam-1", "--data-dir", str(ctl)], env={"EDGEFLEET_HOME": None})
    assert out.exit_code == 1 and f"{ctl / 'cli.toml'} (--data-dir): not there" in _flat(out.output)
    out = runner.invoke(fleet_app, ["device", "ls"], env={"EDGEFLEET_HOME": str(ctl / "nope")})
    assert f"{ctl / 'nope' / 'cli.toml'} (EDGEFLEET_HOME): not there" in _flat(out.output)
    out = runner.invoke(fleet_app, ["cloud", "serve", "--data-dir", str(ctl)])
    assert out.exit_code == 1 and f"{ctl / 'controller.db'} (--data-dir): not there" in _flat(out.output)


def test_cloud_init_refuses_options_that_cannot_work(tmp_path: Path) -> None:
    for args, fragment in (
        (["--public-url", "fleet.example.org"], "--public-url 'fleet.example.org'"),
        (["--mqtt-protocol", "4"], "--mqtt-protocol '4': use 5"),
        (["--database-url", "mysql://x/y"], "mysql is not supported"),
        (["--mqtt-password-file", str(tmp_path / "none")], "--mqtt-password-file"),
    ):
        out = runner.invoke(fleet_app, ["cloud", "init", "--data-dir", str(tmp_path / "d"), "--no-tls", *args])
        assert out.exit_code == 1 and fragment in _flat(out.output), out.output
        assert not (tmp_path / "d" / "controller.toml").exists()  # nothing written


def test_cloud_init_external_broker_credentials_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    home = tmp_path / "d"
    out = runner.invoke(fleet_app, ["cloud", "init", "--data-dir", str(home), "--no-tls", "--mqtt-host", "broker.lan",
                                    "--mqtt-port", "1884", "--mqtt-username", "controller",
                                    "--mqtt-password-file", str(secret), "--public-url", "http://10.0.0.5:8080"])
    assert out.exit_code == 0, out.output
    assert "s3cret" not in (home / "controller.toml").read_text()  # referenced, not copied
    s = load_settings(home, env={})
    assert (s.mqtt_host, s.mqtt_port, s.mqtt_username, s.mqtt_password) == ("broker.lan", 1884, "controller", "s3cret")
    assert s.device_mqtt == {"host": "broker.lan", "port": 1884, "protocol": "3.1.1", "tls": False}
    assert s.base_url == "http://10.0.0.5:8080"
