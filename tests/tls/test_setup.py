"""`fleet cloud init` makes the fleet CA and certificate and records them; `serve` serves HTTPS and
allows plain HTTP only on loopback; agents and the bridge warn about plain links off loopback."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet.cloud.bridge import MqttBridge
from edgefleet.cloud.cli.cloud_cmd import app
from edgefleet.cloud.errors import ConfigError
from edgefleet.cloud.pki import FleetCA
from edgefleet.cloud.settings import load_settings
from edgefleet.cloud.tls_setup import embedded_broker, http_ssl_options, split_names
from edgefleet.edge_agent.config import AgentConfig, load_config
from edgefleet.edge_agent.errors import ConfigError as AgentConfigError
from edgefleet.edge_agent.tls import warn_plain_links


def _init(data_dir: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["init", "--data-dir", str(data_dir), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_init_creates_the_ca_a_server_certificate_and_tls_settings(tmp_path: Path) -> None:
    data_dir = tmp_path / "home"
    _init(data_dir, "--tls-name", "fleet.example.org", "--tls-name", "10.0.0.5")
    pki = data_dir / "pki"
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700
    assert stat.S_IMODE((pki / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((pki / "server.key").stat().st_mode) == 0o600
    s = load_settings(data_dir, env={})
    assert s.tls_cert_file == pki / "server.pem" and s.tls_key_file == pki / "server.key"
    assert s.tls_ca_file == s.mqtt_ca_file == pki / "ca.pem"
    assert s.mqtt_tls is True and s.mqtt_tls_port == 8883
    assert s.base_url.startswith("https://")
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((pki / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fleet.example.org"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    cli = (data_dir / "cli.toml").read_text()
    assert "https://" in cli and str(pki / "ca.pem") in cli


def test_init_again_keeps_the_ca_and_the_operators_settings(tmp_path: Path) -> None:
    data_dir = tmp_path / "home"
    _init(data_dir)
    ca_pem = FleetCA.open(data_dir / "pki").ca_pem
    cfg = data_dir / "controller.toml"
    cfg.write_text(cfg.read_text().replace("mqtt_tls = true", "mqtt_tls = false"))
    out = _init(data_dir)
    assert "kept" in out
    assert FleetCA.open(data_dir / "pki").ca_pem == ca_pem
    assert load_settings(data_dir, env={}).mqtt_tls is False  # an operator's choice is not overwritten


def test_init_default_names_cover_loopback_and_this_host(tmp_path: Path) -> None:
    import socket

    _init(tmp_path / "home")
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "home" / "pki" / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", socket.gethostname()} <= set(san.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def test_init_no_tls_makes_no_ca(tmp_path: Path) -> None:
    _init(tmp_path / "home", "--no-tls")
    assert not (tmp_path / "home" / "pki").exists()
    assert load_settings(tmp_path / "home", env={}).base_url.startswith("http://")


def test_split_names() -> None:
    assert split_names(["localhost", "127.0.0.1", "::1", "a.b"]) == (["localhost", "a.b"], ["127.0.0.1", "::1"])


@pytest.mark.parametrize(
    ("host", "cert", "insecure", "force", "expect"),
    [
        ("0.0.0.0", True, False, False, "https"),
        ("127.0.0.1", True, False, False, "https"),
        ("127.0.0.1", False, False, False, "plain"),
        ("127.0.0.1", True, True, False, "plain"),
        ("0.0.0.0", False, False, False, "refused"),
        ("0.0.0.0", True, True, False, "refused"),
        ("0.0.0.0", False, True, False, "refused"),
        ("0.0.0.0", False, True, True, "plain"),
        ("10.1.2.3", False, False, False, "refused"),
    ],
)
def test_serve_https_by_default_and_plain_http_only_on_loopback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, cert: bool, insecure: bool, force: bool, expect: str,
) -> None:
    extra = {}
    if cert:
        ca = FleetCA.create(tmp_path / "pki")
        c, k = ca.issue_server_cert(["localhost"], ["127.0.0.1"])
        extra = {"tls_cert_file": c, "tls_key_file": k}
    settings = load_settings(tmp_path / "home", env={}, http_host=host, **extra)
    caplog.set_level(logging.WARNING)
    if expect == "refused":
        with pytest.raises(ConfigError, match="refusing plain HTTP"):
            http_ssl_options(settings, insecure_http=insecure, force=force)
        return
    options = http_ssl_options(settings, insecure_http=insecure, force=force)
    if expect == "https":
        assert options == {"ssl_certfile": str(extra["tls_cert_file"]), "ssl_keyfile": str(extra["tls_key_file"])}
        assert "plain HTTP" not in caplog.text
    else:
        assert options == {}
        assert "tokens cross" in caplog.text and "in clear" in caplog.text


def test_serve_refuses_a_configured_certificate_that_is_missing(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "home", env={}, tls_cert_file=tmp_path / "gone.pem",
                             tls_key_file=tmp_path / "gone.key")
    with pytest.raises(ConfigError, match="missing"):
        http_ssl_options(settings)


def test_embedded_broker_is_tls_with_the_ca_and_plain_on_loopback_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _init(home)
    settings = load_settings(home, env={}, http_host="0.0.0.0", mqtt_port=1883)
    broker = embedded_broker(settings, auth_dir=tmp_path / "auth")
    assert broker.host == "127.0.0.1" and broker.port == 1883  # built, not started
    assert broker.tls is not None and broker.tls_port == 8883 and broker.tls_host == "0.0.0.0"
    assert broker.tls.ca_file == home / "pki" / "ca.pem" and broker.tls.crl_file == home / "pki" / "crl.pem"
    bare = embedded_broker(load_settings(tmp_path / "bare", env={}), auth_dir=tmp_path / "auth2")
    assert bare.tls is None and bare.host == "127.0.0.1"


def _agent(controller_url: str, mqtt: dict) -> AgentConfig:
    return AgentConfig.model_validate({"agent": {"device_id": "cam-1", "controller_url": controller_url},
                                       "mqtt": mqtt})


def test_agent_warns_about_plain_links_off_loopback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    assert warn_plain_links(_agent("http://127.0.0.1:8080", {"host": "localhost"})) == []
    assert caplog.text == ""
    plain = warn_plain_links(_agent("http://fleet.example.org", {"host": "broker.example.org"}))
    assert plain == ["HTTP to fleet.example.org", "MQTT to broker.example.org"]
    assert "plain HTTP" in caplog.text and "plain MQTT" in caplog.text
    caplog.clear()
    assert warn_plain_links(_agent("https://fleet.example.org", {"host": "broker.example.org", "tls": True})) == []
    assert caplog.text == ""


def test_agent_mqtt_tls_settings_are_checked(tmp_path: Path) -> None:
    implied = _agent("https://x", {"ca_file": str(tmp_path / "ca.pem")})
    assert implied.mqtt.tls is True and implied.mqtt.tls_insecure is False
    assert _agent("https://x", {}).mqtt.tls is False
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\ndevice_id = "cam-1"\n[mqtt]\ncert_file = "/x.pem"\n')
    with pytest.raises(AgentConfigError, match="cert_file and key_file go together"):
        load_config(cfg, env={})
    cfg.write_text('[agent]\ndevice_id = "cam-1"\n[mqtt]\ntls_insecure = true\n')
    with pytest.raises(AgentConfigError, match="tls_insecure without tls"):
        load_config(cfg, env={})


def test_agent_mqtt_with_unreadable_tls_files_is_a_config_error(tmp_path: Path) -> None:
    from edgefleet.edge_agent.mqtt_session import AgentMqtt

    cfg = _agent("https://x", {"ca_file": str(tmp_path / "missing.pem")})
    with pytest.raises(AgentConfigError, match=r"\[mqtt\] TLS"):
        AgentMqtt("cam-1", cfg.mqtt, on_desired=lambda d: None)


def test_bridge_warns_about_plain_mqtt_off_loopback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    MqttBridge("127.0.0.1", 1883, handlers={})
    assert "plain MQTT" not in caplog.text
    MqttBridge("broker.example.org", 1883, handlers={})
    assert "plain MQTT" in caplog.text
