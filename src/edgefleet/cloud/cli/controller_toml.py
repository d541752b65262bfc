"""The ``controller.toml`` that ``fleet cloud init`` writes: every setting an operator decides, commented.

``render_controller_toml(values)`` is pure: it takes what the operator chose (options of
``fleet cloud init``) and returns TOML text in which each chosen key is set and the
other common keys are shown commented out with their defaults, so the file documents
itself. ``check_init_options`` validates the options before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

MQTT_PROTOCOLS = ("5", "3.1.1")


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def check_init_options(*, public_url: str | None, database_url: str | None, mqtt_protocol: str | None,
                       mqtt_port: int | None, mqtt_password_file: Path | None, mqtt_username: str | None) -> None:
    """Raises ConfigError naming the option that cannot work."""
    if public_url is not None:
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError(f"--public-url {public_url!r}: give the URL devices reach the controller at, "
                              "e.g. https://fleet.example.org or http://10.0.0.5:8080 (no path)")
    if database_url is not None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(database_url)
        except ArgumentError:
            raise ConfigError(f"--database-url {database_url!r}: not a database URL "
                              "(postgresql+psycopg://USER:PASSWORD@HOST/DB or sqlite:///PATH)") from None
        if url.get_backend_name() not in ("postgresql", "sqlite"):
            raise ConfigError(f"--database-url: {url.get_backend_name()} is not supported; use PostgreSQL or SQLite")
    if mqtt_protocol is not None and mqtt_protocol not in MQTT_PROTOCOLS:
        raise ConfigError(f"--mqtt-protocol {mqtt_protocol!r}: use 5 (shared subscriptions) or 3.1.1")
    if mqtt_port is not None and not 1 <= mqtt_port <= 65535:
        raise ConfigError(f"--mqtt-port {mqtt_port}: not a port")
    if mqtt_password_file is not None:
        if not mqtt_password_file.is_file():
            raise ConfigError(f"--mqtt-password-file {mqtt_password_file}: no such file")
        if mqtt_username is None:
            raise ConfigError("--mqtt-password-file needs --mqtt-username (the controller's account on the broker)")


def render_controller_toml(chosen: dict[str, Any]) -> str:
    """controller.toml text: ``chosen`` keys set, the other common ones commented with defaults."""

    def line(key: str, default: Any, comment: str) -> str:
        if key in chosen and chosen[key] is not None:
            return f"# {comment}\n{key} = {_value(chosen[key])}\n"
        shown = "..." if default is None else _value(default)
        return f"# {comment}\n# {key} = {shown}\n"

    out = [
        "# edgefleet controller settings, written by `fleet cloud init`.\n"
        "# Precedence: defaults < this file < EDGEFLEET_* environment variables < command-line options.\n"
        "# Unknown keys are refused, so a typo stops the controller instead of being ignored.\n",
        "[controller]\n",
        "\n# --- HTTP API ---\n",
        line("http_host", "127.0.0.1", "bind address of the API (0.0.0.0: every interface; needs TLS or --insecure-http --force)"),
        line("http_port", 8080, "API port"),
        line("public_url", None, "the URL devices reach the controller at (written into device bundles)"),
        "\n# --- database ---\n",
        line("database_url", None, "PostgreSQL for production (several replicas); default: SQLite in this directory"),
        line("store_url", None, "artifact and clip store: s3://BUCKET/PREFIX; default: ./blobs"),
        "\n# --- MQTT broker, as the controller reaches it ---\n",
        line("mqtt_host", "127.0.0.1", "broker host"),
        line("mqtt_port", 1883, "broker port for plain MQTT"),
        line("mqtt_protocol", "3.1.1", "5 (shared subscriptions across replicas) or 3.1.1"),
        line("mqtt_tls", False, "connect to mqtt_host:mqtt_tls_port over TLS"),
        line("mqtt_tls_port", 8883, "broker port for MQTT over TLS"),
        line("mqtt_ca_file", None, "CA the broker's certificate must chain to (system CAs when unset)"),
        line("mqtt_username", None, "the controller's own broker account (an external broker)"),
        line("mqtt_password_file", None, "file holding that account's password (keep it 0600)"),
        "\n# --- the broker as devices reach it (device bundles); defaults follow the lines above ---\n",
        line("device_mqtt_host", None, "default: mqtt_host, or public_url's host when mqtt_host is loopback"),
        line("device_mqtt_port", None, "default: mqtt_tls_port when mqtt_tls, else mqtt_port"),
        "\n# --- device accounts and ACL on the broker (docs/identity.md) ---\n",
        line("manage_broker_auth", True, "write the broker's password file and ACL from the device table"),
        line("broker_auth_dir", None, "where to write them (default: ./broker-auth); point mosquitto's password_file/acl_file here"),
        line("broker_reload_command", None, "run after each change, e.g. \"systemctl reload mosquitto\""),
        "\n# --- timing ---\n",
        line("telemetry_period_s", 10.0, "seconds between a device's telemetry messages"),
        line("reconcile_interval_s", 2.0, "seconds between rollout reconciler passes"),
        line("stale_after_s", 120.0, "a device whose signed state lags this long is stale"),
        line("replay_window", 64, "signed reports: a seq this far below the highest, not yet seen, still counts (1: strict)"),
    ]
    return "".join(out)
