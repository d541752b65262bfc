"""Broker TLS listeners with the fleet CA: who gets in (a device certificate from the CA) and who
does not (another CA, a revoked certificate, no certificate where one is required), and clients
that verify the broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.cloud.broker import BrokerTls, EmbeddedBroker, MosquittoBroker
from edgefleet.cloud.broker_auth import Account, BrokerAuthFiles, hash_password

from ..conftest import wait_until
from .conftest import make_ca, refused, tls_connect, write_cert


def _auth(directory: Path, *users: str) -> Path:
    files = BrokerAuthFiles(directory)
    files.ensure()
    files.write([Account(u, hash_password(f"pw-{u}")) for u in users])
    return directory


@pytest.fixture
def mosquitto_tls(tmp_path: Path, mosquitto_available: None):
    ca = make_ca(tmp_path / "pki")
    broker = MosquittoBroker(data_dir=tmp_path / "mq", auth_dir=_auth(tmp_path / "auth", "cam-1", "cam-2"),
                             tls=BrokerTls.from_pki(ca.dir, require_certificate=True))
    broker.start()
    yield ca, broker
    broker.stop()


def test_mosquitto_config_has_a_tls_listener_with_ca_crl_and_identity(mosquitto_tls) -> None:
    ca, broker = mosquitto_tls
    conf = (broker.data_dir / "mosquitto.conf").read_text().splitlines()
    tls_block = conf[conf.index(f"listener {broker.tls_port} 127.0.0.1"):]
    for line in (f"cafile {ca.ca_file}", f"certfile {ca.server_cert_file}", f"keyfile {ca.server_key_file}",
                 f"crlfile {ca.crl_file}", "require_certificate true", "use_identity_as_username true"):
        assert line in tls_block
    assert "allow_anonymous false" in conf


def test_mosquitto_accepts_a_device_certificate_from_the_fleet_ca(mosquitto_tls, tmp_path: Path) -> None:
    ca, broker = mosquitto_tls
    cert = write_cert(tmp_path / "dev", "cam-1", ca.issue_device_cert("cam-1"))
    assert tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, cert=cert, client_id="cam-1") == "connected"


def test_mosquitto_refuses_a_certificate_from_another_ca(mosquitto_tls, tmp_path: Path) -> None:
    ca, broker = mosquitto_tls
    other = make_ca(tmp_path / "other-pki")
    cert = write_cert(tmp_path / "dev", "cam-1", other.issue_device_cert("cam-1"))
    assert refused(tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, cert=cert, client_id="cam-1"))
    good = write_cert(tmp_path / "dev", "cam-1-good", ca.issue_device_cert("cam-1"))
    assert tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, cert=good, client_id="cam-1") == "connected"


def test_mosquitto_refuses_a_revoked_certificate_after_a_reload(mosquitto_tls, tmp_path: Path) -> None:
    ca, broker = mosquitto_tls
    revoked, kept = ca.issue_device_cert("cam-1"), ca.issue_device_cert("cam-2")
    bad = write_cert(tmp_path / "dev", "cam-1", revoked)
    good = write_cert(tmp_path / "dev", "cam-2", kept)
    assert tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, cert=bad, client_id="cam-1") == "connected"
    ca.revoke(revoked.serial)
    broker.reload()  # SIGHUP: mosquitto re-reads crlfile (as it does passwd and acl)
    wait_until(lambda: refused(tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, cert=bad,
                                           client_id="cam-1", timeout=2)), timeout=10, message="revoked refused")
    assert tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, cert=good, client_id="cam-2") == "connected"


def test_mosquitto_refuses_a_client_without_a_certificate_when_one_is_required(mosquitto_tls) -> None:
    ca, broker = mosquitto_tls
    outcome = tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, username="cam-1", password="pw-cam-1",
                          client_id="cam-1")
    assert refused(outcome)


def test_mosquitto_with_optional_certificates_takes_the_password(tmp_path: Path, mosquitto_available: None) -> None:
    ca = make_ca(tmp_path / "pki")
    broker = MosquittoBroker(data_dir=tmp_path / "mq", auth_dir=_auth(tmp_path / "auth", "cam-1"),
                             tls=BrokerTls.from_pki(ca.dir))
    broker.start()
    try:
        ok = tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, username="cam-1", password="pw-cam-1",
                         client_id="cam-1")
        wrong = tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, username="cam-1", password="nope",
                            client_id="cam-1")
        assert ok == "connected" and refused(wrong)
    finally:
        broker.stop()


def test_a_client_refuses_a_broker_its_ca_did_not_sign(mosquitto_tls, tmp_path: Path) -> None:
    ca, broker = mosquitto_tls
    other = make_ca(tmp_path / "other-pki")
    cert = write_cert(tmp_path / "dev", "cam-1", ca.issue_device_cert("cam-1"))
    for trusted in (other.ca_file, None):  # another CA; the system CAs
        outcome = tls_connect("127.0.0.1", broker.tls_port, ca_file=trusted, cert=cert, client_id="cam-1")
        assert outcome.startswith("handshake failed") and "certificate verify failed" in outcome


def test_a_client_refuses_a_broker_certificate_for_another_host_name(tmp_path: Path, mosquitto_available: None) -> None:
    ca = make_ca(tmp_path / "pki")
    ca.issue_server_cert(["broker.example.org"])  # not 127.0.0.1
    broker = MosquittoBroker(data_dir=tmp_path / "mq", auth_dir=_auth(tmp_path / "auth", "cam-1"),
                             tls=BrokerTls.from_pki(ca.dir))
    broker.start()
    try:
        outcome = tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, username="cam-1",
                              password="pw-cam-1", client_id="cam-1")
        assert outcome.startswith("handshake failed") and "match" in outcome  # host name mismatch
    finally:
        broker.stop()


# ----- amqtt (embedded) -----


@pytest.fixture
def amqtt_tls(tmp_path: Path):
    ca = make_ca(tmp_path / "pki")
    broker = EmbeddedBroker(auth_dir=_auth(tmp_path / "auth", "cam-1"), tls=BrokerTls.from_pki(ca.dir))
    broker.start()
    yield ca, broker
    broker.stop()


def test_amqtt_tls_listener_is_verified_by_a_client_with_the_fleet_ca(amqtt_tls, tmp_path: Path) -> None:
    ca, broker = amqtt_tls
    ok = tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, username="cam-1", password="pw-cam-1",
                     client_id="cam-1")
    assert ok == "connected"
    other = make_ca(tmp_path / "other-pki")
    untrusted = tls_connect("127.0.0.1", broker.tls_port, ca_file=other.ca_file, username="cam-1",
                            password="pw-cam-1", client_id="cam-1")
    assert untrusted.startswith("handshake failed") and "certificate verify failed" in untrusted
    wrong_pw = tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, username="cam-1", password="x",
                           client_id="cam-1")
    assert refused(wrong_pw)


def test_amqtt_can_require_a_client_certificate_and_checks_the_crl(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    good_cert, revoked_cert = ca.issue_device_cert("cam-1"), ca.issue_device_cert("cam-1")
    ca.revoke(revoked_cert.serial)
    broker = EmbeddedBroker(auth_dir=_auth(tmp_path / "auth", "cam-1"),
                            tls=BrokerTls.from_pki(ca.dir, require_certificate=True))
    broker.start()
    try:
        creds = {"username": "cam-1", "password": "pw-cam-1", "client_id": "cam-1"}
        good = write_cert(tmp_path / "dev", "good", good_cert)
        bad = write_cert(tmp_path / "dev", "revoked", revoked_cert)
        assert tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, cert=good, **creds) == "connected"
        assert refused(tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, cert=bad, **creds))
        assert refused(tls_connect("127.0.0.1", broker.tls_port, ca_file=ca.ca_file, **creds))
    finally:
        broker.stop()
