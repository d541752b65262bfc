"""A controller on this machine for the fleet benchmarks: a local broker (mosquitto when
installed, else the embedded amqtt), the controller on SQLite with its MQTT bridge and
reconciler, and the HTTP API on uvicorn — all on loopback, all real."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class LocalStack:
    broker: Any
    protocol: str  # "5" on mosquitto, "3.1.1" on amqtt
    settings: Any
    controller: Any
    token: str
    client: Any  # ApiClient with an admin token


@contextmanager
def local_stack(tmp: Path, *, before_start: Callable[[Any], None] | None = None, client_timeout: float = 30.0,
                prefer_broker: str = "auto", **settings: Any) -> Iterator[LocalStack]:
    """Start broker, controller and API under ``tmp``; stop them all on exit.

    ``prefer_broker``: ``auto`` (mosquitto when installed), ``mosquitto`` or ``amqtt``.
    ``settings`` override the controller's (``telemetry_period_s``, ``reconcile_interval_s``,
    …); ``before_start(controller)`` runs after the migrations, before the controller starts
    (bulk enrolment straight into the database)."""
    from edgefleet.cloud.api import create_app
    from edgefleet.cloud.broker import EmbeddedBroker, MosquittoBroker, free_port
    from edgefleet.cloud.cli.cloud_cmd import create_admin_token
    from edgefleet.cloud.client import ApiClient
    from edgefleet.cloud.demo.orchestrator import UvicornThread
    from edgefleet.cloud.runtime import Controller
    from edgefleet.cloud.settings import load_settings

    auth = tmp / "broker-auth"  # the controller writes the broker's accounts and ACL here
    use_mosquitto = prefer_broker == "mosquitto" or (prefer_broker == "auto" and MosquittoBroker.available())
    broker: Any = (MosquittoBroker(data_dir=tmp / "mosquitto", auth_dir=auth) if use_mosquitto
                   else EmbeddedBroker(auth_dir=auth))
    broker.start()
    protocol = "5" if getattr(broker, "kind", "") == "mosquitto" else "3.1.1"
    port = free_port()
    cfg = load_settings(tmp / "controller", env={}, http_port=port, mqtt_port=broker.port, mqtt_protocol=protocol,
                        broker_auth_dir=broker.auth_dir, **settings)
    controller = Controller(cfg)
    if controller.broker_auth is not None:
        controller.broker_auth.set_reload(broker.reload)
    controller.migrate()
    token = create_admin_token(controller)
    if before_start is not None:
        before_start(controller)
    controller.start()
    http = UvicornThread(create_app(controller), cfg.http_host, port)
    http.start()
    client = ApiClient(cfg.base_url, token, timeout=client_timeout)
    try:
        yield LocalStack(broker, protocol, cfg, controller, token, client)
    finally:
        http.stop()
        controller.stop()
        client.close()
        broker.stop()
