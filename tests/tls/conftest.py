"""TLS fixtures: a fleet CA, an HTTPS controller on loopback, brokers with a TLS listener, TLS MQTT clients.

All real: uvicorn serves the controller's app with the CA's server certificate; mosquitto
(or amqtt) runs a TLS listener with the CA, the server certificate and the CRL; clients are
paho and httpx with the standard library's ssl module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cloud.api import create_app
from edgefleet.cloud.broker import BrokerTls, EmbeddedBroker, MosquittoBroker, free_port
from edgefleet.cloud.cli.cloud_cmd import create_admin_token
from edgefleet.cloud.client import ApiClient
from edgefleet.cloud.pki import FleetCA
from edgefleet.cloud.runtime import Controller
from edgefleet.cloud.settings import load_settings


class HttpsThread:
    """uvicorn on loopback with a certificate, in a thread (the controller's app)."""

    def __init__(self, app: Any, host: str, port: int, cert: Path, key: Path):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                                    ssl_certfile=str(cert), ssl_keyfile=str(key)))
        self.thread = threading.Thread(target=self.server.run, name="https", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn (TLS) did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def make_ca(directory: Path) -> FleetCA:
    """A fleet CA with a server certificate for localhost and 127.0.0.1."""
    ca = FleetCA.create(directory)
    ca.issue_server_cert(["localhost"], ["127.0.0.1"])
    return ca


def write_cert(directory: Path, name: str, issued: Any) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_text(issued.cert_pem)
    key.write_text(issued.key_pem)
    key.chmod(0o600)
    return cert, key


def tls_connect(host: str, port: int, *, ca_file: Path | None, cert: tuple[Path, Path] | None = None,
                username: str = "", password: str = "", client_id: str = "tls-test", protocol: str = "3.1.1",
                timeout: float = 5.0) -> str:
    """Connect a paho client over TLS; returns "connected", or why it did not (handshake error,
    refusal, or the broker closing the link)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    result: dict[str, str] = {}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
    if username:
        c.username_pw_set(username, password)
    c.tls_set(ca_certs=str(ca_file) if ca_file else None, certfile=str(cert[0]) if cert else None,
              keyfile=str(cert[1]) if cert else None)

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        result["outcome"] = "refused: " + str(reason) if getattr(reason, "is_failure", False) else "connected"
        done.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        result.setdefault("outcome", f"closed by the broker: {reason}")
        done.set()

    c.on_connect, c.on_disconnect = on_connect, on_disconnect
    try:
        c.connect(host, port, keepalive=10)
    except OSError as exc:  # ssl.SSLError (e.g. CERTIFICATE_VERIFY_FAILED) is an OSError
        return f"handshake failed: {exc}"
    c.loop_start()
    try:
        done.wait(timeout)
        return result.get("outcome", "no answer")
    finally:
        c.disconnect()
        c.loop_stop()


def refused(outcome: str) -> bool:
    """The broker (or the handshake) said no — not merely "no answer yet"."""
    return outcome.startswith(("closed by the broker", "handshake failed", "refused"))


@pytest.fixture
def mosquitto_available() -> None:
    if not MosquittoBroker.available():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto); the TLS listener tests need it")


@dataclass
class TlsStack:
    ca: FleetCA
    broker: Any
    controller: Controller
    https: HttpsThread
    client: ApiClient
    url: str
    data_dir: Path

    def stop(self) -> None:
        self.https.stop()
        self.controller.stop()
        self.client.close()
        self.broker.stop()


def start_tls_stack(tmp: Path, *, require_certificate: bool = True, mosquitto: bool = True) -> TlsStack:
    """Fleet CA, broker with a TLS listener (client certificates required), controller whose
    bridge connects over TLS with its own client certificate, and the API over HTTPS."""
    data_dir = tmp / "controller"
    ca = make_ca(data_dir / "pki")
    tls = BrokerTls.from_pki(ca.dir, require_certificate=require_certificate)
    broker: Any = (MosquittoBroker(data_dir=tmp / "mosquitto", auth_dir=tmp / "broker-auth", tls=tls) if mosquitto
                   else EmbeddedBroker(auth_dir=tmp / "broker-auth", tls=tls))
    broker.start()
    port = free_port()
    settings = load_settings(
        data_dir, env={}, http_port=port, mqtt_port=broker.port, mqtt_protocol="5" if mosquitto else "3.1.1",
        mqtt_tls=True, mqtt_tls_port=broker.tls_port, mqtt_ca_file=ca.ca_file,
        tls_cert_file=ca.server_cert_file, tls_key_file=ca.server_key_file, tls_ca_file=ca.ca_file,
        telemetry_period_s=0.5, reconcile_interval_s=0.5, broker_auth_dir=broker.auth_dir,
    )
    controller = Controller(settings)
    if require_certificate:  # the broker takes the certificate's CN as the username: the controller's account
        username, _ = controller.mqtt_credentials()
        cert, key = write_cert(data_dir / "mqtt-client", "controller",
                               ca.issue_client_cert(username, kind="controller"))
        settings.mqtt_cert_file, settings.mqtt_key_file = cert, key
    if controller.broker_auth is not None:
        controller.broker_auth.set_reload(broker.reload)
    controller.migrate()
    token = create_admin_token(controller)
    controller.start()
    https = HttpsThread(create_app(controller), "127.0.0.1", port, ca.server_cert_file, ca.server_key_file)
    https.start()
    assert settings.base_url.startswith("https://")
    return TlsStack(ca, broker, controller, https, ApiClient(settings.base_url, token, ca_file=ca.ca_file),
                    settings.base_url, data_dir)


@pytest.fixture
def tls_stack(tmp_path: Path, mosquitto_available: None) -> Iterator[TlsStack]:
    s = start_tls_stack(tmp_path)
    yield s
    s.stop()
