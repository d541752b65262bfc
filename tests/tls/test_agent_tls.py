"""End to end over TLS only: a real agent with a device certificate from the fleet CA connects to
mosquitto's TLS listener (client certificates required, CN = device id), fetches over HTTPS from
the controller, and gets a deployment; the controller's bridge is on the same TLS listener."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.edge_agent.config import AgentConfig
from edgefleet.protocols import Phase

from ..conftest import push, slot_of, wait_until, write_roots
from .conftest import TlsStack, write_cert


@pytest.fixture
def tls_agents(tmp_path: Path) -> Iterator[Any]:
    from edgefleet.edge_agent.daemon import Agent

    running: list[tuple[Any, threading.Thread]] = []

    def make(stack: TlsStack, device_id: str, *, cert: tuple[Path, Path] | None = None) -> Any:
        creds = stack.client.enrol_device(device_id, "cpu-x86_64", {"test": "yes"})
        if cert is None:
            cert = write_cert(tmp_path / "certs", device_id, stack.controller.issue_device_certificate(device_id))
        cfg = AgentConfig.model_validate({
            "agent": {"device_id": device_id, "data_dir": str(tmp_path / "agents" / device_id),
                      "controller_url": stack.url, "ca_file": str(stack.ca.ca_file), "token": creds["token"],
                      "health_window_s": 1.0, "trust_roots": str(write_roots(stack, tmp_path / "roots"))},  # type: ignore[arg-type]
            "mqtt": {"host": "127.0.0.1", "port": stack.broker.tls_port, "protocol": "5",
                     "ca_file": str(stack.ca.ca_file), "cert_file": str(cert[0]), "key_file": str(cert[1]),
                     "username": device_id, "password": creds.get("mqtt_password")},
            "source": {"kind": "synthetic-digits", "fps": 30.0, "seed": 1},
        })
        agent = Agent(cfg)
        thread = threading.Thread(target=agent.run, name=f"agent-{device_id}", daemon=True)
        thread.start()
        running.append((agent, thread))
        return agent

    yield make
    for agent, thread in running:
        agent.stop()
        thread.join(timeout=15)


def _active(stack: TlsStack, device_id: str, model: str) -> bool:
    s = slot_of(stack, device_id)  # type: ignore[arg-type]
    return s["installed"] == model and s["phase"] in (Phase.ACTIVE.value, Phase.HEALTHY.value)


def test_agent_over_tls_with_its_client_certificate_gets_a_deployment(tls_stack: TlsStack, tls_agents, digit_models) -> None:
    control, _ = digit_models
    wait_until(lambda: tls_stack.controller.bridge is not None and tls_stack.controller.bridge.connected.is_set(),
               message="controller bridge connected over TLS")
    agent = tls_agents(tls_stack, "cam-tls")
    assert agent.mqtt.client._ssl  # paho: the session is TLS
    wait_until(lambda: tls_stack.client.get_device("cam-tls")["online"], message="agent online over TLS")
    push(tls_stack, control)  # type: ignore[arg-type]
    tls_stack.client.deploy("digits:1.0", "control", ["cam-tls"])
    wait_until(lambda: _active(tls_stack, "cam-tls", "digits:1.0"), timeout=60, message="deployed over TLS")


def test_agent_with_a_revoked_certificate_stays_out(tls_stack: TlsStack, tls_agents, tmp_path: Path) -> None:
    issued = tls_stack.controller.issue_device_certificate("cam-rev")
    tls_stack.ca.revoke(issued.serial)
    tls_stack.broker.stop()  # mosquitto loads the CRL when its listener starts
    tls_stack.broker.start()
    wait_until(lambda: tls_stack.controller.bridge.connected.is_set(), message="bridge back")  # type: ignore[union-attr]
    agent = tls_agents(tls_stack, "cam-rev", cert=write_cert(tmp_path / "rev", "cam-rev", issued))
    ok = tls_agents(tls_stack, "cam-ok")
    wait_until(lambda: ok.mqtt.connected.is_set(), message="the good agent connects")
    assert not agent.mqtt.connected.is_set()
    assert tls_stack.client.get_device("cam-rev")["online"] is False
