"""Report keys: made on the device (0600, sequence numbers survive restarts), registered by the
device with its token or by the operator at enrolment, rotated only with the current key's
signature, cleared by an admin; all over the real HTTP API and the real CLIs."""

from __future__ import annotations

import base64
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from edgefleet.cloud.cli import app as fleet_app
from edgefleet.cloud.tables import Device
from edgefleet.edge_agent.cli import app as agent_app
from edgefleet.edge_agent.report_signer import KEY_FILE, SEQ_BLOCK, ReportKeyRefused, ReportSigner
from edgefleet.protocols import Telemetry, telemetry_topic
from edgefleet.registry import report_sig

from ..conftest import device_credentials, write_roots

runner = CliRunner()


def _http(stack, token: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _key_id(stack, device_id: str) -> str | None:
    with stack.controller.session() as s:
        device = s.get(Device, device_id)
        assert device is not None
        return device.report_key_id


def _telemetry(device_id: str, minutes_ago: float) -> Telemetry:
    start = datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)
    return Telemetry(device_id=device_id, period_start=start, period_end=start + timedelta(seconds=10), frames=10)


def _fleet(stack, *args: str):  # type: ignore[no-untyped-def]
    result = runner.invoke(fleet_app, [*args, "--url", stack.url, "--token", stack.token])
    assert result.exit_code == 0, result.output
    return result


def test_key_file_is_private_and_seq_only_grows_across_restarts(tmp_path: Path) -> None:
    a = ReportSigner(tmp_path, "cam-1")
    path = tmp_path / "identity" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "identity").stat().st_mode) == 0o700
    used = [a.next_seq() for _ in range(5)]
    b = ReportSigner(tmp_path, "cam-1")  # a restart (or a crash: the reservation was written first)
    assert b.key_id == a.key_id
    first = b.next_seq()
    assert first > max(used) and first >= SEQ_BLOCK
    (tmp_path / "identity" / KEY_FILE).write_bytes(b"damaged")
    c = ReportSigner(tmp_path, "cam-1")  # never crashes: the damaged key is kept aside, a new one made
    assert c.key_id != a.key_id and (tmp_path / "identity" / "report-key.corrupt").exists()
    assert c.next_seq() > first


def test_device_registers_its_key_and_reports_verify(stack, tmp_path: Path) -> None:
    creds = device_credentials(stack, "cam-k")
    signer = ReportSigner(tmp_path / "dev", "cam-k")
    with _http(stack, creds["token"]) as http:
        assert signer.register(http) and signer.register(http)  # the same key again changes nothing
    assert _key_id(stack, "cam-k") == signer.key_id
    assert stack.controller.bridge.handle(telemetry_topic("cam-k"), signer.sign(_telemetry("cam-k", 3))) == "ok"
    # an admin token is not a device: the route is for devices only
    r = _http(stack, stack.token).put("/api/v1/devices/self/report-key", json={"public_key": signer.public_key})
    assert r.status_code == 403


def test_rotation_needs_the_current_keys_signature(stack, tmp_path: Path) -> None:
    creds = device_credentials(stack, "cam-rot")
    signer = ReportSigner(tmp_path / "dev", "cam-rot")
    bridge, topic = stack.controller.bridge, telemetry_topic("cam-rot")
    with _http(stack, creds["token"]) as http:
        assert signer.register(http)
        old_key, old_id = signer.key, signer.key_id
        stranger = ReportSigner(tmp_path / "other", "cam-rot")  # e.g. a thief with the device token
        with pytest.raises(ReportKeyRefused, match="already has report key"):
            stranger.register(http)
        forged = report_sig.sign_rotation(stranger.key, "cam-rot", stranger.public_key)  # signed by itself
        r = http.put("/api/v1/devices/self/report-key",
                     json={"public_key": stranger.public_key, "rotation_signature": forged})
        assert r.status_code == 403 and "not signed by the current report key" in r.json()["detail"]
        r = http.put("/api/v1/devices/self/report-key", json={"public_key": "not a key"})
        assert r.status_code == 400
        assert _key_id(stack, "cam-rot") == old_id

        new_id = signer.rotate(http)  # signed by the current key over the new one
    assert new_id != old_id and _key_id(stack, "cam-rot") == new_id
    assert stat.S_IMODE((tmp_path / "dev" / "identity" / KEY_FILE).stat().st_mode) == 0o600
    assert bridge.handle(topic, signer.sign(_telemetry("cam-rot", 3))) == "ok"
    old = ReportSigner.__new__(ReportSigner)  # the retired key still signing: refused
    old.__dict__.update(signer.__dict__, key=old_key, key_id=old_id)
    assert bridge.handle(topic, old.sign(_telemetry("cam-rot", 2))) == "bad_signature"

    # an admin clears the key (CLI); then a device's key is taken as a first registration
    _fleet(stack, "device", "reset-report-key", "cam-rot")
    assert _key_id(stack, "cam-rot") is None
    assert bridge.handle(topic, signer.sign(_telemetry("cam-rot", 1))) == "unknown_key"
    with _http(stack, creds["token"]) as http:
        assert stranger.register(http)
    assert _key_id(stack, "cam-rot") == stranger.key_id


def test_operator_enrols_with_the_key_provision_printed(stack, tmp_path: Path) -> None:
    data_dir = tmp_path / "device-data"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[agent]\ndevice_id = "cam-e"\ndata_dir = "{data_dir}"\n')
    roots = write_roots(stack, tmp_path / "roots")
    result = runner.invoke(agent_app, ["provision", "--config", str(cfg), "--director-root", str(roots / "director-root.json"),
                                       "--image-root", str(roots / "image-root.json")])
    assert result.exit_code == 0, result.output
    public_key = result.output.strip().splitlines()[-1]
    key_path = data_dir / "identity" / KEY_FILE
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert report_sig.public_b64(report_sig.load_private_pem(key_path.read_bytes())) == public_key
    (tmp_path / "cam-e.pub").write_text(public_key + "\n")
    _fleet(stack, "device", "add", "cam-e", "--hw", "cpu-x86_64", "--report-key", str(tmp_path / "cam-e.pub"))
    assert _key_id(stack, "cam-e") == ReportSigner(data_dir, "cam-e").key_id

    pem = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert stack.client.enrol_device("cam-pem", "cpu-x86_64", report_public_key=pem)
    assert _key_id(stack, "cam-pem") == report_sig.key_id(report_sig.parse_public_key(pem))
    from edgefleet.cloud.client import ApiError

    with pytest.raises(ApiError) as bad:
        stack.client.enrol_device("cam-bad", "cpu-x86_64", report_public_key="AAAA")
    assert bad.value.status_code == 400 and "32 bytes" in bad.value.detail


def test_a_device_cannot_register_or_rotate_to_a_small_order_key(stack, tmp_path: Path) -> None:
    """The neutral point as a report key would let anyone forge (one signature fits every
    message under OpenSSL's check): refused with a 400 at a first registration and at a
    rotation the current key really signed; the registered key stays."""
    neutral = base64.b64encode(bytes([1]) + bytes(31)).decode()
    creds = device_credentials(stack, "cam-so")
    signer = ReportSigner(tmp_path / "dev", "cam-so")
    with _http(stack, creds["token"]) as http:
        r = http.put("/api/v1/devices/self/report-key", json={"public_key": neutral})
        assert r.status_code == 400 and "small-order point" in r.json()["detail"]
        assert _key_id(stack, "cam-so") is None
        assert signer.register(http)
        signed = report_sig.sign_rotation(signer.key, "cam-so", neutral)  # the current key's real signature
        r = http.put("/api/v1/devices/self/report-key", json={"public_key": neutral, "rotation_signature": signed})
        assert r.status_code == 400 and "small-order point" in r.json()["detail"]
    assert _key_id(stack, "cam-so") == signer.key_id
    assert stack.controller.bridge.handle(telemetry_topic("cam-so"), signer.sign(_telemetry("cam-so", 3))) == "ok"
